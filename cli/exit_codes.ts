/**
 * cryptsleep's exit codes, documented once here and in `cryptsleep --help`.
 *
 * @example
 * ```ts
 * import { ExitCode } from "./exit_codes.ts";
 * Deno.exit(ExitCode.USAGE);
 * ```
 * @module
 */

export const ExitCode = {
  /** Done; doctor: no check failed. */
  OK: 0,
  /** The operation failed and was undone (volumes unlocked, userspace thawed). */
  FAILED: 1,
  /** Bad arguments or unknown command. */
  USAGE: 2,
  /** Preflight refused; nothing was touched. */
  REFUSED: 3,
  /** Environment unusable: not root, no /sys, missing kernel support; doctor: a check failed. */
  ENV: 4,
} as const;

/** One of the documented exit codes. */
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The `--help` epilog. */
export const EXIT_CODES_HELP = `
Exit codes:
  0  ok (doctor: no check failed)
  1  failed; everything done was undone (volumes unlocked, userspace thawed)
  2  bad arguments or unknown command
  3  refused by preflight; nothing was touched
  4  environment unusable: not root, no /sys, missing kernel support (doctor: a check failed)`;

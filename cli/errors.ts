/**
 * Errors the CLI turns into one line on stderr and an exit code, plus the guards commands share.
 *
 * @example
 * ```ts
 * import { CliError, requireRoot } from "./errors.ts";
 * import { ExitCode } from "./exit_codes.ts";
 * requireRoot("cryptsleep suspend");
 * throw new CliError("no LUKS volume to lock; run cryptsleep plan", ExitCode.REFUSED);
 * ```
 * @module
 */
import { ExitCode } from "./exit_codes.ts";

/** A failure with its one-line message (what happened and what to do) and its exit code. */
export class CliError extends Error {
  /** `exitCode`: what the process exits with. */
  constructor(message: string, readonly exitCode: ExitCode) {
    super(message);
    this.name = "CliError";
  }
}

/** Refuses with ENV unless running as root. */
export function requireRoot(what: string, uid: number | null = Deno.uid()): void {
  if (uid !== 0) throw new CliError(`${what} must run as root (uid is ${uid}): run it with sudo`, ExitCode.ENV);
}

/** One line, whatever the message held. */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

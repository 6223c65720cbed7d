/**
 * The `cryptsleep` command line. Each command module exports its `CommandSpec`s (cli/args.ts); adding
 * a command is one entry in {@linkcode PROGRAM}. Errors become one line on stderr and a documented exit code
 * (see cli/exit_codes.ts).
 *
 * @example
 * ```sh
 * deno run -A cli/main.ts plan --json
 * deno run -A cli/main.ts doctor
 * ```
 * @module
 */
import { parse, type ProgramSpec, UsageError } from "./args.ts";
import * as doctor from "./doctor.ts";
import { CliError, oneLine } from "./errors.ts";
import { EXIT_CODES_HELP, ExitCode } from "./exit_codes.ts";
import * as installCmd from "./install.ts";
import * as plan from "./plan.ts";
import * as status from "./status.ts";
import * as suspend from "./suspend.ts";
import { VERSION } from "./version.ts";

/** The program: every command, in help order. */
export const PROGRAM: ProgramSpec = {
  name: "cryptsleep",
  help: "Lock every LUKS volume before suspend-to-RAM and unlock them after wake.",
  version: VERSION,
  commands: [plan.command, doctor.command, ...suspend.commands, status.command, ...installCmd.commands],
  epilog: EXIT_CODES_HELP,
};

/** Runs the CLI on `args` (without the program name) and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  try {
    const parsed = parse(PROGRAM, args);
    if (parsed.kind === "print") {
      console.log(parsed.text);
      return ExitCode.OK;
    }
    return await parsed.command.run(parsed.values);
  } catch (e) {
    if (e instanceof UsageError) {
      // a bare `cryptsleep` gets the help; anything else one line, saying where to look
      if (e.help) console.error(e.help);
      else console.error(`cryptsleep: ${oneLine(e.message)} (see ${e.where})`);
      return ExitCode.USAGE;
    }
    if (e instanceof CliError) {
      console.error(`cryptsleep: ${oneLine(e.message)}`);
      return e.exitCode;
    }
    const err = e as Error;
    console.error(`cryptsleep: ${oneLine(err?.message ?? String(e))}`);
    if (Deno.env.get("CRYPTSLEEP_DEBUG")) console.error(err?.stack);
    return ExitCode.FAILED;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

/**
 * The `cryptsleep` command line. Each command module exports `register(program, exit)`; adding a command
 * is one line in {@linkcode COMMANDS}. Errors become one line on stderr and a documented exit code
 * (see cli/exit_codes.ts).
 *
 * @example
 * ```sh
 * deno run -A cli/main.ts plan --json
 * deno run -A cli/main.ts doctor
 * ```
 * @module
 */
import { Command, CommanderError } from "commander";
import * as doctor from "./doctor.ts";
import { CliError, ExitRequest, oneLine } from "./errors.ts";
import { EXIT_CODES_HELP, ExitCode } from "./exit_codes.ts";
import * as installCmd from "./install.ts";
import * as plan from "./plan.ts";
import * as status from "./status.ts";
import * as suspend from "./suspend.ts";
import { VERSION } from "./version.ts";

/** How a command module hooks itself in. `exit` ends the command with a code (it throws; main returns it). */
export type Register = (program: Command, exit: (code: number) => never) => void;

/** Every command, in help order. */
export const COMMANDS: Register[] = [
  plan.register,
  doctor.register,
  suspend.register,
  status.register,
  installCmd.register,
];

/** Builds the program; commander's own failures throw CommanderError instead of exiting. */
export function buildProgram(): Command {
  const program = new Command("cryptsleep")
    .description("Lock every LUKS volume before suspend-to-RAM and unlock them after wake.")
    .version(VERSION, "-V, --version", "print the version")
    .helpOption("-h, --help", "print this help")
    .helpCommand(false)
    .exitOverride()
    .configureOutput({
      // one line, saying what to do
      outputError: (str, write) =>
        write(`cryptsleep: ${oneLine(str.replace(/^error: /, ""))} (see cryptsleep --help)\n`),
    })
    .addHelpText("after", EXIT_CODES_HELP);
  const exit = (code: number): never => {
    throw new ExitRequest(code);
  };
  for (const register of COMMANDS) register(program, exit);
  return program;
}

/** Runs the CLI on `args` (without the program name) and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(args, { from: "user" });
    return ExitCode.OK;
  } catch (e) {
    if (e instanceof ExitRequest) return e.code;
    if (e instanceof CommanderError) {
      // --help and --version end with code 0; a bare `cryptsleep` prints help and is a usage error
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version") return ExitCode.OK;
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

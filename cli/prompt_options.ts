/**
 * @module
 * The passphrase prompt's options, `--max-tries`, `--after-tries` and `--idle-suspend`, defined once for the two
 * commands that take them: `cryptsleep suspend`, whose cycle uses them, and `cryptsleep install`, which passes them
 * on in the drop-in's ExecStart to the cycles systemd starts. A bad value is a usage error (exit 2) saying what to
 * give; the rule itself is cycle/job.ts's {@linkcode promptOptionProblem}, which install checks again.
 *
 * @example
 * ```ts
 * import { Command } from "commander";
 * import { promptOptions, promptValues } from "./prompt_options.ts";
 * const cmd = new Command("install");
 * for (const option of promptOptions()) cmd.addOption(option);
 * cmd.parse(["--max-tries", "3"], { from: "user" });
 * console.log(promptValues(cmd.opts())); // { maxTries: 3, afterTries: undefined, idleSuspendS: undefined }
 * ```
 */
import { InvalidArgumentError, Option } from "commander";
import { AFTER_TRIES, defaultOptions, promptOptionProblem, type PromptOptions } from "../cycle/job.ts";

/** A whole number written in digits (NaN otherwise: "1e3", "0x10", "-1", "1.5" are refused). */
function digits(text: string): number {
  return /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
}

/** A commander argument parser for the prompt option `key`: refuses what {@linkcode promptOptionProblem} refuses. */
function parser(key: keyof PromptOptions): (text: string) => number {
  return (text) => {
    const value = digits(text);
    const problem = promptOptionProblem(key, value);
    if (problem) throw new InvalidArgumentError(problem);
    return value;
  };
}

/**
 * The three options for a command. `defaults`: the values when a flag is not given (`suspend`). Without it a flag
 * not given stays undefined (`install` then writes nothing for it, so the cycle takes suspend's default) and the
 * help says which default that is.
 */
export function promptOptions(defaults?: PromptOptions): Option[] {
  // install's help: what the cycle takes when the drop-in passes nothing
  const suspends = (value: string | number) => defaults ? "" : ` (not given: cryptsleep suspend's default, ${value})`;
  const d = defaultOptions();
  const maxTries = new Option(
    "--max-tries <n>",
    "wrong passphrases in a row for a volume before --after-tries is done" + suspends(d.maxTries),
  ).argParser(parser("maxTries"));
  const afterTries = new Option(
    "--after-tries <action>",
    "after --max-tries wrong passphrases: ask again, suspend again, or power off (the volume stays locked " +
      "and the machine frozen whichever it is)" + suspends(d.afterTries),
  ).choices(AFTER_TRIES);
  const idleSuspend = new Option(
    "--idle-suspend <seconds>",
    "suspend again, still locked, when nothing is typed at the prompt for this long (0: never; Esc at the " +
      "prompt suspends again at once)" + suspends(d.idleSuspendS),
  ).argParser(parser("idleSuspendS"));
  if (defaults) {
    maxTries.default(defaults.maxTries);
    afterTries.default(defaults.afterTries);
    idleSuspend.default(defaults.idleSuspendS);
  }
  return [maxTries, afterTries, idleSuspend];
}

/** The prompt options out of commander's parsed options (undefined where a flag was not given and has no default). */
export function promptValues(
  o: { maxTries?: number; afterTries?: string; idleSuspend?: number },
): Partial<PromptOptions> {
  return {
    maxTries: o.maxTries,
    afterTries: o.afterTries as PromptOptions["afterTries"] | undefined,
    idleSuspendS: o.idleSuspend,
  };
}

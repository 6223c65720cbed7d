/**
 * @module
 * The passphrase prompt's options, `--max-tries`, `--after-tries` and `--idle-suspend`, defined once for the two
 * commands that take them: `cryptsleep suspend`, whose cycle uses them, and `cryptsleep install`, which passes them
 * on in the drop-in's ExecStart to the cycles systemd starts. A bad value is a usage error (exit 2) saying what to
 * give; the rule itself is cycle/job.ts's {@linkcode promptOptionProblem}, which install checks again.
 *
 * @example
 * ```ts
 * import { parse } from "./args.ts";
 * import { promptOptions, promptValues } from "./prompt_options.ts";
 * const install = { name: "install", help: "", options: promptOptions(), run: () => Promise.resolve(0) };
 * const parsed = parse({ name: "cryptsleep", help: "", version: "1", commands: [install] }, ["install", "--max-tries", "3"]);
 * if (parsed.kind === "run") console.log(promptValues(parsed.values)); // { maxTries: 3, afterTries: undefined, idleSuspendS: undefined }
 * ```
 */
import { InvalidArgument, type OptionSpec } from "./args.ts";
import { AFTER_TRIES, defaultOptions, promptOptionProblem, type PromptOptions } from "../cycle/job.ts";

/** A whole number written in digits (NaN otherwise: "1e3", "0x10", "-1", "1.5" are refused). */
function digits(text: string): number {
  return /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
}

/** An argument parser for the prompt option `key`: refuses what {@linkcode promptOptionProblem} refuses. */
function parser(key: keyof PromptOptions): (text: string) => number {
  return (text) => {
    const value = digits(text);
    const problem = promptOptionProblem(key, value);
    if (problem) throw new InvalidArgument(problem);
    return value;
  };
}

/**
 * The three options for a command. `defaults`: the values when a flag is not given (`suspend`). Without it a flag
 * not given stays undefined (`install` then writes nothing for it, so the cycle takes suspend's default) and the
 * help says which default that is.
 */
export function promptOptions(defaults?: PromptOptions): OptionSpec[] {
  // install's help: what the cycle takes when the drop-in passes nothing
  const suspends = (value: string | number) => defaults ? "" : ` (not given: cryptsleep suspend's default, ${value})`;
  const d = defaultOptions();
  return [
    {
      flag: "--max-tries",
      value: "<n>",
      help: "wrong passphrases in a row for a volume before --after-tries is done" + suspends(d.maxTries),
      parse: parser("maxTries"),
      default: defaults?.maxTries,
    },
    {
      flag: "--after-tries",
      value: "<action>",
      help: "after --max-tries wrong passphrases: ask again, suspend again, or power off (the volume stays locked " +
        "and the machine frozen whichever it is)" + suspends(d.afterTries),
      choices: AFTER_TRIES,
      default: defaults?.afterTries,
    },
    {
      flag: "--idle-suspend",
      value: "<seconds>",
      help: "suspend again, still locked, when nothing is typed at the prompt for this long (0: never; Esc at the " +
        "prompt suspends again at once)" + suspends(d.idleSuspendS),
      parse: parser("idleSuspendS"),
      default: defaults?.idleSuspendS,
    },
  ];
}

/** The prompt options out of the parsed values (undefined where a flag was not given and has no default). */
export function promptValues(o: Record<string, unknown>): Partial<PromptOptions> {
  return {
    maxTries: o.maxTries as number | undefined,
    afterTries: o.afterTries as PromptOptions["afterTries"] | undefined,
    idleSuspendS: o.idleSuspend as number | undefined,
  };
}

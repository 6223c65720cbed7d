/**
 * @module
 * The command line's parser and help: each command is a {@linkcode CommandSpec} (its options and what it runs), and
 * {@linkcode parse} turns the arguments into one command and its values, or a {@linkcode UsageError} that says in one
 * line what was wrong. It replaces commander: loading commander and the Node compatibility layer it pulls in
 * (`node:fs`, `node:process`, `node:child_process`, `node:module`) took 57 of the 94 ms of CPU a start of the bundle
 * cost on the host, ~1.6 s under the test bed's emulation, and every suspend cycle starts the program twice.
 *
 * @example
 * ```ts
 * import { type CommandSpec, parse, ProgramSpec } from "./args.ts";
 * const plan: CommandSpec = {
 *   name: "plan",
 *   help: "show the plan",
 *   options: [{ flag: "--json", help: "print it as JSON" }, { flag: "--root", value: "<dir>", help: "", default: "/" }],
 *   run: () => Promise.resolve(0),
 * };
 * const program: ProgramSpec = { name: "cryptsleep", help: "", version: "1", commands: [plan] };
 * const parsed = parse(program, ["plan", "--json"]);
 * console.log(parsed.kind === "run" && parsed.values); // { root: "/", json: true }
 * ```
 */

/** An option of a command: a flag, or a flag that takes the next argument (or `--flag=value`). */
export interface OptionSpec {
  /** The long flag, `--console`. Its value is found under the camel-cased name (`console`, `freezeTimeout`). */
  flag: string;
  /** For an option that takes a value: its placeholder in help and errors, `<tty>`. */
  value?: string;
  /** One sentence for `--help`. */
  help: string;
  /** The value's rule: the parsed value, or a thrown {@linkcode InvalidArgument} saying what to give. */
  parse?: (text: string) => unknown;
  /** The only values accepted. */
  choices?: readonly string[];
  /** The value when the option is not given (none: it is left out). */
  default?: unknown;
  /** Left out of `--help` (the test-only `--root`). */
  hidden?: boolean;
}

/** A command: its name, options and what it runs with the parsed values. */
export interface CommandSpec {
  /** What is typed: `cryptsleep NAME`. */
  name: string;
  /** One line for the command list and its own help. */
  help: string;
  /** Not listed (started by the program itself). */
  hidden?: boolean;
  /** Its options, in help order. */
  options: OptionSpec[];
  /** Runs the command; resolves to the exit code. */
  run(values: Record<string, unknown>): Promise<number>;
}

/** The program: its commands, and what its top-level help says. */
export interface ProgramSpec {
  /** As the help's usage line names it. */
  name: string;
  /** One line under the usage line. */
  help: string;
  /** What `--version` prints. */
  version: string;
  /** In help order. */
  commands: CommandSpec[];
  /** Text after the help (the exit codes). */
  epilog?: string;
}

/** What the arguments ask for. */
export type Parsed =
  | { kind: "run"; command: CommandSpec; values: Record<string, unknown> }
  | { kind: "print"; text: string };

/** Bad arguments: one line saying what was wrong, or the whole help when no command was given. */
export class UsageError extends Error {
  /** `where`: the help to look at (`cryptsleep suspend --help`); `help`: printed instead of a line. */
  constructor(message: string, readonly where: string, readonly help?: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Thrown by an option's `parse`: what to give instead. */
export class InvalidArgument extends Error {
  /** The error's name in traces. */
  override name = "InvalidArgument";
}

const HELP: OptionSpec = { flag: "--help", help: "print this help" };

/** The sleep states `--state` takes (suspend's and doctor's). */
export const STATES = ["mem", "freeze"] as const;

/** The hidden `--root <dir>` of the commands tests run on a recorded tree or a scratch root. */
export function rootOption(help = "read sysfs/proc/etc from this tree instead of /"): OptionSpec {
  return { flag: "--root", value: "<dir>", help, default: "/", hidden: true };
}
const VERSION: OptionSpec = { flag: "--version", help: "print the version" };

/** `--freeze-timeout` → `freezeTimeout`. */
export function keyOf(flag: string): string {
  return flag.replace(/^--/, "").replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The flag as help and errors name it, with its placeholder. */
function named(o: OptionSpec): string {
  return o.value ? `${o.flag} ${o.value}` : o.flag;
}

/** The option's value from its text, by its rule and its choices. */
function valueOf(o: OptionSpec, text: string, where: string): unknown {
  const invalid = (why: string) => new UsageError(`option '${named(o)}' argument '${text}' is invalid. ${why}`, where);
  if (o.choices && !o.choices.includes(text)) throw invalid(`Allowed choices are ${o.choices.join(", ")}.`);
  if (!o.parse) return text;
  try {
    return o.parse(text);
  } catch (err) {
    if (err instanceof InvalidArgument) throw invalid(err.message);
    throw err;
  }
}

/** Parses `args` (without the program's name) against `program`. */
export function parse(program: ProgramSpec, args: readonly string[]): Parsed {
  const [first, ...rest] = args;
  const top = `${program.name} --help`;
  const asks = (...flags: string[]) => rest.some((a) => flags.includes(a));
  if (first === undefined) throw new UsageError("no command given", top, programHelp(program));
  if (first === "-h" || first === "--help") return { kind: "print", text: programHelp(program) };
  if (first === "-V" || first === "--version") return { kind: "print", text: program.version };
  const command = program.commands.find((c) => c.name === first);
  if (!command) {
    // asked for, help wins over whatever else is wrong on the line
    if (asks("-h", "--help")) return { kind: "print", text: programHelp(program) };
    const visible = program.commands.filter((c) => !c.hidden).map((c) => c.name);
    if (first.startsWith("-")) throw new UsageError(`unknown option '${first}'`, top);
    throw new UsageError(`unknown command '${first}'${didYouMean(first, visible)}`, top);
  }
  const where = `${program.name} ${command.name} --help`;
  if (asks("-h", "--help")) return { kind: "print", text: commandHelp(program, command) };
  if (asks("-V", "--version")) return { kind: "print", text: program.version };
  const values: Record<string, unknown> = {};
  for (const o of command.options) if (o.default !== undefined) values[keyOf(o.flag)] = o.default;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    if (!arg.startsWith("-")) throw new UsageError(`unexpected argument '${arg}' for '${command.name}'`, where);
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const o = command.options.find((c) => c.flag === flag);
    if (!o) {
      const flags = command.options.filter((c) => !c.hidden).map((c) => c.flag);
      throw new UsageError(`unknown option '${flag}'${didYouMean(flag, flags)}`, where);
    }
    if (!o.value) {
      if (eq > 0) throw new UsageError(`option '${flag}' takes no value`, where);
      values[keyOf(flag)] = true;
      continue;
    }
    const text = eq > 0 ? arg.slice(eq + 1) : rest[++i];
    if (text === undefined) throw new UsageError(`option '${named(o)}' argument missing`, where);
    values[keyOf(flag)] = valueOf(o, text, where);
  }
  return { kind: "run", command, values };
}

/** " (Did you mean --dry-run?)" for a near miss (a typo of up to a third of the word), else "". */
function didYouMean(typed: string, known: string[]): string {
  const near = known
    .map((k) => ({ k, d: distance(typed, k) }))
    .filter(({ k, d }) => d <= Math.max(1, Math.floor(k.length / 3)))
    .sort((a, b) => a.d - b.d);
  return near.length ? ` (Did you mean ${near[0].k}?)` : "";
}

/** Edit distance, a swap of two neighbours counting as one edit (optimal string alignment). */
function distance(a: string, b: string): number {
  let before: number[] = [];
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        next[j] = Math.min(next[j], before[j - 2] + 1);
      }
    }
    before = row;
    row = next;
  }
  return row[b.length];
}

/** Two columns: the terms, and their texts wrapped to the width beside them. */
function columns(rows: [string, string][], width = 100): string[] {
  const w = Math.max(...rows.map(([term]) => term.length)) + 2;
  return rows.map(([term, text]) => {
    const lines: string[] = [];
    let line = "";
    for (const word of text.split(" ")) {
      if (line && w + 2 + line.length + 1 + word.length > width) {
        lines.push(line);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    lines.push(line);
    return `  ${term.padEnd(w)}${lines.join(`\n  ${" ".repeat(w)}`)}`;
  });
}

/** What help says after an option's text: its choices and default. */
function extras(o: OptionSpec): string {
  const parts = [
    ...(o.choices ? [`choices: ${o.choices.map((c) => JSON.stringify(c)).join(", ")}`] : []),
    ...(o.default !== undefined && o.value ? [`default: ${JSON.stringify(o.default)}`] : []),
  ];
  return parts.length ? ` (${parts.join(", ")})` : "";
}

/** `cryptsleep --help`. */
export function programHelp(program: ProgramSpec): string {
  const commands = program.commands.filter((c) => !c.hidden);
  return [
    `Usage: ${program.name} [options] [command]`,
    "",
    program.help,
    "",
    "Options:",
    ...columns([["-V, --version", VERSION.help], ["-h, --help", HELP.help]]),
    "",
    "Commands:",
    ...columns(commands.map((c) => [c.options.some((o) => !o.hidden) ? `${c.name} [options]` : c.name, c.help])),
    ...(program.epilog ? [program.epilog] : []),
  ].join("\n");
}

/** `cryptsleep COMMAND --help`. */
export function commandHelp(program: ProgramSpec, command: CommandSpec): string {
  const options = command.options.filter((o) => !o.hidden);
  return [
    `Usage: ${program.name} ${command.name} [options]`,
    "",
    command.help,
    "",
    "Options:",
    ...columns([
      ...options.map((o): [string, string] => [named(o), o.help + extras(o)]),
      ["-h, --help", HELP.help],
    ]),
  ].join("\n");
}

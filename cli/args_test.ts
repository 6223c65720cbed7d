import assert from "node:assert/strict";
import {
  commandHelp,
  type CommandSpec,
  InvalidArgument,
  keyOf,
  parse,
  programHelp,
  type ProgramSpec,
  UsageError,
} from "./args.ts";

const even = (text: string) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n % 2) throw new InvalidArgument("give an even number");
  return n;
};

const go: CommandSpec = {
  name: "go",
  help: "go somewhere",
  options: [
    { flag: "--dry-run", help: "change nothing" },
    { flag: "--state", value: "<state>", help: "the state", choices: ["mem", "freeze"], default: "mem" },
    { flag: "--steps", value: "<n>", help: "how many", parse: even },
    { flag: "--root", value: "<dir>", help: "a tree", default: "/", hidden: true },
  ],
  run: () => Promise.resolve(0),
};
const secret: CommandSpec = {
  name: "secret",
  help: "not listed",
  hidden: true,
  options: [],
  run: () => Promise.resolve(0),
};
const PROGRAM: ProgramSpec = {
  name: "tool",
  help: "A tool.",
  version: "9.9",
  commands: [go, secret],
  epilog: "\nEnd.",
};

function usage(args: string[]): UsageError {
  try {
    parse(PROGRAM, args);
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  assert.fail(`${args.join(" ")} parsed`);
}

Deno.test("keyOf camel-cases the long flag, as the values are read", () => {
  assert.equal(keyOf("--freeze-timeout"), "freezeTimeout");
  assert.equal(keyOf("--json"), "json");
  assert.equal(keyOf("--token-without-pin"), "tokenWithoutPin");
});

Deno.test("parse: defaults, flags, values in both forms, a value's rule", () => {
  const p = parse(PROGRAM, ["go", "--dry-run", "--state=freeze", "--steps", "4"]);
  assert.equal(p.kind, "run");
  if (p.kind !== "run") return;
  assert.equal(p.command, go);
  assert.deepEqual(p.values, { state: "freeze", root: "/", dryRun: true, steps: 4 });
  const bare = parse(PROGRAM, ["go"]);
  assert.deepEqual(bare.kind === "run" && bare.values, { state: "mem", root: "/" });
  // a hidden command still runs; a value may start with a dash
  assert.equal(parse(PROGRAM, ["secret"]).kind, "run");
  const dashed = parse(PROGRAM, ["go", "--root", "-odd"]);
  assert.equal(dashed.kind === "run" && dashed.values.root, "-odd");
});

Deno.test("parse: --help and --version print, at the top and after a command", () => {
  assert.deepEqual(parse(PROGRAM, ["--version"]), { kind: "print", text: "9.9" });
  assert.deepEqual(parse(PROGRAM, ["-V"]), { kind: "print", text: "9.9" });
  assert.deepEqual(parse(PROGRAM, ["-h"]), { kind: "print", text: programHelp(PROGRAM) });
  assert.deepEqual(parse(PROGRAM, ["go", "--steps", "3", "--help"]).kind, "print", "help wins over what came before");
  assert.deepEqual(parse(PROGRAM, ["go", "--help"]), { kind: "print", text: commandHelp(PROGRAM, go) });
  assert.deepEqual(parse(PROGRAM, ["go", "--dry-run", "-V"]), { kind: "print", text: "9.9" }, "as commander did");
  assert.deepEqual(parse(PROGRAM, ["frob", "--help"]), { kind: "print", text: programHelp(PROGRAM) });
  assert.deepEqual(parse(PROGRAM, ["--frob", "-h"]), { kind: "print", text: programHelp(PROGRAM) });
});

Deno.test("parse: each kind of bad input is one line naming it and the help to read", () => {
  const cases: [string[], RegExp, string][] = [
    [["frob"], /^unknown command 'frob'$/, "tool --help"],
    [["--frob"], /^unknown option '--frob'$/, "tool --help"],
    [["go", "--frob"], /^unknown option '--frob'$/, "tool go --help"],
    [["go", "--dryrun"], /^unknown option '--dryrun' \(Did you mean --dry-run\?\)$/, "tool go --help"],
    [["go", "--roo"], /^unknown option '--roo'$/, "tool go --help"], // hidden: never suggested
    [["gp"], /^unknown command 'gp' \(Did you mean go\?\)$/, "tool --help"],
    [["og"], /^unknown command 'og' \(Did you mean go\?\)$/, "tool --help"], // a swap is one edit
    [["secrt"], /^unknown command 'secrt'$/, "tool --help"], // hidden
    [["go", "extra"], /^unexpected argument 'extra' for 'go'$/, "tool go --help"],
    [["go", "--dry-run=yes"], /^option '--dry-run' takes no value$/, "tool go --help"],
    [["go", "--steps"], /^option '--steps <n>' argument missing$/, "tool go --help"],
    [["go", "--steps", "3"], /^option '--steps <n>' argument '3' is invalid\. give an even number$/, "tool go --help"],
    [
      ["go", "--state", "deep"],
      /^option '--state <state>' argument 'deep' is invalid\. Allowed choices are mem, freeze\.$/,
      "tool go --help",
    ],
  ];
  for (const [args, message, where] of cases) {
    const err = usage(args);
    assert.match(err.message, message, args.join(" "));
    assert.equal(err.where, where, args.join(" "));
    assert.equal(err.help, undefined);
  }
  const none = usage([]);
  assert.equal(none.help, programHelp(PROGRAM), "no command: the whole help");
});

Deno.test("parse: an error of the value's rule that is not InvalidArgument is not a usage error", () => {
  const broken: CommandSpec = {
    ...go,
    options: [{ flag: "--x", value: "<x>", help: "", parse: () => assert.fail("bug") }],
  };
  assert.throws(() => parse({ ...PROGRAM, commands: [broken] }, ["go", "--x", "1"]), /bug/);
});

Deno.test("help lists what is not hidden, with choices and defaults, and the epilog", () => {
  const top = programHelp(PROGRAM);
  assert.match(top, /^Usage: tool \[options\] \[command\]\n\nA tool\.\n/);
  assert.match(top, /^ {2}go \[options\] +go somewhere$/m);
  assert.ok(!top.includes("secret"));
  assert.ok(top.endsWith("\nEnd."));
  const help = commandHelp(PROGRAM, go);
  assert.match(help, /^Usage: tool go \[options\]$/m);
  assert.match(help, /^ {2}--state <state> +the state \(choices: "mem", "freeze", default: "mem"\)$/m);
  assert.match(help, /^ {2}--dry-run +change nothing$/m);
  assert.match(help, /^ {2}-h, --help +print this help$/m);
  assert.ok(!help.includes("--root"), "--root is hidden");
});

Deno.test("help wraps long texts under their column", () => {
  const long: CommandSpec = { ...go, options: [{ flag: "--a", help: "word ".repeat(40).trim() }] };
  const lines = commandHelp(PROGRAM, long).split("\n").filter((l) => l.includes("word"));
  assert.ok(lines.length > 1);
  for (const l of lines) assert.ok(l.length <= 100, l);
  const column = lines[0].indexOf("word");
  for (const l of lines.slice(1)) assert.equal(l.search(/\S/), column);
});

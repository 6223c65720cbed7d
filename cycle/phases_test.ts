import assert from "node:assert/strict";
import { AGENT_PHASES, OUTER_PHASES, phaseTable, steps } from "./phases.ts";

Deno.test("phases: the README's table is the one generated from the list", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const m = /<!-- phases: [^\n]*-->\n([\s\S]*?)\n<!-- \/phases -->/.exec(readme);
  assert.ok(m, "README.md has the phases block");
  assert.equal(m[1].trim(), phaseTable(), "README's table differs from cycle/phases.ts: paste phaseTable()'s output");
});

Deno.test("phases: the phases in order, then their undos in reverse, then the report", () => {
  assert.deepEqual(steps().map((s) => `${s.number} ${s.name}`), [
    "1 preflight",
    "2 claim",
    "3 own",
    "4 root",
    "5 supervisor",
    "6 hooks",
    "7 watchdog",
    "8 pin",
    "9 agent",
    "10 sync",
    "11 freeze",
    "12 syncfs",
    "13 guard",
    "14 lock",
    "15 sleep",
    "16 restore",
    "17 unlock",
    "18 thaw",
    "19 unpin",
    "20 re-arm",
    "21 post-hooks",
    "22 dismiss",
    "23 unmount",
    "24 leave",
    "25 release",
    "26 report",
  ]);
  // the dry run runs preflight alone: it must be first and the only phase that changes nothing
  assert.deepEqual(OUTER_PHASES.filter((p) => p.changesNothing).map((p) => p.name), ["preflight"]);
  // whatever the agent changes on the machine, the supervisor can see and undo
  for (const p of AGENT_PHASES.filter((p) => p.undo && p.name !== "sleep")) {
    assert.ok(p.undo?.left, `${p.name}'s undo says what is left of it`);
  }
});

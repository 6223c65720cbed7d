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
    "3 root",
    "4 supervisor",
    "5 hooks",
    "6 watchdog",
    "7 pin",
    "8 agent",
    "9 sync",
    "10 freeze",
    "11 syncfs",
    "12 lock",
    "13 sleep",
    "14 restore",
    "15 unlock",
    "16 thaw",
    "17 unpin",
    "18 re-arm",
    "19 post-hooks",
    "20 dismiss",
    "21 unmount",
    "22 release",
    "23 report",
  ]);
  // the dry run runs preflight alone: it must be first and the only phase that changes nothing
  assert.deepEqual(OUTER_PHASES.filter((p) => p.changesNothing).map((p) => p.name), ["preflight"]);
  // whatever the agent changes on the machine, the supervisor can see and undo
  for (const p of AGENT_PHASES.filter((p) => p.undo && p.name !== "sleep")) {
    assert.ok(p.undo?.left, `${p.name}'s undo says what is left of it`);
  }
});

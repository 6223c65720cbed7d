import assert from "node:assert/strict";
import { AGENT_PHASES, OUTER_PHASES, phaseTable, steps } from "./phases.ts";

Deno.test("phases: the README's table is the one generated from the list", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const m = /<!-- phases: [^\n]*-->\n([\s\S]*?)\n<!-- \/phases -->/.exec(readme);
  assert.ok(m, "README.md has the phases block");
  assert.equal(m[1].trim(), phaseTable(), "README's table differs from cycle/phases.ts: paste phaseTable()'s output");
});

Deno.test("phases: the phases in order, then the agent's undos in reverse, then the report", () => {
  assert.deepEqual(steps().map((s) => `${s.number} ${s.name}`), [
    "1 preflight",
    "2 claim",
    "3 hooks",
    "4 ramfs",
    "5 agent",
    "6 sync",
    "7 freeze",
    "8 syncfs",
    "9 lock",
    "10 sleep",
    "11 restore",
    "12 unlock",
    "13 thaw",
    "14 report",
  ]);
  // the dry run runs preflight alone: it must be first and the only phase that changes nothing
  assert.deepEqual(OUTER_PHASES.filter((p) => p.changesNothing).map((p) => p.name), ["preflight"]);
  // whatever the agent changes on the machine, the supervisor can see and undo
  for (const p of AGENT_PHASES.filter((p) => p.undo && p.name !== "sleep")) {
    assert.ok(p.undo?.left, `${p.name}'s undo says what is left of it`);
  }
});

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
    "1 claim",
    "2 nice",
    "3 own",
    "4 spawn",
    "5 preflight",
    "6 root",
    "7 supervisor",
    "8 hooks",
    "9 watchdog",
    "10 sync",
    "11 pin",
    "12 agent",
    "13 freeze",
    "14 syncfs",
    "15 guard",
    "16 modprobe",
    "17 firmware",
    "18 lock",
    "19 sleep",
    "20 restore",
    "21 unlock",
    "22 firmware-back",
    "23 modprobe-back",
    "24 thaw",
    "25 unpin",
    "26 re-arm",
    "27 post-hooks",
    "28 dismiss",
    "29 unmount",
    "30 reap",
    "31 leave",
    "32 nice-back",
    "33 release",
    "34 report",
  ]);
  // the dry run runs preflight alone: it must be the only phase that changes nothing
  assert.deepEqual(OUTER_PHASES.filter((p) => p.changesNothing).map((p) => p.name), ["preflight"]);
  // whatever the agent changes on the machine, the supervisor can see and undo
  for (const p of AGENT_PHASES.filter((p) => p.undo && p.name !== "sleep")) {
    assert.ok(p.undo?.left, `${p.name}'s undo says what is left of it`);
  }
});

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
    "2 own",
    "3 spawn",
    "4 preflight",
    "5 root",
    "6 supervisor",
    "7 hooks",
    "8 watchdog",
    "9 sync",
    "10 pin",
    "11 agent",
    "12 freeze",
    "13 syncfs",
    "14 guard",
    "15 modprobe",
    "16 firmware",
    "17 lock",
    "18 sleep",
    "19 restore",
    "20 unlock",
    "21 firmware-back",
    "22 modprobe-back",
    "23 thaw",
    "24 unpin",
    "25 re-arm",
    "26 post-hooks",
    "27 dismiss",
    "28 unmount",
    "29 reap",
    "30 leave",
    "31 release",
    "32 report",
  ]);
  // the dry run runs preflight alone: it must be the only phase that changes nothing
  assert.deepEqual(OUTER_PHASES.filter((p) => p.changesNothing).map((p) => p.name), ["preflight"]);
  // whatever the agent changes on the machine, the supervisor can see and undo
  for (const p of AGENT_PHASES.filter((p) => p.undo && p.name !== "sleep")) {
    assert.ok(p.undo?.left, `${p.name}'s undo says what is left of it`);
  }
});

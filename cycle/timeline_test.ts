import assert from "node:assert/strict";
import { Timeline } from "./timeline.ts";

Deno.test("timeline: a phase still running is not handed on, so the next process's report can be ok", async () => {
  const outer = new Timeline();
  await outer.phase("preflight", () => Promise.resolve());
  let handed: ReturnType<Timeline["toJSON"]> | undefined;
  // the outer process hands its timeline on from inside its "agent" phase
  await outer.phase("agent", () => {
    handed = outer.toJSON();
    return Promise.resolve();
  });
  assert.deepEqual(handed!.phases.map((p) => p.name), ["preflight"]);
  const agent = new Timeline(handed);
  await agent.phase("sync", () => Promise.resolve());
  const report = agent.toJSON("ok");
  assert.equal(report.ok, true);
  assert.equal(report.outcome, "ok");
  assert.deepEqual(report.phases.map((p) => p.name), ["preflight", "sync"]);
});

Deno.test("timeline: a failed phase or a failed outcome makes the report not ok", async () => {
  const t = new Timeline();
  await t.phase("freeze", () => Promise.reject(new Error("EBUSY"))).catch(() => {});
  assert.equal(t.toJSON("ok").ok, false);
  assert.equal(t.phases[0].error, "EBUSY");
  assert.equal(new Timeline().toJSON("failed").ok, false);
});

Deno.test("timeline: marks keep the latest moment of each name, in the timeline's milliseconds", async () => {
  const timeline = new Timeline();
  assert.equal(timeline.marked("woke"), undefined);
  timeline.mark("woke");
  const first = timeline.marked("woke")!;
  await new Promise((r) => setTimeout(r, 20));
  timeline.mark("woke");
  assert.ok(timeline.marked("woke")! >= first + 15, "the latest kept");
  assert.ok(Math.abs(timeline.elapsed() - timeline.marked("woke")!) < 10);
  assert.deepEqual(Object.keys(timeline.toJSON().facts.marks as object), ["woke"]);
});

import assert from "node:assert/strict";
import { CycleCpu, Timeline } from "./timeline.ts";
import { cpuMsOf } from "../host/proc.ts";

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

Deno.test("timeline: each phase records this process's CPU time in it", async () => {
  const t = new Timeline();
  await t.phase("busy", () => {
    // ~100 ms of CPU, whatever the machine's speed: spin until /proc counts it
    const end = performance.now() + 5_000;
    const start = cpuMsOf(Deno.pid)!;
    while (cpuMsOf(Deno.pid)! - start < 100 && performance.now() < end);
    return Promise.resolve();
  });
  await t.phase("idle", () => new Promise((r) => setTimeout(r, 300)));
  const [busy, idle] = t.toJSON().phases;
  assert.ok(busy.cpuMs !== undefined && busy.cpuMs >= 100, `busy ${busy.cpuMs}`);
  assert.ok(idle.cpuMs !== undefined && idle.cpuMs < 100, `idle ${idle.cpuMs}`);
});

Deno.test("CycleCpu: what ran before the cycle is not counted; its JSON is the report's cpuMs", async () => {
  const spin = (ms: number) => {
    const start = cpuMsOf(Deno.pid)!;
    const end = performance.now() + 10_000;
    while (cpuMsOf(Deno.pid)! - start < ms && performance.now() < end);
  };
  spin(50);
  const fresh = new CycleCpu(false);
  const kept = new CycleCpu(true);
  assert.equal(fresh.start, 0);
  assert.ok(kept.start >= 50, `kept.start ${kept.start}`);
  // a supervisor: a child that has used 300 ms of CPU before it is taken, counted from there on
  const spinner = "const f = () => Deno.readTextFileSync('/proc/self/stat').split(') ')[1].split(' ');" +
    "while ((+f()[11] + +f()[12]) * 10 < 300); console.log('spun'); await new Promise((r) => setTimeout(r, 60_000));";
  const child = new Deno.Command(Deno.execPath(), { args: ["eval", spinner], stdout: "piped" }).spawn();
  try {
    await child.stdout.getReader().read();
    kept.supervisedBy(child.pid, true);
    fresh.supervisedBy(child.pid, false);
    spin(50);
    kept.atSleep();
    fresh.atSleep();
    kept.atEnd();
  } finally {
    child.kill();
    await child.status;
  }
  assert.ok(kept.supervisorStart! >= 300, `supervisorStart ${kept.supervisorStart}`);
  assert.ok(kept.toSleep!.supervisor! < 100, `ahead: only the cycle's ${kept.toSleep!.supervisor}`);
  assert.ok(fresh.toSleep!.supervisor! >= 200, `fresh: all of it ${fresh.toSleep!.supervisor}`);
  assert.ok(fresh.toSleep!.self! >= kept.toSleep!.self! + 50, `${fresh.toSleep!.self} ${kept.toSleep!.self}`);
  const json = JSON.parse(JSON.stringify({ cpuMs: kept })).cpuMs;
  assert.deepEqual(Object.keys(json).sort(), ["cycle", "start", "supervisorStart", "toSleep"]);
  assert.equal(json.cycle, kept.cycle);
});

import assert from "node:assert/strict";
import { messages } from "./errors.ts";
import { leftOf, type Phase, runPhases, undoPhases } from "./runner.ts";
import { Timeline } from "./timeline.ts";

/** A fake phase that logs what runs; `fail` names the step that throws. */
function phase(name: string, log: string[], fail = "", undoName?: string): Phase<string[], string> {
  return {
    name,
    run: () => {
      log.push(`run ${name}`);
      if (fail === "run") return Promise.reject(new Error(`${name} failed`));
      return Promise.resolve(`${name} result`);
    },
    undo: undoName === undefined ? undefined : {
      name: undoName,
      run: (_ctx, done) => {
        log.push(`${undoName} (${done ?? "by looking"})`);
        if (fail === "undo") return Promise.reject(new Error(`${undoName} failed`));
        return Promise.resolve();
      },
      left: () => Promise.resolve([`${name} still in force`]),
    },
  };
}

Deno.test("runner: phases in order, then every undo in reverse with what its phase returned", async () => {
  const log: string[] = [];
  const timeline = new Timeline();
  await runPhases(
    [phase("a", log, "", "undo-a"), phase("b", log), phase("c", log, "", "undo-c")],
    log,
    timeline,
  );
  assert.deepEqual(log, ["run a", "run b", "run c", "undo-c (c result)", "undo-a (a result)"]);
  assert.deepEqual(timeline.phases.map((p) => [p.name, p.ok]), [
    ["a", true],
    ["b", true],
    ["c", true],
    ["undo-c", true],
    ["undo-a", true],
  ]);
});

Deno.test("runner: a failure stops the list and unwinds what ran, the failed phase's undo going by what it sees", async () => {
  const log: string[] = [];
  const timeline = new Timeline();
  const err = await runPhases(
    [phase("a", log, "", "undo-a"), phase("b", log, "run", "undo-b"), phase("c", log, "", "undo-c")],
    log,
    timeline,
  ).catch((e) => e);
  assert.ok(err instanceof Error, "the failure is thrown");
  assert.deepEqual(messages(err), ["b failed"]);
  assert.deepEqual(log, ["run a", "run b", "undo-b (by looking)", "undo-a (a result)"]);
  assert.equal(timeline.phases.find((p) => p.name === "b")?.ok, false);
});

Deno.test("runner: a failing undo does not stop the others; every error is thrown, oldest first", async () => {
  const log: string[] = [];
  const err = await runPhases(
    [phase("a", log, "", "undo-a"), phase("b", log, "undo", "undo-b"), phase("c", log, "run")],
    log,
    new Timeline(),
  ).catch((e) => e);
  assert.deepEqual(log, ["run a", "run b", "run c", "undo-b (b result)", "undo-a (a result)"]);
  assert.deepEqual(messages(err), ["c failed", "undo-b failed"]);
});

Deno.test("runner: undoPhases undoes the whole list in reverse by looking, through a failing undo", async () => {
  const log: string[] = [];
  const timeline = new Timeline();
  const phases = [phase("a", log, "", "undo-a"), phase("b", log), phase("c", log, "undo", "undo-c")];
  const err = await undoPhases(phases, log, timeline).catch((e) => e);
  assert.deepEqual(log, ["undo-c (by looking)", "undo-a (by looking)"]);
  assert.deepEqual(messages(err), ["undo-c failed"]);
  assert.deepEqual(timeline.phases.map((p) => [p.name, p.ok]), [["undo-c", false], ["undo-a", true]]);
  assert.deepEqual(await leftOf(phases, log), ["a still in force", "c still in force"]);
});

Deno.test("runner: a checkpoint that throws stops the list before the next phase and unwinds what ran", async () => {
  const log: string[] = [];
  const phase = (name: string): Phase<string[]> => ({
    name,
    run: (l) => Promise.resolve(void l.push(name)),
    undo: { name: `un${name}`, run: (l) => Promise.resolve(void l.push(`un${name}`)) },
  });
  let stop = false;
  const err = await runPhases([phase("a"), phase("b"), phase("c")], log, new Timeline(), {
    checkpoint: (next) => {
      if (stop) throw new Error(`stopped before ${next}`);
      if (next === "b") stop = true; // a signal arrives while b runs
    },
  }).catch((e) => e);
  assert.equal(err?.message, "stopped before c");
  assert.deepEqual(log, ["a", "b", "unb", "una"]);
});

// Real kernel tests of the stateless freezer questions, in a throw-away cgroup sub-hierarchy (see testing.ts).
import assert from "node:assert/strict";
import { join } from "node:path";
import { FROZEN_NAME } from "./cgroup2.ts";
import { listFreezable, thawLeftovers } from "./leftovers.ts";
import { Bed, frozenFlag, ignore, within, write } from "./testing.ts";

Deno.test({
  name: "listFreezable lists what would freeze; thawLeftovers finds frozen cgroups, thaws them only when asked",
  ignore,
  async fn() {
    await using bed = new Bed();
    const a = await bed.cgroup("a.slice");
    const b = await bed.cgroup("b.slice");
    await bed.cgroup("cryptsleep");
    await bed.spawn("exec sleep 1000", a);
    const rootSleeper = await bed.spawn("exec sleep 1000", bed.root);

    const freezable = await listFreezable({ cgroupRoot: bed.root, own: "cryptsleep" });
    assert.deepEqual(freezable.cgroups, [a, b]);
    assert.deepEqual(freezable.rootPids, [rootSleeper]);

    // what a dead agent leaves: a frozen cgroup, and a root process frozen in cryptsleep-frozen
    const frozenDir = await bed.cgroup(FROZEN_NAME);
    await write(join(a, "cgroup.freeze"), "1");
    await write(join(frozenDir, "cgroup.freeze"), "1");
    await write(join(frozenDir, "cgroup.procs"), String(rootSleeper));
    assert.ok(await within(30_000, async () => (await frozenFlag(a)) === "1"), `${a} frozen`);

    const seen = await thawLeftovers({ cgroupRoot: bed.root, own: "cryptsleep", dryRun: true });
    assert.deepEqual(seen, [a, frozenDir]);
    assert.equal(await frozenFlag(a), "1", "a dry run thawed");

    assert.deepEqual(await thawLeftovers({ cgroupRoot: bed.root, own: "cryptsleep", dryRun: false }), [a, frozenDir]);
    assert.equal(await frozenFlag(a), "0");
    await assert.rejects(Deno.stat(frozenDir), Deno.errors.NotFound);
    const back = (await Deno.readTextFile(join(bed.root, "cgroup.procs"))).split("\n").map(Number);
    assert.ok(back.includes(rootSleeper), `${back}`);
    assert.deepEqual(await thawLeftovers({ cgroupRoot: bed.root, own: "cryptsleep", dryRun: false }), []);
  },
});

// Real kernel freezer tests: a throw-away sub-hierarchy of the host's cgroup2 mount plays the cgroup root.
// Needs root and a cgroup2 mount (here /sys/fs/cgroup/unified, hybrid layout).
import assert from "node:assert/strict";
import { join } from "node:path";
import { readStat } from "../host/proc.ts";
import { FROZEN_NAME, procCgroup } from "./cgroup2.ts";
import { freezeUserspace } from "./freezer.ts";
import { joinOwnCgroup } from "./own.ts";
import {
  Bed,
  CAP_SYS_RESOURCE,
  cpuTicks,
  frozenFlag,
  hasCap,
  ignore,
  mount,
  sleep,
  waitState,
  within,
  write,
} from "./testing.ts";

Deno.test({
  name: "freezeUserspace freezes every top-level cgroup and root processes, not the own cgroup; thaw undoes all",
  ignore,
  async fn() {
    await using bed = new Bed();
    const a = await bed.cgroup("a.slice/inner.scope");
    const b = await bed.cgroup("b.slice");
    const sleeper = await bed.spawn("exec sleep 1000", a);
    const busy = await bed.spawn("while :; do :; done", b);
    // Directly in the (test) root: a busy loop, and a loop that keeps forking.
    const rootBusy = await bed.spawn("while :; do :; done", bed.root);
    const rootForker = await bed.spawn("while :; do sleep 0.01; done", bed.root);
    // The own cgroup's process: a counter that must keep running. It appends a byte per tick, so its count (the
    // file's size) is never read half-written as `echo > file` can be (truncated, then written).
    const counterFile = join(bed.tmp, "count");
    const counter = await bed.spawn(`while :; do printf . >> ${counterFile}; sleep 0.01; done`);
    const count = async () => (await Deno.stat(counterFile).catch(() => ({ size: 0 }))).size;
    const counterOrigin = await procCgroup(counter);

    const own = await joinOwnCgroup({ cgroupRoot: bed.root, pids: [counter] });
    assert.equal(own.path, join(bed.root, "cryptsleep"));
    assert.ok((await Deno.readTextFile(join(own.path, "cgroup.procs"))).split("\n").includes(String(counter)));
    if (hasCap(CAP_SYS_RESOURCE)) {
      assert.equal((await Deno.readTextFile(`/proc/${counter}/oom_score_adj`)).trim(), "-1000");
      assert.deepEqual(own.oomProtected, [counter]);
    } else {
      // Lowering oom_score_adj needs CAP_SYS_RESOURCE (this sandbox drops it): reported, not hidden.
      assert.deepEqual(own.oomProtected, []);
      assert.match(own.warnings.join("\n"), /oom_score_adj: EACCES/);
    }
    const controllers = (await Deno.readTextFile(join(bed.root, "cgroup.controllers"))).split(/\s+/);
    if (controllers.includes("memory")) {
      // Enabling +memory in a non-root cgroup with processes fails (EBUSY): then it must say so.
      if (own.swapDisabled) {
        assert.equal((await Deno.readTextFile(join(own.path, "memory.swap.max"))).trim(), "0");
      } else assert.match(own.swapNote, /memory|swap/);
    } else {
      assert.equal(own.swapDisabled, false);
      assert.match(own.swapNote, /memory controller not available/);
    }
    assert.ok(own.swapNote.length > 0);

    const frozen = await freezeUserspace({ cgroupRoot: bed.root, own: own.path, timeoutMs: 30_000 });
    try {
      assert.deepEqual(frozen.cgroups, [join(bed.root, "a.slice"), join(bed.root, "b.slice")]);
      const frozenDir = join(bed.root, FROZEN_NAME);
      assert.ok(frozen.movedPids.includes(rootBusy) && frozen.movedPids.includes(rootForker), `${frozen.movedPids}`);
      for (const dir of [join(bed.root, "a.slice"), a, b, frozenDir]) assert.equal(await frozenFlag(dir), "1", dir);
      assert.equal(await frozenFlag(own.path), "0");
      // Nothing user-owned is left running in the root.
      const left = (await Deno.readTextFile(join(bed.root, "cgroup.procs"))).split("\n").filter(Boolean);
      assert.deepEqual(left, []);
      // Frozen processes do not get CPU; the own counter keeps counting.
      const busyBefore = await cpuTicks(busy);
      const rootBefore = await cpuTicks(rootBusy);
      const countBefore = await count();
      // The counter must tick on (a loaded CI machine may take a while: up to 30 s); the frozen loops meanwhile not.
      assert.ok(await within(30_000, async () => (await count()) > countBefore + 3), "own counter stopped");
      await sleep(300);
      assert.equal(await cpuTicks(busy), busyBefore, "busy loop ran while frozen");
      assert.equal(await cpuTicks(rootBusy), rootBefore, "root busy loop ran while frozen");
      for (const pid of [sleeper, busy, rootBusy]) assert.equal(readStat(`/proc/${pid}/stat`)?.state, "S");
    } finally {
      await frozen.thaw();
    }
    await frozen.thaw(); // idempotent

    for (const dir of [join(bed.root, "a.slice"), b]) assert.equal(await frozenFlag(dir), "0");
    assert.equal((await Deno.readTextFile(join(bed.root, "a.slice", "cgroup.freeze"))).trim(), "0");
    await assert.rejects(Deno.stat(join(bed.root, FROZEN_NAME)), Deno.errors.NotFound);
    const back = (await Deno.readTextFile(join(bed.root, "cgroup.procs"))).split("\n").map(Number);
    assert.ok(back.includes(rootBusy) && back.includes(rootForker), `${back}`);
    const busyAfter = await cpuTicks(busy);
    assert.ok(
      await within(30_000, async () => (await cpuTicks(busy)) > busyAfter),
      "busy loop still stopped after thaw",
    );

    await own.leave();
    await own[Symbol.asyncDispose](); // idempotent
    await assert.rejects(Deno.stat(own.path), Deno.errors.NotFound);
    assert.equal(await procCgroup(counter), counterOrigin);
    assert.equal((await Deno.readTextFile(`/proc/${counter}/oom_score_adj`)).trim(), "0");
  },
});

Deno.test({
  name: "freezeUserspace refuses to freeze the cgroup of the calling process",
  ignore,
  async fn() {
    await using bed = new Bed();
    const own = await bed.cgroup("cryptsleep");
    const x = await bed.cgroup("x.slice");
    const self = (await procCgroup(Deno.pid))!;
    const sleeper = await bed.spawn("exec sleep 1000", x);
    await waitState(sleeper, "S", "sleep");
    // This test process joins x.slice, which freezeUserspace would freeze: it must refuse before touching it.
    await write(join(x, "cgroup.procs"), String(Deno.pid));
    try {
      const err = await freezeUserspace({ cgroupRoot: bed.root, own, timeoutMs: 100 }).then(() => null, (e) => e);
      assert.ok(err instanceof Error);
      assert.match(err.message, /would be frozen: join/);
      assert.equal((await Deno.readTextFile(join(x, "cgroup.freeze"))).trim(), "0");
      assert.equal(readStat(`/proc/${sleeper}/stat`)?.state, "S");
    } finally {
      await write(join(mount!, self, "cgroup.procs"), String(Deno.pid));
    }
    assert.equal(await procCgroup(Deno.pid), self);
  },
});

// Real kernel freezer tests: a throw-away sub-hierarchy of the host's cgroup2 mount plays the cgroup root.
// Needs root and a cgroup2 mount (here /sys/fs/cgroup/unified, hybrid layout).
import assert from "node:assert/strict";
import { join } from "node:path";
import { readStat } from "../host/proc.ts";
import { freezeUserspace } from "./freezer.ts";
import { fuseWaitIn } from "./fuse.ts";
import { FreezeTimeoutError } from "./refusers.ts";
import { Bed, frozenFlag, ignore, mount, waitState, within } from "./testing.ts";

// A real refuser: a process blocked in a FUSE request that its (never answering) daemon will not complete
// sits in TASK_KILLABLE, which the cgroup freezer cannot interrupt.
const fuseOk = !ignore && (await Deno.readTextFile("/proc/filesystems")).includes("\tfuse\n") &&
  (await Deno.stat("/dev/fuse").then(() => true, () => false));

Deno.test({
  name: "freezeUserspace times out on a process stuck in FUSE, thaws everything and names it",
  ignore: !fuseOk,
  async fn() {
    await using bed = new Bed();
    const mnt = join(bed.tmp, "fuse");
    await Deno.mkdir(mnt);
    // The holder keeps /dev/fuse open without ever answering INIT; it stays outside the frozen tree.
    const holder = new Deno.Command("sh", {
      args: [
        "-c",
        `exec 3<>/dev/fuse && mount -i -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 cstest ${mnt} && exec sleep 1000`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    try {
      assert.ok(
        await within(30_000, async () => (await Deno.readTextFile("/proc/self/mountinfo")).includes(` ${mnt} `)),
        "the FUSE mount",
      );
      const c = await bed.cgroup("c.slice");
      const d = await bed.cgroup("d.slice");
      const stuck = await bed.spawn(`exec stat ${mnt}/anything`, c);
      const fine = await bed.spawn("exec sleep 1000", d);
      // waiting on the server itself, not a moment of D on the way there (exec's page-in on a loaded host)
      assert.ok(await within(30_000, () => fuseWaitIn([c])), "stat waiting on the FUSE server");
      await waitState(fine, "S", "sleep");
      assert.equal(readStat(`/proc/${stuck}/stat`)?.state, "D");
      const own = await bed.cgroup("cryptsleep");

      const t0 = performance.now();
      const err = await freezeUserspace({ cgroupRoot: bed.root, own, timeoutMs: 300 }).then(
        () => null,
        (e) => e as Error,
      );
      const took = performance.now() - t0;
      assert.ok(err instanceof FreezeTimeoutError, String(err));
      assert.ok(took >= 300 && took < 3000, `took ${took} ms`);
      assert.deepEqual(err.refusers.map((r) => r.pid), [stuck]);
      const r = err.refusers[0];
      assert.equal(r.comm, "stat");
      assert.equal(r.cgroup, c.slice(mount!.length));
      assert.equal(r.state, "D");
      assert.match(r.wchan + (r.stack ?? ""), /fuse/);
      assert.match(err.message, new RegExp(`pid ${stuck} \\(stat\\)`));
      assert.match(err.message, /kill -9/);
      assert.deepEqual(err.thawErrors, []);
      // Thawed again: the healthy cgroup runs, nothing is left frozen.
      for (const dir of [c, d]) {
        assert.equal((await Deno.readTextFile(join(dir, "cgroup.freeze"))).trim(), "0");
        assert.equal(await frozenFlag(dir), "0");
      }
      // thawed, it runs a moment (R) on its way back to sleep: waited for, not caught in between
      await waitState(fine, "S");
      assert.equal(readStat(`/proc/${fine}/stat`)?.state, "S");
    } finally {
      holder.kill("SIGKILL"); // closing /dev/fuse aborts the connection: the stuck stat returns ENOTCONN
      await holder.status;
      await new Deno.Command("umount", { args: ["-l", mnt] }).output();
    }
  },
});

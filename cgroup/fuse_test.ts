// FUSE servers are frozen last: real /dev/fuse connections in a throw-away cgroup sub-hierarchy (see testing.ts).
// The servers here mount and never answer (nothing but the held-up client touches their mounts); a server that
// answers is bindfs on the bed (tests/vm/fuse_test.ts).
import assert from "node:assert/strict";
import { join } from "node:path";
import { cgroupMark, FROZEN_NAME, markCgroup } from "./cgroup2.ts";
import { freezeUserspace } from "./freezer.ts";
import { fuseServers, fuseWaitIn, splitForFuse } from "./fuse.ts";
import { thawLeftovers } from "./leftovers.ts";
import { FreezeTimeoutError } from "./refusers.ts";
import { Bed, frozenFlag, ignore, within, write } from "./testing.ts";

const fuseOk = !ignore && (await Deno.readTextFile("/proc/filesystems")).includes("\tfuse\n") &&
  (await Deno.stat("/dev/fuse").then(() => true, () => false));

/** A FUSE server that mounts at `mnt` and never answers; `child` starts a helper first. */
const server = (mnt: string, child = "") =>
  `exec 3<>/dev/fuse && mount -i -t fuse -o fd=3,rootmode=40000,user_id=0,group_id=0 cstest ${mnt} && ` +
  `{ ${child}exec sleep 1000; }`;

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  if (!await within(30_000, check)) throw new Error(`not within 30 s: ${what}`);
}

const mounted = (...mnts: string[]) =>
  until(`${mnts} mounted`, async () => {
    const text = await Deno.readTextFile("/proc/self/mountinfo");
    return mnts.every((m) => text.includes(` ${m} `));
  });

const freezeOf = async (dir: string) => (await Deno.readTextFile(join(dir, "cgroup.freeze"))).trim();

Deno.test({
  name: "splitForFuse: cgroups without a server whole in the first wave, the ones holding one split, then last",
  ignore,
  async fn() {
    await using bed = new Bed();
    const [a, b] = [join(bed.root, "a.slice"), join(bed.root, "b.slice")];
    for (const d of ["a.slice/x.scope", "a.slice/y.slice/z.scope", "a.slice/y.slice/w.scope", "b.slice/v.scope"]) {
      await bed.cgroup(d);
    }
    assert.deepEqual(splitForFuse([a, b], []), { first: [a, b], last: [], split: [] });
    assert.deepEqual(splitForFuse([a, b], [join(a, "y.slice/z.scope")]), {
      first: [join(a, "x.scope"), join(a, "y.slice/w.scope"), b],
      last: [a],
      split: [a, join(a, "y.slice"), join(a, "y.slice/z.scope")],
    });
    // a server directly in a top-level cgroup: its children go first, it last
    assert.deepEqual(splitForFuse([a, b], [b]), { first: [a, join(b, "v.scope")], last: [b], split: [b] });
  },
});

Deno.test({
  name: "freeze in waves: FUSE servers (and their root-cgroup children) only once everything else is frozen",
  ignore: !fuseOk,
  async fn() {
    await using bed = new Bed();
    const [m1, m2] = [join(bed.tmp, "m1"), join(bed.tmp, "m2")];
    await Deno.mkdir(m1);
    await Deno.mkdir(m2);
    const a = join(bed.root, "a.slice");
    const [serverScope, client] = [await bed.cgroup("a.slice/server.scope"), await bed.cgroup("a.slice/client.scope")];
    const inScope = await bed.spawn(server(m1), serverScope);
    await bed.spawn("while :; do :; done", client);
    const b = await bed.cgroup("b.slice");
    await bed.spawn("exec sleep 1000", b);
    // in the root cgroup: a server with a helper child that holds no /dev/fuse (sshfs's ssh), and a plain process
    const inRoot = await bed.spawn(server(m2, "(exec 3>&- sleep 1000) & "), bed.root);
    const plain = await bed.spawn("exec sleep 1000", bed.root);
    // a unit someone froze, bearing a stale mark (a cycle that died between its thaw and the unmark)
    const theirs = await bed.cgroup("a.slice/theirs.scope");
    await bed.spawn("exec sleep 1000", theirs);
    await write(join(theirs, "cgroup.freeze"), "1");
    markCgroup(theirs, "frozen");
    const own = await bed.cgroup("cryptsleep");
    const frozenDir = join(bed.root, FROZEN_NAME);
    try {
      await mounted(m1, m2);
      // the helper once it runs sleep (before its exec the forked shell still holds fd 3; mount is a child too)
      let helper = 0;
      await until("the helper", async () => {
        const kids = (await Deno.readTextFile(`/proc/${inRoot}/task/${inRoot}/children`)).trim().split(" ");
        for (const kid of kids.filter(Boolean).map(Number)) {
          const comm = await Deno.readTextFile(`/proc/${kid}/comm`).catch(() => "");
          if (comm.trim() === "sleep") helper = kid;
        }
        return helper !== 0;
      });
      const servers = fuseServers();
      assert.ok(servers.includes(inScope) && servers.includes(inRoot), `${servers}`);
      assert.ok(!servers.includes(helper), "the helper holds no /dev/fuse");

      let between = false;
      const frozen = await freezeUserspace({
        cgroupRoot: bed.root,
        own,
        timeoutMs: 60_000, // generous: the order is checked, not the speed (a loaded host)
        fuseOrder: "waves",
        betweenWaves: async () => {
          between = true;
          assert.equal(await frozenFlag(client), "1", "the client is frozen before the servers");
          assert.equal(await frozenFlag(serverScope), "0", "the server still runs");
          const inRootCgroup = (await Deno.readTextFile(join(bed.root, "cgroup.procs"))).split("\n").map(Number);
          assert.ok(inRootCgroup.includes(inRoot) && inRootCgroup.includes(helper), "root servers not moved yet");
          assert.equal(cgroupMark(a), "split");
          assert.equal(cgroupMark(client), "frozen");
          // dead here, this is what the undo by looking must find
          assert.deepEqual(await thawLeftovers({ cgroupRoot: bed.root, own: "cryptsleep", dryRun: true }), [
            client,
            b,
            frozenDir,
          ]);
        },
      });
      try {
        assert.ok(between, "two waves");
        assert.deepEqual(frozen.alreadyFrozen, [theirs]);
        assert.equal(cgroupMark(theirs), null, "the stale mark on someone else's frozen unit is gone");
        assert.deepEqual(frozen.fuse?.lastWave, [a, frozenDir]);
        assert.deepEqual(frozen.cgroups, [client, b, a], "first wave first, then the server's");
        for (const pid of [inRoot, helper, plain]) assert.ok(frozen.movedPids.includes(pid), `${pid} moved`);
        assert.ok(frozen.movedPids.indexOf(plain) < frozen.movedPids.indexOf(inRoot), "the plain process first");
        for (const dir of [a, serverScope, client, b, frozenDir]) assert.equal(await frozenFlag(dir), "1", dir);
      } finally {
        await frozen.thaw();
      }
      for (const dir of [a, client, b]) assert.equal(await freezeOf(dir), "0", dir);
      assert.equal(await freezeOf(theirs), "1", "someone else's unit stays frozen");
      await write(join(theirs, "cgroup.freeze"), "0");
      assert.equal(await frozenFlag(client), "0");
      assert.deepEqual([cgroupMark(a), cgroupMark(client)], [null, null], "the thaw took the marks off");
      assert.deepEqual(await thawLeftovers({ cgroupRoot: bed.root, own: "cryptsleep", dryRun: true }), []);

      // a unit someone else froze (systemctl freeze) is not the cycle's to thaw; one the cycle marked is
      await write(join(client, "cgroup.freeze"), "1");
      assert.deepEqual(await thawLeftovers({ cgroupRoot: bed.root, own: "cryptsleep", dryRun: false }), []);
      assert.equal(await freezeOf(client), "1");
      markCgroup(a, "split");
      markCgroup(client, "frozen");
      assert.deepEqual(await thawLeftovers({ cgroupRoot: bed.root, own: "cryptsleep", dryRun: false }), [client]);
      assert.equal(await freezeOf(client), "0");
      assert.deepEqual([cgroupMark(a), cgroupMark(client)], [null, null]);
    } finally {
      await write(join(bed.root, "cgroup.kill"), "1").catch(() => {});
      for (const m of [m1, m2]) await new Deno.Command("umount", { args: ["-l", m] }).output();
    }
  },
});

Deno.test({
  name: "a FUSE request holds the freeze up: thawed, frozen again in waves; still held up, it times out, all thawed",
  ignore: !fuseOk,
  async fn() {
    await using bed = new Bed();
    const mnt = join(bed.tmp, "m");
    await Deno.mkdir(mnt);
    const a = join(bed.root, "a.slice");
    const serverScope = await bed.cgroup("a.slice/server.scope");
    const client = await bed.cgroup("a.slice/client.scope");
    await bed.spawn(server(mnt), serverScope);
    const own = await bed.cgroup("cryptsleep");
    try {
      await mounted(mnt);
      // this server never answers: its client stays held up whatever the order
      const stuck = await bed.spawn(`exec stat ${mnt}/anything`, client);
      // waits on the server itself, not a moment of D on the way there (exec's page-in on a loaded host)
      await until("stat waiting on the FUSE server", () => fuseWaitIn([client]));
      const err = await freezeUserspace({ cgroupRoot: bed.root, own, timeoutMs: 3000, fuseProbeMs: 200 }).then(
        () => null,
        (e) => e,
      );
      assert.ok(err instanceof FreezeTimeoutError, String(err));
      assert.match(err.message, /frozen again in two waves, FUSE servers last/);
      assert.deepEqual(err.refusers.map((r) => r.pid), [stuck]);
      for (const dir of [a, client, serverScope]) assert.equal(await freezeOf(dir), "0", dir);
      assert.deepEqual([cgroupMark(a), cgroupMark(client)], [null, null], "no mark left behind");
    } finally {
      await write(join(bed.root, "cgroup.kill"), "1").catch(() => {});
      await new Deno.Command("umount", { args: ["-l", mnt] }).output();
    }
  },
});

// The claim on the host: a real flock, a throw-away cgroup sub-hierarchy as the cgroup root, a real tmpfs mount.
import assert from "node:assert/strict";
import { join } from "node:path";
import { Bed, frozenFlag, ignore, within, write } from "../cgroup/testing.ts";
import { mountsUnder } from "../chroot/root.ts";
import { mount, umount2 } from "../ffi/libc.ts";
import { claim } from "./claim.ts";
import { RefusedError } from "./errors.ts";

Deno.test("claim: one cycle at a time; the second is refused naming the first; released, it can be taken again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cryptsleep-claim-" });
  try {
    const opts = { lockPath: join(dir, "lock"), ramfsDir: join(dir, "root"), cgroupRoot: join(dir, "no-cgroup") };
    const first = await claim(opts);
    const err = await claim(opts).catch((e) => e);
    assert.ok(err instanceof RefusedError, `refused: ${err}`);
    assert.match(err.reasons[0], new RegExp(`another cryptsleep suspend is running \\(pid ${Deno.pid} holds`));
    first[Symbol.dispose]();
    const again = await claim(opts);
    assert.deepEqual(again.cleaned, []);
    again[Symbol.dispose]();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("claim: a request made while a cycle ran is merged into it once that cycle ends; a later one runs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cryptsleep-claim-" });
  try {
    const base = { lockPath: join(dir, "lock"), ramfsDir: join(dir, "root"), cgroupRoot: join(dir, "no-cgroup") };
    // the first cycle since boot: the lock file is made now, which is no cycle ending
    const first = await claim({ ...base, requestedAt: Date.now() - 1000 });
    const requestedAt = Date.now(); // the second request, while the first cycle runs
    await new Promise((r) => setTimeout(r, 20));
    first[Symbol.dispose]();
    const err = await claim({ ...base, requestedAt }).catch((e) => e);
    assert.ok(err instanceof RefusedError, `merged: ${err}`);
    assert.match(err.reasons[0], /after this request was made .*: merged into it, nothing to do/);
    await new Promise((r) => setTimeout(r, 20));
    const later = await claim({ ...base, requestedAt: Date.now() });
    later[Symbol.dispose]();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "claim: a crashed run's ramfs, own cgroup and frozen processes are cleaned; a live agent is refused",
  ignore,
  fn: async () => {
    await using bed = new Bed();
    const dir = await Deno.makeTempDir({ prefix: "cryptsleep-claim-" });
    const ramfsDir = join(dir, "root");
    await Deno.mkdir(ramfsDir);
    mount("tmpfs", ramfsDir, "tmpfs", 0);
    try {
      const opts = { lockPath: join(dir, "lock"), ramfsDir, cgroupRoot: bed.root };
      const own = await bed.cgroup("cryptsleep");
      const frozen = await bed.cgroup("cryptsleep-frozen");
      await write(join(frozen, "cgroup.freeze"), "1");
      const sleeper = await bed.spawn("exec sleep 1000", frozen);

      // a process in the tool's own cgroup chrooted into the ramfs is a live agent: refused, nothing touched
      await Deno.copyFile("/bin/busybox", join(ramfsDir, "busybox"));
      await Deno.chmod(join(ramfsDir, "busybox"), 0o755);
      const agent = await bed.spawn(`exec chroot ${ramfsDir} /busybox sleep 1000`, own);
      const chrooted = () => Deno.readLink(`/proc/${agent}/root`).then((r) => r === ramfsDir, () => false);
      assert.ok(await within(30_000, chrooted), "the agent chrooted");
      const err = await claim(opts).then((held) => held[Symbol.dispose](), (e) => e);
      assert.ok(err instanceof RefusedError, `refused: ${err}`);
      assert.match(err.reasons.join("\n"), new RegExp(`pids ${agent} are in it, chrooted into ${ramfsDir}`));
      assert.deepEqual(mountsUnder(ramfsDir), [ramfsDir], "the ramfs is left mounted");
      assert.equal(await frozenFlag(frozen), "1", "the frozen cgroup is left alone");
      await write(join(bed.root, "cgroup.procs"), String(agent));

      // someone else's process there (not chrooted): left, and said; the rest of the crashed run is cleaned
      const other = await bed.spawn("exec sleep 1000", own);
      const held = await claim(opts);
      assert.deepEqual(held.kept, [`cgroup ${own} holds pids ${other}, not cryptsleep's: they stay unfrozen`]);
      assert.equal(held.cleaned.length, 2, held.cleaned.join("\n"));
      assert.deepEqual(mountsUnder(ramfsDir), [], "the crashed run's ramfs is unmounted");
      assert.ok(!(await Deno.stat(frozen).then(() => true, () => false)), "cryptsleep-frozen is removed");
      const procs = (await Deno.readTextFile(join(bed.root, "cgroup.procs"))).split("\n");
      assert.ok(procs.includes(String(sleeper)), "the frozen process is back in the root, thawed");
      held[Symbol.dispose]();

      // once it is empty, the own cgroup a crashed run left is removed
      await write(join(bed.root, "cgroup.procs"), String(other));
      const again = await claim(opts);
      assert.deepEqual(again.cleaned, [`cgroup ${own} exists`]);
      assert.ok(!(await Deno.stat(own).then(() => true, () => false)), "the empty own cgroup is removed");
      again[Symbol.dispose]();
    } finally {
      for (const m of mountsUnder(ramfsDir)) umount2(m);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

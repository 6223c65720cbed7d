// Real kernel freezer tests: a throw-away sub-hierarchy of the host's cgroup2 mount plays the cgroup root.
// Needs root and a cgroup2 mount (here /sys/fs/cgroup/unified, hybrid layout).
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  findCgroup2Mount,
  FreezeTimeoutError,
  freezeUserspace,
  FROZEN_NAME,
  joinOwnCgroup,
  procCgroup,
  readStat,
  resolveCgroup2,
} from "./freeze.ts";

const mount = await findCgroup2Mount();
const ignore = mount === null || Deno.uid() !== 0;

async function write(path: string, value: string) {
  await Deno.writeTextFile(path, value, { create: false });
}

async function frozenFlag(dir: string): Promise<string> {
  return /^frozen (\d)$/m.exec(await Deno.readTextFile(join(dir, "cgroup.events")))?.[1] ?? "?";
}

/** utime+stime in clock ticks. */
async function cpuTicks(pid: number): Promise<number> {
  const text = await Deno.readTextFile(`/proc/${pid}/stat`);
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return Number(rest[11]) + Number(rest[12]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const CAP_SYS_RESOURCE = 24;
function hasCap(bit: number): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(Deno.readTextFileSync("/proc/self/status"))?.[1] ?? "0";
  return ((BigInt("0x" + hex) >> BigInt(bit)) & 1n) === 1n;
}

async function waitState(pid: number, state: string) {
  for (let i = 0; i < 300 && (await readStat(`/proc/${pid}/stat`))?.state !== state; i++) await sleep(10);
}

/** A scratch cgroup root with helper processes; kills and removes everything at the end. */
class Bed implements AsyncDisposable {
  readonly root: string;
  readonly children: Deno.ChildProcess[] = [];
  readonly tmp = Deno.makeTempDirSync({ prefix: "cryptsleep-freeze-" });
  constructor() {
    this.root = join(mount!, `cryptsleep-test-${crypto.randomUUID().slice(0, 8)}`);
    Deno.mkdirSync(this.root);
  }
  async cgroup(name: string): Promise<string> {
    const dir = join(this.root, name);
    await Deno.mkdir(dir, { recursive: true });
    return dir;
  }
  spawn(script: string, cgroupDir?: string): Promise<number> {
    const child = new Deno.Command("sh", { args: ["-c", script], stdin: "null", stdout: "null", stderr: "null" })
      .spawn();
    this.children.push(child);
    return cgroupDir
      ? write(join(cgroupDir, "cgroup.procs"), String(child.pid)).then(() => child.pid)
      : Promise.resolve(child.pid);
  }
  async [Symbol.asyncDispose]() {
    // cgroup.kill kills the whole subtree, frozen or not.
    try {
      await write(join(this.root, "cgroup.kill"), "1");
    } catch { /* older kernel: the kills below do it */ }
    for (const c of this.children) {
      try {
        c.kill("SIGKILL");
      } catch { /* already gone */ }
      await c.status;
    }
    const dirs: string[] = [];
    const walk = (d: string) => {
      for (const e of Deno.readDirSync(d)) if (e.isDirectory) walk(join(d, e.name));
      dirs.push(d);
    };
    walk(this.root);
    for (const d of dirs) {
      for (let i = 0; i < 100; i++) {
        try {
          Deno.removeSync(d);
          break;
        } catch {
          await sleep(10);
        }
      }
    }
    Deno.removeSync(this.tmp, { recursive: true });
  }
}

Deno.test({
  name: "resolveCgroup2 refuses a directory that is not cgroup2, naming the cgroup2 mount",
  ignore,
  async fn() {
    const err = await resolveCgroup2("/tmp").then(() => null, (e) => e as Error);
    assert.ok(err, "/tmp accepted as cgroup2");
    assert.match(err.message, /not cgroup2/);
    assert.ok(err.message.includes(mount!), err.message);
    const ok = await resolveCgroup2(mount!);
    assert.equal(ok.isRealRoot, true);
  },
});

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
    // The own cgroup's process: a counter that must keep running.
    const counterFile = join(bed.tmp, "count");
    const counter = await bed.spawn(`i=0; while :; do i=$((i+1)); echo $i > ${counterFile}; sleep 0.01; done`);
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

    const frozen = await freezeUserspace({ cgroupRoot: bed.root, own: own.path, timeoutMs: 5000 });
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
      const countBefore = Number(await Deno.readTextFile(counterFile));
      await sleep(300);
      assert.equal(await cpuTicks(busy), busyBefore, "busy loop ran while frozen");
      assert.equal(await cpuTicks(rootBusy), rootBefore, "root busy loop ran while frozen");
      assert.ok(Number(await Deno.readTextFile(counterFile)) > countBefore + 3, "own counter stopped");
      for (const pid of [sleeper, busy, rootBusy]) assert.equal((await readStat(`/proc/${pid}/stat`))?.state, "S");
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
    await sleep(200);
    assert.ok((await cpuTicks(busy)) > busyAfter, "busy loop still stopped after thaw");

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
    await waitState(sleeper, "S");
    // This test process joins x.slice, which freezeUserspace would freeze: it must refuse before touching it.
    await write(join(x, "cgroup.procs"), String(Deno.pid));
    try {
      const err = await freezeUserspace({ cgroupRoot: bed.root, own, timeoutMs: 100 }).then(() => null, (e) => e);
      assert.ok(err instanceof Error);
      assert.match(err.message, /would be frozen: join/);
      assert.equal((await Deno.readTextFile(join(x, "cgroup.freeze"))).trim(), "0");
      assert.equal((await readStat(`/proc/${sleeper}/stat`))?.state, "S");
    } finally {
      await write(join(mount!, self, "cgroup.procs"), String(Deno.pid));
    }
    assert.equal(await procCgroup(Deno.pid), self);
  },
});

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
      for (let i = 0; i < 200 && !(await Deno.readTextFile("/proc/self/mountinfo")).includes(` ${mnt} `); i++) {
        await sleep(10);
      }
      const c = await bed.cgroup("c.slice");
      const d = await bed.cgroup("d.slice");
      const stuck = await bed.spawn(`exec stat ${mnt}/anything`, c);
      const fine = await bed.spawn("exec sleep 1000", d);
      await waitState(stuck, "D");
      await waitState(fine, "S");
      assert.equal((await readStat(`/proc/${stuck}/stat`))?.state, "D");
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
      assert.equal((await readStat(`/proc/${fine}/stat`))?.state, "S");
    } finally {
      holder.kill("SIGKILL"); // closing /dev/fuse aborts the connection: the stuck stat returns ENOTCONN
      await holder.status;
      await new Deno.Command("umount", { args: ["-l", mnt] }).output();
    }
  },
});

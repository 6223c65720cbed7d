import assert from "node:assert/strict";
import { join } from "node:path";
import { SysError } from "./errors.ts";
import {
  closeFd,
  fsFreeze,
  fsThaw,
  keepWorker,
  mount,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  openFd,
  readBlockDirect,
  readDirectBytes,
  releaseWorker,
  setpriority,
  syncAsync,
  syncfs,
  umount2,
  writeFdSync,
  writeFile,
} from "./libc.ts";

function expectSys(fn: () => unknown, call: string, code: string): SysError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SysError, String(e));
    assert.equal(e.call, call, e.message);
    assert.equal(e.code, code, e.message);
    return e;
  }
  throw new Error(`${call} did not fail`);
}

async function expectSysAsync(p: Promise<unknown>, call: string, code: string): Promise<SysError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof SysError, String(e));
    assert.equal(e.call, call, e.message);
    assert.equal(e.code, code, e.message);
    return e;
  }
  throw new Error(`${call} did not fail`);
}

Deno.test("fds: open/close, write sync and on a worker, errno names", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "f");
    await Deno.writeTextFile(file, "");
    const fd = openFd(file, O_RDWR | O_CLOEXEC);
    writeFdSync(fd, new TextEncoder().encode("hello "));
    closeFd(fd);
    await writeFile(file, "world"); // no O_TRUNC: overwrites from the start
    assert.equal(await Deno.readTextFile(file), "world ");
    const rfd = openFd(file, O_RDONLY | O_CLOEXEC);
    // errno from the main thread: writing to a read-only fd is EBADF.
    const e = expectSys(() => writeFdSync(rfd, new Uint8Array([1]), file), "write", "EBADF");
    assert.match(e.message, /EBADF/);
    closeFd(rfd);
    expectSys(() => closeFd(rfd), "close", "EBADF");
    const missing = expectSys(() => openFd(join(dir, "missing"), O_RDONLY), "open", "ENOENT");
    assert.equal(missing.subject, join(dir, "missing"));
    // errno from the worker thread: /dev/full refuses every write with ENOSPC.
    await expectSysAsync(writeFile("/dev/full", "x"), "write(/dev/full)", "ENOSPC");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sync on another thread, syncfs on a worker, errno from the worker", async () => {
  await syncAsync();
  await syncfs("/tmp");
  await expectSysAsync(syncfs("/nonexistent/dir"), "open", "ENOENT");
});

/** This process's thread ids, once the threads of ended workers are gone. */
async function threadIds(): Promise<string[]> {
  await new Promise((r) => setTimeout(r, 100));
  return [...Deno.readDirSync("/proc/self/task")].map((e) => e.name).sort();
}

Deno.test("a kept worker answers call after call, errors included; calls while it is busy get their own", async () => {
  const before = await threadIds();
  keepWorker();
  try {
    await syncfs("/tmp");
    const kept = await threadIds();
    assert.equal(kept.length, before.length + 1, "the kept worker's thread lives on after its call");
    for (let i = 0; i < 3; i++) await syncfs("/tmp");
    await expectSysAsync(syncfs("/nonexistent/dir"), "open", "ENOENT");
    await syncfs("/tmp");
    assert.deepEqual(await threadIds(), kept, "the same thread answered every call");
    // three at once: one on the kept worker, the others on workers of their own; all answer
    await Promise.all([syncfs("/tmp"), syncfs("/tmp"), syncfs("/tmp")]);
  } finally {
    releaseWorker();
  }
  await syncfs("/tmp"); // released: a worker per call again
  assert.deepEqual(await threadIds(), before);
});

Deno.test("setpriority: own process ok, missing pid ESRCH", () => {
  setpriority(0, 0);
  expectSys(() => setpriority(2 ** 30, 0), "setpriority", "ESRCH");
});

Deno.test("mount/umount2 a tmpfs", async () => {
  const dir = await Deno.makeTempDir();
  try {
    mount("cryptsleep-test", dir, "tmpfs", 0, "size=1m,mode=0700");
    try {
      await Deno.writeTextFile(join(dir, "x"), "in tmpfs");
      const mounts = await Deno.readTextFile("/proc/self/mounts");
      assert.ok(mounts.includes(`cryptsleep-test ${dir} tmpfs`), "tmpfs listed in /proc/self/mounts");
    } finally {
      umount2(dir);
    }
    await assert.rejects(Deno.stat(join(dir, "x")), Deno.errors.NotFound);
    expectSys(() => umount2(dir), "umount2", "EINVAL");
    expectSys(() => mount(null, join(dir, "nope"), "tmpfs", 0), "mount", "ENOENT");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readBlockDirect reads past the page cache, and names the errno of a missing path", async () => {
  const dir = await Deno.makeTempDir({ dir: "/var/tmp" });
  try {
    const path = `${dir}/blocks`;
    const data = new Uint8Array(8192).fill(7);
    data.set([1, 2, 3], 4096);
    await Deno.writeFile(path, data);
    assert.equal(await readBlockDirect(path, 4096, 4096), 4096);
    // the bytes themselves, from the aligned buffer's start
    assert.deepEqual(await readDirectBytes(path, 4096, 4096), data.slice(4096));
    await assert.rejects(() => readBlockDirect(`${dir}/missing`, 0, 4096), (e: unknown) => {
      return e instanceof SysError && e.code === "ENOENT";
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "fsFreeze/fsThaw: a loop-mounted ext4 freezes once (EBUSY again) and thaws once (EINVAL again)",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const image = join(dir, "fs.img"), mnt = join(dir, "mnt");
    const run = async (...args: string[]) => {
      const r = await new Deno.Command(args[0], { args: args.slice(1), stderr: "piped" }).output();
      assert.equal(r.code, 0, `${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
    };
    try {
      await Deno.mkdir(mnt);
      await Deno.writeFile(image, new Uint8Array(16 << 20));
      await run("mkfs.ext4", "-q", "-F", image);
      await run("mount", "-o", "loop", image, mnt);
      try {
        fsFreeze(mnt);
        assert.throws(() => fsFreeze(mnt), (e: unknown) => e instanceof SysError && e.code === "EBUSY");
        fsThaw(mnt);
        assert.throws(
          () => fsThaw(mnt),
          (e: unknown) => e instanceof SysError && e.code === "EINVAL" && e.subject === mnt,
        );
        await Deno.writeTextFile(join(mnt, "after"), "thawed");
      } finally {
        await run("umount", mnt);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("setsid: a child gets a session of its own, with no controlling terminal", async () => {
  const lib = new URL("./libc.ts", import.meta.url).href;
  const code = `import { setsid } from ${JSON.stringify(lib)};
const sid = setsid();
const stat = (await Deno.readTextFile("/proc/self/stat")).split(") ")[1].split(" ");
console.log(sid === Deno.pid, stat[3] === String(Deno.pid), stat[4]);`;
  const out = await new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped" }).output();
  // session id = its pid, and tty_nr 0: no controlling terminal
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "true true 0");
});

Deno.test("setNotDumpable: the process leaves no core dump from then on", async () => {
  // in a child of its own: the test runner stays as it was
  const code = `import { isDumpable, setNotDumpable } from "${new URL("./libc.ts", import.meta.url)}";
    const before = isDumpable(); setNotDumpable(); console.log(before, isDumpable());`;
  const r = await new Deno.Command(Deno.execPath(), { args: ["eval", "--no-config", code], stdout: "piped" }).output();
  assert.equal(new TextDecoder().decode(r.stdout).trim(), "true false");
});

Deno.test("setpriorityAllThreads: every thread's nice, not only the caller's; niceOfSelf reads it back", async () => {
  // in a child of its own: the test runner stays as it was. Its async reads run on other threads: they exist
  const code = `import { setpriorityAllThreads } from "${new URL("./libc.ts", import.meta.url)}";
    import { niceOfSelf } from "${new URL("../host/proc.ts", import.meta.url)}";
    await Promise.all([1, 2, 3].map(() => Deno.readTextFile("/proc/self/status")));
    const before = niceOfSelf();
    setpriorityAllThreads(7);
    const nices = [...Deno.readDirSync("/proc/self/task")].map((t) =>
      Deno.readTextFileSync("/proc/self/task/" + t.name + "/stat").split(") ")[1].split(" ")[16]);
    console.log(before === Number(Deno.readTextFileSync("/proc/" + Deno.ppid + "/stat").split(") ")[1].split(" ")[16]),
      niceOfSelf(), nices.length > 1, [...new Set(nices)].join(","));`;
  const r = await new Deno.Command(Deno.execPath(), { args: ["eval", "--no-config", code], stdout: "piped" }).output();
  // before: the nice it inherited, whatever the test runs at
  assert.equal(new TextDecoder().decode(r.stdout).trim(), "true 7 true 7");
});

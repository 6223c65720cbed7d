import assert from "node:assert/strict";
import { join } from "node:path";
import { SysError } from "./errors.ts";
import {
  addKey,
  chdir,
  chroot,
  closeFd,
  fsFreeze,
  fsThaw,
  KEY_SPEC_PROCESS_KEYRING,
  keyctlDescribe,
  keyctlInvalidate,
  keyctlRead,
  keyctlSearch,
  keyctlUnlink,
  mount,
  O_CLOEXEC,
  O_CREAT,
  O_RDONLY,
  O_WRONLY,
  openFd,
  readBlockDirect,
  readFd,
  setpriority,
  sync,
  syncAsync,
  syncfs,
  umount2,
  writeFd,
  writeFdSync,
} from "./libc.ts";
import { SafeBuffer } from "./safe_buffer.ts";

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

Deno.test("fds: open/read/close, write sync and on a worker, errno names", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "f");
    const fd = openFd(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600);
    writeFdSync(fd, new TextEncoder().encode("hello "));
    await writeFd(fd, new TextEncoder().encode("world"));
    closeFd(fd);
    assert.equal(await Deno.readTextFile(file), "hello world");
    const rfd = openFd(file, O_RDONLY | O_CLOEXEC);
    const b = new Uint8Array(64);
    assert.equal(readFd(rfd, b), 11);
    assert.equal(readFd(rfd, b), 0);
    // errno from the worker thread: writing to a read-only fd is EBADF.
    const e = await expectSysAsync(writeFd(rfd, new Uint8Array([1]), file), `write(${file})`, "EBADF");
    assert.match(e.message, /EBADF/);
    closeFd(rfd);
    expectSys(() => closeFd(rfd), "close", "EBADF");
    const missing = expectSys(() => openFd(join(dir, "missing"), O_RDONLY), "open", "ENOENT");
    assert.equal(missing.subject, join(dir, "missing"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sync, syncfs on a worker, errno from the worker", async () => {
  sync();
  await syncAsync();
  await syncfs("/tmp");
  await expectSysAsync(syncfs("/nonexistent/dir"), "open", "ENOENT");
});

Deno.test("setpriority: own process ok, missing pid ESRCH", () => {
  setpriority(0, 0);
  expectSys(() => setpriority(2 ** 30, 0), "setpriority", "ESRCH");
});

Deno.test("mount/umount2 a tmpfs; chdir/chroot errors", async () => {
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
    expectSys(() => chdir("/nonexistent/dir"), "chdir", "ENOENT");
    expectSys(() => chroot("/nonexistent/dir"), "chroot", "ENOENT");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("keyctl: add, search, describe, read into SafeBuffer, unlink/invalidate", () => {
  const desc = `cryptsleep-test-${Deno.pid}`;
  const payload = new TextEncoder().encode("key bytes");
  const id = addKey("user", desc, payload, KEY_SPEC_PROCESS_KEYRING);
  assert.ok(id > 0);
  assert.equal(keyctlSearch(KEY_SPEC_PROCESS_KEYRING, "user", desc), id);
  assert.match(keyctlDescribe(id), new RegExp(`^user;\\d+;\\d+;[0-9a-f]+;${desc}$`));
  using buf = SafeBuffer.alloc(64);
  const n = keyctlRead(id, buf);
  assert.equal(n, payload.length);
  assert.deepEqual([...buf.view().subarray(0, n)], [...payload]);
  using tiny = SafeBuffer.alloc(4);
  assert.throws(() => keyctlRead(id, tiny), RangeError);
  assert.ok(tiny.view().every((b) => b === 0));
  keyctlInvalidate(id);
  // an invalidated key is unusable at once (EKEYREVOKED) and gone once the key GC has run
  try {
    assert.equal(keyctlSearch(KEY_SPEC_PROCESS_KEYRING, "user", desc), null);
  } catch (err) {
    assert.ok(err instanceof SysError && err.code === "EKEYREVOKED", String(err));
  }
  const id2 = addKey("user", `${desc}-2`, payload, KEY_SPEC_PROCESS_KEYRING);
  keyctlUnlink(id2, KEY_SPEC_PROCESS_KEYRING);
  assert.equal(keyctlSearch(KEY_SPEC_PROCESS_KEYRING, "user", `${desc}-2`), null);
  expectSys(() => keyctlUnlink(id2, KEY_SPEC_PROCESS_KEYRING), "keyctl(KEYCTL_UNLINK)", "ENOENT");
});

Deno.test("readBlockDirect reads past the page cache, and names the errno of a missing path", async () => {
  const dir = await Deno.makeTempDir({ dir: "/var/tmp" });
  try {
    const path = `${dir}/blocks`;
    await Deno.writeFile(path, new Uint8Array(8192).fill(7));
    assert.equal(await readBlockDirect(path, 4096, 4096), 4096);
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

// Real ramfs mounts on this host (needs root and mount(2)); libcryptsetup is dlopened first so its
// dependency tree is mapped, as the supervisor does before building the ramfs.
import assert from "node:assert/strict";
import { join } from "node:path";
import { readMountinfoSync } from "../host/mountinfo.ts";
import { mappedFiles } from "./copy.ts";
import { buildRamfs, DENO_PATH, mountsUnder, SCRIPT_PATH } from "./ramfs.ts";

const lib = Deno.dlopen("libcryptsetup.so.12", {});
globalThis.addEventListener("unload", () => lib.close());

/** Removes a scratch dir, but never while something is still mounted below it (a bound /dev!). */
function removeScratch(base: string) {
  const mounted = mountsUnder(base);
  if (mounted.length) throw new Error(`still mounted below ${base}, not removing it:\n${mounted.join("\n")}`);
  Deno.removeSync(base, { recursive: true });
}

Deno.test("buildRamfs copies runtime, script and every mapped library; dispose unmounts and removes it", async () => {
  const base = Deno.makeTempDirSync({ prefix: "cryptsleep-ramfs-" });
  const dir = join(base, "run", "root"); // parents that do not exist yet
  const script = join(base, "bundle.js");
  Deno.writeTextFileSync(script, "console.log('hello from the bundle');\n");
  try {
    const ramfs = await buildRamfs({ dir, script, extraFiles: ["/etc/hostname"] });
    try {
      // A ramfs, mode 0700, private; the system mounts inside.
      const m = readMountinfoSync().find((m) => m.mountpoint === dir)!;
      assert.equal(m.fstype, "ramfs");
      assert.equal(m.source, "cryptsleep-ramfs");
      assert.equal(m.superOptions, "rw,mode=700");
      assert.equal(Deno.statSync(dir).mode! & 0o777, 0o700);
      const inner = mountsUnder(dir);
      for (const p of ["/dev", "/sys", "/proc", "/run/cryptsetup", "/sys/fs/cgroup", "/dev/pts"]) {
        assert.ok(inner.includes(dir + p), `${p} not mounted inside`);
      }
      assert.ok(Deno.statSync(join(dir, "proc/self/stat")).isFile);

      // The runtime and script, byte for byte the same size.
      assert.equal(Deno.statSync(dir + DENO_PATH).size, Deno.statSync(Deno.execPath()).size);
      assert.equal(Deno.readTextFileSync(dir + SCRIPT_PATH), Deno.readTextFileSync(script));
      assert.equal(ramfs.script, SCRIPT_PATH);

      // Every ELF this process maps is inside at its own path with its size; the totals add up.
      let sum = 0;
      for (const f of ramfs.files) sum += Deno.statSync(dir + f).size;
      assert.equal(ramfs.bytes, sum);
      for (const f of mappedFiles([Deno.realPathSync(Deno.execPath())])) {
        assert.ok(ramfs.files.includes(f), `${f} mapped but not copied`);
        assert.equal(Deno.statSync(dir + f).size, Deno.statSync(f).size, f);
      }
      for (const f of ramfs.files.filter((f) => f !== DENO_PATH && f !== SCRIPT_PATH)) {
        assert.equal(Deno.statSync(dir + f).size, Deno.statSync(f).size, f);
      }
      assert.ok(ramfs.files.includes("/etc/ld.so.cache"));
      assert.ok(ramfs.files.includes("/etc/hostname"));
      // Symlink chains as on the host (loader, merged /lib, soname links): copy_test.ts.
      // Token plugins with the libraries they need through their RUNPATH.
      if (Deno.statSync("/usr/lib/x86_64-linux-gnu/cryptsetup").isDirectory) {
        assert.ok(ramfs.files.some((f) => f.includes("/cryptsetup/libcryptsetup-token-")));
        assert.ok(ramfs.files.some((f) => /\/systemd\/libsystemd-shared/.test(f)));
      }
      assert.ok(ramfs.chroot && ramfs.loader);
      assert.ok(Deno.statSync(dir + ramfs.loader).isFile);
      assert.deepEqual(ramfs.warnings, []);
      console.log(
        `ramfs: ${ramfs.files.length} files, ${ramfs.bytes} bytes (${(ramfs.bytes / 2 ** 20).toFixed(1)} MiB)`,
      );
    } finally {
      await ramfs.dispose();
    }
    await ramfs.dispose(); // idempotent
    assert.deepEqual(mountsUnder(dir), []);
    assert.throws(() => Deno.lstatSync(dir), Deno.errors.NotFound);
    assert.throws(() => Deno.lstatSync(join(base, "run")), Deno.errors.NotFound);
    // The host's own mounts are untouched.
    for (const p of ["/dev/pts", "/sys/fs/cgroup", "/proc"]) assert.ok(mountsUnder(p).length > 0, p);
  } finally {
    removeScratch(base);
  }
});

Deno.test("buildRamfs refuses a directory that is already a mount point, touching nothing", async () => {
  const base = Deno.makeTempDirSync({ prefix: "cryptsleep-ramfs-" });
  try {
    const first = await buildRamfs({ dir: base, script: null, mountSystem: false });
    try {
      const err = await buildRamfs({ dir: base, script: null }).then(() => null, (e) => e as Error);
      assert.ok(err);
      assert.match(err.message, /already a mount point.*umount -R/);
      assert.equal(mountsUnder(base).length, 1);
    } finally {
      await first.dispose();
    }
    assert.deepEqual(mountsUnder(base), []);
  } finally {
    try {
      removeScratch(base);
    } catch { /* removed by dispose */ }
  }
});

Deno.test("ramfs dispose detaches lazily when a process still uses it", async () => {
  const base = Deno.makeTempDirSync({ prefix: "cryptsleep-ramfs-" });
  const dir = join(base, "root");
  const ramfs = await buildRamfs({ dir, script: null, mountSystem: false });
  // A process with its cwd inside keeps the ramfs busy.
  const busy = new Deno.Command("sleep", { args: ["30"], cwd: dir + "/tmp", stdout: "null", stderr: "null" }).spawn();
  try {
    await ramfs.dispose();
    assert.deepEqual(mountsUnder(dir), []);
    assert.match(ramfs.warnings.join("\n"), /EBUSY.*detached lazily/);
  } finally {
    busy.kill("SIGKILL");
    await busy.status;
    removeScratch(base);
  }
});

// Runs the ramfs's own Deno inside a real chroot on this host (root, mount(2) and chroot(2) needed).
import assert from "node:assert/strict";
import { join } from "node:path";
import { chrootCommand, spawnChrooted } from "./enter.ts";
import { readMountinfoSync } from "../host/mountinfo.ts";
import { buildRamfs, mountsUnder, type Ramfs } from "./ramfs.ts";

const lib = Deno.dlopen("libcryptsetup.so.12", {});
globalThis.addEventListener("unload", () => lib.close());

/** Removes a scratch dir, but never while something is still mounted below it (a bound /dev!). */
function removeScratch(base: string) {
  const mounted = mountsUnder(base);
  if (mounted.length) throw new Error(`still mounted below ${base}, not removing it:\n${mounted.join("\n")}`);
  Deno.removeSync(base, { recursive: true });
}

// Runs inside the chroot: reports where it runs, its maps and environment, dlopens libcryptsetup, then
// waits for stdin to close so the test can look at it from outside.
const PROBE = `
const maps = Deno.readTextFileSync("/proc/self/maps").split("\\n").filter((l) => / \\//.test(l)).map((l) => {
  const f = l.trim().split(/\\s+/);
  return { dev: f[3], inode: f[4], path: f.slice(5).join(" ") };
});
const cs = Deno.dlopen("libcryptsetup.so.12", { crypt_get_default_type: { parameters: [], result: "pointer" } });
const luks = Deno.UnsafePointerView.getCString(cs.symbols.crypt_get_default_type());
const after = Deno.readTextFileSync("/proc/self/maps").split("\\n").filter((l) => /libcryptsetup|libdevmapper/.test(l))
  .map((l) => l.trim().split(/\\s+/)).map((f) => ({ dev: f[3], path: f.slice(5).join(" ") }));
console.log(JSON.stringify({ execPath: Deno.execPath(), args: Deno.args, env: Deno.env.toObject(), maps, luks, after,
  cwd: Deno.cwd(), dev: Deno.statSync("/dev/null").isCharDevice, cg: Deno.statSync("/sys/fs/cgroup").isDirectory }));
for await (const _ of Deno.stdin.readable) { /* wait for EOF */ }
`;

/** major:minor of the filesystem mounted at `dir`, in /proc/PID/maps notation ("00:26"). */
function mapsDev(dir: string): string {
  const [maj, min] = readMountinfoSync().find((m) => m.mountpoint === dir)!.devno.split(":").map(Number);
  return `${maj.toString(16).padStart(2, "0")}:${min.toString(16).padStart(2, "0")}`;
}

async function probe(ramfs: Ramfs, args: string[]) {
  Deno.writeTextFileSync(ramfs.root + "/probe.js", PROBE);
  const child = spawnChrooted(ramfs, args, { script: "/probe.js", stdin: "piped", stdout: "piped", env: { X: "1" } });
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  // From outside, while it runs: its root is the ramfs, every mapped file lives on the ramfs.
  const root = Deno.readLinkSync(`/proc/${child.pid}/root`);
  const outsideMaps = Deno.readTextFileSync(`/proc/${child.pid}/maps`).split("\n").filter((l) => / \//.test(l))
    .map((l) => l.trim().split(/\s+/)[3]);
  await child.stdin.close();
  while (!(await reader.read()).done) { /* drain */ }
  const status = await child.status;
  return { report: JSON.parse(out), root, outsideMaps, status };
}

Deno.test("spawnChrooted runs the ramfs's deno in the chroot, mapping only ramfs files, and libcryptsetup loads there", async () => {
  const base = Deno.makeTempDirSync({ prefix: "cryptsleep-enter-" });
  const dir = join(base, "root");
  try {
    await using ramfs = await buildRamfs({ dir, script: null });
    const [program, argv] = chrootCommand(ramfs, ["agent"], { script: "/probe.js" });
    assert.equal(program, dir + ramfs.loader); // the ramfs's own loader: nothing read from the disk
    assert.deepEqual(argv.slice(0, 2), ["--inhibit-cache", "--library-path"]);
    const { report, root, outsideMaps, status } = await probe(ramfs, ["agent", "--x"]);
    assert.equal(status.code, 0);
    const dev = mapsDev(dir);
    assert.equal(root, dir);
    assert.equal(report.execPath, "/bin/deno");
    assert.deepEqual(report.args, ["agent", "--x"]);
    assert.equal(report.cwd, "/");
    // Deno itself adds its node-compat shim to the environment it reports; nothing else may appear.
    const env = { ...report.env };
    delete env.DENO_NODE_SHIM_ACTIVE;
    assert.match(env.PATH, /^(\/deno-dir\/node_compat_bin:)?\/bin$/);
    env.PATH = "/bin";
    assert.deepEqual(env, {
      PATH: "/bin",
      HOME: "/tmp",
      TMPDIR: "/tmp",
      DENO_DIR: "/deno-dir",
      DENO_NO_UPDATE_CHECK: "1",
      DENO_NO_PROMPT: "1",
      NO_COLOR: "1",
      X: "1",
    });
    assert.ok(report.maps.length > 5);
    for (const m of report.maps) assert.equal(m.dev, dev, `${m.path} is not on the ramfs`);
    assert.ok(report.maps.some((m: { path: string }) => m.path === "/bin/deno"));
    for (const d of outsideMaps) assert.equal(d, dev);
    assert.equal(report.luks, "LUKS2");
    assert.ok(report.after.some((m: { path: string }) => /libdevmapper/.test(m.path)));
    for (const m of report.after) assert.equal(m.dev, dev, m.path);
    assert.equal(report.dev, true);
    assert.equal(report.cg, true);
    // Deno wrote its caches to the ramfs, not to the disk.
    assert.ok([...Deno.readDirSync(dir + "/deno-dir")].length > 0);
  } finally {
    removeScratch(base);
  }
  assert.deepEqual(mountsUnder(base), []);
});

Deno.test("spawnChrooted runs the bundled script with its arguments", async () => {
  const base = Deno.makeTempDirSync({ prefix: "cryptsleep-enter-" });
  try {
    const script = join(base, "bundle.js");
    Deno.writeTextFileSync(script, "console.log(JSON.stringify([Deno.mainModule, ...Deno.args]));\n");
    await using ramfs = await buildRamfs({ dir: join(base, "root"), script, mountSystem: false });
    const out = await spawnChrooted(ramfs, ["agent", "--job", "/job.json"], { stdout: "piped" }).output();
    assert.equal(out.code, 0);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), [
      "file:///cryptsleep.js",
      "agent",
      "--job",
      "/job.json",
    ]);
  } finally {
    removeScratch(base);
  }
});

const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

Deno.test({
  name: "spawnChrooted with a static busybox chroot",
  ignore: !busybox,
  async fn() {
    const base = Deno.makeTempDirSync({ prefix: "cryptsleep-enter-" });
    try {
      await using ramfs = await buildRamfs({ dir: join(base, "root"), script: null, chrootBin: busybox });
      assert.equal(ramfs.chroot?.static, true);
      assert.equal(ramfs.chroot?.busybox, true);
      const [program, argv] = chrootCommand(ramfs, [], { script: "/probe.js" });
      assert.equal(program, ramfs.root + ramfs.chroot!.path);
      assert.equal(argv[0], "chroot");
      const { report, root, status } = await probe(ramfs, []);
      assert.equal(status.code, 0);
      assert.equal(root, ramfs.root);
      assert.equal(report.luks, "LUKS2");
      for (const m of report.maps) assert.equal(m.dev, mapsDev(ramfs.root), m.path);
    } finally {
      removeScratch(base);
    }
  },
});

// Real mounts, chroot and mlock on this host (needs root). Entering a root changes the whole process, so that
// part runs in a child deno.
import assert from "node:assert/strict";
import { join } from "node:path";
import { readMountinfoSync } from "../host/mountinfo.ts";
import { mountRoot, mountsUnder } from "./root.ts";
import { pinMappings, planPin } from "./pin.ts";

function vmLckKiB(): number {
  return Number(/^VmLck:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
}

Deno.test("mountRoot: an empty ramfs with /dev, /sys, /proc, /run/cryptsetup; dispose unmounts and removes it", async () => {
  const base = Deno.makeTempDirSync({ prefix: "cryptsleep-root-" });
  const dir = join(base, "run", "root"); // parents that do not exist yet
  try {
    const root = await mountRoot({ dir });
    try {
      const m = readMountinfoSync().find((m) => m.mountpoint === dir)!;
      assert.equal(m.fstype, "ramfs");
      assert.equal(Deno.statSync(dir).mode! & 0o777, 0o700);
      for (const p of ["/dev", "/sys", "/proc", "/run/cryptsetup", "/sys/fs/cgroup", "/dev/pts"]) {
        assert.ok(mountsUnder(dir).includes(dir + p), `${p} not mounted inside`);
      }
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["dev", "proc", "run", "sys"]);
      await assert.rejects(mountRoot({ dir }), /already a mount point/);
    } finally {
      await root.dispose();
    }
    assert.deepEqual(mountsUnder(dir), []);
    assert.equal(Deno.statSync(base).isDirectory, true);
    assert.throws(() => Deno.statSync(join(base, "run")), Deno.errors.NotFound, "the parents it made are gone");
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test("enterRoot: inside, only the root's paths resolve, the real root through hostPath; leave comes back", async () => {
  const base = Deno.makeTempDirSync({ prefix: "cryptsleep-root-" });
  const dir = join(base, "root");
  const probe = join(base, "probe.ts");
  const here = new URL(".", import.meta.url).pathname;
  Deno.writeTextFileSync(
    probe,
    `import { enterRoot, hostMountinfo, hostPath } from "${here}enter.ts";
const inside = enterRoot(${JSON.stringify(dir)});
const out = {
  etc: (() => { try { Deno.statSync("/etc/hostname"); return "found"; } catch (e) { return e.name; } })(),
  proc: Deno.statSync("/proc/self/stat").isFile,
  host: Deno.readTextFileSync(hostPath("/etc/hostname")).trim(),
  hostRootMounted: hostMountinfo().some((m) => m.mountpoint === "/"),
  arena: [...Deno.readDirSync("/")].filter((e) => e.name.startsWith("secrets-")).length,
};
inside.leave();
console.log(JSON.stringify({ ...out, after: Deno.readTextFileSync("/etc/hostname").trim() }));
`,
  );
  try {
    await using _root = await mountRoot({ dir });
    const r = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", probe] }).output();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    const host = Deno.readTextFileSync("/etc/hostname").trim();
    assert.deepEqual(JSON.parse(new TextDecoder().decode(r.stdout)), {
      etc: "NotFound",
      proc: true,
      host,
      hostRootMounted: true,
      arena: 1,
      after: host,
    });
    // the secret arena went with the leave (no secret was out)
    assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("secrets-")), []);
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test("pinMappings locks every file this process maps, and release unlocks them", () => {
  const before = vmLckKiB();
  const plan = planPin();
  const exe = Deno.realPathSync(Deno.execPath());
  assert.ok(plan.files.includes(exe), plan.files.join(" "));
  {
    using pinned = pinMappings();
    assert.ok(pinned.files.includes(exe));
    assert.ok(pinned.bytes >= Deno.statSync(exe).size * 0.9, `${pinned.bytes} B locked`);
    assert.ok(vmLckKiB() - before >= pinned.bytes / 1024 - 1024, `VmLck ${vmLckKiB()} kB`);
  }
  assert.ok(vmLckKiB() <= before + 1024, `VmLck ${vmLckKiB()} kB after release (was ${before})`);
});

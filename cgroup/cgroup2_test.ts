// Real kernel freezer tests: a throw-away sub-hierarchy of the host's cgroup2 mount plays the cgroup root.
// Needs root and a cgroup2 mount (here /sys/fs/cgroup/unified, hybrid layout).
import assert from "node:assert/strict";
import { cgroupDir, memoryPeakBytes, resolveCgroup2 } from "./cgroup2.ts";
import { ignore, mount } from "./testing.ts";

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

Deno.test("memoryPeakBytes reads memory.peak; null where it is absent or not a byte count", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(memoryPeakBytes(dir), null, "no memory controller: no memory.peak");
    await Deno.writeTextFile(`${dir}/memory.peak`, "185454592\n");
    assert.equal(memoryPeakBytes(dir), 185454592);
    await Deno.writeTextFile(`${dir}/memory.peak`, "max\n");
    assert.equal(memoryPeakBytes(dir), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cgroupDir: the root cgroup is the mountpoint itself, no trailing slash (a process there is compared to it)", () => {
  const root = { dir: "/sys/fs/cgroup", mountpoint: "/sys/fs/cgroup", mountRoot: "/", isRealRoot: true };
  assert.equal(cgroupDir(root, "/"), root.dir);
  assert.equal(cgroupDir(root, "/user.slice/x.scope"), "/sys/fs/cgroup/user.slice/x.scope");
  // a container's view: its mount root is a cgroup deeper down
  const inner = { ...root, mountRoot: "/machine.slice/c1" };
  assert.equal(cgroupDir(inner, "/machine.slice/c1"), root.dir);
  assert.equal(cgroupDir(inner, "/machine.slice/c1/app"), "/sys/fs/cgroup/app");
});

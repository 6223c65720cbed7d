import assert from "node:assert/strict";
import { mountOf, parseMountinfo, readMountinfo, readMountinfoOf, readMountinfoSync } from "./mountinfo.ts";

Deno.test("mountinfo: optional fields, escaped spaces", () => {
  const m = parseMountinfo(
    "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n" +
      "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
  );
  assert.deepEqual(m, [
    {
      id: 36,
      devno: "98:0",
      root: "/mnt1",
      mountpoint: "/mnt/my disk",
      fstype: "ext3",
      source: "/dev/root",
      superOptions: "rw,errors=continue",
    },
    {
      id: 40,
      devno: "0:37",
      root: "/",
      mountpoint: "/sys/fs/cgroup/unified",
      fstype: "cgroup2",
      source: "cgroup2",
      superOptions: "rw",
    },
  ]);
});

Deno.test("mountOf: longest prefix, not a mere string prefix; the later of two on one point", () => {
  const m = parseMountinfo(
    "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n" +
      "2 1 0:5 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" +
      "3 2 0:6 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n" +
      "4 1 8:2 / /home rw - ext4 /dev/sda2 rw\n" +
      "5 4 8:3 / /home rw - xfs /dev/sda3 rw\n",
  );
  assert.equal(mountOf(m, "/sys/fs/cgroup/unified/a.slice")?.fstype, "cgroup2");
  assert.equal(mountOf(m, "/sys/fs/cgroup")?.fstype, "tmpfs");
  assert.equal(mountOf(m, "/sys/fs/cgroupx")?.fstype, "ext4");
  assert.equal(mountOf(m, "/home/u")?.source, "/dev/sda3");
  assert.equal(mountOf([], "/"), undefined);
});

Deno.test("the readers agree on this process's live mountinfo; a tree without one has no mounts", async () => {
  // other tests on this host may mount meanwhile: compare the mount of "/" only
  const live = mountOf(await readMountinfo("/"), "/");
  assert.ok(live);
  assert.deepEqual(mountOf(await readMountinfoOf("self"), "/"), live);
  assert.deepEqual(mountOf(readMountinfoSync(Deno.pid), "/"), live);
  const empty = await Deno.makeTempDir();
  try {
    assert.deepEqual(await readMountinfo(empty), []);
  } finally {
    await Deno.remove(empty);
  }
});

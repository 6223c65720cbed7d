import assert from "node:assert/strict";
import { parseCrypttab, parseMeminfo, parseMountinfo, parseProcKeys, parseSwaps } from "./proc.ts";

Deno.test("mountinfo: optional fields, escaped spaces", () => {
  const m = parseMountinfo(
    "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n" +
      "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
  );
  assert.deepEqual(m, [
    { devno: "98:0", mountpoint: "/mnt/my disk", fstype: "ext3", source: "/dev/root" },
    { devno: "0:37", mountpoint: "/sys/fs/cgroup/unified", fstype: "cgroup2", source: "cgroup2" },
  ]);
});

Deno.test("swaps: header skipped, files and devices", () => {
  const text = "Filename\tType\tSize\tUsed\tPriority\n/dev/dm-2 partition 1048572 0 -2\n/swap\\040file file 10 0 -3\n";
  assert.deepEqual(parseSwaps(text), ["/dev/dm-2", "/swap file"]);
});

Deno.test("crypttab: comments, none/- key files, options", () => {
  const c = parseCrypttab(
    "# comment\n\nroot UUID=x none luks,discard\nhome /dev/vg/home /etc/k luks,header=/boot/h.img\nsw /dev/sda3 -\n",
  );
  assert.deepEqual(c, [
    { name: "root", device: "UUID=x", options: { luks: true, discard: true } },
    { name: "home", device: "/dev/vg/home", keyFile: "/etc/k", options: { luks: true, header: "/boot/h.img" } },
    { name: "sw", device: "/dev/sda3", options: {} },
  ]);
});

Deno.test("meminfo and /proc/keys", () => {
  assert.deepEqual(parseMeminfo("MemTotal:  100 kB\nMemAvailable:   42 kB\n"), { MemTotal: 100, MemAvailable: 42 });
  const keys = parseProcKeys(
    "03014477 I--Q---     1 perm 1f3f0000     0 65534 keyring   _uid_ses.0: 1\n" +
      "1a2b3c4d I--Q---     1 perm 3f010000     0     0 logon     cryptsetup:1111-d0: 64\n" +
      "1a2b3c4e I--Q---     1 perm 3f010000     0     0 logon     cryptsetup:2222-d0\n",
  );
  assert.deepEqual(keys.map((k) => [k.type, k.description]), [
    ["keyring", "_uid_ses.0"],
    ["logon", "cryptsetup:1111-d0"],
    ["logon", "cryptsetup:2222-d0"],
  ]);
});

import assert from "node:assert/strict";
import { buildTree, loadSpec } from "../tests/fixtures/trees/build.ts";
import { discover, NoSysfsError, parseCryptUuid, type Plan } from "./mod.ts";

async function planOf(name: string, uid: number | null = 0): Promise<Plan> {
  await using tree = await buildTree(name);
  return await discover({ root: tree.root, uid });
}

const names = (p: Plan, list: "lock" | "unlock" = "lock") => p[list].map((v) => v.dmName);
const vol = (p: Plan, name: string) => p.lock.find((v) => v.dmName === name)!;
const warned = (p: Plan, ...parts: string[]) =>
  assert.ok(p.warnings.some((w) => parts.every((x) => w.includes(x))), `no warning with ${parts}: ${p.warnings}`);

Deno.test("parseCryptUuid puts the LUKS UUID's dashes back", () => {
  assert.deepEqual(parseCryptUuid("CRYPT-LUKS2-11111111222243338444555555555555-my-root"), {
    type: "LUKS2",
    uuid: "11111111-2222-4333-8444-555555555555",
  });
  assert.deepEqual(parseCryptUuid("CRYPT-PLAIN-cryptswap"), { type: "PLAIN" });
  assert.equal(parseCryptUuid("LVM-abc"), null);
});

Deno.test("LUKS root: one volume, header on the partition, Argon2 memory from the header", async () => {
  const p = await planOf("luks-root");
  assert.deepEqual(names(p), ["cryptroot"]);
  const v = p.lock[0];
  assert.equal(v.type, "LUKS2");
  assert.equal(v.uuid, "11111111-2222-4333-8444-555555555555");
  assert.equal(v.device, "/dev/dm-0");
  assert.deepEqual(v.backing, ["/dev/vda2"]);
  assert.deepEqual(v.header, { path: "/dev/vda2", detached: false });
  assert.deepEqual(v.mounts, [{ mountpoint: "/", fstype: "ext4", device: "/dev/mapper/cryptroot" }]);
  assert.equal(v.argon2MemoryKiB, 32768);
  assert.equal(p.maxArgon2MemoryKiB, 32768);
  assert.deepEqual(p.warnings, []);
  assert.equal(p.dmDevices, 1);
});

Deno.test("tokens: one with a PIN is planned; one without a PIN and a PKCS#11 one are said not used after wake", async () => {
  const spec = await loadSpec("luks-root");
  const base = { keyslots: ["0"] };
  spec.images![0].tokens = [
    {
      ...base,
      type: "systemd-tpm2",
      "tpm2-pin": true,
      "tpm2-blob": "AA==",
      "tpm2-pcrs": [7],
      "tpm2-policy-hash": "00",
    },
    { ...base, type: "systemd-tpm2", "tpm2-blob": "AA==", "tpm2-pcrs": [], "tpm2-policy-hash": "00" },
    { ...base, type: "systemd-pkcs11", "pkcs11-uri": "pkcs11:token=card", "pkcs11-key": "AA==" },
  ];
  await using tree = await buildTree(spec);
  const p = await discover({ root: tree.root, uid: 0 });
  assert.deepEqual(vol(p, "cryptroot").tokens, [
    { id: 0, type: "systemd-tpm2", keyslots: [0], pin: true },
    { id: 1, type: "systemd-tpm2", keyslots: [0], pin: false },
    { id: 2, type: "systemd-pkcs11", keyslots: [0], pin: false },
  ]);
  warned(p, "cryptroot", "systemd-tpm2 token 1 needs no PIN", "--token-without-pin");
  warned(
    p,
    "cryptroot",
    "systemd-pkcs11 token 2 is not used after wake",
    "pcscd",
    "its key file or passphrase opens it",
  );
  assert.equal(p.warnings.length, 2, p.warnings.join("\n"));
});

Deno.test("LVM on LUKS: LVs above, swap LV warned, max over keyslots", async () => {
  const p = await planOf("lvm-on-luks");
  assert.deepEqual(names(p), ["cryptlvm"]);
  const v = p.lock[0];
  assert.deepEqual(v.above, ["vg0-root", "vg0-swap"]);
  assert.deepEqual(v.mounts.map((m) => m.mountpoint), ["/", "/srv"]);
  assert.deepEqual(v.swaps, ["/dev/dm-2"]);
  assert.deepEqual(v.keyslots, [
    { slot: 0, kdf: "argon2id", memoryKiB: 32768 },
    { slot: 1, kdf: "argon2i", memoryKiB: 65536 },
  ]);
  assert.equal(p.maxArgon2MemoryKiB, 65536);
  warned(p, "swap /dev/dm-2", "cryptlvm");
});

Deno.test("LUKS on LVM: two volumes on LVs, key file on the locked root", async () => {
  const p = await planOf("luks-on-lvm");
  assert.deepEqual(names(p), ["crypthome", "cryptroot"]);
  assert.deepEqual(names(p, "unlock"), ["cryptroot", "crypthome"]);
  assert.equal(vol(p, "cryptroot").type, "LUKS1");
  assert.deepEqual(vol(p, "cryptroot").header, { path: "/dev/dm-0", detached: false });
  assert.equal(vol(p, "cryptroot").argon2MemoryKiB, 0);
  assert.deepEqual(vol(p, "crypthome").above, []);
  assert.deepEqual(vol(p, "crypthome").mounts.map((m) => [m.mountpoint, m.fstype]), [["/home", "xfs"]]);
  assert.equal(p.maxArgon2MemoryKiB, 16384);
  assert.deepEqual(vol(p, "crypthome").keyFile, { path: "/etc/keys/home.key", offset: 0, on: ["cryptroot"] });
  // the firmware loader looks up /lib/firmware from /: never through /home
  assert.equal(vol(p, "cryptroot").holdsFirmware, true);
  assert.equal(vol(p, "crypthome").holdsFirmware, false);
  assert.ok(!p.warnings.some((w) => w.includes("home.key")), "a key file on a locked volume is no warning");
});

Deno.test("key files: on the locked root (unlocked first, whatever the names), on a USB stick, on itself", async () => {
  const p = await planOf("keyfiles");
  // zdata's key file is on cryptroot: cryptroot is unlocked before it although "zdata" sorts after it
  assert.ok(names(p, "unlock").indexOf("cryptroot") < names(p, "unlock").indexOf("zdata"), `${names(p, "unlock")}`);
  assert.deepEqual(vol(p, "zdata").keyFile, {
    path: "/etc/keys/zdata.key",
    offset: 16,
    size: 64,
    keyslot: 1,
    on: ["cryptroot"],
  });
  assert.deepEqual(vol(p, "archive").keyFile, {
    path: "/archive.key",
    device: "LABEL=KEYS",
    offset: 0,
    keyslot: 2,
    on: [],
  });
  // the initramfs' key file on the root itself can't be read while the root is locked: a passphrase instead
  assert.deepEqual(vol(p, "cryptroot").keyFile?.on, ["cryptroot"]);
  warned(p, "cryptroot", "/etc/keys/root.key", "on cryptroot itself", "passphrase");
  assert.equal(vol(p, "legacy").keyFile, undefined);
  warned(p, "legacy", "keyscript", "passphrase");
  assert.ok(!p.warnings.some((w) => w.includes("zdata") || w.includes("archive")), `${p.warnings}`);
  // a circle: the first edge is kept, the second would close it; said, not looped on
  warned(p, "which needs", "unlocked first", "wait on each other");
  assert.equal(vol(p, "pu").keyFile, undefined);
  warned(p, "pu", "PARTUUID=0a0b0c0d-01", "udev frozen", "UUID= or LABEL=");
});

Deno.test("two disks + stacked LUKS + loop: top-down lock order, reverse unlock", async () => {
  const p = await planOf("two-disks");
  // inner sits on outer, so inner goes first; outer last; vault's image file is on / (on inner), so vault goes
  // before inner, whatever the names; unlock is the mirror
  assert.deepEqual(names(p), ["data", "vault", "inner", "outer"]);
  assert.deepEqual(names(p, "unlock"), ["outer", "inner", "vault", "data"]);
  assert.ok(names(p).indexOf("inner") < names(p).indexOf("outer"));
  assert.ok(names(p).indexOf("vault") < names(p).indexOf("inner"), "the image's volume before its host");
  // outer's above stops at inner (a LUKS volume locked on its own)
  assert.deepEqual(vol(p, "outer").above, []);
  // / is on inner, so it depends on outer too; the swap file on / is on both
  assert.deepEqual(vol(p, "outer").mounts.map((m) => m.mountpoint), ["/"]);
  assert.deepEqual(vol(p, "inner").swaps, ["/swapfile"]);
  assert.deepEqual(vol(p, "outer").swaps, ["/swapfile"]);
  assert.deepEqual(vol(p, "vault").mounts.map((m) => m.mountpoint), ["/srv/my vault"]);
  assert.deepEqual(vol(p, "vault").header, { path: "/dev/loop0", detached: false });
  // firmware_class.path=/data/fw: data is read by the firmware loader too, vault never
  assert.deepEqual(p.lock.filter((v) => v.holdsFirmware).map((v) => v.dmName), ["data", "inner", "outer"]);
  assert.equal(vol(p, "inner").argon2MemoryKiB, 65536);
  assert.equal(vol(p, "outer").argon2MemoryKiB, 32768);
  assert.equal(vol(p, "vault").argon2MemoryKiB, 0);
  assert.equal(p.maxArgon2MemoryKiB, 65536);
  warned(p, "swap /swapfile", "inner", "outer");
  warned(p, "data", "/boot/keys/data.key", "stays readable");
});

Deno.test("a root whose volumes cannot be told (btrfs, not traced to a device): every volume holds the firmware", async () => {
  const spec = await loadSpec("two-disks");
  const files = spec.files as Record<string, string[]>;
  delete files["/sys/module/firmware_class/parameters/path"];
  files["/proc/self/mountinfo"][0] = "22 1 0:31 /@ / rw,relatime shared:1 - btrfs /dev/mapper/nowhere rw";
  await using tree = await buildTree(spec);
  const p = await discover({ root: tree.root, uid: 0 });
  // it may span inner and more, as far as discovery can tell: none is left out of the firmware's keeping
  assert.deepEqual(p.lock.filter((v) => v.holdsFirmware).map((v) => v.dmName).sort(), [
    "data",
    "inner",
    "outer",
    "vault",
  ]);
});

Deno.test("detached header from crypttab header=; an unnamed detached header is a warning", async () => {
  const p = await planOf("detached-header");
  const root = vol(p, "cryptroot");
  assert.deepEqual(root.header, { path: "/boot/root-header.img", detached: true, on: [] });
  assert.equal(root.argon2MemoryKiB, 49152);
  assert.equal(vol(p, "stray").argon2MemoryKiB, 0);
  assert.equal(vol(p, "stray").uuid, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
  warned(p, "stray", "/dev/vdb", "no LUKS header", "header=");
  assert.ok(p.warnings.every((w) => !w.includes("cryptsleep-tree")), "warnings name host paths, not the tree");
  assert.equal(p.maxArgon2MemoryKiB, 49152);
  // zz-data's header is a file on cryptroot: locked before it and unlocked after it, although "zz" sorts after it
  assert.deepEqual(vol(p, "zz-data").header, { path: "/root/zz.hdr", detached: true, on: ["cryptroot"] });
  assert.equal(vol(p, "zz-data").type, "LUKS1");
  assert.ok(names(p).indexOf("zz-data") < names(p).indexOf("cryptroot"), `${names(p)}`);
  assert.ok(names(p, "unlock").indexOf("cryptroot") < names(p, "unlock").indexOf("zz-data"), `${names(p, "unlock")}`);
  // cryptroot's key file is on zz-data: that edge would close a circle, so it is the key file that gives way (a
  // passphrase may be asked for), never the header
  warned(p, "cryptroot", "/mnt/zz/root.key", "wait on each other");
  // what preflight refuses: a header inside the volume's own filesystem, systemd's path:device form, a relative path
  const unsafe = (name: string) => p.unsafe.find((u) => u.startsWith(`volume ${name}:`)) ?? "";
  assert.equal(p.unsafe.length, 3, `${p.unsafe}`);
  assert.match(unsafe("selfish"), /\/mnt\/selfish\/h\.hdr is on selfish, .*could not be unlocked after wake.*header=/);
  assert.match(unsafe("pd"), /header=\/pd\.hdr:UUID=0000-1111 names a file on another device/);
  assert.match(unsafe("rel"), /header=rel\.hdr is not an absolute path/);
  assert.ok(p.unsafe.every((u) => p.warnings.includes(u)), "each is said in the warnings too");
  // neither of those is ordered against the root by a path it cannot read
  assert.equal(vol(p, "pd").header.on, undefined);
});

Deno.test("a detached header reached through a link on another volume: that volume holds it too", async () => {
  // zz-data's header is on /boot at both ends of its path, but the path goes through a link that lives on stray:
  // the lookup reads stray's filesystem, so stray must be unlocked before zz-data's header is read
  const spec = await loadSpec("detached-header");
  const crypttab = spec.files!["/etc/crypttab"] as string[];
  spec.files!["/etc/crypttab"] = crypttab.map((l) => l.replace("header=/root/zz.hdr", "header=/boot/hdr/zz.hdr"));
  spec.images = spec.images!.map((i) => i.path === "/root/zz.hdr" ? { ...i, path: "/boot/real/zz.hdr" } : i);
  spec.links = { "/boot/hdr": "/mnt/stray/next", "/mnt/stray/next": "../../boot/real" };
  await using tree = await buildTree(spec);
  const p = await discover({ root: tree.root, uid: 0 });
  assert.deepEqual(vol(p, "zz-data").header, { path: "/boot/hdr/zz.hdr", detached: true, on: ["stray"] });
  assert.ok(names(p).indexOf("zz-data") < names(p).indexOf("stray"), `${names(p)}`);
  // a `..` out of stray's mountpoint reads nothing of stray: no volume holds that header
  spec.files!["/etc/crypttab"] = crypttab.map((l) =>
    l.replace("header=/root/zz.hdr", "header=/mnt/stray/../../boot/real/zz.hdr")
  );
  spec.links = { "/mnt/stray/next": "../../boot/real" }; // not on the path: it makes stray's mountpoint
  await using dotdot = await buildTree(spec);
  const q = await discover({ root: dotdot.root, uid: 0 });
  assert.deepEqual(vol(q, "zz-data").header.on, []);
});

Deno.test("plain dm-crypt is not lockable; a missing header is a warning, not a crash", async () => {
  const p = await planOf("plain-dm-crypt");
  assert.deepEqual(names(p), ["cryptroot"]);
  assert.equal(p.notLockable.length, 1);
  assert.equal(p.notLockable[0].name, "cryptswap");
  assert.match(p.notLockable[0].reason, /plain dm-crypt/);
  warned(p, "cryptroot", "/dev/vda2", "ENOENT");
  assert.equal(p.maxArgon2MemoryKiB, 0);
  // the plain swap isn't on a locked volume: no swap warning
  assert.ok(!p.warnings.some((w) => w.startsWith("swap ")));
});

Deno.test("an LV spanning two LUKS PVs goes down with the first locked, comes back after the last unlocked", async () => {
  const p = await planOf("lv-spanning");
  assert.deepEqual(names(p), ["pva", "pvb"]);
  assert.deepEqual(vol(p, "pva").above, ["big-data"]);
  assert.deepEqual(vol(p, "pvb").above, []);
  assert.deepEqual(names(p, "unlock"), ["pvb", "pva"]);
  assert.deepEqual(vol(p, "pvb").mounts.map((m) => m.mountpoint), ["/big"]);
  assert.equal(p.maxArgon2MemoryKiB, 24576);
});

Deno.test("no device-mapper: empty plan; not root is a warning", async () => {
  const p = await planOf("no-dm", 1000);
  assert.deepEqual(p.lock, []);
  assert.deepEqual(p.unlock, []);
  assert.equal(p.dmDevices, 0);
  warned(p, "not running as root");
});

Deno.test("no sysfs under the root: NoSysfsError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => discover({ root: dir }), NoSysfsError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

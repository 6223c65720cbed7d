import assert from "node:assert/strict";
import { deadDisk, goneBelow, goneUnder, lostDisk, onlyVirtioBelow } from "./gone.ts";

/**
 * A sysfs-like tree (`<tmp>/block`, returned): each device a directory, `slaves/` entries symlinks to them, and
 * `<tmp>/dev/block/<major:minor>` links to them, as the kernel lays them out.
 */
async function tree(devices: Record<string, string[]>, numbers: Record<string, string> = {}): Promise<string> {
  const dir = `${await Deno.makeTempDir({ prefix: "gone-" })}/block`;
  await Deno.mkdir(`${dir}/../dev/block`, { recursive: true });
  for (const [devno, name] of Object.entries(numbers)) {
    await Deno.symlink(`../../block/${name}`, `${dir}/../dev/block/${devno}`);
  }
  for (const [name, slaves] of Object.entries(devices)) {
    await Deno.mkdir(`${dir}/${name}/slaves`, { recursive: true });
    if (name.startsWith("dm-")) {
      await Deno.mkdir(`${dir}/${name}/dm`);
      await Deno.writeTextFile(`${dir}/${name}/dm/name`, `cryptsleep-test-absent-${name}\n`);
    }
    for (const s of slaves) await Deno.symlink(`../../${s}`, `${dir}/${name}/slaves/${s}`);
  }
  return dir;
}

Deno.test("goneBelow: nothing while every device is there; the one whose entry went, all the way down", async () => {
  // LUKS on an LV (dm-1) on two disks
  const sys = await tree({ "dm-0": ["dm-1"], "dm-1": ["vdc", "vdd1"], vdc: [], vdd1: [] });
  try {
    assert.deepEqual(goneBelow("dm-0", sys), []);
    await Deno.remove(`${sys}/vdd1`, { recursive: true }); // the kernel removed the disk, the link dangles
    assert.deepEqual(goneBelow("dm-0", sys), ["vdd1"], "a linear LV loses the part on it");
    assert.deepEqual(goneBelow("vdc", sys), [], "a disk has nothing under it");
  } finally {
    await Deno.remove(`${sys}/..`, { recursive: true });
  }
});

Deno.test("goneBelow: one leg of an md mirror gone leaves it working; a device with nothing under it is not gone", async () => {
  const sys = await tree({ "dm-0": ["md0"], md0: ["vdc", "vdd"], vdc: [], vdd: [], "dm-1": [] });
  try {
    await Deno.remove(`${sys}/vdc`, { recursive: true });
    assert.deepEqual(goneBelow("dm-0", sys), [], "vdd still holds the mirror");
    await Deno.remove(`${sys}/vdd`, { recursive: true });
    assert.deepEqual(goneBelow("dm-0", sys).sort(), ["vdc", "vdd"]);
    // a table swap's placeholder (an error table) holds no device: that is no disk gone
    assert.deepEqual(goneBelow("dm-1", sys), []);
  } finally {
    await Deno.remove(`${sys}/..`, { recursive: true });
  }
});

Deno.test("goneUnder: a swap record's data device by number: gone from sysfs, or an LV whose disk went", async () => {
  const sys = await tree({ "dm-2": ["vdc"], vdc: [], vdd: [] }, { "253:2": "dm-2", "254:48": "vdd" });
  try {
    assert.deepEqual(goneUnder("254:48", sys), [], "a disk that is there");
    assert.deepEqual(goneUnder("253:2", sys), []);
    await Deno.remove(`${sys}/vdc`, { recursive: true });
    assert.deepEqual(goneUnder("253:2", sys), ["vdc"], "the LV stays, its disk went");
    assert.deepEqual(goneUnder("254:32", sys), ["254:32"], "no such number any more");
    assert.deepEqual(goneUnder("not-a-number", sys), []);
  } finally {
    await Deno.remove(`${sys}/..`, { recursive: true });
  }
});

Deno.test("deadDisk: a disk whose driver gave it up is lost, by sysfs alone; a partition goes by its disk", async () => {
  const sys = await tree({ "dm-0": ["vdc"], "dm-1": ["sda"], "dm-2": ["nvme0n1"], vdc: [], sda: [], nvme0n1: [] });
  const write = async (path: string, text: string) => {
    await Deno.mkdir(`${sys}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    await Deno.writeTextFile(`${sys}/${path}`, `${text}\n`);
  };
  try {
    await write("vdc/device/status", "0x0000000f"); // ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK: working
    await write("sda/device/state", "running");
    await write("nvme0n1/device/state", "live");
    for (const dm of ["dm-0", "dm-1", "dm-2"]) assert.deepEqual(goneBelow(dm, sys), [], dm);
    await write("vdc/device/status", "0x00000000"); // reset at resume, never made ready again
    await write("sda/device/state", "offline");
    await write("nvme0n1/device/state", "dead");
    assert.deepEqual(goneBelow("dm-0", sys), ["vdc: virtio status 0x00000000"]);
    assert.deepEqual(goneBelow("dm-1", sys), ["sda: state offline"]);
    assert.deepEqual(goneBelow("dm-2", sys), ["nvme0n1: state dead"]);
    await write("vdc/device/status", "0x0000008f"); // FAILED
    assert.deepEqual(goneBelow("dm-0", sys), ["vdc: virtio status 0x0000008f"]);
    assert.equal(lostDisk(goneBelow("dm-0", sys)), "its disk does not answer (vdc: virtio status 0x0000008f)");
    assert.equal(lostDisk(["sdb"]), "its disk is gone (sdb)");
    // a partition has no device/ of its own: its disk's driver is asked
    await Deno.mkdir(`${sys}/vdc/vdc1`);
    await Deno.writeTextFile(`${sys}/vdc/vdc1/partition`, "1\n");
    assert.equal(deadDisk(`${sys}/vdc/vdc1`), "virtio status 0x0000008f");
    await write("vdc/device/status", "0x0000000f");
    assert.equal(deadDisk(`${sys}/vdc/vdc1`), null);
    // only a status in virtio's own form counts (another bus's "status" file is no virtio status)
    await write("sda/device/status", "basic");
    await write("sda/device/state", "running");
    assert.deepEqual(goneBelow("dm-1", sys), []);
    // virtio disks have no I/O timeout; SCSI and NVMe ones do
    assert.equal(onlyVirtioBelow("dm-0", sys), true);
    assert.equal(onlyVirtioBelow("dm-1", sys), false);
    assert.equal(onlyVirtioBelow("dm-2", sys), false);
  } finally {
    await Deno.remove(`${sys}/..`, { recursive: true });
  }
});

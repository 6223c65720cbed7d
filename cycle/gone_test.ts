import assert from "node:assert/strict";
import { goneBelow, goneNames } from "./gone.ts";
import type { Volume } from "../discovery/mod.ts";

/** A sysfs-like tree: each device a directory, `slaves/` entries symlinks to them, as the kernel lays them out. */
async function tree(devices: Record<string, string[]>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "gone-" });
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
    assert.deepEqual(goneBelow("dm-0", sys), ["vdd1"]);
    assert.deepEqual(goneBelow("vdc", sys), [], "a disk has nothing under it");
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});

Deno.test("goneBelow: a dm device whose slaves/ lost every entry is gone below; its backing names it", async () => {
  const sys = await tree({ "dm-0": [] });
  try {
    assert.deepEqual(goneBelow("dm-0", sys), ["?"]);
    const volume = { backing: ["/dev/sdb1"] } as Volume;
    assert.deepEqual(goneNames(volume, ["?"]), ["sdb1"]);
    assert.deepEqual(goneNames(volume, ["sdc"]), ["sdc"]);
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});

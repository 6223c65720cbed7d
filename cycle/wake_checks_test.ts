import assert from "node:assert/strict";
import { suspendedBelow } from "./wake_checks.ts";

/** A /sys/block of LVM on LUKS: dm-2 (an LV) on dm-1 (the LUKS volume) on vdc; dm-4 spans dm-1 and dm-3. */
async function sysBlock(suspended: Record<string, boolean>): Promise<string> {
  const dir = await Deno.makeTempDir();
  const dev = async (k: string, slaves: string[] = [], dm = true) => {
    await Deno.mkdir(`${dir}/${k}/slaves`, { recursive: true });
    for (const s of slaves) await Deno.writeTextFile(`${dir}/${k}/slaves/${s}`, "");
    if (dm) {
      await Deno.mkdir(`${dir}/${k}/dm`);
      await Deno.writeTextFile(`${dir}/${k}/dm/suspended`, suspended[k] ? "1\n" : "0\n");
    }
  };
  await dev("vdc", [], false);
  await dev("vdd", [], false);
  await dev("dm-1", ["vdc"]);
  await dev("dm-3", ["vdd"]);
  await dev("dm-2", ["dm-1"]);
  await dev("dm-4", ["dm-1", "dm-3"]);
  return dir;
}

Deno.test("suspendedBelow: an LV over a locked volume is not resumed; over live ones it is; a spanning LV waits for both", async () => {
  const locked = await sysBlock({ "dm-1": true, "dm-2": true, "dm-4": true });
  const open = await sysBlock({ "dm-2": true, "dm-3": true, "dm-4": true });
  try {
    assert.equal(suspendedBelow("dm-2", locked), true, "its LUKS volume is still locked");
    assert.equal(suspendedBelow("dm-4", locked), true);
    assert.equal(suspendedBelow("dm-2", open), false, "everything under it is live");
    assert.equal(suspendedBelow("dm-4", open), true, "one of the two volumes under it is still locked");
    assert.equal(suspendedBelow("vdc", open), false, "a disk has nothing under it");
  } finally {
    await Deno.remove(locked, { recursive: true });
    await Deno.remove(open, { recursive: true });
  }
});

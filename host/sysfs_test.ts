import assert from "node:assert/strict";
import { join } from "node:path";
import { KNOBS, knobValue, memAvailableKiB, readKnob, restoreKnobs, saveKnobs, setKnob } from "./sysfs.ts";

Deno.test("knobs on a scratch root: save, set, restore; MemAvailable", async () => {
  const root = await Deno.makeTempDir({ prefix: "cryptsleep-knobs-" });
  try {
    await Deno.mkdir(join(root, "sys/power"), { recursive: true });
    await Deno.mkdir(join(root, "proc"));
    await Deno.writeTextFile(join(root, KNOBS.syncOnSuspend), "1\n");
    await Deno.writeTextFile(join(root, KNOBS.pmFreezeTimeout), "20000\n");
    await Deno.writeTextFile(join(root, "proc/meminfo"), "MemTotal: 100 kB\nMemAvailable: 42 kB\n");

    const saved = await saveKnobs(root);
    assert.deepEqual(saved, { [KNOBS.syncOnSuspend]: "1", [KNOBS.pmFreezeTimeout]: "20000" });
    assert.equal(await readKnob(KNOBS.freezeFilesystems, root), null);
    await assert.rejects(setKnob(KNOBS.freezeFilesystems, "0", root), /does not exist: this kernel lacks it/);
    await setKnob(KNOBS.syncOnSuspend, "0", root);
    assert.equal(await readKnob(KNOBS.syncOnSuspend, root), "0");
    await Deno.writeTextFile(join(root, KNOBS.pmFreezeTimeout), "5");
    assert.deepEqual(await restoreKnobs(saved, root), []);
    assert.equal(await readKnob(KNOBS.syncOnSuspend, root), "1");
    assert.equal(await readKnob(KNOBS.pmFreezeTimeout, root), "20000");
    assert.equal(await memAvailableKiB(root), 42);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a choice knob (mem_sleep) is saved as its selected word and put back when another was chosen", async () => {
  const root = await Deno.makeTempDir({ prefix: "cryptsleep-knobs-" });
  try {
    await Deno.mkdir(join(root, "sys/power"), { recursive: true });
    await Deno.writeTextFile(join(root, KNOBS.memSleep), "s2idle [deep]\n");
    const saved = await saveKnobs(root);
    assert.deepEqual(saved, { [KNOBS.memSleep]: "deep" });
    assert.equal(await knobValue(KNOBS.memSleep, root), "deep");
    // the kernel shows the choice it took in brackets; a scratch file stands in with what was written
    await Deno.writeTextFile(join(root, KNOBS.memSleep), "[s2idle] deep\n");
    assert.deepEqual(await restoreKnobs(saved, root), []);
    assert.equal(await readKnob(KNOBS.memSleep, root), "deep");
    assert.deepEqual(await restoreKnobs({ [KNOBS.memSleep]: "deep" }, root), [], "already deep: nothing written");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

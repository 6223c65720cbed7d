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

    const saved = saveKnobs(root);
    assert.deepEqual(saved, { [KNOBS.syncOnSuspend]: "1", [KNOBS.pmFreezeTimeout]: "20000" });
    assert.equal(readKnob(KNOBS.freezeFilesystems, root), null);
    assert.throws(() => setKnob(KNOBS.freezeFilesystems, "0", root), /does not exist: this kernel lacks it/);
    setKnob(KNOBS.syncOnSuspend, "0", root);
    assert.equal(readKnob(KNOBS.syncOnSuspend, root), "0");
    await Deno.writeTextFile(join(root, KNOBS.pmFreezeTimeout), "5");
    assert.deepEqual(restoreKnobs(saved, root), []);
    assert.equal(readKnob(KNOBS.syncOnSuspend, root), "1");
    assert.equal(readKnob(KNOBS.pmFreezeTimeout, root), "20000");
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
    const saved = saveKnobs(root);
    assert.deepEqual(saved, { [KNOBS.memSleep]: "deep" });
    assert.equal(knobValue(KNOBS.memSleep, root), "deep");
    // the kernel shows the choice it took in brackets; a scratch file stands in with what was written
    await Deno.writeTextFile(join(root, KNOBS.memSleep), "[s2idle] deep\n");
    assert.deepEqual(restoreKnobs(saved, root), []);
    assert.equal(readKnob(KNOBS.memSleep, root), "deep");
    assert.deepEqual(restoreKnobs({ [KNOBS.memSleep]: "deep" }, root), [], "already deep: nothing written");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

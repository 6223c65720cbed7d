/**
 * A dm device stacked above a LUKS volume (as an LVM logical volume is): the plan suspends it first (with
 * lockfs, so its filesystem is frozen clean) and resumes it after the volume below is unlocked.
 */
import assert from "node:assert/strict";
import { answerPrompt, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, openDataDisk, volumeKey } from "./harness.ts";

Deno.test({
  name: "a dm device above the data volume is suspended first and resumed after; its filesystem intact",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ dataDisk: true });
    await openDataDisk(vm);
    const setup = await vm.sh(
      "umount /mnt/data && " +
        'dmsetup create upper --table "0 $(blockdev --getsz /dev/mapper/data) linear /dev/mapper/data 0" && ' +
        "dmsetup mknodes upper && mkdir -p /mnt/up && mount /dev/mapper/upper /mnt/up && " +
        "echo upper-ok > /mnt/up/u && sync",
    );
    assert.equal(setup.code, 0, setup.out);

    const plan = await vm.sh("cryptsleep plan --json", { timeoutMs: 120_000 });
    const data = JSON.parse(plan.out).lock.find((v: { dmName: string }) => v.dmName === "data");
    assert.deepEqual(data.above, ["upper"], plan.out);

    const needles = keyHalves(await volumeKey(vm, "/dev/vdc"));
    await startSuspend(vm);
    await vm.waitForEvent("SUSPEND", 300_000);
    assert.deepEqual(await vm.searchRam(needles), [0, 0], "the data volume's key is gone while suspended");
    await vm.wake();
    await answerPrompt(vm);
    assert.equal(await suspendExit(vm), 0);

    const after = await vm.sh("cat /mnt/up/u; dmsetup info upper | grep State");
    assert.match(after.out, /upper-ok/);
    assert.match(after.out, /State:\s+ACTIVE/);
  },
});

/**
 * Devices stacked above a LUKS volume, laid out as LVM on LUKS is (the usual encrypted install): two linear
 * mappings on the data volume, `vg-home` with a filesystem and `vg-swap` with active swap. The plan lists both
 * above the volume and the swap on it; the cycle suspends both first (lockfs freezes the filesystem clean),
 * then the volume, and resumes them after it; the filesystem and the swap are intact.
 *
 * (The guest has no lvm2; at the device-mapper level an LV is exactly such a linear mapping.)
 */
import assert from "node:assert/strict";
import { answerPrompt, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, openDataDisk, volumeKey } from "./harness.ts";

Deno.test({
  name: "LVM-like stack on the data volume: both mappings above are suspended first and resumed after, intact",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ dataDisk: true });
    await openDataDisk(vm);
    const setup = await vm.sh(
      "umount /mnt/data && n=$(blockdev --getsz /dev/mapper/data) && h=$((n / 2)) && " +
        'dmsetup create vg-home --table "0 $h linear /dev/mapper/data 0" && ' +
        'dmsetup create vg-swap --table "0 $((n - h)) linear /dev/mapper/data $h" && ' +
        "dmsetup mknodes && mkfs.ext4 -F -q /dev/mapper/vg-home && mkdir -p /mnt/home && " +
        "mount /dev/mapper/vg-home /mnt/home && mkswap /dev/mapper/vg-swap >/dev/null && " +
        "swapon /dev/mapper/vg-swap && echo home-ok > /mnt/home/h && sync",
      { timeoutMs: 120_000 },
    );
    assert.equal(setup.code, 0, setup.out);

    const plan = await vm.sh("cryptsleep plan --json", { timeoutMs: 120_000 });
    const data = JSON.parse(plan.out).lock.find((v: { dmName: string }) => v.dmName === "data");
    assert.deepEqual([...data.above].sort(), ["vg-home", "vg-swap"], plan.out);
    assert.equal(data.swaps.length, 1, `the swap on vg-swap counts as on the volume: ${plan.out}`);

    const needles = keyHalves(await volumeKey(vm, "/dev/vdc"));
    await startSuspend(vm);
    await vm.waitForSuspend(300_000);
    assert.deepEqual(await vm.searchRam(needles), [0, 0], "the data volume's key is gone while suspended");
    await vm.wake();
    await answerPrompt(vm);
    assert.equal(await suspendExit(vm), 0);

    const after = await vm.sh(
      "cat /mnt/home/h; dmsetup info vg-home vg-swap | grep State; tail -n +2 /proc/swaps | wc -l",
    );
    assert.match(after.out, /home-ok/);
    assert.equal(after.out.match(/State:\s+ACTIVE/g)?.length, 2, after.out);
    assert.ok(Number(after.out.trim().split("\n").at(-1)) >= 1, `swap still active: ${after.out}`);
  },
});

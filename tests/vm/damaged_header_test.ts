/**
 * A LUKS2 primary header damaged while the machine sleeps (#10's faults): the first 4 KiB of a plugged disk's volume
 * are zeroed in its image on the host during S3. The identity check at wake (cycle/unlock.ts) reads that block past the
 * page cache and finds no LUKS header — but LUKS2 keeps a secondary copy, and libcryptsetup unlocks from it. The
 * volume is this one, damaged, not another disk: it must be unlocked, its data intact, never retired as exchanged.
 */
import assert from "node:assert/strict";
import { answerPrompt, FULL_TIER, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { diskOfSize, must, sparseImage } from "./disks.ts";
import { boot } from "./harness.ts";

Deno.test({
  name: "a LUKS2 primary header zeroed while asleep: unlocked from its secondary copy, not retired as exchanged",
  ignore: !FULL_TIER,
  ...SLOW,
  fn: async () => {
    await using vm = await boot({});
    const pass = vm.guest.passphrase;
    const image = await sparseImage(vm, "usb.img", 72);
    await vm.plugDisk("usb", image, { readOnly: false });
    const dev = await diskOfSize(vm, 147456);
    await must(
      vm,
      `printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 ` +
        `--pbkdf-force-iterations 1000 --key-file - /dev/${dev} && ` +
        `printf %s '${pass}' | cryptsetup open --key-file - /dev/${dev} usb && mkfs.ext4 -q /dev/mapper/usb && ` +
        "mkdir -p /mnt/usb && mount /dev/mapper/usb /mnt/usb && echo kept > /mnt/usb/kept && sync",
    );
    const from = vm.console.length;
    await startSuspend(vm);
    await vm.waitForSuspend(300_000);
    // damaged sectors: written into the image from outside (QEMU reads it through the host's page cache)
    {
      using f = await Deno.open(image, { write: true });
      await f.write(new Uint8Array(4096));
      await f.syncData();
    }
    await vm.wake();
    await answerPrompt(vm);
    const code = await suspendExit(vm, 600_000);
    const text = vm.console.slice(from);
    assert.doesNotMatch(text, /exchanged|no LUKS header/, text);
    assert.equal(code, 0, text);
    const after = await must(
      vm,
      `dd if=/dev/${dev} bs=4096 count=1 iflag=direct 2>/dev/null | od -An -c | head -1; ` +
        "dmsetup table usb | cut -d' ' -f3; echo 3 > /proc/sys/vm/drop_caches; cat /mnt/usb/kept",
    );
    // the control: the primary was damaged on the disk (unless libcryptsetup repaired it), and the data reads back
    assert.match(after, /^crypt$/m, after);
    assert.match(after, /^kept$/m, after);
  },
});

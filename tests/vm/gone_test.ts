/**
 * A disk pulled out while the machine sleeps (#10's faults): a LUKS2 volume on a hot-plugged virtio disk, mounted,
 * with a writer on it, is locked with the root; QMP `device_del` as the guest wakes takes the disk away (its kernel
 * lets go of it while the cycle unlocks). The root unlocks with its passphrase; the volume whose disk is gone cannot be
 * (its header is gone with it): it must not keep the machine frozen behind a prompt nobody can answer. Its mapping
 * gets the `error` target — every read and write on it fails at once instead of waiting forever — userspace
 * thaws, the writer goes on (getting errors), the exit status is 1 and the console says what happened and what to do.
 * The volume can then be unmounted and closed. Then a disk pulled out before the suspend, its mapping still open
 * (its key in RAM): the lock drops the mapping's crypt table for the error target (no header to lock by), the key is
 * not in RAM while asleep, and after wake nobody is asked for it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { boot, keyHalves, type VM, volumeKey } from "./harness.ts";
import { answerPrompt, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";

Deno.test({
  name: "a disk gone at wake, or before the suspend: its volume fails I/O, no key sleeps, the rest unlocks, exit 1",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({});
    const image = join(vm.tmp, "usb.img");
    {
      using f = await Deno.open(image, { create: true, write: true });
      await f.truncate(64 << 20);
    }
    await vm.plugDisk("usb", image, { readOnly: false });
    const pass = vm.guest.passphrase;
    const setup = await vm.sh(
      "i=0; while [ ! -b /dev/vdc ] && [ $i -lt 60 ]; do i=$((i+1)); sleep 1; done; " +
        `printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 ` +
        "--pbkdf-force-iterations 1000 --key-file - /dev/vdc && " +
        `printf %s '${pass}' | cryptsetup open --key-file - /dev/vdc usb && ` +
        "mkfs.ext4 -q /dev/mapper/usb && mkdir -p /mnt/usb && mount /dev/mapper/usb /mnt/usb && " +
        "echo before > /mnt/usb/before && sync",
      { timeoutMs: 300_000 },
    );
    assert.equal(setup.code, 0, setup.out);
    await must(vm, "(while :; do echo w >> /mnt/usb/w.log; echo r >> /root/w.log; sleep 1; done) >/dev/null 2>&1 &");

    const from = vm.console.length;
    await startSuspend(vm);
    await vm.waitForEvent("SUSPEND", 300_000);
    // found gone as the machine wakes, as the kernel finds a USB disk pulled out while asleep: removed after the
    // resume, while the cycle unlocks. (A virtio disk removed by QEMU during S3 is dropped without the guest's eject;
    // its requests are then never answered — a disk that stops answering, a case of its own.)
    await vm.wake();
    await vm.qmp("device_del", { id: "usb" });
    await vm.waitForEvent("DEVICE_DELETED", 120_000);
    await vm.waitForConsole(/Passphrase to unlock root \S+: /, 300_000, from);
    await vm.type(pass + "\n");
    // no passphrase for usb: the cycle ends by itself once the kernel let go of its disk
    const code = await suspendExit(vm, 600_000);
    const text = vm.console.slice(from);
    assert.equal(code, 1, text);
    assert.match(text, /usb: its disk is gone \(vdc\)/, text);
    assert.match(text, /umount \/mnt\/usb/, text);
    assert.match(text, /cryptsetup close usb/, text);

    // thawed: the root's writer goes on; the volume fails at once instead of hanging
    const r = await vm.sh(
      "n=$(wc -l < /root/w.log); sleep 3; [ $(wc -l < /root/w.log) -gt $n ] && echo root-writer-goes-on; " +
        "dmsetup table usb; dmsetup info -c --noheadings -o suspended usb; " +
        "dd if=/dev/mapper/usb of=/dev/null bs=4096 count=1 iflag=direct 2>&1 || echo read-failed",
      { timeoutMs: 120_000 },
    );
    assert.match(r.out, /root-writer-goes-on/, r.out);
    assert.match(r.out, /^0 \d+ error\s*$/m, r.out);
    assert.match(r.out, /^Active\s*$/m, r.out);
    assert.match(r.out, /read-failed/, r.out);
    // what the console said to do works
    const close = await vm.sh("kill %1; wait; umount /mnt/usb && cryptsetup close usb && echo closed", {
      timeoutMs: 120_000,
    });
    assert.match(close.out, /closed/, close.out);
    const state = await vm.sh(
      "dmsetup ls; for f in $(find /sys/fs/cgroup -name cgroup.events); do grep -q '^frozen 1' $f && echo FROZEN $f; " +
        "done; cat /proc/sys/kernel/modprobe",
    );
    assert.doesNotMatch(state.out, /usb|FROZEN/, state.out);
    assert.match(state.out, /^\/sbin\/modprobe$/m, "kernel.modprobe is back after the unlock");

    // pulled out before the suspend, the mapping still open (its key in RAM): the lock has no header to go by;
    // the suspend goes on, and the key must not sleep in RAM
    await vm.plugDisk("usb2", image, { readOnly: false });
    const dev = (await must(
      vm,
      "i=0; while [ $i -lt 60 ]; do for d in /sys/block/vd*; do [ $(cat $d/size) = 131072 ] && { echo ${d##*/}; break 2; }; " +
        "done; i=$((i+1)); sleep 1; done",
    )).trim();
    await must(
      vm,
      `printf %s '${pass}' | cryptsetup open --key-file - /dev/${dev} usb && mount /dev/mapper/usb /mnt/usb`,
    );
    await must(vm, "(while :; do echo w >> /mnt/usb/w.log; sleep 1; done) >/dev/null 2>&1 &");
    const needles = keyHalves(await volumeKey(vm, `/dev/${dev}`));
    await vm.unplugDisk("usb2");
    assert.ok((await vm.searchRam(needles)).every((n) => n > 0), "control: the open mapping's key is in RAM");
    const from2 = vm.console.length;
    await startSuspend(vm);
    await vm.waitForEvent("SUSPEND", 300_000);
    assert.deepEqual(await vm.searchRam(needles), [0, 0], "the gone disk's key is not in RAM while asleep");
    await vm.wake();
    await answerPrompt(vm);
    assert.equal(await suspendExit(vm, 600_000), 1, vm.console.slice(from2));
    const text2 = vm.console.slice(from2);
    assert.match(text2, new RegExp(`usb: its disk is gone \\(${dev}\\): its mapping.s key was dropped`), text2);
    assert.match(text2, /cryptsetup close usb/, text2);
    assert.doesNotMatch(text2, /Passphrase to unlock usb/, text2);
    const after = await must(
      vm,
      "dmsetup table usb; kill %1; wait; umount /mnt/usb && cryptsetup close usb && echo closed",
    );
    assert.match(after, /^0 \d+ error\s*$/m, after);
    assert.match(after, /closed/, after);
  },
});

async function must(vm: VM, cmd: string): Promise<string> {
  const r = await vm.sh(cmd, { timeoutMs: 300_000 });
  assert.equal(r.code, 0, `${cmd}\n${r.out}`);
  return r.out;
}

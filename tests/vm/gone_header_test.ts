/**
 * A disk gone at wake that held another volume's detached header (#10's faults × layouts): `usb`, a LUKS2 volume on a
 * hot-plugged disk, holds `dep.hdr`, the header of `dep` (LUKS1 on the data disk, named in crypttab). The disk is
 * pulled out as the guest wakes. `usb` is retired (gone_test.ts); `dep` can never be unlocked either, its header went
 * with the disk: it must be retired too and said so, never asked for again and again behind a frozen machine.
 */
import assert from "node:assert/strict";
import { FULL_TIER, SLOW } from "./cycle_helpers.ts";
import { diskOfSize, must, pulledAtWake, sparseImage } from "./disks.ts";
import { boot, type VM } from "./harness.ts";

/** Answers every passphrase prompt until the cycle's exit marker; null when none came within `ms`. */
async function answerUntilExit(vm: VM, from: number, ms: number): Promise<number | null> {
  let answered = from;
  for (const until = Date.now() + ms; Date.now() < until;) {
    const exit = /CS-EXIT-(\d+)\r?\n/.exec(vm.console.slice(from));
    if (exit) return Number(exit[1]);
    const prompt = /Passphrase to unlock \S+/.exec(vm.console.slice(answered));
    if (prompt) {
      answered += prompt.index + prompt[0].length;
      await vm.type(vm.guest.passphrase + "\n");
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  return null;
}

Deno.test({
  name: "a disk gone at wake that held another volume's detached header: both volumes retired, nobody asked forever",
  ignore: !FULL_TIER,
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ dataDisk: true });
    const pass = vm.guest.passphrase;
    // 72 MiB: a size no other disk of the guest has (the data disk, vdc, is 64 MiB)
    await vm.plugDisk("usb", await sparseImage(vm, "usb.img", 72), { readOnly: false });
    const usb = await diskOfSize(vm, 147456);
    await must(
      vm,
      `printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 ` +
        `--pbkdf-force-iterations 1000 --key-file - /dev/${usb} && ` +
        `printf %s '${pass}' | cryptsetup open --key-file - /dev/${usb} usb && ` +
        "mkfs.ext4 -q /dev/mapper/usb && mkdir -p /mnt/usb && mount /dev/mapper/usb /mnt/usb && " +
        `truncate -s 4M /mnt/usb/dep.hdr && printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks1 ` +
        `--pbkdf-force-iterations 1000 --header /mnt/usb/dep.hdr --key-file - /dev/vdc && ` +
        `printf %s '${pass}' | cryptsetup open --header /mnt/usb/dep.hdr --key-file - /dev/vdc dep && ` +
        "echo 'dep /dev/vdc none luks,header=/mnt/usb/dep.hdr' >> /etc/crypttab && " +
        "mkfs.ext4 -F -q /dev/mapper/dep && mkdir -p /mnt/dep && mount /dev/mapper/dep /mnt/dep && sync",
    );
    await must(vm, "(while :; do echo w >> /mnt/dep/w.log; echo r >> /root/w.log; sleep 1; done) >/dev/null 2>&1 &");
    const plan = await must(vm, "cryptsleep plan --json");
    const order = JSON.parse(plan.slice(plan.indexOf("{"), plan.lastIndexOf("}") + 1)).lock
      .map((v: { dmName: string }) => v.dmName);
    assert.ok(order.indexOf("dep") < order.indexOf("usb"), `dep is locked before the volume of its header: ${order}`);

    const from = await pulledAtWake(vm, "usb");
    const code = await answerUntilExit(vm, from, 420_000);
    const text = vm.console.slice(from);
    assert.notEqual(code, null, `no exit within 420 s: dep asked for ever behind a frozen machine?\n${text}`);
    assert.equal(code, 1, text);
    assert.match(text, /usb: its disk is gone/, text);
    assert.match(text, /dep: its detached header \/mnt\/usb\/dep\.hdr was on usb, whose disk is gone/, text);
    assert.doesNotMatch(text, /Press Enter to try again/, text);

    const r = await must(
      vm,
      "n=$(wc -l < /root/w.log); sleep 3; [ $(wc -l < /root/w.log) -gt $n ] && echo root-writer-goes-on; " +
        "dmsetup table dep; dmsetup table usb; " +
        "dd if=/dev/mapper/dep of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null || echo dep-read-failed",
    );
    assert.match(r, /root-writer-goes-on/, r);
    assert.equal(r.match(/^0 \d+ error\s*$/gm)?.length, 2, `both dep and usb have the error target:\n${r}`);
    assert.match(r, /dep-read-failed/, r);
    // what the console says to do works
    const closed = await must(
      vm,
      "kill %1; wait; umount /mnt/dep && cryptsetup close dep && umount /mnt/usb && cryptsetup close usb && " +
        "echo closed",
    );
    assert.match(closed, /closed/, closed);
  },
});

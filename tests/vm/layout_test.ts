/**
 * Layouts whose lock order the block device graph alone does not give: volumes that need a file living on another
 * LUKS volume, named to sort after it, so a name order would lock that volume first.
 * - A volume opened from an image file on the LUKS root: its own lock would write through the loop device into the
 *   locked root, the agent blocks in D state, and the machine stays frozen with no prompt. On 6.1 the image's key is
 *   pinned (its loop device), so its lock is the table swap with its filesystem frozen.
 * - A LUKS1 volume on a disk of its own whose detached header is a file on the LUKS root (crypttab `header=`):
 *   libcryptsetup reads that header to lock it and again to unlock it, so it is locked before the root and unlocked
 *   after it. Nothing is stacked on either, so only the header gives the order.
 * And a layout the graph does give, checked end to end: LUKS2 on an LVM logical volume, with btrfs on it.
 * CI's tier runs 6.1; the full tier every kernel (on 6.18 the root's key is pinned too).
 */
import assert from "node:assert/strict";
import { fullCycle, lineCount, SLOW, tierKernels } from "./cycle_helpers.ts";
import { boot, keyHalves, volumeKey } from "./harness.ts";

for (const kernel of tierKernels(["6.1"], ["6.1", "6.12", "6.18", "7.3"])) {
  Deno.test({
    name:
      `kernel ${kernel}: an image-file volume on the LUKS root, named after it, is locked before the root and unlocked after it`,
    ...SLOW,
    fn: async () => {
      await using vm = await boot({ kernel });
      const pass = vm.guest.passphrase;
      const setup = await vm.sh(
        `truncate -s 48M /root/zz.img && printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks2 ` +
          `--pbkdf argon2id --pbkdf-memory 32768 --pbkdf-force-iterations 4 --key-file - /root/zz.img && ` +
          `printf %s '${pass}' | cryptsetup open --key-file - /root/zz.img zz-vault && ` +
          "mkfs.ext4 -F -q /dev/mapper/zz-vault && mkdir -p /mnt/vault && mount /dev/mapper/zz-vault /mnt/vault && " +
          "echo kept > /mnt/vault/kept && sync && grep -c ' /mnt/vault ' /proc/mounts",
        { timeoutMs: 180_000 },
      );
      assert.equal(setup.code, 0, setup.out);
      // its own command: a trailing & would put the whole && chain above in the background
      const writer = await vm.sh(
        "(while :; do echo x >> /mnt/vault/writer.log; sync; sleep 0.2; done) >/dev/null 2>&1 & sleep 1; echo started",
      );
      assert.equal(writer.code, 0, writer.out);

      const plan = await vm.sh("cryptsleep plan --json", { timeoutMs: 120_000 });
      assert.equal(plan.code, 0, plan.out);
      const order = JSON.parse(plan.out.slice(plan.out.indexOf("{"), plan.out.lastIndexOf("}") + 1)).lock
        .map((v: { dmName: string }) => v.dmName);
      assert.deepEqual(order, ["zz-vault", "root"], "the image's volume goes before the volume holding its file");

      const needles = [
        ...keyHalves(await volumeKey(vm, "/dev/vda")),
        ...keyHalves(await volumeKey(vm, "/root/zz.img")),
      ];
      const cycle = await fullCycle(vm, needles);
      assert.deepEqual(cycle.hits, needles.map(() => 0), "no key half of either volume in RAM while suspended");

      const kept = await vm.sh("cat /mnt/vault/kept");
      if (kept.out.trim() !== "kept") {
        const why = await vm.sh("grep -e vault -e zz /proc/mounts; ls -la /mnt/vault; dmsetup table; dmesg | tail -40");
        assert.fail(`the image volume's data does not read back: ${kept.out}\n${why.out}\n${cycle.text}`);
      }
      const before = await lineCount(vm, "/mnt/vault/writer.log");
      await vm.sh("sleep 2");
      assert.ok(await lineCount(vm, "/mnt/vault/writer.log") > before, "the writer on the image volume goes on");
      await vm.sh("kill %1; wait");
    },
  });
}

for (const kernel of tierKernels(["6.1"], ["6.1", "6.12", "6.18", "7.3"])) {
  Deno.test({
    name:
      `kernel ${kernel}: a LUKS1 volume whose detached header is a file on the LUKS root, named after it, is locked ` +
      "before the root and unlocked after it",
    ...SLOW,
    fn: async () => {
      await using vm = await boot({ kernel, dataDisk: true });
      const pass = vm.guest.passphrase;
      // crypttab says where the header is, as a user's would; the header file is the only link between the two
      const setup = await vm.sh(
        `truncate -s 4M /root/zz.hdr && printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks1 ` +
          `--pbkdf-force-iterations 1000 --header /root/zz.hdr --key-file - /dev/vdc && ` +
          `printf %s '${pass}' | cryptsetup open --header /root/zz.hdr --key-file - /dev/vdc zz-data && ` +
          "echo 'zz-data /dev/vdc none luks,header=/root/zz.hdr' >> /etc/crypttab && " +
          "mkfs.ext4 -F -q /dev/mapper/zz-data && mkdir -p /mnt/zz && mount /dev/mapper/zz-data /mnt/zz && " +
          "echo kept > /mnt/zz/kept && sync && grep -c ' /mnt/zz ' /proc/mounts",
        { timeoutMs: 180_000 },
      );
      assert.equal(setup.code, 0, setup.out);
      const writer = await vm.sh(
        "(while :; do echo x >> /mnt/zz/writer.log; sync; sleep 0.2; done) >/dev/null 2>&1 & sleep 1; echo started",
      );
      assert.equal(writer.code, 0, writer.out);

      const needles = [
        ...keyHalves(await volumeKey(vm, "/dev/vda")),
        ...keyHalves(await volumeKey(vm, "--header /root/zz.hdr /dev/vdc")),
      ];
      // the cycle before the order is asserted: a wrong order shows as what it does to the cycle
      const cycle = await fullCycle(vm, needles);
      assert.deepEqual(cycle.hits, needles.map(() => 0), "no key half of either volume in RAM while suspended");

      const plan = await vm.sh("cryptsleep plan --json", { timeoutMs: 120_000 });
      assert.equal(plan.code, 0, plan.out);
      const order = JSON.parse(plan.out.slice(plan.out.indexOf("{"), plan.out.lastIndexOf("}") + 1)).lock
        .map((v: { dmName: string }) => v.dmName);
      assert.deepEqual(order, ["zz-data", "root"], "the volume goes before the volume holding its header");

      const kept = await vm.sh("cat /mnt/zz/kept");
      assert.equal(kept.out.trim(), "kept", `the detached-header volume's data does not read back: ${kept.out}`);
      const before = await lineCount(vm, "/mnt/zz/writer.log");
      await vm.sh("sleep 2");
      assert.ok(await lineCount(vm, "/mnt/zz/writer.log") > before, "the writer on the detached volume goes on");
      await vm.sh("kill %1; wait");
    },
  });
}

for (const kernel of tierKernels(["6.1"], ["6.1", "6.12", "6.18", "7.3"])) {
  Deno.test({
    name: `kernel ${kernel}: LUKS on LVM with btrfs on it: locked and unlocked with the root, the LV left alone`,
    ...SLOW,
    fn: async () => {
      await using vm = await boot({ kernel, dataDisk: true });
      const pass = vm.guest.passphrase;
      // the busybox guest runs no udev: lvm makes its device nodes itself (DM_DISABLE_UDEV)
      const lvm = await vm.sh(
        "export DM_DISABLE_UDEV=1 && mkdir -p /run/lvm /run/lock/lvm && lvm pvcreate -q -ff -y /dev/vdc && lvm vgcreate -q vg /dev/vdc && " +
          "lvm lvcreate -q -y -L 48M -n lv vg && ls -l /dev/mapper/vg-lv",
        { timeoutMs: 180_000 },
      );
      assert.equal(lvm.code, 0, lvm.out);
      const setup = await vm.sh(
        `printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks2 --luks2-keyslots-size 1m ` +
          `--pbkdf argon2id --pbkdf-memory 32768 --pbkdf-force-iterations 4 --key-file - /dev/vg/lv && ` +
          `printf %s '${pass}' | cryptsetup open --key-file - /dev/vg/lv crypt-lv && ` +
          "mkfs.btrfs -q -f --mixed /dev/mapper/crypt-lv && mkdir -p /mnt/b && mount -t btrfs /dev/mapper/crypt-lv /mnt/b && " +
          "echo kept > /mnt/b/kept && sync && grep -c ' /mnt/b btrfs ' /proc/mounts",
        { timeoutMs: 180_000 },
      );
      assert.equal(setup.code, 0, setup.out);
      const writer = await vm.sh(
        "(while :; do echo x >> /mnt/b/writer.log; sync; sleep 0.2; done) >/dev/null 2>&1 & sleep 1; echo started",
      );
      assert.equal(writer.code, 0, writer.out);

      const needles = [
        ...keyHalves(await volumeKey(vm, "/dev/vda")),
        ...keyHalves(await volumeKey(vm, "/dev/vg/lv")),
      ];
      const cycle = await fullCycle(vm, needles);
      assert.deepEqual(cycle.hits, needles.map(() => 0), "no key half of either volume in RAM while suspended");

      const after = await vm.sh(
        "cat /mnt/b/kept; for d in /sys/block/dm-*; do echo $(cat $d/dm/name) suspended=$(cat $d/dm/suspended); done; " +
          "btrfs device stats /mnt/b | grep -v ' 0$'; dmesg | grep -i -E 'btrfs.*(error|warn)|I/O error' | head -5",
      );
      assert.equal(after.code, 0, after.out);
      assert.match(after.out, /^kept$/m, "the btrfs data reads back");
      assert.match(after.out, /^vg-lv suspended=0$/m, "the LV under the volume is live");
      assert.doesNotMatch(after.out, /suspended=1|_errs|error|warn/i, "nothing left suspended, no btrfs or I/O error");
      const before = await lineCount(vm, "/mnt/b/writer.log");
      await vm.sh("sleep 2");
      assert.ok(await lineCount(vm, "/mnt/b/writer.log") > before, "the writer on btrfs goes on");
      await vm.sh("kill %1; wait");
    },
  });
}

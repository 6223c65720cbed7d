/**
 * Layouts whose lock order the block device graph alone does not give: a volume opened from an image file that
 * lives on another LUKS volume. The image's volume must be locked before its host (its filesystem is frozen and
 * its key wiped while the host still takes writes) and unlocked after it. Named to sort after its host, so a
 * name order would lock the host first: then the image's own lock writes through the loop device into the locked
 * host, the agent blocks in D state, and the machine stays frozen with no prompt. On 6.1 the image's key is pinned
 * (its loop device), so its lock is the table swap with its filesystem frozen. CI's tier runs 6.1; the full tier
 * every kernel (on 6.18 the root's key is pinned too).
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

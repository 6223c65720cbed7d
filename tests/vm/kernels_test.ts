/**
 * The cycle on every kernel the archive serves, with the LUKS root opened the normal way (cryptsetup in the
 * initramfs, keyring mode). On 6.12 and 7.3 the key leaves RAM with luksSuspend. On 6.18 the kernel pins the
 * opener's thread keyring through the dm table's device file, so luksSuspend alone leaves the root's key in a
 * keyring: cryptsleep freezes the root filesystem and swaps the table away at the lock, so the key leaves RAM at
 * the first suspend too, and the unlock rebuilds the mapping from the passphrase.
 *
 * CI's tier runs 6.18 (the pinned root; 6.1 runs every other VM test); the full tier all three.
 * `CRYPTSLEEP_VM_KERNELS=6.12,7.3` picks the kernels (each first run builds its guest, ~1.5 min).
 */
import assert from "node:assert/strict";
import { fullCycle, SLOW, tierKernels } from "./cycle_helpers.ts";
import { boot, keyHalves, volumeKey } from "./harness.ts";

const KERNELS = tierKernels(["6.18"], ["6.12", "6.18", "7.3"]);
/** Kernels on which the root's key is pinned at the first suspend (measured on the bed). */
const PINS_OPENER_KEYRING = new Set(["6.18"]);

for (const kernel of KERNELS) {
  Deno.test({
    name: `kernel ${kernel}: ${
      PINS_OPENER_KEYRING.has(kernel)
        ? "the pinned key of the root is released by the table swap: out of RAM from the first suspend"
        : "the root's key is out of RAM while suspended"
    }`,
    ...SLOW,
    fn: async () => {
      await using vm = await boot({ kernel });
      const needles = keyHalves(await volumeKey(vm, "/dev/vda"));
      const open = await vm.searchRam(needles);
      assert.ok(open.every((n) => n > 0), `control: the key is in RAM while open: ${open}`);

      const first = await fullCycle(vm, needles);
      assert.deepEqual(first.hits, [0, 0], `no key half in RAM while suspended on ${kernel}`);
      assert.doesNotMatch(first.text, /stays in RAM during this suspend|re-opened/);
      const status = await vm.sh("cryptsleep status --json");
      const facts = JSON.parse(status.out.slice(0, status.out.lastIndexOf("}") + 1)).facts;
      if (PINS_OPENER_KEYRING.has(kernel)) {
        assert.deepEqual(
          facts.releasedAtLock,
          ["root"],
          `the pinned key was released by the table swap: ${status.out}`,
        );
        const keys = await vm.sh("grep -c 'cryptsetup:' /proc/keys");
        assert.equal(keys.out.trim(), "0", "no volume key left in a keyring");
        const second = await fullCycle(vm, needles);
        assert.deepEqual(second.hits, [0, 0], `no key half in RAM at the second suspend on ${kernel}`);
        assert.doesNotMatch(second.text, /stays in RAM during this suspend|re-opened/);
      } else {
        assert.equal(facts.releasedAtLock, undefined, "nothing pinned: the plain luksSuspend");
      }
      // the root still works, and is still the LUKS mapping cryptsetup knows
      const after = await vm.sh(
        "echo after > /cs-after && sync && cat /cs-after && cryptsetup status root | grep -E '^  type:'",
      );
      assert.equal(after.code, 0, after.out);
      assert.match(after.out, /after[\s\S]*type:\s+LUKS2/);
      assert.equal((await vm.sh("dmsetup ls | grep -c cryptsleep-")).out.trim(), "0", "no helper mapping left");
    },
  });
}

/**
 * The cycle on every kernel the archive serves, with the LUKS root opened the normal way (cryptsetup in the
 * initramfs, keyring mode). On 6.12 and 7.3 the key leaves RAM at the first suspend. On 6.18 the kernel pins
 * the opener's thread keyring through the dm table's device file, so the key of the root stays in a keyring
 * through every suspend while the root is open (a table refresh keeps the device, and the pin): cryptsleep
 * must say so before each sleep, and what it says must be true.
 *
 * `CRYPTSLEEP_VM_KERNELS=6.12,7.3` limits the kernels (each first run builds its guest, ~1.5 min).
 */
import assert from "node:assert/strict";
import { answerPrompt, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, type VM, volumeKey } from "./harness.ts";

const KERNELS = (Deno.env.get("CRYPTSLEEP_VM_KERNELS") ?? "6.12,6.18,7.3").split(",").filter(Boolean);
/** Kernels on which the root's key is pinned at the first suspend (measured on the bed). */
const PINS_OPENER_KEYRING = new Set(["6.18"]);

/** One full cycle; returns the key hits seen while suspended and the console text of the cycle. */
async function cycle(vm: VM, needles: Uint8Array[]): Promise<{ hits: number[]; text: string }> {
  const from = vm.console.length;
  await startSuspend(vm);
  await vm.waitForEvent("SUSPEND", 300_000);
  const hits = await vm.searchRam(needles);
  await vm.wake();
  await answerPrompt(vm);
  assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
  return { hits, text: vm.console.slice(from) };
}

for (const kernel of KERNELS) {
  Deno.test({
    name: `kernel ${kernel}: ${
      PINS_OPENER_KEYRING.has(kernel)
        ? "the pinned key of the root is reported before each sleep, truly"
        : "the root's key is out of RAM while suspended"
    }`,
    ...SLOW,
    fn: async () => {
      await using vm = await boot({ kernel });
      const needles = keyHalves(await volumeKey(vm, "/dev/vda"));
      const open = await vm.searchRam(needles);
      assert.ok(open.every((n) => n > 0), `control: the key is in RAM while open: ${open}`);

      const first = await cycle(vm, needles);
      if (PINS_OPENER_KEYRING.has(kernel)) {
        for (const c of [first, await cycle(vm, needles)]) {
          assert.match(c.text, /warning: root: its volume key stays in RAM during this suspend/);
          assert.ok(c.hits.some((n) => n > 0), `the warning is true: the key is in RAM (${c.hits})`);
        }
      } else {
        assert.deepEqual(first.hits, [0, 0], `no key half in RAM while suspended on ${kernel}`);
        assert.doesNotMatch(first.text, /stays in RAM during this suspend/);
      }
    },
  });
}

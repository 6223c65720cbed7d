/**
 * The kernel reads firmware at suspend (#10): at PM_SUSPEND_PREPARE the firmware loader caches every firmware a bound
 * driver loaded, and one the driver released (iwlwifi's, i915's, Bluetooth's; here the kernel's test_firmware module
 * in that pattern) is read again from /lib/firmware, inside the write to /sys/power/state — after the lock, from the
 * locked root. On a machine whose page cache no longer holds the file that read waits forever: the machine never
 * sleeps, frozen, locked, no prompt. The cycle primes the cache with a dry run before the lock (cycle/firmware.ts);
 * the kernel's debug lines show the read happen there, with the root unlocked, and not after the lock — nor at a
 * sleep again from the prompt 15 s after the wake, when the kernel would have dropped its cache unless kept. Once
 * the root is unlocked, the cache is no longer kept (each dry run froze the tasks, the KDF's thread too): a sleep
 * again from the data volume's prompt 15 s later primes it afresh, reading the file from the unlocked root before
 * the root is locked again, and the suspend after that lock reads nothing.
 */
import assert from "node:assert/strict";
import { boot, openDataDisk } from "./harness.ts";
import {
  answerPrompt,
  dataPassphraseOfItsOwn,
  SLOW,
  startSuspend,
  suspendExit,
  systemState,
  tierKernels,
} from "./cycle_helpers.ts";

const TRIGGER = "/sys/devices/virtual/misc/test_firmware/trigger_request";

for (const kernel of tierKernels(["6.1"], ["6.1", "6.12", "6.18", "7.3"])) {
  Deno.test({
    name: `kernel ${kernel}: a firmware a driver released is not read from the locked root at suspend`,
    ...SLOW,
    fn: async () => {
      await using vm = await boot({ kernel, dataDisk: true });
      await openDataDisk(vm);
      const other = await dataPassphraseOfItsOwn(vm);
      const before = await systemState(vm);
      const setup = await vm.sh(
        `[ -e ${TRIGGER} ] || { echo no test_firmware; exit 1; }; dmesg -n 8; ` +
          "echo 'file drivers/base/firmware_loader/main.c +p' > /proc/dynamic_debug/control && " +
          "mkdir -p /lib/firmware && head -c 300000 /dev/urandom > /lib/firmware/cs-test.bin && sync && " +
          // loaded, then released (a name that does not exist releases it): the driver keeps only the name
          `printf %s cs-test.bin > ${TRIGGER} && { printf %s nope.bin > ${TRIGGER} 2>/dev/null; true; } && ` +
          // nothing of it in the page cache, as after a while of use
          "sync && echo 3 > /proc/sys/vm/drop_caches && echo ready",
        { timeoutMs: 120_000 },
      );
      assert.match(setup.out, /ready/, setup.out);
      const from = vm.console.length;
      await startSuspend(vm);
      // unprimed, the suspend never comes: the write waits on the locked root
      await vm.waitForSuspend(300_000);
      const text = vm.console.slice(from);
      const lockedAt = text.indexOf("cryptsleep: locked root");
      assert.ok(lockedAt > 0, text);
      // control: the kernel did want the file, in the dry run, with the root unlocked
      assert.match(text.slice(0, lockedAt), /cache_firmware: cs-test\.bin/, text);
      assert.doesNotMatch(text.slice(lockedAt), /cache_firmware: cs-test\.bin|firmware.*cs-test\.bin/, text);
      // nobody answers for longer than the 10 s the kernel keeps its cache after a wake: the prompt keeps it primed,
      // so Esc's sleep again finds every name cached too, and reads nothing from the locked root
      await vm.wake();
      await vm.waitForConsole(/Passphrase to unlock \S+/, 300_000, from);
      await new Promise((r) => setTimeout(r, 15_000));
      const again = vm.console.length;
      await vm.type("\x1b");
      await vm.waitForSuspend(300_000);
      const text2 = vm.console.slice(again);
      assert.match(text2, /Esc: suspending again/, text2);
      assert.doesNotMatch(text2, /cache_firmware: cs-test\.bin|firmware.*cs-test\.bin/, text2);
      await vm.wake();
      await answerPrompt(vm); // the root
      await vm.waitForConsole(/Passphrase to unlock data \S+/, 300_000, again);
      await new Promise((r) => setTimeout(r, 15_000));
      const third = vm.console.length;
      await vm.type("\x1b");
      await vm.waitForSuspend(300_000);
      const text3 = vm.console.slice(third);
      assert.match(text3, /Esc: suspending again, all locked again/, text3);
      // dropped meanwhile (nothing kept it), read again: by the dry run, before the root is locked again; not after
      const relockedAt = text3.indexOf("cryptsleep: locked root");
      assert.ok(relockedAt > 0, text3);
      assert.match(text3.slice(0, relockedAt), /cache_firmware: cs-test\.bin/, text3);
      assert.doesNotMatch(text3.slice(relockedAt), /cache_firmware: cs-test\.bin|firmware.*cs-test\.bin/, text3);
      await vm.wake();
      await answerPrompt(vm);
      await vm.waitForConsole(/Passphrase to unlock data \S+/, 300_000, third);
      await vm.type(`${other}\n`);
      assert.equal(await suspendExit(vm, 600_000), 0, vm.console.slice(from));
      assert.equal(await systemState(vm), before, "pm_test, its delay and the sleep knobs are back");
    },
  });
}

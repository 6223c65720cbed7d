/**
 * Suspending again part way through the unlock. The root opens with the guest's passphrase; the data volume only with
 * another one. After the root is unlocked, Esc at the data volume's prompt suspends again: everything must be locked
 * again for that sleep — no key half of the root, and no copy of the passphrase typed for it, in RAM while asleep —
 * and after the next wake both are asked for again. There, a wrong passphrase and a line longer than 512 bytes are
 * each a wrong try (the long one used to end the unlock with an error), and each passphrase typed is tried once on
 * the data volume before its prompt. Before 2026-11-30 the root stayed unlocked through that sleep
 * (its key in RAM) and its passphrase stayed in the cycle's memory, kept to try on later volumes.
 * The guest boots with init_on_free=1: freed memory holds no stale copy, so a hit is a live one.
 */
import assert from "node:assert/strict";
import { answerPrompt, dataPassphraseOfItsOwn, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, openDataDisk, volumeKey } from "./harness.ts";

const enc = new TextEncoder();

Deno.test({
  name: "suspending again part way through the unlock locks again what was unlocked and forgets its passphrase",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ dataDisk: true, cmdline: "init_on_free=1" });
    const rootKey = keyHalves(await volumeKey(vm, "/dev/vda"));
    const dataKey = keyHalves(await volumeKey(vm, "/dev/vdc"));
    await openDataDisk(vm);
    // the data volume gets a passphrase of its own; the guest's no longer opens it
    const other = await dataPassphraseOfItsOwn(vm);

    const from = vm.console.length;
    await startSuspend(vm);
    await vm.waitForSuspend(300_000);
    await vm.wake();
    await answerPrompt(vm); // the root
    await vm.waitForConsole(/Unlocking root \.* unlocked\./, 300_000);
    await vm.waitForConsole(/Passphrase to unlock data \S+/, 300_000);
    await vm.type("\x1b");
    await vm.waitForSuspend(300_000);
    const hits = await vm.searchRam([...rootKey, ...dataKey, enc.encode(vm.guest.passphrase)]);
    assert.deepEqual(hits, [0, 0, 0, 0, 0], "asleep again: no key half, no passphrase in RAM");
    await vm.wake();
    // the root again: a wrong passphrase and a line too long first, each a wrong try, then the right one
    const again = vm.console.length;
    await vm.waitForConsole(/Passphrase to unlock root \S+/, 300_000);
    await vm.type("wrong-one\n");
    await vm.waitForConsole(/No key available with this passphrase \(1\/\d+\)/, 300_000);
    await vm.waitForConsole(/Passphrase to unlock root \S+/, 300_000);
    await vm.type(`${"x".repeat(600)}\n`);
    await vm.waitForConsole(/longer than 512 bytes \(2\/\d+\)/, 300_000);
    await answerPrompt(vm);
    await vm.waitForConsole(/Passphrase to unlock data \S+/, 300_000);
    await vm.type(`${other}\n`);
    assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
    const text = vm.console.slice(from);
    assert.match(text, /Esc: suspending again, all locked again\./, text);
    // every passphrase typed (not the line too long) is tried on data before its prompt, once each
    const beforeData = vm.console.slice(again).split(/Passphrase to unlock data/)[0].split(/unlocked\./).at(-1)!;
    assert.equal(beforeData.match(/Unlocking data/g)?.length, 2, vm.console.slice(again));
    const ok = await vm.sh("cat /proc/mounts | grep -c ' /mnt/data ' && ls /mnt/data >/dev/null && echo fine");
    assert.match(ok.out, /fine/, ok.out);
  },
});

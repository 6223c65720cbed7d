/**
 * The prompt after wake, when the right passphrase does not come: the machine stays frozen and locked while
 * anything is locked, whatever happens at the prompt.
 * - More wrong passphrases than `--max-tries`: by default it asks again, and nothing thaws meanwhile (a ticker on
 *   the frozen side prints nothing until the unlock). Before 2026-11-29 the tries used up made the unlock fail, the
 *   thaw ran with the root locked, and the ticker ran on.
 * - `--after-tries suspend`, Esc at the prompt, and `--idle-suspend` with nobody typing: it suspends again, still
 *   locked (no key half in RAM while asleep), and prompts after the next wake.
 * - `--after-tries poweroff`: it powers off, still locked; the next boot finds what was written before the cycle.
 */
import assert from "node:assert/strict";
import { answerPrompt, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, type VM, volumeKey } from "./harness.ts";

const PROMPT = /Passphrase to unlock \S+/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Types a wrong passphrase at the next prompt and waits until it is said to be wrong. */
async function typeWrong(vm: VM, n: number, max: number): Promise<void> {
  await vm.waitForConsole(PROMPT, 300_000);
  await vm.type(`wrong-${n}\n`);
  await vm.waitForConsole(new RegExp(`No key available with this passphrase \\(${n}/${max}\\)`), 300_000);
}

/** Waits for the guest to reach S3 again; returns the hits of `needles` in RAM while it sleeps, then wakes it. */
async function asleepAgain(vm: VM, needles: Uint8Array[]): Promise<number[]> {
  await vm.waitForSuspend(300_000);
  const hits = await vm.searchRam(needles);
  await vm.wake();
  return hits;
}

Deno.test({
  name: "prompt: tries used up keep it frozen and asking; after-tries suspend, Esc and idle suspend again, locked",
  ...SLOW,
  fn: async (t) => {
    // private writable disks: the last step powers off and boots again
    await using vm = await boot({ writableDisks: true });
    const needles = keyHalves(await volumeKey(vm, "/dev/vda"));

    await t.step("more wrong passphrases than --max-tries: asked again, nothing thaws until the unlock", async () => {
      // on the frozen side: says every second that it runs
      const ticker = await vm.sh(
        "(i=0; while :; do i=$((i+1)); echo TICK-$i > /dev/ttyS0; sleep 1; done) </dev/null >/dev/null 2>&1 & " +
          "echo $! > /run/ticker",
      );
      assert.equal(ticker.code, 0, ticker.out);
      await vm.waitForConsole(/TICK-3\b/, 60_000);
      const from = vm.console.length;
      await startSuspend(vm, "--max-tries 2");
      await vm.waitForSuspend(300_000);
      await vm.wake();
      await typeWrong(vm, 1, 2);
      await typeWrong(vm, 2, 2);
      // right after "(2/2)": what follows it is said at once and must be in the window
      const usedUp = vm.cursor;
      await vm.waitForConsole(PROMPT, 300_000);
      await sleep(15_000);
      const waiting = vm.console.slice(usedUp);
      assert.match(waiting, /stays locked and the machine frozen/, waiting);
      assert.doesNotMatch(waiting, /TICK-/, "frozen while the root is locked");
      await vm.type(vm.guest.passphrase + "\n");
      assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
      // said while the key derivation runs, and how each try ended
      assert.match(
        vm.console.slice(from),
        /Unlocking root \.* no\.\r?\nNo key available with this passphrase \(1\/2\)/,
      );
      assert.match(vm.console.slice(usedUp), /Unlocking root \.* unlocked\./);
      await vm.waitForConsole(/TICK-\d+/, 60_000);
      const stop = await vm.sh("kill $(cat /run/ticker)");
      assert.equal(stop.code, 0, stop.out);
    });

    await t.step("--after-tries suspend: the wrong passphrase sends it back to sleep, still locked", async () => {
      const from = vm.console.length;
      await startSuspend(vm, "--max-tries 1 --after-tries suspend");
      await vm.waitForSuspend(300_000);
      await vm.wake();
      await typeWrong(vm, 1, 1);
      assert.deepEqual(await asleepAgain(vm, needles), [0, 0], "asleep again with the key out of RAM");
      await answerPrompt(vm);
      assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
      assert.match(vm.console.slice(from), /suspending again, still locked/);
    });

    await t.step("Esc at the prompt and --idle-suspend: back to sleep, still locked, then the prompt", async () => {
      const from = vm.console.length;
      await startSuspend(vm, "--idle-suspend 20");
      await vm.waitForSuspend(300_000);
      await vm.wake();
      await vm.waitForConsole(PROMPT, 300_000);
      // nobody types: after 20 s it sleeps again
      assert.deepEqual(await asleepAgain(vm, needles), [0, 0], "idle: asleep again with the key out of RAM");
      await vm.waitForConsole(PROMPT, 300_000);
      await vm.type("par\x1b");
      assert.deepEqual(await asleepAgain(vm, needles), [0, 0], "Esc: asleep again with the key out of RAM");
      await answerPrompt(vm);
      assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
      const text = vm.console.slice(from);
      assert.match(text, /nothing typed for 20 s: suspending again, still locked/, text);
      assert.match(text, /Esc: suspending again, still locked/, text);
      const report = await vm.sh("cryptsleep status --json");
      const facts = JSON.parse(report.out.slice(0, report.out.lastIndexOf("}") + 1)).facts;
      assert.deepEqual(facts.sleptAgain.map((s: { why: string }) => s.why), ["idle", "escape"], report.out);
    });

    await t.step("--after-tries poweroff: powered off still locked; the next boot has the data", async () => {
      // not synced here: the cycle's own sync must have written it before the lock
      const setup = await vm.sh("echo before-poweroff > /kept && cat /kept");
      assert.equal(setup.out.trim(), "before-poweroff");
      await startSuspend(vm, "--max-tries 1 --after-tries poweroff");
      await vm.waitForSuspend(300_000);
      await vm.wake();
      await typeWrong(vm, 1, 1);
      await vm.waitForConsole(/powering off, still locked/, 60_000);
      for (const until = Date.now() + 300_000; vm.running && Date.now() < until;) await sleep(1000);
      assert.equal(vm.running, false, "the guest powered off");
      await vm.restart();
      const after = await vm.sh("cat /kept");
      assert.equal(after.out.trim(), "before-poweroff", after.out);
    });
  },
});

/**
 * Ctrl-C, Ctrl-\ and Ctrl-Z typed on the console: the serial console here is both the terminal that started
 * `cryptsleep suspend` and the one it prompts on, so each reaches the cycle's whole process group. Before the
 * agent starts, Ctrl-C stops the cycle and undoes what ran (the post hooks run, the lock is released, nothing is
 * left); at the prompt they are ignored, and the passphrase still unlocks. Started in the background of that
 * terminal, the cycle is not stopped by job control at its prompt.
 * (Before the fix, a Ctrl-C at the prompt killed the agent and the supervisor alike: frozen and locked, with
 * nobody left to prompt.)
 */
import assert from "node:assert/strict";
import { answerPrompt, CONSOLE, SLOW, startSuspend, suspendExit, systemState } from "./cycle_helpers.ts";
import { boot, keyHalves, volumeKey } from "./harness.ts";

const HOOK = "/usr/lib/systemd/system-sleep/zz-signals-test";

Deno.test({
  name: "Ctrl-C before the agent stops and undoes the cycle; at the prompt Ctrl-C, Ctrl-\\ and Ctrl-Z are ignored",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({});

    await t.step("Ctrl-C while the pre hooks run: stopped, undone, nothing left", async () => {
      // a hook that says when it runs and takes a while: the moment to type Ctrl-C
      const setup = await vm.sh(
        `mkdir -p ${HOOK.replace(/\/[^/]+$/, "")} && printf '#!/bin/sh\\necho "HOOK-$1" > /dev/ttyS0\\n` +
          `[ "$1" = pre ] && sleep 20\\nexit 0\\n' > ${HOOK} && chmod 755 ${HOOK}`,
      );
      assert.equal(setup.code, 0, setup.out);
      const before = await systemState(vm);
      const from = vm.console.length;
      await startSuspend(vm);
      await vm.waitForConsole(/HOOK-pre/, 300_000);
      await vm.type("\x03");
      assert.equal(await suspendExit(vm), 1, vm.console.slice(from));
      const out = vm.console.slice(from);
      assert.match(out, /SIGINT before watchdog: stopped, and what ran was undone/, out);
      assert.match(out, /HOOK-post/, "the post hooks ran: the pre hooks' work is undone");
      assert.deepEqual(vm.eventsSinceClear("SUSPEND"), [], "no S3");
      assert.equal(await systemState(vm), before, "nothing left locked, frozen or mounted");
      const lock = await vm.sh("cat /run/cryptsleep/lock; ls /run/cryptsleep");
      assert.doesNotMatch(lock.out, /^\d+$/m, `the lock is released: ${lock.out}`);
      assert.equal((await vm.sh(`rm ${HOOK}`)).code, 0);
    });

    await t.step("at the prompt: Ctrl-C, Ctrl-\\ and Ctrl-Z are ignored, the passphrase unlocks", async () => {
      const needles = keyHalves(await volumeKey(vm, "/dev/vda"));
      const from = vm.console.length;
      await startSuspend(vm, "", CONSOLE);
      await vm.waitForSuspend(300_000);
      assert.deepEqual(await vm.searchRam(needles), [0, 0], "asleep with the root locked");
      await vm.wake();
      await vm.waitForConsole(/Passphrase to unlock \S+/, 300_000);
      for (const key of ["\x03", "\x1c", "\x1a"]) {
        await vm.type(key);
        await new Promise((r) => setTimeout(r, 3000));
      }
      // the prompt may take the control bytes as a (wrong) passphrase: answer every prompt until the cycle ends
      let code: number | null = null;
      for (let attempt = 0; attempt < 4 && code === null; attempt++) {
        await vm.type("\x15" + vm.guest.passphrase + "\n"); // Ctrl-U first: drop what the line holds
        code = await suspendExit(vm, 60_000).catch(() => null);
      }
      assert.equal(code, 0, vm.console.slice(from));
      // cryptsleep itself unlocked: the keys reached it and were ignored, and it did not die
      assert.doesNotMatch(vm.console.slice(from), /process died/, vm.console.slice(from));
      const r = await vm.sh("echo awake > /awake && sync && cat /awake; cryptsleep status --json");
      assert.match(r.out, /^awake$/m, r.out);
      const report = JSON.parse(r.out.slice(r.out.indexOf("{"), r.out.lastIndexOf("}") + 1));
      assert.equal(report.ok, true, r.out);
    });

    await t.step("started in the background of the terminal it prompts on: not stopped at the prompt", async () => {
      // job control stops a background process that reads its controlling terminal (SIGTTIN): at the prompt,
      // frozen and locked, that would hold the machine. The cycle lets go of the terminal before it locks
      const needles = keyHalves(await volumeKey(vm, "/dev/vda"));
      vm.clearEvents();
      // its exit status written by the background job itself: the shell forgets a finished job once it said so,
      // and its probes after the wake can come first (`wait` then says 127)
      const started = await vm.sh(
        `rm -f /run/bg.rc; (cryptsleep suspend ${CONSOLE}; echo rc=$? > /run/bg.rc) >/run/bg.log 2>&1 &`,
      );
      assert.equal(started.code, 0, started.out);
      await vm.waitForSuspend(300_000);
      assert.deepEqual(await vm.searchRam(needles), [0, 0], "asleep with the root locked");
      await vm.wake();
      await answerPrompt(vm, 300_000);
      await vm.waitForShell(300_000);
      const r = await vm.sh(
        "for i in $(seq 600); do [ -s /run/bg.rc ] && break; sleep 0.5; done; cat /run/bg.rc /run/bg.log",
        {
          timeoutMs: 400_000,
        },
      );
      assert.match(r.out, /^rc=0$/m, r.out);
    });
  },
});

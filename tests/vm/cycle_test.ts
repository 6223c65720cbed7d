/**
 * `cryptsleep suspend` on the bed: a real kernel, a real LUKS2 root (the tool's own files sit on it), real
 * dm-crypt, real S3, the guest's RAM searched for the volume keys while it sleeps.
 *
 * One boot serves several steps where the steps leave the guest as they found it (which each verifies).
 */
import assert from "node:assert/strict";
import { boot, keyHalves, openDataDisk, type VM, volumeKey } from "./harness.ts";
import { steps } from "../../cycle/phases.ts";
import {
  AFTER_SUPERVISOR,
  answerPrompt,
  armAgentKiller,
  CONSOLE,
  lineCount,
  SLOW,
  startSuspend,
  suspendExit,
  systemState,
} from "./cycle_helpers.ts";

Deno.test({
  name: "suspend locks root and data, S3 with 0 key hits, unlocks, writers go on",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({ dataDisk: true });
    await openDataDisk(vm);
    const keys = [await volumeKey(vm, "/dev/vda"), await volumeKey(vm, "/dev/vdc")];
    const needles = keys.flatMap(keyHalves);

    await t.step("dry run changes nothing", async () => {
      const before = await systemState(vm);
      const r = await vm.sh(`cryptsleep suspend --dry-run ${CONSOLE}`, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.out);
      const lock = steps().find((s) => s.name === "lock")!.number;
      assert.match(r.out, new RegExp(`${lock} lock:\n.*crypt_suspend (root|data)`));
      assert.match(r.out, /would write mem to \/sys\/power\/state/);
      assert.equal(await systemState(vm), before);
    });

    await t.step("the seed's race: writers on the root during the whole cycle", async () => {
      const setup = await vm.sh(
        "echo before-root > /root/before && echo before-data > /mnt/data/before && sync && " +
          "(while :; do echo x >> /root/race.log; sync; done) >/dev/null 2>&1 & " +
          "(while :; do dd if=/dev/zero of=/root/dd.bin bs=4k count=16 conv=fsync 2>/dev/null; " +
          "echo y >> /root/dd.log; done) >/dev/null 2>&1 & sleep 2; echo started",
      );
      assert.equal(setup.code, 0, setup.out);

      const open = await vm.searchRam(needles);
      assert.ok(open.every((n) => n > 0), `control: every key half is in RAM while open: ${open}`);

      await startSuspend(vm);
      await vm.waitForSuspend(300_000);
      const asleep = await vm.searchRam(needles);
      assert.deepEqual(asleep, needles.map(() => 0), "no key half in RAM while suspended");
      await vm.wake();
      await answerPrompt(vm);
      assert.equal(await suspendExit(vm), 0);

      const data = await vm.sh("cat /root/before /mnt/data/before");
      assert.equal(data.out.trim(), "before-root\nbefore-data");
      const race = await lineCount(vm, "/root/race.log");
      const dd = await lineCount(vm, "/root/dd.log");
      await vm.sh("sleep 3");
      assert.ok(await lineCount(vm, "/root/race.log") > race, "the append+sync loop runs after wake");
      assert.ok(await lineCount(vm, "/root/dd.log") > dd, "the dd conv=fsync loop runs after wake");
      await vm.sh("kill %1 %2; wait");
    });

    await t.step("status shows the timeline", async () => {
      const r = await vm.sh("cryptsleep status", { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.out);
      const phases = [
        "spawn",
        "preflight",
        "root",
        "supervisor",
        "pin",
        "sync",
        "freeze",
        "syncfs",
        "lock",
        "sleep",
        "unlock",
        "thaw",
      ];
      for (const phase of [...phases, "unlock", "thaw", "unpin", "dismiss", "unmount", "leave", "release", "reap"]) {
        assert.match(r.out, new RegExp(`^\\s+${phase}\\s+\\d+ ms\\s+ok$`, "m"), `phase ${phase} in:\n${r.out}`);
      }
      const kmsg = await vm.sh("dmesg | grep -c 'cryptsleep: '");
      assert.ok(Number(kmsg.out.trim()) > 5, "the timeline is in the kernel log");
      // data's header was read while root's prompt was up (cycle/read_ahead.ts): after Enter it went to its try
      const json = await vm.sh("cryptsleep status --json", { timeoutMs: 120_000 });
      const report = JSON.parse(json.out.slice(json.out.indexOf("{"), json.out.lastIndexOf("}") + 1));
      assert.deepEqual(report.facts.readAhead, ["data"], json.out);
    });
  },
});

/** A dm device whose I/O blocks forever (suspended), and a process stuck in D state on it. */
async function stuckReader(vm: VM, cgroup?: string): Promise<void> {
  const join = cgroup ? `mkdir -p ${cgroup} && echo $$ > ${cgroup}/cgroup.procs && ` : "";
  const r = await vm.sh(
    "dmsetup create blocker --table '0 2048 zero' && dmsetup mknodes blocker && dmsetup suspend blocker && " +
      `(sh -c '${join}exec dd if=/dev/mapper/blocker of=/dev/null bs=4096 count=1 iflag=direct' &) && sleep 2 && ` +
      "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = dd ] && awk '{print $3}' $p/stat; done; true",
  );
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /^D$/m, `a dd in D state: ${r.out}`);
}

async function releaseStuckReader(vm: VM): Promise<void> {
  const r = await vm.sh("dmsetup resume blocker && sleep 1 && dmsetup remove blocker");
  assert.equal(r.code, 0, r.out);
}

Deno.test({
  name: "failures unwind: a process that won't freeze, a kernel that refuses, cryptsleep killed mid-cycle",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({});
    const before = await systemState(vm);

    await t.step("a process that will not freeze: nothing locked, all thawed, the process named", async () => {
      await stuckReader(vm);
      const r = await vm.sh(`cryptsleep suspend ${CONSOLE} --freeze-timeout 3000`, { timeoutMs: 300_000 });
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /dd/);
      assert.match(r.out, /\bD\b/);
      await releaseStuckReader(vm);
      assert.equal(await systemState(vm), before);
    });

    await t.step(
      "the kernel refuses to suspend: found by the dry run before the lock, thawed, the cause named",
      async () => {
        // a D-state process in the tool's own cgroup: cryptsleep's freezer leaves it, the kernel's cannot freeze it;
        // the firmware phase's dry run meets that refusal first, so nothing is locked and nobody is asked
        const knob = await vm.sh("echo 2000 > /sys/power/pm_freeze_timeout");
        assert.equal(knob.code, 0);
        await stuckReader(vm, "/sys/fs/cgroup/cryptsleep");
        const from = vm.console.length;
        await startSuspend(vm);
        assert.equal(await suspendExit(vm), 1);
        const text = vm.console.slice(from);
        assert.match(text, /the kernel refused a dry run of the suspend .*EBUSY.*nothing was locked/, text);
        assert.doesNotMatch(text, /Passphrase to unlock|cryptsleep: locked/, text);
        await releaseStuckReader(vm);
        await vm.sh(
          "echo 20000 > /sys/power/pm_freeze_timeout; sleep 1; rmdir /sys/fs/cgroup/cryptsleep 2>/dev/null; true",
        );
        assert.equal(await systemState(vm), before);
      },
    );

    await t.step(
      "cryptsleep suspend killed with SIGKILL after the lock: the supervisor prompts, unlocks, thaws",
      async () => {
        await armAgentKiller(vm);
        await startSuspend(vm);
        await vm.waitForSuspend(300_000);
        await vm.wake();
        // cryptsleep prompts first; it is killed while it waits; the supervisor prompts again
        await vm.waitForConsole(/Passphrase to unlock/, 300_000);
        await vm.waitForConsole(/the cycle's process died; the supervisor unlocks/, 300_000);
        await answerPrompt(vm);
        // the shell was frozen with everything else: it sees the kill only after the supervisor's thaw
        assert.equal(await suspendExit(vm), 137);
        const done = await vm.sh("cat /run/killer/done");
        assert.equal(done.out.trim(), "killed");
        await vm.sh(AFTER_SUPERVISOR, { timeoutMs: 120_000 });
        assert.equal(await systemState(vm), before);
        const status = await vm.sh("cryptsleep status", { timeoutMs: 120_000 });
        assert.match(status.out, /supervisor unlocked and thawed/);
      },
    );
  },
});

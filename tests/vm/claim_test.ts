/**
 * One cycle at a time, and no silent reuse of what a crashed run left: while another run holds the lock, a
 * `cryptsleep suspend` is refused (exit 3) with nothing touched; a crashed run's ramfs mount and own cgroup are
 * cleaned before the next cycle, which says so in its report.
 */
import assert from "node:assert/strict";
import { CONSOLE, fullCycle, SLOW, systemState } from "./cycle_helpers.ts";
import { boot, keyHalves, volumeKey } from "./harness.ts";

Deno.test({
  name: "a second run is refused while the lock is held; a crashed run's leftovers are cleaned, not reused",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({});

    await t.step("another run holds the lock: refused, exit 3, nothing touched", async () => {
      // another run, as far as the lock goes: the same flock, held by a process that writes its pid there
      const hold = await vm.sh(
        'mkdir -p /run/cryptsleep && (deno eval \'const f = await Deno.open("/run/cryptsleep/lock", ' +
          '{ write: true, create: true }); await f.lock(true); await f.write(new TextEncoder().encode(Deno.pid + "\\n")); ' +
          "await new Promise((r) => setTimeout(r, 600000));' >/dev/null 2>&1 &) && " +
          "for i in $(seq 120); do grep -qs . /run/cryptsleep/lock && break; sleep 1; done; cat /run/cryptsleep/lock",
        { timeoutMs: 180_000 },
      );
      const holder = /^(\d+)$/m.exec(hold.out)?.[1];
      assert.ok(holder, `the stand-in holds the lock: ${hold.out}`);
      assert.equal(hold.code, 0, hold.out);
      const before = await systemState(vm);
      const r = await vm.sh(`cryptsleep suspend ${CONSOLE}`, { timeoutMs: 180_000 });
      assert.equal(r.code, 3, r.out);
      assert.match(
        r.out,
        new RegExp(`refused: another cryptsleep suspend is running \\(pid ${holder} holds /run/cryptsleep/lock\\)`),
      );
      assert.equal(await systemState(vm), before);
      // the supervisor it started first, before it knew it would be refused, was cancelled and is gone
      assert.doesNotMatch(r.out, /supervise:/, "the cancelled supervisor said nothing");
      const left = await vm.sh("ps -o args | grep -c '[c]ryptsleep.js supervise'");
      assert.equal(left.out.trim(), "0", left.out);
      const kill = await vm.sh(`kill ${holder}; while kill -0 ${holder} 2>/dev/null; do sleep 0.2; done; echo gone`);
      assert.equal(kill.code, 0, kill.out);
    });

    await t.step("a crashed run's ramfs and cgroup are cleaned before the cycle, and the report says so", async () => {
      const leave = await vm.sh(
        "mkdir -p /sys/fs/cgroup/cryptsleep /run/cryptsleep/root && mount -t tmpfs stale /run/cryptsleep/root && " +
          "grep -c ' /run/cryptsleep/root ' /proc/self/mountinfo",
      );
      assert.equal(leave.code, 0, leave.out);
      const dry = await vm.sh(`cryptsleep suspend --dry-run ${CONSOLE}`, { timeoutMs: 180_000 });
      assert.equal(dry.code, 0, dry.out);
      assert.match(dry.out, /would clean: \/run\/cryptsleep\/root is still mounted/);
      assert.match(dry.out, /would clean: cgroup \/sys\/fs\/cgroup\/cryptsleep exists/);

      const needles = keyHalves(await volumeKey(vm, "/dev/vda"));
      const cycle = await fullCycle(vm, needles);
      assert.deepEqual(cycle.hits, needles.map(() => 0), "the cycle after the cleaning locks as ever");
      const status = await vm.sh("cryptsleep status");
      assert.match(status.out, /warning: cleaned what a crashed run left: \/run\/cryptsleep\/root is still mounted/);
      assert.match(status.out, /warning: cleaned what a crashed run left: cgroup \/sys\/fs\/cgroup\/cryptsleep exists/);
      const mounts = await vm.sh("grep -c ' /run/cryptsleep/root ' /proc/self/mountinfo");
      assert.equal(mounts.out.trim(), "0", "no ramfs left mounted after the cycle");
    });
  },
});

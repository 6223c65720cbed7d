/**
 * The kept mode (cycle/kept.ts) on the busybox guest: `cryptsleep serve` started in a cgroup whose memory cannot go
 * to swap (what cryptsleep-kept.service's MemorySwapMax=0 gives it), cycles asked for by the package's client
 * (packaging/cryptsleep-request, as systemd-suspend.service runs it). Two cycles through the same kept process, each
 * with its supervisor started ahead: S3 with no key half of root or data in RAM, the passphrase asked for and the
 * writer on the data volume going on; a wrong and the right passphrase typed at the first wake are not in RAM at the
 * second suspend (the process that read them lives on). Then serve refused in a cgroup that lets it swap while swap is
 * on; serve whose memory went to swap after it started (swap turned on later, its cgroup squeezed) hands the cycle to
 * the client, which runs it itself, and exits; a second serve is refused; after SIGTERM (nothing of it left) the
 * client runs the cycle one-shot; and serve killed mid-cycle with the volumes locked leaves its supervisor to unlock
 * and thaw, the client saying so.
 */
import assert from "node:assert/strict";
import {
  answerPrompt,
  answerWrong,
  freshWord,
  FULL_TIER,
  lineCount,
  SLOW,
  SUPERVISOR_GONE,
  suspendExit,
  systemState,
} from "./cycle_helpers.ts";
import { boot, keyHalves, openDataDisk, type VM, volumeKey } from "./harness.ts";

const CLIENT = "/usr/local/lib/cryptsleep/cryptsleep-request";
/** The pids of the supervisors running, one a line (busybox has no pgrep). */
const SUPERVISORS = "ps -o pid,args | grep '[c]ryptsleep.js supervise' | awk '{print $1}'";
const REQUEST = `CRYPTSLEEP_EXEC=/usr/local/bin/cryptsleep sh ${CLIENT} --console /dev/ttyS0`;

/** Starts serve in cgroup `name` (memory.swap.max `swapMax`); resolves once it waits for requests, or its log. */
async function startServe(
  vm: VM,
  name: string,
  swapMax: string,
  env = "",
): Promise<{ pid: number; spare: number } | string> {
  const cg = `/sys/fs/cgroup/${name}`;
  const r = await vm.sh(
    `echo +memory > /sys/fs/cgroup/cgroup.subtree_control; mkdir -p ${cg} && echo ${swapMax} > ${cg}/memory.swap.max && ` +
      `(sh -c 'echo $$ > ${cg}/cgroup.procs; exec ${
        env ? `env ${env} ` : ""
      }cryptsleep serve --console /dev/ttyS0' > /run/${name}.log 2>&1 &) ; ` +
      `for i in $(seq 600); do grep -q 'waiting on\\|refused' /run/${name}.log && break; sleep 0.5; done; ` +
      `cat /run/${name}.log`,
    { timeoutMs: 600_000 },
  );
  const m = /kept \(pid (\d+), supervisor (\d+) ready\)/.exec(r.out);
  return m ? { pid: Number(m[1]), spare: Number(m[2]) } : r.out;
}

/**
 * One cycle asked for through the client, typed in the guest's shell (frozen with the rest): sleeps, wakes, the
 * passphrase typed; `asleep` runs while it sleeps. Returns the cycle's report once the client exited 0.
 */
async function requestCycle(vm: VM, asleep: () => Promise<void> = () => Promise.resolve(), wrong?: string) {
  vm.clearEvents();
  const from = vm.console.length;
  vm.cursor = from;
  await vm.type(`${REQUEST}; echo "CS-EXIT-""$?"\n`);
  await vm.waitForSuspend(300_000);
  await asleep();
  await vm.wake();
  if (wrong) await answerWrong(vm, wrong);
  await answerPrompt(vm);
  assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
  return await lastReport(vm);
}

async function lastReport(vm: VM) {
  const s = await vm.sh("cryptsleep status --json", { timeoutMs: 120_000 });
  return JSON.parse(s.out.slice(s.out.indexOf("{"), s.out.lastIndexOf("}") + 1));
}

Deno.test({
  name: "kept mode: cycles asked of cryptsleep serve through the client, locked while asleep; swap and stop guarded",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({
      dataDisk: true,
      toolFiles: { "cryptsleep-request": new URL("../../packaging/cryptsleep-request", import.meta.url).pathname },
    });
    await openDataDisk(vm);
    const needles = [
      ...keyHalves(await volumeKey(vm, "/dev/vda")),
      ...keyHalves(await volumeKey(vm, "/dev/vdc")),
    ];
    const kept = await startServe(vm, "kept", "0");
    assert.ok(typeof kept !== "string", `serve started: ${kept}`);
    const second = await startServe(vm, "second", "0");
    assert.match(String(second), new RegExp(`refused: another cryptsleep serve runs \\(pid ${kept.pid}\\)`));
    const writer = await vm.sh(
      "(while :; do echo x >> /mnt/data/writer.log; sync; sleep 0.2; done) >/dev/null 2>&1 & sleep 1; echo started",
    );
    assert.equal(writer.code, 0, writer.out);

    // typed at the first wake (a wrong one, then the right one) into the process that stays: neither may be in RAM
    // at the next suspend; the control, typed into the shell, must be (passphrase_test.ts does this one-shot)
    const [wrong, control] = [freshWord(), freshWord()];
    const typed = (...words: string[]) => words.map((w) => new TextEncoder().encode(w));
    let spare = kept.spare;
    for (const n of [1, 2]) {
      await t.step(
        `cycle ${n} through the kept process: S3 locked, unlocked, its supervisor started ahead` +
          (n === 1 ? "; a wrong passphrase first" : "; the passphrases typed at the last wake not in RAM"),
        async () => {
          if (n === 2) {
            // typed as is (vm.sh sends its command base64-encoded), into the shell, which keeps it
            await vm.type(`: ${control}\n`);
            assert.equal((await vm.sh("true")).code, 0);
          }
          const report = await requestCycle(vm, async () => {
            const words = n === 1 ? typed(vm.guest.passphrase) : typed(vm.guest.passphrase, wrong, control);
            const hits = await vm.searchRam([...needles, ...words]);
            assert.deepEqual(hits.slice(0, needles.length), needles.map(() => 0), "no key half of root or data");
            if (n === 1) assert.deepEqual(hits.slice(needles.length), [0], "the passphrase, not typed yet");
            else {
              assert.ok(hits.at(-1)! > 0, `control: the word typed into the shell is in RAM (${hits})`);
              assert.deepEqual(hits.slice(needles.length, -1), [0, 0], "the right and the wrong passphrase");
            }
          }, n === 1 ? wrong : undefined);
          assert.equal(report.ok, true);
          assert.equal(report.facts.kept, true, "the kept process ran it");
          assert.ok(report.facts.startMs.request >= 0, JSON.stringify(report.facts.startMs));
          const spawn = report.phases.find((p: { name: string }) => p.name === "spawn");
          assert.equal(spawn.detail.pid, spare, "the supervisor started ahead was this cycle's");
          // the next one starts after the cycle
          const log = await vm.sh(
            `for i in $(seq 300); do ${SUPERVISORS} | grep -vx ${spare} | grep -q . && break; sleep 0.5; done; ` +
              `${SUPERVISORS}; grep -c VmRSS /proc/${kept.pid}/status; grep VmRSS /proc/${kept.pid}/status`,
            { timeoutMs: 300_000 },
          );
          console.error(`after cycle ${n}: serve's ${log.out.trim().split("\n").at(-1)}`);
          const pids = log.out.trim().split("\n").slice(0, -2).map(Number).filter((p) => p && p !== spare);
          assert.equal(pids.length, 1, `one new supervisor waits: ${log.out}`);
          spare = pids[0];
          assert.match(log.out, /^1$/m, "serve is the same process");
        },
      );
    }
    const before = await lineCount(vm, "/mnt/data/writer.log");
    await vm.sh("sleep 2");
    assert.ok(await lineCount(vm, "/mnt/data/writer.log") > before, "the writer on the data volume goes on");
    await vm.sh("kill %1; wait");

    await t.step(
      "memory that may swap: serve refused with swap on; with a page of it in swap the client runs the cycle",
      async () => {
        // the first serve goes (one serve at a time)
        await vm.sh(
          "kill " + kept.pid + "; for i in $(seq 120); do [ -d /proc/" + kept.pid + " ] || break; sleep 0.5; done",
        );
        const on = await vm.sh(
          "dd if=/dev/zero of=/root/swapfile bs=1M count=32 2>/dev/null && chmod 600 /root/swapfile && " +
            "mkswap /root/swapfile >/dev/null && swapon /root/swapfile && echo on",
          { timeoutMs: 120_000 },
        );
        assert.match(on.out, /^on$/m, on.out);
        const refused = await startServe(vm, "loose", "max");
        assert.equal(typeof refused, "string");
        assert.match(
          refused as string,
          /refused: swap is on \(\/root\/swapfile\).*memory.swap.max max.*MemorySwapMax=0/,
        );
        // a serve started before the swap, its cgroup then squeezed: its pages go to the swap
        await vm.sh("swapoff /root/swapfile");
        const late = await startServe(vm, "late", "max");
        assert.ok(typeof late !== "string", `serve started with no swap on: ${late}`);
        const squeeze = await vm.sh(
          "swapon /root/swapfile && echo 4M > /sys/fs/cgroup/late/memory.high && sleep 3 && " +
            "echo max > /sys/fs/cgroup/late/memory.high && grep VmSwap /proc/" + late.pid + "/status",
          { timeoutMs: 120_000 },
        );
        const swapped = Number(/VmSwap:\s+(\d+)/.exec(squeeze.out)?.[1] ?? 0);
        assert.ok(swapped > 0, `serve's memory in swap: ${squeeze.out}`);
        // serve runs no cycle with memory in swap: the client runs it itself, serve exits to start afresh
        const report = await requestCycle(vm);
        assert.equal(report.facts.kept, undefined, "the client's own cycle");
        const log = await vm.sh(
          `for i in $(seq 120); do [ -d /proc/${late.pid} ] || break; sleep 0.5; done; ` +
            `[ -d /proc/${late.pid} ] && echo still-running; cat /run/late.log`,
          { timeoutMs: 120_000 },
        );
        assert.doesNotMatch(log.out, /still-running/, log.out);
        assert.match(
          log.out,
          /pid \d+ \(cryptsleep serve or its supervisor\) has \d+ kB in swap: the client runs/,
          log.out,
        );
        const off = await vm.sh("swapoff /root/swapfile && rm /root/swapfile && echo off", { timeoutMs: 120_000 });
        assert.match(off.out, /^off$/m, off.out);
      },
    );

    await t.step("serve stopped: nothing of it left, and the client runs the cycle one-shot", async () => {
      const left = await vm.sh(
        "sleep 1; ls /run/cryptsleep/kept | grep -v serve.lock; " +
          "ps -o args | grep -E '[c]ryptsleep.js (serve|supervise)' || echo no-process",
        { timeoutMs: 120_000 },
      );
      assert.equal(left.out.trim(), "no-process", "no pid file, no FIFO, no process");
      const report = await requestCycle(vm);
      assert.equal(report.ok, true);
      assert.equal(report.facts.kept, undefined, "a cycle of its own");
      assert.ok(report.facts.startMs.runtime > 0);
    });

    await t.step("serve killed mid-cycle, locked: its supervisor unlocks and thaws, the client says so", async () => {
      // SIGKILL just before the sleep: everything frozen, both volumes locked (cycle/runner.ts's test switch)
      const dying = await startServe(vm, "dying", "0", "CRYPTSLEEP_TEST_DIE_AT=sleep");
      assert.ok(typeof dying !== "string", `serve started: ${dying}`);
      const before = await systemState(vm);
      const from = vm.cursor = vm.console.length;
      await vm.type(`${REQUEST}; echo "CS-EXIT-""$?"\n`);
      await answerPrompt(vm);
      const code = await suspendExit(vm);
      const text = vm.console.slice(from);
      assert.equal(code, 1, text);
      assert.match(text, new RegExp(`the kept cryptsleep \\(pid ${dying.pid}\\) ended during the cycle`), text);
      const gone = await vm.sh(SUPERVISOR_GONE, { timeoutMs: 120_000 });
      assert.equal(gone.out.trim(), "0", "its supervisor is gone");
      const state = await systemState(vm);
      assert.doesNotMatch(state, /suspended=1|cgroup\.freeze=1/, "nothing locked or frozen");
      // what the dead serve left (its cycle's root mount and cgroup) the next cycle cleans: one-shot, no serve now
      const report = await requestCycle(vm);
      assert.equal(report.ok, true);
      assert.equal(await systemState(vm), before, "the machine as before");
    });
  },
});

/** serve's anonymous memory and what it maps, in kB (smaps_rollup), and its supervisor's RSS. */
async function serveMemory(vm: VM, pid: number): Promise<{ anon: number; rss: number }> {
  const r = await vm.sh(`grep -E '^(Rss|Anonymous):' /proc/${pid}/smaps_rollup`);
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(r.out)?.[1] ?? NaN);
  return { anon: kb("Anonymous"), rss: kb("Rss") };
}

Deno.test({
  name: "kept mode: serve's memory does not grow from cycle to cycle",
  ignore: !FULL_TIER,
  ...SLOW,
  fn: async () => {
    await using vm = await boot({
      dataDisk: true,
      toolFiles: { "cryptsleep-request": new URL("../../packaging/cryptsleep-request", import.meta.url).pathname },
    });
    await openDataDisk(vm);
    const kept = await startServe(vm, "kept", "0");
    assert.ok(typeof kept !== "string", `serve started: ${kept}`);
    const seen: { anon: number; rss: number }[] = [];
    for (let n = 1; n <= 12; n++) {
      const report = await requestCycle(vm);
      assert.equal(report.facts.kept, true);
      // the next supervisor started, the heap settled
      await vm.sh("sleep 8");
      seen.push(await serveMemory(vm, kept.pid));
    }
    console.error(`serve's memory after each cycle (kB): ${JSON.stringify(seen)}`);
    // the first cycles compile and fill caches, and the heap is collected when V8 sees fit (seen: 32–45 MB from one
    // cycle to the next): what stays after a collection must level off — the lowest of the last four cycles no more
    // than 4 MiB above the lowest of cycles 4 to 8 (a leak raises the floor)
    const floor = (from: number, to: number) => Math.min(...seen.slice(from - 1, to).map((m) => m.anon));
    const growth = floor(9, 12) - floor(4, 8);
    assert.ok(growth < 4 * 1024, `serve's anonymous memory climbs: +${growth} kB: ${JSON.stringify(seen)}`);
  },
});

/**
 * @module
 * Demo on the QEMU bed: one real `cryptsleep suspend` cycle on a guest with a LUKS2 root (/dev/vda) and a LUKS2
 * data disk (/dev/vdc), a writer busy on the root the whole time, the guest's RAM searched for both volume keys
 * before and during S3. Prints the phases (from `cryptsleep status --json` in the guest), the time to S3, the key
 * hits, whether data and the writer survived, and PASS or FAIL (exit 1).
 *
 * The helpers (bundle, runCycle, lastReport) are shared with scripts/bench.ts.
 *
 * ```sh
 * deno task demo            # or: deno run -A scripts/demo.ts [--kernel 6.1]
 * ```
 */

import { join } from "node:path";
import { ensureGuest, REPO_ROOT } from "./guest/build.ts";
import { boot, keyHalves, openDataDisk, type VM, volumeKey } from "../tests/vm/harness.ts";
import { startSuspend } from "../tests/vm/cycle_helpers.ts";
import type { TimelineJSON } from "../cycle/timeline.ts";

/** Value of `--name V` in the arguments, or `fallback`. */
export function option(name: string, fallback: string): string {
  const i = Deno.args.indexOf(name);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : fallback;
}

/** Progress goes to stderr; the report to stdout. */
export function step(message: string): void {
  console.error(`… ${message}`);
}

/** Always rebuilds dist/cryptsleep.js (a few seconds): the guest must run the code in the tree. */
export async function bundle(): Promise<void> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform=deno", "-o", join(REPO_ROOT, "dist", "cryptsleep.js"), "cli/main.ts"],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) throw new Error(`deno bundle cli/main.ts failed:\n${new TextDecoder().decode(r.stderr).trim()}`);
}

export interface CycleRun {
  /** Exit code of `cryptsleep suspend` in the guest. */
  exitCode: number;
  /** Host ms from typing the command to QEMU's SUSPEND event. */
  toSuspendMs: number;
  /** Host ms from the SUSPEND event to QMP system_wakeup (what `whileAsleep` took). */
  asleepMs: number;
  /** Host ms from QMP system_wakeup to the first "Passphrase to unlock" on the console. */
  wakeToPromptMs: number;
  /** How many passphrase prompts were answered. */
  prompts: number;
}

/**
 * One full cycle: types `cryptsleep suspend --console /dev/ttyS0` at the guest shell (which is frozen with
 * everything else), waits for S3, runs `whileAsleep`, wakes the guest, answers every passphrase prompt, and
 * returns when the shell echoes the exit code.
 */
export async function runCycle(vm: VM, whileAsleep: () => Promise<void> = async () => {}): Promise<CycleRun> {
  const start = Date.now();
  await startSuspend(vm);
  const suspended = await vm.waitForSuspend(300_000);
  const toSuspendMs = suspended.at - start;
  await whileAsleep();
  const woke = Date.now();
  const asleepMs = woke - suspended.at;
  await vm.wake();
  let wakeToPromptMs = -1;
  let prompts = 0;
  // the prompt or the exit marker of startSuspend, whichever comes: one passphrase usually opens every volume
  for (;;) {
    const m = await vm.waitForConsole(/Passphrase to unlock \S+[^\n]*?: |CS-EXIT-(\d+)\r?\n/, 300_000);
    if (m[1] !== undefined) return { exitCode: Number(m[1]), toSuspendMs, asleepMs, wakeToPromptMs, prompts };
    if (wakeToPromptMs < 0) wakeToPromptMs = Date.now() - woke;
    prompts++;
    if (prompts > 4) throw new Error("runCycle: the passphrase was asked more than 4 times (wrong passphrase?)");
    await vm.answerPrompt(m.index + m[0].length, vm.guest.passphrase + "\n");
  }
}

/** The last cycle's report, from `cryptsleep status --json` in the guest (between the sh markers). */
export async function lastReport(vm: VM): Promise<TimelineJSON> {
  const r = await vm.sh("cryptsleep status --json 2>/dev/null", { timeoutMs: 120_000 });
  const json = r.out.slice(r.out.indexOf("{"), r.out.lastIndexOf("}") + 1);
  try {
    return JSON.parse(json) as TimelineJSON;
  } catch (err) {
    throw new Error(`cryptsleep status --json (exit ${r.code}) printed no JSON (${err}):\n${r.out}`);
  }
}

async function count(vm: VM, file: string): Promise<number> {
  const r = await vm.sh(`wc -l < ${file}`);
  return r.code === 0 ? Number(r.out.trim()) : -1;
}

async function demo(): Promise<boolean> {
  const kernel = option("--kernel", Deno.env.get("CRYPTSLEEP_KERNEL") ?? "6.1");
  step("deno bundle → dist/cryptsleep.js");
  await bundle();
  step(`guest image for kernel ${kernel} (built once, then cached)`);
  const guest = await ensureGuest({ kernel });
  step("boot (the LUKS2 root's passphrase is typed at the initramfs prompt)");
  await using vm = await boot({ kernel, dataDisk: true });
  step("open and mount the LUKS2 data disk; read both volume keys");
  await openDataDisk(vm);
  const volumes = [
    { name: "root", device: "/dev/vda", halves: keyHalves(await volumeKey(vm, "/dev/vda")) },
    { name: "data", device: "/dev/vdc", halves: keyHalves(await volumeKey(vm, "/dev/vdc")) },
  ];
  const needles = volumes.flatMap((v) => v.halves);

  const token = crypto.randomUUID();
  const setup = await vm.sh(
    `echo ${token} > /root/demo.txt && echo ${token} > /mnt/data/demo.txt && sync && ` +
      "(while :; do echo x >> /root/writer.log; sync; done) >/dev/null 2>&1 & sleep 2; echo started",
  );
  if (setup.code !== 0) throw new Error(`writing the test files / starting the writer failed: ${setup.out}`);

  step("RAM dump + key search, volumes open");
  const before = await vm.searchRam(needles);
  step("cryptsleep suspend --console /dev/ttyS0 (the writer keeps going until the freeze)");
  let during: number[] = [];
  const run = await runCycle(vm, async () => {
    step("guest in S3: RAM dump + key search");
    during = await vm.searchRam(needles);
    step("wake; the passphrase is typed at the prompt");
  });
  step(`cryptsleep suspend exited ${run.exitCode}; checking data, writer, report`);
  const readBack = await vm.sh("cat /root/demo.txt /mnt/data/demo.txt");
  const intact = readBack.code === 0 && readBack.out.trim() === `${token}\n${token}`;
  const lines = await count(vm, "/root/writer.log");
  await vm.sh("sleep 3");
  const writerRuns = lines > 0 && (await count(vm, "/root/writer.log")) > lines;
  await vm.sh("kill %1; wait");
  const report = await lastReport(vm);

  const m = guest.manifest;
  const out: string[] = [];
  out.push(`cryptsleep demo: kernel ${m.kernel.version}, ${m.userspaceSuite} userspace, deno ${m.deno.version}`);
  out.push("QEMU TCG without KVM: times are about 28x slower than on real hardware.", "");
  out.push(`cryptsleep suspend exit code: ${run.exitCode}; report: ${report.ok ? "ok" : "FAILED"}`);
  for (const p of report.phases) {
    out.push(`  ${p.name.padEnd(10)} ${String(p.durationMs).padStart(7)} ms  ${p.ok ? "ok" : `FAILED: ${p.error}`}`);
  }
  for (const w of report.warnings) out.push(`  warning: ${w}`);
  out.push(
    "  (guest clock: sleep is the kernel's way into S3 and back, the time in S3 not counted; unlock includes\n" +
      "  the wait for the passphrase)",
  );
  out.push(`time from starting the command to SUSPEND: ${run.toSuspendMs} ms`);
  out.push(`time in S3 (host, RAM dump + search): ${run.asleepMs} ms`);
  out.push(`time from wake to the passphrase prompt: ${run.wakeToPromptMs} ms (${run.prompts} prompt(s))`, "");
  out.push("volume key halves found in guest RAM (before: want > 0, during suspend: want 0)");
  volumes.forEach((v, i) => {
    const b = before.slice(2 * i, 2 * i + 2);
    const d = during.slice(2 * i, 2 * i + 2);
    out.push(`  ${v.name.padEnd(5)} ${v.device}  before ${b.join("/")}  during ${d.join("/")}`);
  });
  out.push(`data written + synced before, read back after: ${intact ? "intact" : `NOT INTACT: ${readBack.out}`}`);
  out.push(`writer loop on the root still running after wake: ${writerRuns ? "yes" : "NO"}`);

  const pass = run.exitCode === 0 && report.ok && before.every((h) => h > 0) && during.length === needles.length &&
    during.every((h) => h === 0) && intact && writerRuns;
  out.push("", pass ? "PASS" : "FAIL");
  console.log(out.join("\n"));
  return pass;
}

if (import.meta.main) {
  let pass = false;
  try {
    pass = await demo();
  } catch (err) {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    console.log("FAIL");
  }
  if (!pass) Deno.exit(1);
}

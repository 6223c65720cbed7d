/**
 * @module
 * Demo on the QEMU bed: boots the guest (real LUKS2 root, real dm-crypt, real S3) and runs a suspend cycle on the
 * LUKS2 data disk, then reports the phases, the time to S3 and whether the volume key was in guest RAM before and
 * during suspend. `cryptsleep suspend` does not exist yet, so the cycle is the manual one (cryptsetup luksSuspend,
 * echo mem, wake, luksResume with the passphrase typed on the console).
 *
 * ```sh
 * deno task demo            # or: deno run -A scripts/demo.ts [--kernel 6.1]
 * ```
 */

import { join } from "node:path";
import { ensureGuest, REPO_ROOT } from "./guest/build.ts";
import { boot, keyHalves, luksResume, openDataDisk, volumeKey } from "../tests/vm/harness.ts";

const args = Deno.args;
const kernel = args.includes("--kernel")
  ? args[args.indexOf("--kernel") + 1]
  : Deno.env.get("CRYPTSLEEP_KERNEL") ?? "6.1";
const phases: { name: string; ms: number; note?: string }[] = [];

async function phase<T>(name: string, fn: () => Promise<T>, note?: (v: T) => string): Promise<T> {
  const t = performance.now();
  console.error(`… ${name}`);
  const v = await fn();
  phases.push({ name, ms: Math.round(performance.now() - t), note: note?.(v) });
  return v;
}

async function ensureBundle(): Promise<string> {
  const bundle = join(REPO_ROOT, "dist", "cryptsleep.js");
  try {
    await Deno.stat(bundle);
    return "present";
  } catch { /* build it */ }
  try {
    await Deno.stat(join(REPO_ROOT, "cli", "main.ts"));
  } catch {
    return "not built: cli/main.ts does not exist yet";
  }
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform=deno", "-o", bundle, "cli/main.ts"],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return r.success
    ? "built"
    : `bundle failed: ${new TextDecoder().decode(r.stderr).trim().split("\n").slice(-3).join(" ")}`;
}

function check(cond: boolean, what: string) {
  if (!cond) throw new Error(`demo: ${what}`);
}

const bundleState = await phase("bundle dist/cryptsleep.js", ensureBundle, (s) => s);
const guest = await phase("guest image (build or cache)", () => ensureGuest({ kernel }), (g) => g.dir);
await using vm = await phase(
  "boot (LUKS2 root, passphrase typed at the initramfs prompt)",
  () => boot({ kernel, dataDisk: true }),
);
const tool = await vm.sh("test -f /usr/local/lib/cryptsleep/cryptsleep.js && cryptsleep --help 2>&1 | head -3");
await phase("open + mount the LUKS2 data disk", () => openDataDisk(vm));
const dataKey = keyHalves(await volumeKey(vm, "/dev/vdc"));
const before = await phase("RAM dump + key search (volume open)", () => vm.searchRam(dataKey), (h) => `hits ${h}`);

console.error("cryptsleep suspend does not exist yet: running the manual cycle (cryptsetup luksSuspend + echo mem)");
await phase("luksSuspend data", async () => {
  const r = await vm.sh("cryptsetup luksSuspend data && echo 0 > /sys/power/sync_on_suspend");
  check(r.code === 0, `luksSuspend failed: ${r.out}`);
});
vm.clearEvents();
const mark = vm.console.length;
const tMem = performance.now();
await vm.sh('(echo mem > /sys/power/state; echo "mem-returned rc=$?") >/dev/ttyS0 2>&1 &');
await vm.waitForEvent("SUSPEND", 120_000);
const toSuspend = Math.round(performance.now() - tMem);
phases.push({ name: "echo mem → QMP SUSPEND", ms: toSuspend });
const during = await phase("RAM dump + key search (in S3)", () => vm.searchRam(dataKey), (h) => `hits ${h}`);
await phase("wake (QMP system_wakeup → WAKEUP, echo mem returns)", async () => {
  await vm.wake();
  await vm.waitForEvent("WAKEUP", 60_000);
  await vm.waitForConsole(/mem-returned rc=0/, 120_000, mark);
});
await phase("luksResume (passphrase typed on the console)", async () => {
  const r = await luksResume(vm, "data");
  check(r.code === 0, `luksResume failed: ${r.out}`);
});
const intact = await phase(
  "verify data",
  async () => (await vm.sh("cd /mnt/data && sha256sum -c blob.sha256 && grep -q cryptsleep hello.txt")).code === 0,
  (ok) => (ok ? "intact" : "CORRUPT"),
);

const m = guest.manifest;
console.log(
  `\ncryptsleep demo on ${m.kernel.package} ${m.kernel.version} (${m.userspaceSuite} userspace, deno ${m.deno.version})`,
);
console.log(`tool bundle: ${bundleState}; in guest: ${tool.code === 0 ? "present" : "absent"}`);
console.log("NOTE: `cryptsleep suspend` does not exist yet; this is the manual luksSuspend + S3 cycle.\n");
for (const p of phases) {
  console.log(`  ${p.name.padEnd(58)} ${String(p.ms).padStart(7)} ms${p.note ? `  ${p.note}` : ""}`);
}
console.log(`\n  time to SUSPEND: ${toSuspend} ms`);
console.log(`  data volume key halves in RAM before suspend: ${before.join(" / ")} (want > 0)`);
console.log(`  data volume key halves in RAM during suspend: ${during.join(" / ")} (want 0)`);
console.log(`  data intact after resume: ${intact ? "yes" : "NO"}`);
const pass = before.every((h) => h > 0) && during.every((h) => h === 0) && intact;
console.log(`\n  ${pass ? "PASS" : "FAIL"}`);
if (!pass) Deno.exitCode = 1;

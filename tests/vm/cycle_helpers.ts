/**
 * @module
 * Steps shared by the VM tests of the suspend cycle (and the demo): start `cryptsleep suspend` in the guest's
 * foreground shell, answer its prompt, read its exit code, snapshot the state a failed cycle must restore.
 */
import assert from "node:assert/strict";
import type { VM } from "./harness.ts";

export const SLOW = { sanitizeOps: false, sanitizeResources: false };

/** Whether this run is the full tier (`deno task test:full`): every kernel × layout, outside CI. */
export const FULL_TIER = Deno.env.get("CRYPTSLEEP_VM_TIER") === "full";

/**
 * The kernels a test runs on: `$CRYPTSLEEP_VM_KERNELS` when set (comma-separated), else `full` in the full tier,
 * else `fast` (CI's tier: one kernel per feature keeps it within its budget).
 */
export function tierKernels(fast: string[], full: string[]): string[] {
  const given = Deno.env.get("CRYPTSLEEP_VM_KERNELS");
  if (given) return given.split(",").filter(Boolean);
  return FULL_TIER ? full : fast;
}
export const CONSOLE = "--console /dev/ttyS0";

/**
 * Starts `cryptsleep suspend` in the foreground of the guest shell; the shell is frozen with everything else.
 * The prompt goes to the serial console unless `console` is given ("" for the default: a VT of its own).
 */
export async function startSuspend(vm: VM, args = "", console = CONSOLE): Promise<void> {
  vm.clearEvents();
  vm.cursor = vm.console.length;
  await vm.type(`cryptsleep suspend ${console} ${args}; echo "CS-EXIT-""$?"\n`);
}

export async function suspendExit(vm: VM, timeoutMs = 300_000): Promise<number> {
  // up to the line's end: the serial console may hand over "CS-EXIT-1" before the "37" of 137
  const m = await vm.waitForConsole(/CS-EXIT-(\d+)\r?\n/, timeoutMs);
  return Number(m[1]);
}

/** Types `wrong` at the next passphrase prompt and waits until it is said to be the first wrong try. */
export async function answerWrong(vm: VM, wrong: string, timeoutMs = 300_000): Promise<void> {
  await vm.waitForConsole(/Passphrase to unlock \S+/, timeoutMs);
  await vm.type(wrong + "\n");
  await vm.waitForConsole(/No key available with this passphrase \(1\/\d+\)/, timeoutMs);
}

/** One full cycle; returns the key hits seen while suspended and the console text of the cycle. */
export async function fullCycle(vm: VM, needles: Uint8Array[], args = ""): Promise<{ hits: number[]; text: string }> {
  const from = vm.console.length;
  await startSuspend(vm, args);
  await vm.waitForSuspend(300_000);
  const hits = needles.length ? await vm.searchRam(needles) : [];
  await vm.wake();
  await answerPrompt(vm);
  assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
  return { hits, text: vm.console.slice(from) };
}

/** Types the passphrase once the agent (or supervisor) prompts for it. */
export async function answerPrompt(vm: VM, timeoutMs = 300_000, waitMs = 0): Promise<void> {
  await vm.waitForConsole(/Passphrase to unlock \S+/, timeoutMs);
  // a person who takes a while to type
  if (waitMs) await new Promise((r) => setTimeout(r, waitMs));
  await vm.type(vm.guest.passphrase + "\n");
}

/** State that must be the same before and after a cycle that failed or did nothing. */
export async function systemState(vm: VM): Promise<string> {
  const r = await vm.sh(
    "for d in /sys/block/dm-*; do echo $(cat $d/dm/name) suspended=$(cat $d/dm/suspended); done; " +
      "for c in /sys/fs/cgroup/*/cgroup.freeze; do echo $c=$(cat $c); done; " +
      "for k in sync_on_suspend pm_freeze_timeout freeze_filesystems pm_test; do " +
      "[ -e /sys/power/$k ] && echo $k=$(cat /sys/power/$k); done; echo modprobe=$(cat /proc/sys/kernel/modprobe); " +
      "echo pm_test_delay=$(cat /sys/module/suspend/parameters/pm_test_delay 2>/dev/null); " +
      "grep -c . /proc/mounts",
  );
  assert.equal(r.code, 0, r.out);
  return r.out.trim();
}

/** A word typed nowhere else: lowercase letters and digits, which the PS/2 keyboard path can type too. */
export function freshWord(): string {
  const abc = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from(crypto.getRandomValues(new Uint8Array(24)), (b) => abc[b % abc.length]).join("");
}

export async function lineCount(vm: VM, file: string): Promise<number> {
  const r = await vm.sh(`wc -l < ${file}`);
  assert.equal(r.code, 0, r.out);
  return Number(r.out.trim());
}

/**
 * Arms a killer that SIGKILLs `cryptsleep suspend` once it waits at its prompt (after the lock and the sleep), as the
 * agent it is then. It runs from tmpfs in the tool's cgroup, so neither freezer stops it and it never reads the locked
 * disk. Writes "killed" to /run/killer/done.
 */
export async function armAgentKiller(vm: VM): Promise<void> {
  const killer = await vm.sh(
    "mkdir -p /run/killer /sys/fs/cgroup/cryptsleep && rm -f /run/killer/done && cp /bin/busybox /run/killer/ && " +
      "cat > /run/killer/kill.sh <<'EOF'\n" +
      "while :; do\n" +
      "  for p in /proc/[0-9]*; do\n" +
      "    tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q 'cryptsleep.js suspend' || continue\n" +
      "    grep -qsE 'n_tty_read|wait_woken|poll_schedule_timeout|do_sys_poll' $p/task/*/wchan && { kill -9 ${p#/proc/}; echo killed > /run/killer/done; exit; }\n" +
      "  done\n" +
      "  sleep 0.2\n" +
      "done\n" +
      "EOF\n" +
      "(sh -c 'echo $$ > /sys/fs/cgroup/cryptsleep/cgroup.procs; " +
      "exec /run/killer/busybox sh /run/killer/kill.sh' >/dev/null 2>&1 &); echo armed",
  );
  assert.equal(killer.code, 0, killer.out);
}

/**
 * Once the supervisor that finished a dead cycle has exited (the shell thaws before it unmounts, re-arms and
 * reports), removes the tool's cgroup it leaves for the next run's claim: the state a later check compares.
 */
/** Waits (a minute at most) until no supervisor runs, then prints how many do: "0" when it is gone. */
export const SUPERVISOR_GONE = "for i in $(seq 300); do ps -o args | grep -q '[c]ryptsleep.js supervise' || break; " +
  "sleep 0.2; done; ps -o args | grep -c '[c]ryptsleep.js supervise'";

export const AFTER_SUPERVISOR = "for i in $(seq 300); do [ -s /sys/fs/cgroup/cryptsleep/cgroup.procs ] || break; " +
  "sleep 0.2; done; rmdir /sys/fs/cgroup/cryptsleep 2>/dev/null; true";

/**
 * Types the passphrase on the PS/2 keyboard until the cycle ends; its exit code, or null. The screen cannot be read
 * after wake, and keys typed before the prompt are flushed by it, so the passphrase is typed again every so often.
 */
export async function typeUntilExit(vm: VM): Promise<number | null> {
  for (let attempt = 0; attempt < 4; attempt++) {
    await new Promise((r) => setTimeout(r, 10_000));
    await vm.sendKeys(vm.guest.passphrase + "\n");
    const code = await suspendExit(vm, 40_000).catch(() => null);
    if (code !== null) return code;
  }
  return null;
}

/**
 * Gives the opened data volume (`/dev/vdc`) a passphrase of its own, a fast PBKDF2 one, and takes the guest's off
 * it: its unlock stops at its own prompt once the root is unlocked. Returns the new passphrase.
 */
export async function dataPassphraseOfItsOwn(vm: VM, device = "/dev/vdc"): Promise<string> {
  const other = `other-${crypto.randomUUID().slice(0, 8)}`;
  const add = await vm.sh(
    `printf %s '${other}' > /run/other.key && ` +
      `cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 ${device} /run/other.key`,
    {
      timeoutMs: 120_000,
      interact: [{ expect: /Enter any existing passphrase:/, send: vm.guest.passphrase + "\n" }],
    },
  );
  assert.equal(add.code, 0, add.out);
  const kill = await vm.sh(
    `cryptsetup luksKillSlot --batch-mode --key-file /run/other.key ${device} 0; r=$?; rm /run/other.key; [ $r = 0 ]`,
  );
  assert.equal(kill.code, 0, kill.out);
  return other;
}

/**
 * @module
 * What a cryptsleep cycle requires of the host, in ONE list: preflight refuses when one fails, doctor prints
 * one check line for each. Every requirement evaluates against a root ("/" = live, or a recorded tree under
 * tests/fixtures/trees) and says what it saw and, when it fails, what to do.
 *
 * @example
 * ```ts
 * import { probeLibcryptsetup } from "../ffi/libcryptsetup.ts";
 * import { checkRequirements, refusals } from "./requirements.ts";
 * const verdicts = await checkRequirements({
 *   root: "/",
 *   uid: Deno.uid(),
 *   state: "mem",
 *   lib: probeLibcryptsetup(),
 *   argon2MemoryKiB: 1024 * 1024,
 * });
 * for (const v of verdicts) console.log(v.status, v.name, v.seen, v.fix ?? "");
 * console.log(refusals(verdicts)); // what preflight would refuse with
 * ```
 */
import { mib } from "../cli/plan.ts";
import { cgroup2At, DEFAULT_CGROUP_ROOT } from "../cgroup/cgroup2.ts";
import type { LibcryptsetupInfo, LibcryptsetupSymbol } from "../ffi/libcryptsetup.ts";
import type { Plan } from "../discovery/mod.ts";
import { readTrimmed } from "../host/paths.ts";
import { readMeminfo } from "../host/proc.ts";
import { KNOBS, knobValue } from "../host/sysfs.ts";
import { refusalOf, watchdogDevices } from "../systemd/watchdog.ts";

/**
 * The oldest libcryptsetup that has every {@linkcode REQUIRED_SYMBOLS} entry (crypt_safe_alloc and its
 * siblings arrived in 2.3). Said in the fix; the verdict is by symbols, as the version the library file
 * tells is its API level, "2.0" for 2.0 to 2.3 (see ffi/libcryptsetup.ts).
 */
export const MIN_LIBCRYPTSETUP = "2.3";

/**
 * The libcryptsetup calls the cycle makes: open by name (with a detached header) or by a held volume's
 * header, load, suspend, ask whether suspended, resume with a passphrase, get the volume key (held volumes),
 * keep the key out of the keyring at re-open, safe memory for passphrases and keys, log routing.
 */
export const REQUIRED_SYMBOLS: readonly LibcryptsetupSymbol[] = [
  "crypt_init",
  "crypt_init_by_name",
  "crypt_init_by_name_and_header",
  "crypt_load",
  "crypt_free",
  "crypt_suspend",
  "crypt_get_active_device",
  "crypt_resume_by_passphrase",
  "crypt_volume_key_get",
  "crypt_get_volume_key_size",
  "crypt_volume_key_keyring",
  "crypt_safe_alloc",
  "crypt_safe_free",
  "crypt_safe_memzero",
  "crypt_set_log_callback",
];

/** What the unlock agent needs beside Argon2: a deno process, measured ~60 MiB RSS, with margin. */
export const AGENT_HEADROOM_KIB = 128 * 1024;

/** The sleep states the cycle can enter. */
export type SleepState = "mem" | "freeze" | "standby";

/** The probe of libcryptsetup, as `probeLibcryptsetup()` returns it. */
export type LibProbe = { ok: true; info: LibcryptsetupInfo } | { ok: false; error: string };

/** What the requirements are evaluated against. */
export interface HostInputs {
  /** "/" for the live system, or a recorded tree. */
  root: string;
  /** The uid the cycle would run as (null: unknown, as Deno.uid() on some platforms). */
  uid: number | null;
  /** The state the cycle would write to /sys/power/state. */
  state: SleepState;
  /** The libcryptsetup probe; null when not probed (a recorded tree has no library to load). */
  lib: LibProbe | null;
  /** The largest Argon2 memory among the volumes to unlock (KiB); undefined when unknown (no plan). */
  argon2MemoryKiB?: number;
  /**
   * PID 1's RuntimeWatchdogUSec (null: PID 1 is not systemd); undefined when not asked (a recorded tree): then
   * only a device that can never be stopped fails.
   */
  watchdogUSec?: string | null;
  /**
   * Files this process could write on filesystems of the volumes to lock (host/open_files.ts); undefined when not
   * asked (a recorded tree, no plan).
   */
  writableOnLocked?: string[];
  /** What of the plan's layout a cycle would hang on (`Plan.unsafe`); undefined without a plan. */
  unsafe?: string[];
}

/** One requirement's verdict: "unknown" when it was not evaluated (library not probed, no plan). */
export interface Verdict {
  /** Short name; doctor's check name. */
  name: RequirementName;
  /** "ok", "fail", or "unknown". */
  status: "ok" | "fail" | "unknown";
  /** What was seen. */
  seen: string;
  /** What to do; set when the status is not "ok". */
  fix?: string;
}

/** The names of the requirements, in evaluation order. */
export const REQUIREMENTS = [
  "root",
  "cgroup root",
  "sleep states",
  "sync_on_suspend",
  "libcryptsetup",
  "memory",
  "watchdog",
  "open files",
  "pm_test",
  "layout",
] as const;
/** One of {@linkcode REQUIREMENTS}. */
export type RequirementName = typeof REQUIREMENTS[number];

/** Whether kernel `release` ("6.12.0-…") is at least major.minor; undefined when it cannot be read. */
export function kernelAtLeast(release: string | undefined, major: number, minor: number): boolean | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release ?? "");
  if (!m) return undefined;
  return Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor);
}

function checkRoot(uid: number | null): Verdict {
  if (uid === 0) return { name: "root", status: "ok", seen: "running as root (uid 0)" };
  return { name: "root", status: "fail", seen: `running as uid ${uid}`, fix: "run cryptsleep as root (sudo)" };
}

async function checkCgroup(root: string): Promise<Verdict> {
  const found = await cgroup2At(DEFAULT_CGROUP_ROOT, root);
  if (found.ok) return { name: "cgroup root", status: "ok", seen: `cgroup v2 at ${DEFAULT_CGROUP_ROOT}` };
  return {
    name: "cgroup root",
    status: "fail",
    seen: `${found.seen}` + (found.elsewhere ? ` (cgroup2 is at ${found.elsewhere}: hybrid layout)` : "") +
      `; the freezer uses the cgroup v2 hierarchy at ${DEFAULT_CGROUP_ROOT}`,
    fix:
      `boot with systemd.unified_cgroup_hierarchy=1, or mount it there: mount -t cgroup2 none ${DEFAULT_CGROUP_ROOT}`,
  };
}

/** Whether the kernel offers `state`; exported for doctor, which also asks for the other state. */
export async function checkSleepState(root: string, state: SleepState): Promise<Verdict> {
  const text = await readTrimmed(root, "/sys/power/state");
  const states = text?.split(/\s+/).filter(Boolean) ?? [];
  if (states.includes(state)) {
    return { name: "sleep states", status: "ok", seen: `/sys/power/state: ${states.join(" ")}` };
  }
  // the fix names a state the CLI takes (standby comes only from sleep.conf)
  const other: SleepState = state === "mem" ? "freeze" : "mem";
  return {
    name: "sleep states",
    status: "fail",
    seen: text === undefined
      ? "no /sys/power/state"
      : `/sys/power/state offers ${states.join(" ") || "nothing"}, not ${state}`,
    fix: states.includes(other)
      ? `cryptsleep suspend --state ${other}`
      : "this kernel (or VM/sandbox) can't suspend: run on hardware or a VM with suspend support",
  };
}

async function checkSyncOnSuspend(root: string): Promise<Verdict> {
  const sync = await readTrimmed(root, KNOBS.syncOnSuspend);
  if (sync !== undefined) {
    return {
      name: "sync_on_suspend",
      status: "ok",
      seen: `present (= ${sync}); set to 0 during the cycle, as the kernel's sync would hang on a locked volume`,
    };
  }
  const release = await readTrimmed(root, "/proc/sys/kernel/osrelease");
  const why = kernelAtLeast(release, 5, 6)
    ? `kernel ${release} is built without suspend support (CONFIG_SUSPEND)`
    : `kernel ${release ?? "unknown"} is older than 5.6`;
  return {
    name: "sync_on_suspend",
    status: "fail",
    seen: `no ${KNOBS.syncOnSuspend}: ${why}; the kernel's own sync would hang on a locked volume`,
    fix: "run a kernel >= 5.6 with CONFIG_SUSPEND",
  };
}

/**
 * `pm_test` must be `none`: set to a test level, every suspend stops there and never sleeps (a cycle that died in its
 * firmware dry run could leave it so, and the next one would save and restore that). Absent, the firmware cache
 * cannot be primed (cycle/firmware.ts): said, not refused.
 */
function checkPmTest(root: string): Verdict {
  const selected = knobValue(KNOBS.pmTest, root);
  if (selected === null) {
    return {
      name: "pm_test",
      status: "ok",
      seen: `no ${KNOBS.pmTest} (a kernel without CONFIG_PM_DEBUG): the firmware cache is not primed before the ` +
        "lock, so a firmware file a driver released may be read from the locked root at suspend",
    };
  }
  if (selected === "none") {
    return { name: "pm_test", status: "ok", seen: "none; a dry run at this level primes the firmware cache" };
  }
  return {
    name: "pm_test",
    status: "fail",
    seen: `${KNOBS.pmTest} is ${selected}: every suspend stops at that test level and never sleeps`,
    fix: `echo none > ${KNOBS.pmTest}`,
  };
}

/** The libcryptsetup verdict for a probe (null: not probed). */
export function checkLibcryptsetup(lib: LibProbe | null): Verdict {
  const name = "libcryptsetup";
  const install = `install libcryptsetup >= ${MIN_LIBCRYPTSETUP} (package libcryptsetup12)`;
  if (lib === null) return { name, status: "unknown", seen: "not probed (--root is a recorded tree)" };
  if (!lib.ok) return { name, status: "fail", seen: lib.error, fix: install };
  const { info } = lib;
  const missing = Object.entries(info.symbols).filter(([, p]) => !p).map(([s]) => s);
  const seen = `${info.version} at ${info.path}, ${Object.values(info.symbols).filter(Boolean).length}/` +
    `${Object.keys(info.symbols).length} symbols` + (missing.length ? ` (missing: ${missing.join(", ")})` : "");
  const lacking = REQUIRED_SYMBOLS.filter((s) => info.symbols[s] !== true);
  if (!lacking.length) return { name, status: "ok", seen };
  return { name, status: "fail", seen: `${seen}: the cycle needs ${lacking.join(", ")}`, fix: install };
}

/** Whether MemAvailable (no swap: it may sit on a volume being locked) covers the unlock after wake. */
export async function checkMemory(root: string, argon2MemoryKiB: number | undefined): Promise<Verdict> {
  const name = "memory";
  if (argon2MemoryKiB === undefined) {
    return {
      name,
      status: "unknown",
      seen: "no plan: the Argon2 memory of the volumes is unknown",
      fix: "see cryptsleep plan",
    };
  }
  const avail = (await readMeminfo(root)).MemAvailable;
  if (avail === undefined) {
    // (preflight used to crash here; a kernel this old cannot run the cycle anyway)
    return {
      name,
      status: "fail",
      seen: "no MemAvailable in /proc/meminfo: cannot tell whether the unlock after wake fits in RAM",
      fix: "run a kernel >= 3.14 (it has MemAvailable)",
    };
  }
  const need = argon2MemoryKiB + AGENT_HEADROOM_KIB;
  const parts = `(Argon2 ${mib(argon2MemoryKiB)} + agent ${mib(AGENT_HEADROOM_KIB)})`;
  if (avail >= need) return { name, status: "ok", seen: `MemAvailable ${mib(avail)} >= ${mib(need)} ${parts}` };
  return {
    name,
    status: "fail",
    seen: `MemAvailable ${mib(avail)} < ${mib(need)} ${parts}; swap on locked volumes can't help`,
    fix: "free memory, or re-key the largest keyslot with a smaller --pbkdf-memory (cryptsetup luksConvertKey)",
  };
}

/** Whether a running hardware watchdog would reset the machine while PID 1 is frozen (systemd/watchdog.ts). */
export async function checkWatchdog(root: string, systemdUSec: string | null | undefined): Promise<Verdict> {
  const name = "watchdog";
  const devices = await watchdogDevices(root);
  const active = devices.filter((d) => d.active);
  const refusal = refusalOf(devices, systemdUSec);
  if (refusal) return { name, status: "fail", ...refusal };
  const seen = !active.length
    ? devices.length ? `${devices.map((d) => d.name).join(", ")} stopped` : "no watchdog device"
    : `${active.map((d) => `${d.name} (${d.identity})`).join(", ")} runs: systemd lets go of it for the cycle ` +
      `(RuntimeWatchdogUSec=0 while PID 1 is frozen) and takes it back after the thaw`;
  return { name, status: "ok", seen };
}

/** The mount points of the filesystems the lock freezes: on the volumes to lock, or on what is stacked above. */
export function lockedMountpoints(plan: Pick<Plan, "lock">): string[] {
  return [...new Set(plan.lock.flatMap((v) => v.mounts.map((m) => m.mountpoint)))];
}

/** Whether this process holds a file it could write on a filesystem that the lock will freeze. */
export function checkOpenFiles(files: string[] | undefined): Verdict {
  const name = "open files";
  if (files === undefined) return { name, status: "ok", seen: "not asked (no live plan)" };
  if (!files.length) return { name, status: "ok", seen: "nothing open for writing on the volumes to lock" };
  return {
    name,
    status: "fail",
    seen: `cryptsleep holds ${files.join(", ")} open for writing on a volume to lock: a write after the lock ` +
      "would block the cycle for good",
    fix: /\/deno\/|_cache_v\d/.test(files.join(" "))
      ? "these are deno's caches: run cryptsleep through its wrapper (/usr/sbin/cryptsleep keeps DENO_DIR in " +
        "/run/cryptsleep-deno), or set DENO_DIR=/run/cryptsleep-deno"
      : "close them, or run cryptsleep from a process that does not hold them",
  };
}

/** Whether the plan's layout has a volume the cycle could lock but never unlock (each item says what to change). */
export function checkLayout(unsafe: string[] | undefined): Verdict {
  const name = "layout";
  if (unsafe === undefined) return { name, status: "ok", seen: "not asked (no plan)" };
  if (!unsafe.length) {
    return { name, status: "ok", seen: "every volume can be unlocked after wake in the plan's order" };
  }
  return {
    name,
    status: "fail",
    seen: unsafe.join("; "),
    fix: "change what each names (cryptsleep plan lists them), then run cryptsleep doctor again",
  };
}

/** Evaluates every requirement, in {@linkcode REQUIREMENTS} order. */
export async function checkRequirements(host: HostInputs): Promise<Verdict[]> {
  return [
    checkRoot(host.uid),
    await checkCgroup(host.root),
    await checkSleepState(host.root, host.state),
    await checkSyncOnSuspend(host.root),
    checkLibcryptsetup(host.lib),
    await checkMemory(host.root, host.argon2MemoryKiB),
    await checkWatchdog(host.root, host.watchdogUSec),
    checkOpenFiles(host.writableOnLocked),
    checkPmTest(host.root),
    checkLayout(host.unsafe),
  ];
}

/** Preflight's refusal reasons: every requirement not met ("unknown" refuses too: nothing may be assumed). */
export function refusals(verdicts: Verdict[]): string[] {
  return verdicts.filter((v) => v.status !== "ok").map((v) => `${v.seen}: ${v.fix}`);
}

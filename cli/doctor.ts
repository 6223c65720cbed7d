/**
 * `cryptsleep doctor [--json] [--state mem|freeze]`: can this machine run a cryptsleep cycle? One line per
 * check, `ok`, `warn` or `fail`, with what was seen and how to fix it. The requirements come from
 * cycle/requirements.ts, the list preflight enforces, so doctor fails wherever suspend would refuse; the
 * other lines only inform. Reads files under a root (default "/") so the checks run on recorded trees; the
 * checks that need the live system (libcryptsetup, the VT ioctl) run only on "/".
 *
 * @example
 * ```ts
 * import { doctorExitCode, formatChecks, runChecks } from "./doctor.ts";
 * const checks = await runChecks({ state: "mem" });
 * console.log(formatChecks(checks));
 * Deno.exitCode = doctorExitCode(checks);
 * ```
 *
 * From the shell: `cryptsleep doctor || echo "not ready"`, or
 * `cryptsleep doctor --json | jq '.checks[] | select(.status != "ok")'`.
 * @module
 */
import { Console } from "../ffi/tty.ts";
import { kernelSerialConsoles } from "../cycle/consoles.ts";
import { type CommandSpec, rootOption, STATES } from "./args.ts";
import { join } from "../host/path.ts";
import type { Plan } from "../discovery/mod.ts";
import { probeLibcryptsetup } from "../ffi/libcryptsetup.ts";
import { cgroup2At, DEFAULT_CGROUP_ROOT } from "../cgroup/cgroup2.ts";
import { existsUnder } from "../host/paths.ts";
import { readMountinfo } from "../host/mountinfo.ts";
import { readTrimmed, underRoot } from "../host/paths.ts";
import { readProcKeys } from "../host/proc.ts";
import {
  checkMemory,
  checkRequirements,
  checkSleepState,
  kernelAtLeast,
  type LibProbe,
  type SleepState,
  type Verdict,
} from "../cycle/requirements.ts";
import { ExitCode } from "./exit_codes.ts";
import { discoverOrExplain } from "./plan.ts";
import { checkSystemd } from "./doctor_systemd.ts";
import { liveWatchdogUSec } from "../systemd/watchdog.ts";
import { writableFilesOn } from "../host/open_files.ts";
import { lockedMountpoints } from "../cycle/requirements.ts";

/** A check's verdict: `fail` makes doctor exit non-zero, `warn` only informs. */
export type CheckStatus = "ok" | "warn" | "fail";

/** One doctor line. */
export interface Check {
  /** ok, warn or fail. */
  status: CheckStatus;
  /** Short name, e.g. "cgroup root". */
  name: string;
  /** What was seen. */
  detail: string;
  /** What to do about it. */
  hint?: string;
}

/** Inputs of {@linkcode runChecks}; the defaults describe the live system. */
export interface DoctorOptions {
  /** Where to read sysfs/proc/etc ("/" = live; else a recorded tree). */
  root?: string;
  /** Run the checks that need the live system (default: root is "/"). */
  live?: boolean;
  /** The uid to judge (default: this process's). */
  uid?: number | null;
  /** Check for exactly this sleep state, as `suspend --state` would (default: mem, freeze as a warning). */
  state?: SleepState;
  /** The libcryptsetup probe to judge (default: probe it when live, else not probed). */
  lib?: LibProbe | null;
}

/** A requirement's verdict as a doctor line ("unknown" warns: doctor cannot tell, preflight refuses). */
function fromVerdict(v: Verdict): Check {
  const status = v.status === "unknown" ? "warn" : v.status;
  return { status, name: v.name, detail: v.seen, ...(v.status !== "ok" && v.fix ? { hint: v.fix } : {}) };
}

/** The layout around the one cgroup2 check: where cgroup2 and v1 are, cgroup.freeze, the controllers. */
async function checkCgroups(root: string): Promise<Check[]> {
  const found = await cgroup2At(DEFAULT_CGROUP_ROOT, root);
  const mp = found.ok ? found.cgroup.mountpoint : found.elsewhere;
  if (mp === undefined) {
    return [{
      status: "fail",
      name: "cgroup2",
      detail: "no cgroup2 mount in mountinfo",
      hint: "mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)",
    }];
  }
  const out: Check[] = [];
  if (found.ok) {
    out.push({ status: "ok", name: "cgroup2", detail: `unified cgroup v2 at ${mp}` });
  } else {
    const v1 = (await readMountinfo(root)).filter((m) => m.fstype === "cgroup");
    const v1names = v1.map((m) => m.mountpoint.split("/").pop()).join(",");
    out.push({
      status: "warn",
      name: "cgroup2",
      detail: `hybrid layout: cgroup2 at ${mp}` + (v1.length ? `, controllers on cgroup v1 (${v1names})` : ""),
      hint: `cryptsleep freezes the cgroup v2 hierarchy at ${DEFAULT_CGROUP_ROOT} (see cgroup root): ` +
        "boot with systemd.unified_cgroup_hierarchy=1",
    });
  }
  // cgroup.freeze is cgroup2 core (5.2+), not a controller: it exists in every non-root cgroup.
  const base = underRoot(root, mp);
  let child: string | undefined;
  try {
    for await (const e of Deno.readDir(base)) {
      if (e.isDirectory && (await existsUnder(root, join(mp, e.name, "cgroup.freeze")))) {
        child = e.name;
        break;
      }
    }
  } catch {
    // unreadable: judged by kernel version below
  }
  const release = await readTrimmed(root, "/proc/sys/kernel/osrelease");
  if (child) {
    out.push({ status: "ok", name: "cgroup freezer", detail: `cgroup.freeze present (${mp}/${child}/cgroup.freeze)` });
  } else if (kernelAtLeast(release, 5, 2)) {
    out.push({
      status: "ok",
      name: "cgroup freezer",
      detail: `no child cgroup under ${mp} yet; kernel ${release} (>= 5.2) gives each one cgroup.freeze`,
    });
  } else {
    out.push({
      status: "fail",
      name: "cgroup freezer",
      detail: `no cgroup.freeze under ${mp} and kernel ${release ?? "unknown"} is older than 5.2`,
      hint: "cryptsleep needs the cgroup v2 freezer: run a kernel >= 5.2",
    });
  }
  const controllers = (await readTrimmed(root, join(mp, "cgroup.controllers")))?.split(/\s+/).filter(Boolean) ?? [];
  const subtree = (await readTrimmed(root, join(mp, "cgroup.subtree_control")))?.split(/\s+/).filter(Boolean) ?? [];
  const detail = `controllers: ${controllers.join(" ") || "none"}; subtree_control: ${subtree.join(" ") || "none"}`;
  if (controllers.includes("memory")) {
    out.push({ status: "ok", name: "cgroup2 controllers", detail });
  } else {
    out.push({
      status: "warn",
      name: "cgroup2 controllers",
      detail: `${detail}: no memory controller, so memory.swap.max can't keep cryptsleep out of swap`,
      hint: "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only) to get the memory controller in v2",
    });
  }
  return out;
}

/** The sleep state requirement; without a state asked for, freeze alone is a warning (suspend --state freeze). */
async function checkSleep(root: string, state: SleepState | undefined): Promise<Check> {
  const mem = await checkSleepState(root, state ?? "mem");
  if (state !== undefined || mem.status === "ok") return fromVerdict(mem);
  const freeze = await checkSleepState(root, "freeze");
  if (freeze.status !== "ok") return fromVerdict(mem);
  return {
    status: "warn",
    name: "sleep states",
    detail: `${freeze.seen} (no mem: only suspend-to-idle)`,
    hint: "cryptsleep suspend --state freeze",
  };
}

/** The knobs beside the requirements: mem_sleep, freeze_filesystems, pm_freeze_timeout. */
async function checkPower(root: string): Promise<Check[]> {
  const out: Check[] = [];
  const states = (await readTrimmed(root, "/sys/power/state"))?.split(/\s+/).filter(Boolean) ?? [];
  const memSleep = await readTrimmed(root, "/sys/power/mem_sleep");
  if (memSleep === undefined) {
    out.push({
      status: "warn",
      name: "mem_sleep",
      detail: "no /sys/power/mem_sleep: can't tell deep (S3) from s2idle" +
        (states.includes("mem") ? "" : " (and no mem state is offered)"),
    });
  } else {
    const chosen = /\[(\w+)\]/.exec(memSleep)?.[1] ?? "?";
    const deepAvailable = memSleep.split(/\s+/).some((s) => s.replace(/[[\]]/g, "") === "deep");
    out.push(
      chosen === "deep" ? { status: "ok", name: "mem_sleep", detail: `${memSleep} (mem = deep, S3)` } : {
        status: "ok",
        name: "mem_sleep",
        detail: `${memSleep} (mem = ${chosen})`,
        ...(deepAvailable ? { hint: "echo deep > /sys/power/mem_sleep for S3" } : {}),
      },
    );
  }
  return out;
}

/** After sync_on_suspend: the knobs the cycle sets or relies on. */
async function checkKnobs(root: string): Promise<Check[]> {
  const ff = await readTrimmed(root, "/sys/power/freeze_filesystems");
  const timeout = await readTrimmed(root, "/sys/power/pm_freeze_timeout");
  return [
    {
      status: "ok",
      name: "freeze_filesystems",
      detail: ff === undefined
        ? "absent (this kernel has none; nothing to turn off)"
        : `present (= ${ff}); set to 0 during the cycle, as freezing a filesystem on a locked volume hangs`,
    },
    timeout === undefined
      ? { status: "warn", name: "pm_freeze_timeout", detail: "no /sys/power/pm_freeze_timeout" }
      : { status: "ok", name: "pm_freeze_timeout", detail: `${timeout} ms` },
  ];
}

/** The volumes of the plan, their keyring keys, and the memory requirement for their unlock. */
async function checkVolumes(root: string, plan: Plan): Promise<Check[]> {
  const out: Check[] = [];
  if (plan.lock.length === 0) {
    out.push({
      status: "warn",
      name: "luks volumes",
      detail: plan.dmDevices === 0 ? "no dm-crypt devices found (no /sys/block/dm-*)" : "no LUKS volume active",
      hint: "nothing to lock: cryptsleep suspend refuses unless --allow-plain",
    });
  } else {
    out.push({
      status: "ok",
      name: "luks volumes",
      detail: `${plan.lock.length} to lock: ${plan.lock.map((v) => v.dmName).join(", ")}`,
    });
  }
  // what suspend would refuse is the layout requirement's failure, not a warning as well
  for (const w of plan.warnings.filter((w) => !plan.unsafe.includes(w))) {
    out.push({ status: "warn", name: "plan", detail: w });
  }
  const keys = (await readProcKeys(root)).filter((k) => k.description.startsWith("cryptsetup:"));
  for (const v of plan.lock) {
    const mine = keys.filter((k) => v.uuid && k.description.startsWith(`cryptsetup:${v.uuid}`));
    if (mine.length === 0) {
      out.push({ status: "ok", name: `keyring ${v.dmName}`, detail: "no volume key visible in /proc/keys" });
    } else {
      out.push({
        status: "warn",
        name: `keyring ${v.dmName}`,
        detail: `${mine.map((k) => `${k.type} key ${k.description} (id ${k.id})`).join(", ")}: ` +
          "its volume key will survive luksSuspend",
        hint: "cryptsleep suspend releases it by a table swap at the lock (the filesystem on the volume is " +
          "frozen meanwhile); or close the volume and re-open it with cryptsetup open --disable-keyring",
      });
    }
  }
  out.push(fromVerdict(await checkMemory(root, plan.maxArgon2MemoryKiB)));
  return out;
}

async function checkConsole(root: string): Promise<Check> {
  if (await existsUnder(root, "/dev/tty0")) {
    // a recorded tree has no real VT to ask
    if (root !== "/") return { status: "ok", name: "console", detail: "/dev/tty0 present" };
    try {
      const vt = Console.queryFreeVt();
      const serial = kernelSerialConsoles();
      const also = serial.length ? `, and ${serial.join(", ")} (console=) gets the same prompt` : "";
      if (vt !== null) return { status: "ok", name: "console", detail: `VT ${vt} is free for the prompt${also}` };
      return {
        status: "warn",
        name: "console",
        detail: "every virtual console is in use",
        hint: "free one, or use cryptsleep suspend --console /dev/ttyS0 (a serial console)",
      };
    } catch (err) {
      return {
        status: "warn",
        name: "console",
        detail: `cannot query a free VT: ${err instanceof Error ? err.message : err}`,
        hint: "use cryptsleep suspend --console /dev/ttyS0 (a serial console)",
      };
    }
  }
  return {
    status: "warn",
    name: "console",
    detail: "no /dev/tty0: no virtual consoles to prompt on",
    hint: "use cryptsleep suspend --console /dev/ttyS0 (a serial console)",
  };
}

/**
 * Runs every check; never throws for a finding, only for a bug. The lines named like cycle/requirements.ts
 * (root, cgroup root, sleep states, sync_on_suspend, libcryptsetup, memory, watchdog, open files, pm_test) are the requirements preflight
 * enforces, evaluated the same way; the others only inform.
 */
export async function runChecks(opts: DoctorOptions = {}): Promise<Check[]> {
  const root = opts.root ?? "/";
  const live = opts.live ?? root === "/";
  let plan: Plan | undefined;
  const sysfs: Check[] = [];
  try {
    plan = await discoverOrExplain(root);
  } catch (e) {
    sysfs.push({ status: "fail", name: "sysfs", detail: (e as Error).message });
  }
  const lib = opts.lib !== undefined ? opts.lib : live ? probeLibcryptsetup() : null;
  const [rootCheck, cgroupRoot, , syncOnSuspend, libcryptsetup, , watchdog, openFiles, pmTest, layout] =
    await checkRequirements({
      root,
      uid: opts.uid === undefined ? Deno.uid() : opts.uid,
      state: opts.state ?? "mem",
      lib,
      argon2MemoryKiB: plan?.maxArgon2MemoryKiB,
      watchdogUSec: live ? await liveWatchdogUSec() : undefined,
      // doctor runs as the cycle would (the same wrapper, the same DENO_DIR): what it holds, the cycle would
      writableOnLocked: live && plan ? writableFilesOn(lockedMountpoints(plan)) : undefined,
      unsafe: plan?.unsafe,
    });
  const checks: Check[] = [fromVerdict(rootCheck), ...sysfs];
  checks.push(
    (await existsUnder(root, "/dev/mapper/control"))
      ? { status: "ok", name: "device-mapper", detail: "/dev/mapper/control present" }
      : {
        status: "warn",
        name: "device-mapper",
        detail: "no /dev/mapper/control: device-mapper is not available, so no volume can be open",
        hint: "modprobe dm_mod (or dmsetup mknodes)",
      },
  );
  checks.push(...(await checkCgroups(root)), fromVerdict(cgroupRoot));
  checks.push(await checkSleep(root, opts.state), ...(await checkPower(root)));
  checks.push(fromVerdict(syncOnSuspend), ...(await checkKnobs(root)), fromVerdict(pmTest));
  if (plan) checks.push(...(await checkVolumes(root, plan)));
  checks.push(fromVerdict(layout));
  // a recorded tree has no library to load: not probed is not a finding
  checks.push(lib === null ? { ...fromVerdict(libcryptsetup), status: "ok" } : fromVerdict(libcryptsetup));
  checks.push(await checkConsole(root), fromVerdict(watchdog), fromVerdict(openFiles));
  // last: they only inform (cryptsleep suspend by hand needs none of it)
  checks.push(...(await checkSystemd(root)));
  return checks;
}

/** 0 when no check failed, else ENV. */
export function doctorExitCode(checks: Check[]): number {
  return checks.some((c) => c.status === "fail") ? ExitCode.ENV : ExitCode.OK;
}

/** One line per check: status, name, detail, and the fix after an arrow. */
export function formatChecks(checks: Check[]): string {
  const w = Math.max(...checks.map((c) => c.name.length));
  return checks.map((c) => `${c.status.padEnd(4)}  ${c.name.padEnd(w)}  ${c.detail}${c.hint ? ` -> ${c.hint}` : ""}`)
    .join("\n");
}

/** `cryptsleep doctor`. */
export const command: CommandSpec = {
  name: "doctor",
  help: "check that this machine can run a cryptsleep cycle (one line per check)",
  options: [
    { flag: "--json", help: "print the checks as JSON" },
    {
      flag: "--state",
      value: "<state>",
      help: "check for this sleep state, as suspend --state would (default: mem, or freeze)",
      choices: STATES,
    },
    rootOption(),
  ],
  run: async (o) => {
    const checks = await runChecks({ root: o.root as string, state: o.state as SleepState | undefined });
    const code = doctorExitCode(checks);
    console.log(
      o.json ? JSON.stringify({ ok: code === ExitCode.OK, exitCode: code, checks }, null, 2) : formatChecks(checks),
    );
    return code;
  },
};

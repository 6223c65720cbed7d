/**
 * `cryptsleep doctor [--json]`: can this machine run a cryptsleep cycle? One line per check, `ok`, `warn`
 * or `fail`, with what was seen and how to fix it. Reads files under a root (default "/") so the checks
 * run on recorded trees; the checks that need the live system (libcryptsetup, the VT ioctl) run only on "/".
 *
 * @example
 * ```sh
 * cryptsleep doctor || echo "not ready"
 * cryptsleep doctor --json | jq '.checks[] | select(.status != "ok")'
 * ```
 * @module
 */
import { Console } from "../ffi/tty.ts";
import { type Command, Option } from "commander";
import { join } from "node:path";
import { hostPath, type Plan, readMeminfo, readMountinfo, readProcKeys } from "../discovery/mod.ts";
import { probeLibcryptsetup } from "../ffi/libcryptsetup.ts";
import { ExitCode } from "./exit_codes.ts";
import { discoverOrExplain, mib } from "./plan.ts";

export type CheckStatus = "ok" | "warn" | "fail";

/** One doctor line. */
export interface Check {
  status: CheckStatus;
  name: string;
  detail: string;
  hint?: string;
}

export interface DoctorOptions {
  root?: string;
  /** Run the checks that need the live system (default: root is "/"). */
  live?: boolean;
  uid?: number | null;
}

/** What the unlock agent needs beside Argon2 (same margin as the preflight). */
const AGENT_HEADROOM_KIB = 128 * 1024;
/** Symbols the cycle cannot do without. */
const REQUIRED_SYMBOLS = [
  "crypt_init_by_name",
  "crypt_load",
  "crypt_free",
  "crypt_suspend",
  "crypt_resume_by_passphrase",
  "crypt_get_active_device",
  "crypt_safe_alloc",
  "crypt_safe_free",
];

async function readText(root: string, path: string): Promise<string | undefined> {
  try {
    return (await Deno.readTextFile(hostPath(root, path))).trim();
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

function kernelAtLeast(release: string | undefined, major: number, minor: number): boolean | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release ?? "");
  if (!m) return undefined;
  return Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor);
}

function checkRoot(uid: number | null): Check {
  if (uid === 0) return { status: "ok", name: "root", detail: "running as root (uid 0)" };
  return { status: "fail", name: "root", detail: `running as uid ${uid}`, hint: "run cryptsleep as root (sudo)" };
}

async function checkCgroups(root: string): Promise<Check[]> {
  const mounts = await readMountinfo(root);
  const v2 = mounts.filter((m) => m.fstype === "cgroup2");
  const v1 = mounts.filter((m) => m.fstype === "cgroup");
  if (v2.length === 0) {
    return [{
      status: "fail",
      name: "cgroup2",
      detail: "no cgroup2 mount in mountinfo",
      hint: "mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)",
    }];
  }
  const mp = v2[0].mountpoint;
  const out: Check[] = [];
  if (mp === "/sys/fs/cgroup") {
    out.push({ status: "ok", name: "cgroup2", detail: "unified cgroup v2 at /sys/fs/cgroup" });
  } else {
    const v1names = v1.map((m) => m.mountpoint.split("/").pop()).join(",");
    out.push({
      status: "warn",
      name: "cgroup2",
      detail: `hybrid layout: cgroup2 at ${mp}` + (v1.length ? `, controllers on cgroup v1 (${v1names})` : ""),
      hint: "the v2 freezer works here; for the memory controller boot with systemd.unified_cgroup_hierarchy=1",
    });
  }
  // cgroup.freeze is cgroup2 core (5.2+), not a controller: it exists in every non-root cgroup.
  const base = hostPath(root, mp);
  let child: string | undefined;
  try {
    for await (const e of Deno.readDir(base)) {
      if (e.isDirectory && (await exists(join(base, e.name, "cgroup.freeze")))) {
        child = e.name;
        break;
      }
    }
  } catch {
    // unreadable: judged by kernel version below
  }
  const release = await readText(root, "/proc/sys/kernel/osrelease");
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
  const controllers = (await readText(root, join(mp, "cgroup.controllers")))?.split(/\s+/).filter(Boolean) ?? [];
  const subtree = (await readText(root, join(mp, "cgroup.subtree_control")))?.split(/\s+/).filter(Boolean) ?? [];
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

async function checkPower(root: string): Promise<Check[]> {
  const out: Check[] = [];
  const state = await readText(root, "/sys/power/state");
  const states = state?.split(/\s+/).filter(Boolean) ?? [];
  if (states.includes("mem")) {
    out.push({ status: "ok", name: "sleep states", detail: `/sys/power/state: ${states.join(" ")}` });
  } else if (states.includes("freeze")) {
    out.push({
      status: "warn",
      name: "sleep states",
      detail: `/sys/power/state: ${states.join(" ")} (no mem: only suspend-to-idle)`,
      hint: "cryptsleep suspend --state freeze",
    });
  } else {
    out.push({
      status: "fail",
      name: "sleep states",
      detail: state === undefined ? "no /sys/power/state" : "/sys/power/state offers no mem or freeze state",
      hint: "this kernel (or VM/sandbox) can't suspend: run on hardware or a VM with suspend support",
    });
  }
  const memSleep = await readText(root, "/sys/power/mem_sleep");
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
  const sync = await readText(root, "/sys/power/sync_on_suspend");
  const release = await readText(root, "/proc/sys/kernel/osrelease");
  if (sync === undefined) {
    const why = kernelAtLeast(release, 5, 6)
      ? `kernel ${release} is built without suspend support (CONFIG_SUSPEND)`
      : `kernel ${release ?? "unknown"} is older than 5.6`;
    out.push({
      status: "fail",
      name: "sync_on_suspend",
      detail: `no /sys/power/sync_on_suspend: ${why}; the kernel's own sync would hang on a locked volume`,
      hint: "run a kernel >= 5.6 with CONFIG_SUSPEND",
    });
  } else {
    out.push({
      status: "ok",
      name: "sync_on_suspend",
      detail: `present (= ${sync}); set to 0 during the cycle, as the kernel's sync would hang on a locked volume`,
    });
  }
  const ff = await readText(root, "/sys/power/freeze_filesystems");
  out.push({
    status: "ok",
    name: "freeze_filesystems",
    detail: ff === undefined
      ? "absent (this kernel has none; nothing to turn off)"
      : `present (= ${ff}); set to 0 during the cycle, as freezing a filesystem on a locked volume hangs`,
  });
  const timeout = await readText(root, "/sys/power/pm_freeze_timeout");
  out.push(
    timeout === undefined
      ? { status: "warn", name: "pm_freeze_timeout", detail: "no /sys/power/pm_freeze_timeout" }
      : { status: "ok", name: "pm_freeze_timeout", detail: `${timeout} ms` },
  );
  return out;
}

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
  for (const w of plan.warnings) out.push({ status: "warn", name: "plan", detail: w });
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
  const mem = await readMeminfo(root);
  const avail = mem["MemAvailable"];
  const need = plan.maxArgon2MemoryKiB + AGENT_HEADROOM_KIB;
  if (avail === undefined) {
    out.push({ status: "warn", name: "memory", detail: "no MemAvailable in /proc/meminfo" });
  } else if (avail < need) {
    out.push({
      status: "fail",
      name: "memory",
      detail: `MemAvailable ${mib(avail)} < ${mib(need)} (Argon2 ${mib(plan.maxArgon2MemoryKiB)} + agent ` +
        `${mib(AGENT_HEADROOM_KIB)}); swap on locked volumes can't help`,
      hint: "free memory, or re-key the largest keyslot with a smaller --pbkdf-memory (cryptsetup luksConvertKey)",
    });
  } else {
    out.push({
      status: "ok",
      name: "memory",
      detail: `MemAvailable ${mib(avail)} >= ${mib(need)} (Argon2 ${mib(plan.maxArgon2MemoryKiB)} + agent ` +
        `${mib(AGENT_HEADROOM_KIB)})`,
    });
  }
  return out;
}

function checkLibcryptsetup(): Check {
  const probe = probeLibcryptsetup();
  if (!probe.ok) {
    return {
      status: "fail",
      name: "libcryptsetup",
      detail: probe.error,
      hint: "install libcryptsetup (apt install libcryptsetup12)",
    };
  }
  const { info } = probe;
  const missing = Object.entries(info.symbols).filter(([, present]) => !present).map(([s]) => s);
  const missingRequired = REQUIRED_SYMBOLS.filter((s) => info.symbols[s] !== true);
  const present = Object.values(info.symbols).filter(Boolean).length;
  const detail = `${info.version} at ${info.path}, ${present}/${Object.keys(info.symbols).length} symbols` +
    (missing.length ? ` (missing: ${missing.join(", ")})` : "");
  if (missingRequired.length) {
    return {
      status: "fail",
      name: "libcryptsetup",
      detail,
      hint: `needs ${missingRequired.join(", ")}: install libcryptsetup >= 2.3`,
    };
  }
  return { status: "ok", name: "libcryptsetup", detail };
}

async function checkConsole(root: string): Promise<Check> {
  if (await exists(hostPath(root, "/dev/tty0"))) {
    // a recorded tree has no real VT to ask
    if (root !== "/") return { status: "ok", name: "console", detail: "/dev/tty0 present" };
    try {
      const vt = Console.queryFreeVt();
      if (vt !== null) return { status: "ok", name: "console", detail: `VT ${vt} is free for the prompt` };
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

/** Runs every check; never throws for a finding, only for a bug. */
export async function runChecks(opts: DoctorOptions = {}): Promise<Check[]> {
  const root = opts.root ?? "/";
  const live = opts.live ?? root === "/";
  const checks: Check[] = [checkRoot(opts.uid === undefined ? Deno.uid() : opts.uid)];
  let plan: Plan | undefined;
  try {
    plan = await discoverOrExplain(root);
  } catch (e) {
    checks.push({ status: "fail", name: "sysfs", detail: (e as Error).message });
  }
  checks.push(
    (await exists(hostPath(root, "/dev/mapper/control")))
      ? { status: "ok", name: "device-mapper", detail: "/dev/mapper/control present" }
      : {
        status: "warn",
        name: "device-mapper",
        detail: "no /dev/mapper/control: device-mapper is not available, so no volume can be open",
        hint: "modprobe dm_mod (or dmsetup mknodes)",
      },
  );
  checks.push(...(await checkCgroups(root)));
  checks.push(...(await checkPower(root)));
  if (plan) checks.push(...(await checkVolumes(root, plan)));
  if (live) checks.push(checkLibcryptsetup());
  else checks.push({ status: "ok", name: "libcryptsetup", detail: "not probed (--root is a recorded tree)" });
  checks.push(await checkConsole(root));
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

/** Registers `doctor` on the program. */
export function register(program: Command, exit: (code: number) => never): void {
  program.command("doctor")
    .description("check that this machine can run a cryptsleep cycle (one line per check)")
    .option("--json", "print the checks as JSON")
    .addOption(new Option("--root <dir>", "read sysfs/proc/etc from this tree instead of /").default("/").hideHelp())
    .action(async (o: { json?: boolean; root: string }) => {
      const checks = await runChecks({ root: o.root });
      const code = doctorExitCode(checks);
      console.log(
        o.json ? JSON.stringify({ ok: code === ExitCode.OK, exitCode: code, checks }, null, 2) : formatChecks(checks),
      );
      exit(code);
    });
}

/**
 * @module
 * One cycle at a time. The outer process takes an exclusive lock on `/run/cryptsleep/lock` (flock: the kernel
 * drops it when the process dies, so a crash leaves no stale lock) and holds it until the cycle is over; a second
 * `cryptsleep suspend` is refused, naming the first. Holding the lock, it cleans what a crashed run left — its
 * root still mounted, its own cgroup, processes left in `cryptsleep-frozen` — and refuses where cleaning could
 * hurt: a process in the tool's own cgroup that is chrooted into the root is a cycle or its supervisor that still
 * runs.
 * Other processes someone put in that cgroup are left there and said: they stay unfrozen through the cycle.
 * A request made while a cycle ran (a second `systemctl suspend`, the lid again) that gets the lock only after
 * that cycle ended is merged into it, not run as a second cycle right after the wake.
 *
 * @example
 * ```ts
 * import { claim } from "./claim.ts";
 * using held = await claim({ ramfsDir: "/run/cryptsleep/root" }); // throws RefusedError if a cycle runs
 * console.log(held.cleaned); // e.g. ["unmounted /run/cryptsleep/root (a crashed run's ramfs)"]
 * ```
 */
import { dirname, join } from "../host/path.ts";
import { detachRoot, mountsUnder } from "../chroot/root.ts";
import { DEFAULT_CGROUP_ROOT, FROZEN_NAME, OWN_NAME, readProcs, removeCgroup } from "../cgroup/cgroup2.ts";
import { exists } from "../host/paths.ts";
import { releaseFrozenCgroup } from "../cgroup/freezer.ts";
import { RefusedError } from "./errors.ts";
import { readRecord as readWatchdogRecord, rearm as rearmWatchdog } from "../systemd/watchdog.ts";
import { readModprobeRecord, releaseModprobe } from "./modprobe.ts";
import { settle } from "./runner.ts";
import { KNOBS } from "../host/sysfs.ts";

/** The lock a cycle holds from its claim to its end. */
export const LOCK_PATH = "/run/cryptsleep/lock";

/** Where the claim looks. Tests point it at scratch places. */
export interface ClaimOptions {
  /** The lock file; default {@linkcode LOCK_PATH}. */
  lockPath?: string;
  /** Where the ramfs is mounted. */
  ramfsDir: string;
  /** The cgroup v2 root; default /sys/fs/cgroup. */
  cgroupRoot?: string;
  /**
   * When this request was made (ms since the epoch): a cycle that ended after it already answered it, and it is
   * merged into that one. Unset: not checked.
   */
  requestedAt?: number;
}

/** The lock, held; disposing it releases it. */
export interface Claim extends Disposable {
  /** What a crashed run left that was cleaned, one line each. */
  cleaned: string[];
  /** What was found and left as it is, one line each (the report says it). */
  kept: string[];
}

/** What a crashed run left behind, as found now; `refuse` is set when it must not be cleaned. */
export interface Leftover {
  /** What was found, for the dry run and the report. */
  what: string;
  /** Why it cannot be cleaned, said as what to do; absent when it can. */
  refuse?: string;
  /** Cleans it; absent for what is left as it is. */
  clean?(): Promise<void>;
}

/** Takes the lock (or refuses, naming who holds it), then cleans a crashed run's leftovers (or refuses). */
export async function claim(opts: ClaimOptions): Promise<Claim> {
  const lockPath = opts.lockPath ?? LOCK_PATH;
  await Deno.mkdir(dirname(lockPath), { recursive: true, mode: 0o700 });
  // a lock file made now has no release in its mtime (/run is emptied at boot: no cycle ran since)
  const existed = await exists(lockPath);
  const file = await Deno.open(lockPath, { read: true, write: true, create: true, mode: 0o600 });
  try {
    if (!(await file.tryLock(true))) {
      const holder = (await Deno.readTextFile(lockPath).catch(() => "")).trim() || "unknown";
      throw new RefusedError([
        `another cryptsleep suspend is running (pid ${holder} holds ${lockPath}): wait until it is done ` +
        `(cryptsleep status shows the last cycle)`,
      ]);
    }
    // the last release truncated the file: a cycle that ended after this request was made, while it waited
    // (frozen, or queued behind the lock), was the suspend it asked for
    const released = (await file.stat()).mtime?.getTime() ?? 0;
    if (existed && opts.requestedAt !== undefined && released > opts.requestedAt) {
      throw new RefusedError([
        `a cycle ended at ${new Date(released).toISOString()}, after this request was made ` +
        `(${new Date(opts.requestedAt).toISOString()}): merged into it, nothing to do (cryptsleep status shows it)`,
      ]);
    }
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
    const leftovers = await findLeftovers(opts);
    const refused = leftovers.filter((l) => l.refuse).map((l) => `${l.what}: ${l.refuse}`);
    if (refused.length) throw new RefusedError(refused);
    const cleaned: string[] = [];
    const kept: string[] = [];
    for (const l of leftovers) {
      if (!l.clean) {
        kept.push(l.what);
        continue;
      }
      await l.clean();
      cleaned.push(l.what);
    }
    return {
      cleaned,
      kept,
      [Symbol.dispose]() {
        // the pid goes first: a reader that finds the file empty knows nobody holds it
        file.truncateSync(0);
        file.close();
      },
    };
  } catch (err) {
    file.close();
    throw err;
  }
}

/** Whether `pid` runs chrooted at or below `dir` (a cycle and its supervisor, once pinned, run chrooted there). */
async function chrootedUnder(pid: number, dir: string): Promise<boolean> {
  let root: string;
  try {
    root = await Deno.readLink(`/proc/${pid}/root`);
  } catch (err) {
    // a cycle's processes are not dumpable: without CAP_SYS_PTRACE their root cannot be read, and one that may still
    // run a cycle must not have its ramfs and records cleaned from under it
    return err instanceof Deno.errors.PermissionDenied;
  }
  return root === dir || root.startsWith(dir + "/");
}

/** What a crashed run left, without touching anything (the dry run says it; the claim cleans it). */
export async function findLeftovers(opts: ClaimOptions): Promise<Leftover[]> {
  const found: Leftover[] = [];
  const mounts = mountsUnder(opts.ramfsDir);
  if (mounts.length) {
    found.push({
      what: `${opts.ramfsDir} is still mounted (a crashed run's ramfs)`,
      clean: async () => void await detachRoot(opts.ramfsDir),
    });
  }
  const root = opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT;
  const own = join(root, OWN_NAME);
  if (await exists(join(own, "cgroup.procs"))) {
    const procs = readProcs(own);
    const running: number[] = [];
    for (const pid of procs) if (await chrootedUnder(pid, opts.ramfsDir)) running.push(pid);
    if (running.length) {
      found.push({
        what: `cgroup ${own} exists`,
        refuse: `pids ${running.join(" ")} are in it, chrooted into ${opts.ramfsDir}: a cycle or its ` +
          `supervisor still runs; let it finish, or kill them`,
      });
    } else if (procs.length) {
      found.push({ what: `cgroup ${own} holds pids ${procs.join(" ")}, not cryptsleep's: they stay unfrozen` });
    } else found.push({ what: `cgroup ${own} exists`, clean: () => removeCgroup(own) });
  }
  const frozen = join(root, FROZEN_NAME);
  if (await exists(join(frozen, "cgroup.procs"))) {
    const procs = readProcs(frozen);
    found.push({
      what: `cgroup ${frozen} exists${procs.length ? ` with pids ${procs.join(" ")} (frozen by a crashed run)` : ""}`,
      clean: async () => {
        // its processes came from the root cgroup: back there, which thaws them
        const errors: string[] = [];
        await releaseFrozenCgroup(frozen, root, errors);
        if (errors.length) throw new Error(`releasing ${frozen}: ${errors.join("; ")}`);
      },
    });
  }
  const modprobe = await readModprobeRecord();
  if (modprobe !== null) {
    found.push({
      what: `kernel.modprobe was emptied by a crashed run (it was ${modprobe})`,
      clean: () => settle(() => releaseModprobe({ [KNOBS.modprobe]: modprobe })),
    });
  }
  const usec = await readWatchdogRecord();
  if (usec !== null) {
    found.push({
      what: `systemd's watchdog was handed over by a crashed run (RuntimeWatchdogUSec was ${usec})`,
      clean: () => rearmWatchdog({ previousUSec: usec, devices: [] }),
    });
  }
  return found;
}

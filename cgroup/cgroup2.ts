/**
 * The cgroup v2 hierarchy as the freezer sees it: THE one check that a directory is cgroup2 (doctor,
 * preflight and the freezer all ask {@linkcode cgroup2At}), the mapping between `/proc/PID/cgroup` paths
 * and directories, and the small file helpers the other cgroup modules share (one `write()` per value,
 * waiting for an rmdir, moving every process out of a cgroup).
 *
 * @example
 * ```ts
 * import { cgroup2At, DEFAULT_CGROUP_ROOT, procCgroup } from "./cgroup2.ts";
 * const found = await cgroup2At(DEFAULT_CGROUP_ROOT);
 * if (found.ok) console.log(`cgroup2 at ${found.cgroup.dir}; this process in ${await procCgroup(Deno.pid)}`);
 * else console.log(found.seen, found.elsewhere ?? "no cgroup2 anywhere");
 * ```
 * @module
 */
import { getXattr, removeXattr, setXattr } from "../ffi/libc.ts";
import { join } from "../host/path.ts";
import { describe, errnoCode } from "../host/errors.ts";
import { mountOf, readMountinfo } from "../host/mountinfo.ts";
import type { ProcStat } from "../host/proc.ts";

/** Where the cycle expects the cgroup v2 hierarchy. */
export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";
/** The tool's own cgroup (supervisor, agent): never frozen. */
export const OWN_NAME = "cryptsleep";
/** Where processes of the root cgroup are moved to be frozen (the root cgroup has no cgroup.freeze). */
export const FROZEN_NAME = "cryptsleep-frozen";
const PF_KTHREAD = 0x00200000;
/**
 * The mark (an extended attribute) the freeze leaves on cgroups below the top level (fuse.ts): "frozen" on those it
 * froze, "split" on those it froze piecewise (every level down to a FUSE server's). The undo by looking follows the
 * "split" marks down and thaws what is marked "frozen", and never a unit someone else froze (`systemctl freeze`).
 * Marks outlive a dead agent.
 */
const MARK = "trusted.cryptsleep";

/** Marks cgroup `dir`. Throws SysError where it cannot (EPERM: `trusted.*` needs CAP_SYS_ADMIN; EOPNOTSUPP). */
export function markCgroup(dir: string, kind: "frozen" | "split"): void {
  setXattr(dir, MARK, kind);
}

/** The mark of {@linkcode markCgroup} on `dir`, or null (none, or it cannot be read). */
export function cgroupMark(dir: string): string | null {
  try {
    return getXattr(dir, MARK);
  } catch {
    return null;
  }
}

/** Takes the mark of {@linkcode markCgroup} off `dir`; a cgroup gone meanwhile is no error. */
export function unmarkCgroup(dir: string): void {
  removeXattr(dir, MARK);
}

/** A cleanup (thaw, leave) finished every step it could but some failed. */
export class CleanupError extends Error {
  /** One line per failed step. */
  readonly errors: string[];
  /**
   * Lists every failed step.
   * @param what What was cleaned up, e.g. "thaw".
   * @param errors One line per failed step.
   */
  constructor(what: string, errors: string[]) {
    super(`${what} finished with ${errors.length} error(s): ${errors.join("; ")}`);
    this.name = "CleanupError";
    this.errors = errors;
  }
}

/** A cgroup2 directory and the mount it lives on (to map /proc/PID/cgroup paths to directories). */
export interface Cgroup2Root {
  /** The directory used as root, e.g. /sys/fs/cgroup. */
  dir: string;
  /** Where cgroup2 is mounted, e.g. /sys/fs/cgroup. */
  mountpoint: string;
  /** The mount's root within the hierarchy (usually "/"). */
  mountRoot: string;
  /** True when dir is the hierarchy's real root (it then has no cgroup.freeze). */
  isRealRoot: boolean;
}

/** What {@linkcode cgroup2At} found: the hierarchy, or what is there instead. */
export type Cgroup2Found =
  | { ok: true; cgroup: Cgroup2Root }
  | {
    ok: false;
    /** What is at the directory, e.g. "/sys/fs/cgroup is tmpfs, not cgroup2". */
    seen: string;
    /** A cgroup2 mount elsewhere (hybrid layout), if any. */
    elsewhere?: string;
  };

/**
 * THE cgroup v2 check: whether `dir` lies on a cgroup2 mount, read from the mountinfo under `root` ("/" =
 * live; doctor passes a recorded tree, where `dir` is taken literally: its symlinks would not resolve there).
 */
export async function cgroup2At(dir: string = DEFAULT_CGROUP_ROOT, root = "/"): Promise<Cgroup2Found> {
  let real = dir;
  if (root === "/" || root === "") {
    try {
      real = await Deno.realPath(dir);
    } catch (err) {
      return { ok: false, seen: describe(`realpath ${dir}`, err) };
    }
  }
  const mounts = await readMountinfo(root);
  const m = mountOf(mounts, real);
  if (m && m.fstype === "cgroup2") {
    const isRealRoot = real === m.mountpoint && m.root === "/";
    return { ok: true, cgroup: { dir: real, mountpoint: m.mountpoint, mountRoot: m.root, isRealRoot } };
  }
  const v2 = mounts.find((x) => x.fstype === "cgroup2");
  return {
    ok: false,
    seen: `${dir} is ${m ? m.fstype : "not mounted"}, not cgroup2`,
    ...(v2 ? { elsewhere: v2.mountpoint } : {}),
  };
}

/** {@linkcode cgroup2At} on the live system; throws what it found and what to do unless `dir` is cgroup2. */
export async function resolveCgroup2(dir: string = DEFAULT_CGROUP_ROOT): Promise<Cgroup2Root> {
  const found = await cgroup2At(dir);
  if (found.ok) return found.cgroup;
  throw new Error(
    `${found.seen}: the freezer needs the cgroup v2 hierarchy. ` +
      (found.elsewhere ? `cgroup2 is mounted at ${found.elsewhere} (hybrid layout): use that as cgroup root. ` : "") +
      `Or boot with systemd.unified_cgroup_hierarchy=1, or mount it: mount -t cgroup2 none ${dir}.`,
  );
}

/** First cgroup2 mount point, for hosts where /sys/fs/cgroup is v1 or hybrid. */
export async function findCgroup2Mount(root = "/"): Promise<string | null> {
  return (await readMountinfo(root)).find((m) => m.fstype === "cgroup2")?.mountpoint ?? null;
}

/** The cgroup2 path of a process ("/user.slice/…"), or null when it is gone. */
export async function procCgroup(pid: number): Promise<string | null> {
  try {
    const line = (await Deno.readTextFile(`/proc/${pid}/cgroup`)).split("\n").find((l) => l.startsWith("0::"));
    return line ? line.slice(3) : null;
  } catch {
    return null;
  }
}

/**
 * The directory of cgroup `path` (as in /proc/PID/cgroup) under the mount of `root`; never with a trailing slash
 * (the root cgroup "/" is the mountpoint itself, as `root.dir` is).
 */
export function cgroupDir(root: Cgroup2Root, path: string): string {
  let rel = path;
  if (root.mountRoot !== "/" && (rel === root.mountRoot || rel.startsWith(root.mountRoot + "/"))) {
    rel = rel.slice(root.mountRoot.length);
  }
  const dir = join(root.mountpoint, rel);
  return dir.length > 1 && dir.endsWith("/") ? dir.slice(0, -1) : dir;
}

/** The cgroup path of directory `dir`, relative to the cgroup2 mount. */
export function relCgroup(root: Cgroup2Root, dir: string): string {
  return dir.slice(root.mountpoint.length) || "/";
}

/** Kernel threads and kernel usermode helpers (children of kthreadd) must stay where they are. */
export function isKernelOwned(st: ProcStat): boolean {
  return st.pid === 2 || st.ppid === 2 || (st.flags & PF_KTHREAD) !== 0;
}

// The cgroup and /proc files below are kernel memory, never a wait: read and written synchronously. An async op cost
// ~5× the call itself, and in the thaw each one was a point where the processes already thawed took the only CPU.

/** The pids in `dir/cgroup.procs`. */
export function readProcs(dir: string): number[] {
  const text = Deno.readTextFileSync(join(dir, "cgroup.procs"));
  return text.split("\n").filter(Boolean).map(Number);
}

/** Writes `value` with a single write(): cgroup.procs takes one pid per write. */
export function writeFile(path: string, value: string): void {
  const f = Deno.openSync(path, { write: true });
  try {
    f.writeSync(new TextEncoder().encode(value));
  } finally {
    f.close();
  }
}

/** The trimmed content of `path`, or `fallback` when it cannot be read. */
export function readOr(path: string, fallback: string): string {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return fallback;
  }
}

/**
 * `dir/memory.peak` in bytes: the most memory ever charged to the cgroup at once (its processes' anonymous
 * memory and the page cache they brought in). Null without the memory controller or where the file is absent.
 */
export function memoryPeakBytes(dir: string): number | null {
  const text = readOr(join(dir, "memory.peak"), "");
  return /^\d+$/.test(text) ? Number(text) : null;
}

/** Whether the cgroup at `dir` reports `frozen 1` in cgroup.events. */
export function isFrozen(dir: string): boolean {
  return /^frozen 1$/m.test(readOr(join(dir, "cgroup.events"), ""));
}

/** rmdir a cgroup, waiting up to ~1 s for exiting tasks to leave it. */
export async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0;; i++) {
    try {
      await Deno.remove(dir);
      return;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      if (errnoCode(err) !== "EBUSY" || i >= 100) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Moves every process of `from` to `to` until `from` is empty (processes may fork meanwhile). */
export function drain(from: string, to: string, errors: string[]): number[] {
  const moved: number[] = [];
  const failed = new Set<number>();
  for (let round = 0; round < 50; round++) {
    let procs: number[];
    try {
      procs = readProcs(from).filter((pid) => !failed.has(pid));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) errors.push(describe(`read ${from}/cgroup.procs`, err));
      return moved;
    }
    if (!procs.length) return moved;
    for (const pid of procs) {
      try {
        writeFile(join(to, "cgroup.procs"), String(pid));
        moved.push(pid);
      } catch (err) {
        if (errnoCode(err) === "ESRCH") continue; // exited meanwhile
        failed.add(pid);
        errors.push(describe(`move pid ${pid} from ${from} to ${to}`, err));
      }
    }
  }
  errors.push(`${from} kept getting new processes; gave up emptying it`);
  return moved;
}

/**
 * @module
 * The cgroup v2 freezer for the whole of userspace. The tool's own processes (supervisor, agent) first join
 * `<root>/cryptsleep`, which is never frozen; then every other top-level cgroup is frozen (the freeze
 * propagates to its descendants), and processes living directly in the root cgroup (no systemd, e.g. a
 * busybox init) are moved into `<root>/cryptsleep-frozen` and frozen there, because the root cgroup has no
 * `cgroup.freeze`. Kernel threads and kernel usermode helpers (children of kthreadd) are never touched.
 * Thawing writes 0 where 1 was written, moves moved processes back to the root and removes created cgroups.
 *
 * @example
 * ```ts ignore
 * import { freezeUserspace, joinOwnCgroup } from "./freeze.ts";
 * await using own = await joinOwnCgroup({ pids: [Deno.pid] });
 * console.log(own.swapDisabled ? "swap off for us" : own.swapNote);
 * await using frozen = await freezeUserspace({ own: own.path, timeoutMs: 10_000 });
 * console.log(`frozen: ${frozen.cgroups.join(" ")}`);
 * // … lock, sleep, unlock …
 * ```
 */
import { basename, dirname, join } from "node:path";
import { errnoName } from "../ffi/errors.ts";

export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";
export const OWN_NAME = "cryptsleep";
export const FROZEN_NAME = "cryptsleep-frozen";
const PF_KTHREAD = 0x00200000;

// ---------------------------------------------------------------------------------------------------------
// errors

/** Errno number from a Deno error message ("… (os error 16) …"), or 0. */
export function osErrno(err: unknown): number {
  const m = /\(os error (\d+)\)/.exec(err instanceof Error ? err.message : String(err));
  return m ? Number(m[1]) : 0;
}

/** "call: EBUSY: message" for a Deno error. */
export function describe(call: string, err: unknown): string {
  const n = osErrno(err);
  const code = (err as { code?: string })?.code ?? (n ? errnoName(n) : "");
  const msg = err instanceof Error ? err.message : String(err);
  return `${call}: ${code ? code + ": " : ""}${msg}`;
}

/** A cleanup (thaw, leave) finished every step it could but some failed. */
export class CleanupError extends Error {
  constructor(what: string, readonly errors: string[]) {
    super(`${what} finished with ${errors.length} error(s): ${errors.join("; ")}`);
    this.name = "CleanupError";
  }
}

/** One process that was still not frozen when the timeout expired. */
export interface Refuser {
  pid: number;
  /** The thread that was not frozen, when it is not the main thread. */
  tid?: number;
  comm: string;
  /** cgroup path relative to the cgroup2 mount, e.g. "/system.slice/nfs-foo.service". */
  cgroup: string;
  /** State letter from /proc/PID/stat: D (uninterruptible, typical), R, S… */
  state: string;
  wchan: string;
  stack?: string;
}

/** Userspace did not freeze in time. Everything has been thawed again when this is thrown. */
export class FreezeTimeoutError extends Error {
  constructor(readonly timeoutMs: number, readonly refusers: Refuser[], readonly thawErrors: string[] = []) {
    const who = refusers.length
      ? refusers.map((r) =>
        `pid ${r.pid}${r.tid ? `/${r.tid}` : ""} (${r.comm}) in ${r.cgroup}: state ${r.state}, wchan ${r.wchan || "?"}`
      ).join("; ")
      : "no single process identified (the kernel still reported frozen 0)";
    super(
      `userspace did not freeze within ${timeoutMs} ms: ${who}. Nothing was locked and everything was thawed` +
        (thawErrors.length ? ` (thaw errors: ${thawErrors.join("; ")})` : "") +
        `. Processes in state D are stuck in the kernel (typically a hung NFS/FUSE/network mount or a device ` +
        `driver): finish or cancel their I/O, unmount the hung filesystem (umount -l), or kill them (kill -9 PID), ` +
        `or raise the freeze timeout, then try again.`,
    );
    this.name = "FreezeTimeoutError";
  }
}

// ---------------------------------------------------------------------------------------------------------
// cgroup2 and /proc helpers

interface MountInfo {
  mountpoint: string;
  root: string;
  fstype: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Parsed /proc/self/mountinfo. */
export async function readMountinfo(): Promise<MountInfo[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  return text.split("\n").filter(Boolean).map((line) => {
    const f = line.split(" ");
    const sep = f.indexOf("-");
    return { root: unescapeMount(f[3]), mountpoint: unescapeMount(f[4]), fstype: f[sep + 1] };
  });
}

/** The mount holding `path` (longest mountpoint prefix). */
function mountOf(mounts: MountInfo[], path: string): MountInfo | undefined {
  let best: MountInfo | undefined;
  for (const m of mounts) {
    const inside = m.mountpoint === "/" || path === m.mountpoint || path.startsWith(m.mountpoint + "/");
    if (inside && (!best || m.mountpoint.length >= best.mountpoint.length)) best = m;
  }
  return best;
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

/** Checks that `dir` is a cgroup2 directory; throws a clear error otherwise. */
export async function resolveCgroup2(dir = DEFAULT_CGROUP_ROOT): Promise<Cgroup2Root> {
  let real: string;
  try {
    real = await Deno.realPath(dir);
  } catch (err) {
    throw new Error(`${describe(`realpath ${dir}`, err)}: is cgroup2 mounted? (mount -t cgroup2 none ${dir})`);
  }
  const m = mountOf(await readMountinfo(), real);
  if (!m || m.fstype !== "cgroup2") {
    const v2 = (await readMountinfo()).find((x) => x.fstype === "cgroup2");
    throw new Error(
      `${dir} is ${m ? m.fstype : "not mounted"}, not cgroup2: the freezer needs the cgroup v2 hierarchy. ` +
        (v2 ? `cgroup2 is mounted at ${v2.mountpoint} (hybrid layout): use that as cgroup root. ` : "") +
        `Or boot with systemd.unified_cgroup_hierarchy=1, or mount it: mount -t cgroup2 none ${dir}.`,
    );
  }
  return {
    dir: real,
    mountpoint: m.mountpoint,
    mountRoot: m.root,
    isRealRoot: real === m.mountpoint && m.root === "/",
  };
}

/** First cgroup2 mount point, for hosts where /sys/fs/cgroup is v1 or hybrid. */
export async function findCgroup2Mount(): Promise<string | null> {
  return (await readMountinfo()).find((m) => m.fstype === "cgroup2")?.mountpoint ?? null;
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

function cgroupDir(root: Cgroup2Root, path: string): string {
  let rel = path;
  if (root.mountRoot !== "/" && (rel === root.mountRoot || rel.startsWith(root.mountRoot + "/"))) {
    rel = rel.slice(root.mountRoot.length);
  }
  return join(root.mountpoint, rel);
}

function relCgroup(root: Cgroup2Root, dir: string): string {
  return dir.slice(root.mountpoint.length) || "/";
}

export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  flags: number;
}

/** Parsed /proc/PID/stat (or /proc/PID/task/TID/stat), or null when gone. */
export async function readStat(path: string): Promise<ProcStat | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return null;
  }
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const rest = text.slice(close + 2).split(" ");
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: rest[0],
    ppid: Number(rest[1]),
    flags: Number(rest[6]),
  };
}

/** Kernel threads and kernel usermode helpers (children of kthreadd) must stay where they are. */
function isKernelOwned(st: ProcStat): boolean {
  return st.pid === 2 || st.ppid === 2 || (st.flags & PF_KTHREAD) !== 0;
}

async function readProcs(dir: string): Promise<number[]> {
  const text = await Deno.readTextFile(join(dir, "cgroup.procs"));
  return text.split("\n").filter(Boolean).map(Number);
}

async function writeFile(path: string, value: string): Promise<void> {
  // One write() per value: cgroup.procs takes one pid per write.
  const f = await Deno.open(path, { write: true });
  try {
    await f.write(new TextEncoder().encode(value));
  } finally {
    f.close();
  }
}

async function readOr(path: string, fallback: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch {
    return fallback;
  }
}

async function isFrozen(dir: string): Promise<boolean> {
  return /^frozen 1$/m.test(await readOr(join(dir, "cgroup.events"), ""));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** rmdir a cgroup, waiting up to ~1 s for exiting tasks to leave it. */
async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0;; i++) {
    try {
      await Deno.remove(dir);
      return;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      if (osErrno(err) !== 16 || i >= 100) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Moves every process of `from` to `to` until `from` is empty (processes may fork meanwhile). */
async function drain(from: string, to: string, errors: string[]): Promise<number[]> {
  const moved: number[] = [];
  const failed = new Set<number>();
  for (let round = 0; round < 50; round++) {
    let procs: number[];
    try {
      procs = (await readProcs(from)).filter((pid) => !failed.has(pid));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) errors.push(describe(`read ${from}/cgroup.procs`, err));
      return moved;
    }
    if (!procs.length) return moved;
    for (const pid of procs) {
      try {
        await writeFile(join(to, "cgroup.procs"), String(pid));
        moved.push(pid);
      } catch (err) {
        if (osErrno(err) === 3) continue; // exited meanwhile
        failed.add(pid);
        errors.push(describe(`move pid ${pid} from ${from} to ${to}`, err));
      }
    }
  }
  errors.push(`${from} kept getting new processes; gave up emptying it`);
  return moved;
}

// ---------------------------------------------------------------------------------------------------------
// the tool's own cgroup

export interface OwnCgroup extends AsyncDisposable {
  /** Absolute directory, e.g. /sys/fs/cgroup/cryptsleep. */
  path: string;
  name: string;
  pids: number[];
  /** memory.swap.max was set to 0 (and read back as 0). */
  swapDisabled: boolean;
  /** Why swap could not be disabled, or how it was. Never empty. */
  swapNote: string;
  /** Pids whose oom_score_adj is now -1000. */
  oomProtected: number[];
  warnings: string[];
  /** Moves the pids back, restores oom_score_adj, removes the cgroup. Idempotent; throws CleanupError at the end. */
  leave(): Promise<void>;
}

/**
 * Creates `<cgroupRoot>/<name>` and moves `pids` into it; sets memory.swap.max=0 where the memory controller
 * is (or can be) enabled, and oom_score_adj -1000 for the pids.
 */
export async function joinOwnCgroup(
  opts: { cgroupRoot?: string; name?: string; pids: number[] },
): Promise<OwnCgroup> {
  const root = await resolveCgroup2(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const name = opts.name ?? OWN_NAME;
  const path = join(root.dir, name);
  const warnings: string[] = [];
  const origins = new Map<number, string>();
  const oomBefore = new Map<number, string>();
  let created = false;
  let enabledMemory = false;
  let left = false;

  const own: OwnCgroup = {
    path,
    name,
    pids: [...opts.pids],
    swapDisabled: false,
    swapNote: "",
    oomProtected: [],
    warnings,
    async leave() {
      if (left) return;
      left = true;
      const errors: string[] = [];
      for (const [pid, value] of oomBefore) {
        try {
          await writeFile(`/proc/${pid}/oom_score_adj`, value);
        } catch (err) {
          if (osErrno(err) !== 3 && !(err instanceof Deno.errors.NotFound)) {
            errors.push(describe(`restore /proc/${pid}/oom_score_adj=${value}`, err));
          }
        }
      }
      for (const [pid, origin] of origins) {
        const to = (await exists(join(origin, "cgroup.procs"))) ? origin : root.dir;
        try {
          await writeFile(join(to, "cgroup.procs"), String(pid));
        } catch (err) {
          if (osErrno(err) !== 3) errors.push(describe(`move pid ${pid} back to ${to}`, err));
        }
      }
      // Children forked while inside (e.g. an agent that is still exiting) go where the first pid came from.
      const fallback = [...origins.values()][0] ?? root.dir;
      await drain(path, (await exists(fallback)) ? fallback : root.dir, errors);
      if (created) {
        try {
          await removeCgroup(path);
        } catch (err) {
          errors.push(describe(`rmdir ${path}`, err));
        }
      }
      if (enabledMemory) {
        try {
          await writeFile(join(root.dir, "cgroup.subtree_control"), "-memory");
        } catch (err) {
          // Others may have started using it meanwhile; leaving it enabled is harmless.
          if (osErrno(err) !== 16) errors.push(describe(`write -memory to ${root.dir}/cgroup.subtree_control`, err));
        }
      }
      if (errors.length) throw new CleanupError(`leaving ${path}`, errors);
    },
    [Symbol.asyncDispose]() {
      return this.leave();
    },
  };

  try {
    // memory.swap.max only exists when the memory controller is enabled for the parent's children.
    const controllers = (await readOr(join(root.dir, "cgroup.controllers"), "")).split(/\s+/);
    const subtree = (await readOr(join(root.dir, "cgroup.subtree_control"), "")).split(/\s+/);
    if (!controllers.includes("memory")) {
      own.swapNote = `memory controller not available in cgroup2 at ${root.dir} (bound to cgroup v1, or ` +
        `cgroup_disable=memory): this process's memory may be swapped out while volumes are locked`;
    } else if (!subtree.includes("memory")) {
      try {
        await writeFile(join(root.dir, "cgroup.subtree_control"), "+memory");
        enabledMemory = true;
      } catch (err) {
        own.swapNote = `${describe(`write +memory to ${root.dir}/cgroup.subtree_control`, err)}` +
          (osErrno(err) === 16 ? " (a non-root cgroup with processes cannot delegate controllers)" : "");
      }
    }

    try {
      await Deno.mkdir(path);
      created = true;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      warnings.push(`${path} already existed (left over by an earlier run?); reusing it`);
    }

    if (!own.swapNote) {
      try {
        await writeFile(join(path, "memory.swap.max"), "0");
        const back = await readOr(join(path, "memory.swap.max"), "");
        if (back === "0") {
          own.swapDisabled = true;
          own.swapNote = `memory.swap.max=0 in ${path}`;
        } else own.swapNote = `memory.swap.max reads "${back}" after writing 0`;
      } catch (err) {
        own.swapNote = describe(`write 0 to ${path}/memory.swap.max`, err) +
          (err instanceof Deno.errors.NotFound ? " (kernel without swap accounting: swapaccount=1)" : "");
      }
    }

    for (const pid of opts.pids) {
      const from = await procCgroup(pid);
      if (from === null) {
        throw new Error(`pid ${pid}: no such process (ESRCH) or no cgroup2 line in /proc/${pid}/cgroup`);
      }
      const fromDir = cgroupDir(root, from);
      try {
        await writeFile(join(path, "cgroup.procs"), String(pid));
      } catch (err) {
        throw new Error(`${describe(`move pid ${pid} into ${path}/cgroup.procs`, err)}: run as root`);
      }
      if (fromDir !== path) origins.set(pid, fromDir);
    }

    for (const pid of opts.pids) {
      const before = await readOr(`/proc/${pid}/oom_score_adj`, "0");
      try {
        await writeFile(`/proc/${pid}/oom_score_adj`, "-1000");
        oomBefore.set(pid, before);
        own.oomProtected.push(pid);
      } catch (err) {
        warnings.push(describe(`write -1000 to /proc/${pid}/oom_score_adj`, err));
      }
    }
  } catch (err) {
    try {
      await own.leave();
    } catch (cleanup) {
      throw new SuppressedError(cleanup, err, `joining ${path} failed and so did the undo`);
    }
    throw err;
  }
  return own;
}

// ---------------------------------------------------------------------------------------------------------
// freezing userspace

export interface Frozen extends AsyncDisposable {
  /** Cgroups this call froze (absolute dirs); thaw writes 0 to exactly these. */
  cgroups: string[];
  /** Cgroups that were already frozen by someone else (waited for, left frozen on thaw). */
  alreadyFrozen: string[];
  /** Processes moved out of the root cgroup into <root>/cryptsleep-frozen. */
  movedPids: number[];
  /** Processes of the root cgroup that the kernel refused to move (EINVAL), left running. */
  unmovable: { pid: number; comm: string; error: string }[];
  /** Milliseconds until every cgroup reported frozen 1. */
  tookMs: number;
  /** Idempotent; finishes every step, then throws CleanupError if any failed. */
  thaw(): Promise<void>;
}

/**
 * Freezes every top-level cgroup under `cgroupRoot` except `own` (a name or an absolute path), after moving
 * the root cgroup's own processes into `<root>/cryptsleep-frozen`. Waits until each reports `frozen 1`; on
 * timeout, thaws and throws FreezeTimeoutError naming the processes that did not freeze.
 */
export async function freezeUserspace(
  opts: { cgroupRoot?: string; own: string; timeoutMs: number; pollMs?: number },
): Promise<Frozen> {
  const root = await resolveCgroup2(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const ownDir = opts.own.startsWith("/") ? opts.own : join(root.dir, opts.own);
  if (dirname(ownDir) !== root.dir) throw new Error(`own cgroup ${ownDir} must be a direct child of ${root.dir}`);
  if (!(await exists(join(ownDir, "cgroup.procs")))) {
    throw new Error(`own cgroup ${ownDir} does not exist: call joinOwnCgroup first`);
  }
  const ownName = basename(ownDir);
  const frozenDir = join(root.dir, FROZEN_NAME);

  // Never freeze the process doing the freezing: it could not thaw anything.
  const self = await procCgroup(Deno.pid);
  if (self !== null) {
    const selfDir = cgroupDir(root, self);
    const inRoot = selfDir === root.dir || selfDir.startsWith(root.dir + "/");
    if (inRoot && !(selfDir === ownDir || selfDir.startsWith(ownDir + "/"))) {
      throw new Error(`this process (pid ${Deno.pid}) is in ${selfDir}, which would be frozen: join ${ownDir} first`);
    }
  }

  const cgroups: string[] = [];
  const alreadyFrozen: string[] = [];
  const movedPids: number[] = [];
  const unmovable: Frozen["unmovable"] = [];
  const refusedMove = new Set<number>();
  const kernelOwned = new Set<number>(); // not re-read on every poll
  let frozenCreated = false;
  let frozenUsed = false;
  let thawed = false;
  const started = performance.now();

  const frozen: Frozen = {
    cgroups,
    alreadyFrozen,
    movedPids,
    unmovable,
    tookMs: 0,
    async thaw() {
      if (thawed) return;
      thawed = true;
      const errors: string[] = [];
      for (const dir of cgroups) {
        try {
          await writeFile(join(dir, "cgroup.freeze"), "0");
        } catch (err) {
          if (!(err instanceof Deno.errors.NotFound)) errors.push(describe(`write 0 to ${dir}/cgroup.freeze`, err));
        }
      }
      if (frozenUsed || frozenCreated) {
        await releaseFrozenCgroup(frozenDir, root.dir, errors);
      }
      if (errors.length) throw new CleanupError("thaw", errors);
    },
    [Symbol.asyncDispose]() {
      return this.thaw();
    },
  };

  /** Moves the root cgroup's user processes into the frozen cgroup; returns how many moved. */
  async function sweepRoot(): Promise<number> {
    let procs: number[];
    try {
      procs = await readProcs(root.dir);
    } catch (err) {
      throw new Error(describe(`read ${root.dir}/cgroup.procs`, err));
    }
    let count = 0;
    for (const pid of procs) {
      if (pid === Deno.pid || refusedMove.has(pid) || kernelOwned.has(pid)) continue;
      const st = await readStat(`/proc/${pid}/stat`);
      if (!st) continue;
      if (isKernelOwned(st)) {
        kernelOwned.add(pid);
        continue;
      }
      if (!frozenUsed) {
        try {
          await Deno.mkdir(frozenDir);
          frozenCreated = true;
        } catch (err) {
          if (!(err instanceof Deno.errors.AlreadyExists)) throw new Error(describe(`mkdir ${frozenDir}`, err));
        }
        frozenUsed = true;
        await writeFile(join(frozenDir, "cgroup.freeze"), "1");
      }
      try {
        await writeFile(join(frozenDir, "cgroup.procs"), String(pid));
        movedPids.push(pid);
        count++;
      } catch (err) {
        const n = osErrno(err);
        if (n === 3) continue; // exited meanwhile
        refusedMove.add(pid);
        unmovable.push({ pid, comm: st.comm, error: describe(`move pid ${pid} to ${frozenDir}`, err) });
      }
    }
    return count;
  }

  try {
    // Processes in the root cgroup first: repeat while they fork.
    for (let round = 0; round < 10 && (await sweepRoot()) > 0; round++);

    const targets: string[] = [];
    for await (const e of Deno.readDir(root.dir)) {
      if (!e.isDirectory || e.name === ownName || e.name === FROZEN_NAME) continue;
      targets.push(join(root.dir, e.name));
    }
    targets.sort();
    for (const dir of targets) {
      if (!(await exists(join(dir, "cgroup.freeze")))) continue;
      if ((await readOr(join(dir, "cgroup.freeze"), "0")) === "1") {
        alreadyFrozen.push(dir);
        continue;
      }
      try {
        await writeFile(join(dir, "cgroup.freeze"), "1");
        cgroups.push(dir);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) continue; // removed meanwhile
        throw new Error(describe(`write 1 to ${dir}/cgroup.freeze`, err));
      }
    }

    const deadline = started + opts.timeoutMs;
    const poll = opts.pollMs ?? 10;
    for (;;) {
      // A process can appear in the root later (e.g. a daemon's child re-parented there): catch it too.
      if ((await sweepRoot()) === 0) {
        const all = [...cgroups, ...alreadyFrozen, ...(frozenUsed ? [frozenDir] : [])];
        const pending = [];
        for (const dir of all) if (!(await isFrozen(dir))) pending.push(dir);
        if (!pending.length) break;
        if (performance.now() >= deadline) {
          const refusers = await findRefusers(root, pending);
          let thawErrors: string[] = [];
          try {
            await frozen.thaw();
          } catch (err) {
            thawErrors = err instanceof CleanupError ? err.errors : [String(err)];
          }
          throw new FreezeTimeoutError(opts.timeoutMs, refusers, thawErrors);
        }
      }
      await new Promise((r) => setTimeout(r, poll));
    }
    frozen.tookMs = Math.round(performance.now() - started);
    return frozen;
  } catch (err) {
    if (err instanceof FreezeTimeoutError) throw err;
    try {
      await frozen.thaw();
    } catch (cleanup) {
      throw new SuppressedError(cleanup, err, "freezing failed and so did the thaw");
    }
    throw err;
  }
}

/** Moves everything in the cryptsleep-frozen cgroup back to the root (it all came from there, or was forked
 * there meanwhile) and removes it; failures go to `errors`. */
async function releaseFrozenCgroup(frozenDir: string, rootDir: string, errors: string[]): Promise<void> {
  await drain(frozenDir, rootDir, errors);
  try {
    await removeCgroup(frozenDir);
  } catch (err) {
    errors.push(describe(`rmdir ${frozenDir}`, err));
  }
}

/** A thread counts as frozen when it sits in the freezer trap (inside get_signal) or is stopped. */
async function threadFrozen(base: string, st: ProcStat): Promise<{ frozen: boolean; wchan: string; stack?: string }> {
  const wchan = await readOr(`${base}/wchan`, "");
  let stack: string | undefined;
  try {
    stack = (await Deno.readTextFile(`${base}/stack`)).trim();
  } catch { /* needs root and CONFIG_STACKTRACE */ }
  const inTrap = /^(get_signal|do_freezer_trap|do_signal_stop)$/.test(wchan) ||
    (stack !== undefined && /\b(do_freezer_trap|get_signal)\+/.test(stack));
  return { frozen: st.state === "T" || st.state === "t" || inTrap, wchan, stack };
}

/** The processes (and their first unfrozen thread) in cgroups that did not report frozen 1. */
export async function findRefusers(root: Cgroup2Root, pending: string[]): Promise<Refuser[]> {
  const dirs: string[] = [];
  async function walk(dir: string) {
    dirs.push(dir);
    try {
      for await (const e of Deno.readDir(dir)) if (e.isDirectory) await walk(join(dir, e.name));
    } catch { /* removed meanwhile */ }
  }
  for (const dir of pending) await walk(dir);

  const refusers: Refuser[] = [];
  for (const dir of dirs) {
    if (await isFrozen(dir)) continue;
    let procs: number[] = [];
    try {
      procs = await readProcs(dir);
    } catch { /* removed meanwhile */ }
    for (const pid of procs) {
      let tids: number[] = [pid];
      try {
        tids = [];
        for await (const t of Deno.readDir(`/proc/${pid}/task`)) tids.push(Number(t.name));
        tids.sort((a, b) => a - b);
      } catch { /* gone */ }
      for (const tid of tids) {
        const base = `/proc/${pid}/task/${tid}`;
        const st = await readStat(`${base}/stat`);
        if (!st) continue;
        const t = await threadFrozen(base, st);
        if (t.frozen) continue;
        const main = tid === pid ? st : await readStat(`/proc/${pid}/stat`);
        refusers.push({
          pid,
          ...(tid !== pid ? { tid } : {}),
          comm: main?.comm ?? st.comm,
          cgroup: relCgroup(root, dir),
          state: st.state,
          wchan: t.wchan,
          ...(t.stack !== undefined ? { stack: t.stack } : {}),
        });
        break;
      }
    }
  }
  return refusers;
}

// ---------------------------------------------------------------------------------------------------------
// without state: what a dry run would freeze, and what a supervisor finds still frozen

/** What freezeUserspace would freeze now: top-level cgroups but `own`, and the root cgroup's user processes. */
export async function listFreezable(
  opts: { cgroupRoot?: string; own: string },
): Promise<{ cgroups: string[]; rootPids: number[] }> {
  const root = await resolveCgroup2(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const cgroups: string[] = [];
  for await (const e of Deno.readDir(root.dir)) {
    if (e.isDirectory && e.name !== opts.own && e.name !== FROZEN_NAME) cgroups.push(join(root.dir, e.name));
  }
  const rootPids: number[] = [];
  for (const pid of await readProcs(root.dir)) {
    const st = await readStat(`/proc/${pid}/stat`);
    if (st && !isKernelOwned(st) && pid !== Deno.pid) rootPids.push(pid);
  }
  return { cgroups: cgroups.sort(), rootPids };
}

/**
 * For the supervisor after the agent died: finds every top-level cgroup (but `own`) with cgroup.freeze=1 and
 * the cryptsleep-frozen cgroup, and unless `dryRun` thaws them, moving the latter's processes back to the
 * root. It reads state instead of trusting the dead agent's account; a cgroup someone else had frozen
 * before the cycle is thawed too — a thawed machine is the lesser harm. Returns the cgroups found frozen.
 */
export async function thawLeftovers(opts: { cgroupRoot?: string; own: string; dryRun: boolean }): Promise<string[]> {
  const root = await resolveCgroup2(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const found: string[] = [];
  const errors: string[] = [];
  for await (const e of Deno.readDir(root.dir)) {
    if (!e.isDirectory || e.name === opts.own) continue;
    const dir = join(root.dir, e.name);
    if ((await readOr(join(dir, "cgroup.freeze"), "0")) !== "1") continue;
    found.push(dir);
    if (opts.dryRun) continue;
    try {
      await writeFile(join(dir, "cgroup.freeze"), "0");
    } catch (err) {
      errors.push(describe(`write 0 to ${dir}/cgroup.freeze`, err));
    }
  }
  const frozenDir = join(root.dir, FROZEN_NAME);
  if (!opts.dryRun && (await exists(join(frozenDir, "cgroup.procs")))) {
    await releaseFrozenCgroup(frozenDir, root.dir, errors);
  }
  if (errors.length) throw new CleanupError("thaw leftovers", errors);
  return found.sort();
}

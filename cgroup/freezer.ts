/**
 * The cgroup v2 freezer for the whole of userspace. The tool's own processes (supervisor, agent) first join
 * `<root>/cryptsleep` (own.ts), which is never frozen; then every other top-level cgroup is frozen (the
 * freeze propagates to its descendants), and processes living directly in the root cgroup (no systemd, e.g.
 * a busybox init) are moved into `<root>/cryptsleep-frozen` and frozen there, because the root cgroup has no
 * `cgroup.freeze`. Kernel threads and kernel usermode helpers (children of kthreadd) are never touched.
 * Thawing writes 0 where 1 was written, moves moved processes back to the root and removes created cgroups.
 *
 * A process waiting on a FUSE server that froze first never freezes (fuse.ts). So when what holds the freeze up
 * after `fuseProbeMs` is such a wait, everything is thawed and frozen again in two waves: the FUSE servers' cgroups
 * last, once all else is frozen (a top-level cgroup holding one is frozen first in the cgroups beside the
 * server's, which are marked for the undo by looking). Looking for servers reads every process's fds: only then.
 *
 * @example
 * ```ts
 * import { joinOwnCgroup } from "./own.ts";
 * import { freezeUserspace } from "./freezer.ts";
 * await using own = await joinOwnCgroup({ pids: [Deno.pid] });
 * await using frozen = await freezeUserspace({ own: own.path, timeoutMs: 10_000 });
 * console.log(`frozen: ${frozen.cgroups.join(" ")} in ${frozen.tookMs} ms`);
 * // … lock, sleep, unlock …
 * ```
 * @module
 */
import { basename, dirname, join } from "../host/path.ts";
import { exists } from "../host/paths.ts";
import { describe, errnoCode } from "../host/errors.ts";
import { readStat } from "../host/proc.ts";
import {
  type Cgroup2Root,
  cgroupDir,
  CleanupError,
  DEFAULT_CGROUP_ROOT,
  drain,
  FROZEN_NAME,
  isFrozen,
  isKernelOwned,
  markCgroup,
  procCgroup,
  readOr,
  readProcs,
  removeCgroup,
  resolveCgroup2,
  unmarkCgroup,
  writeFile,
} from "./cgroup2.ts";
import { fuseInUse, fuseWaitIn, planWaves, type WavePlan } from "./fuse.ts";
import { findRefusers, FreezeTimeoutError } from "./refusers.ts";

/** Userspace, frozen; dispose (or {@linkcode Frozen.thaw}) to thaw it. */
export interface Frozen extends AsyncDisposable {
  /** Cgroups this call froze (absolute dirs); thaw writes 0 to exactly these. */
  cgroups: string[];
  /** Cgroups that were already frozen by someone else (waited for, left frozen on thaw). */
  alreadyFrozen: string[];
  /** Processes moved out of the root cgroup into <root>/cryptsleep-frozen. */
  movedPids: number[];
  /** Processes of the root cgroup that the kernel refused to move (EINVAL), left running. */
  unmovable: { pid: number; comm: string; error: string }[];
  /** When a FUSE request held the first try up: the two waves it was frozen in then, and the servers. */
  fuse?: { servers: number[]; lastWave: string[]; note?: string };
  /** Milliseconds until every cgroup reported frozen 1. */
  tookMs: number;
  /** Idempotent; finishes every step, then throws CleanupError if any failed. */
  thaw(): Promise<void>;
}

/** Options of {@linkcode freezeUserspace}. */
export interface FreezeOptions {
  /** The cgroup2 hierarchy (default /sys/fs/cgroup). */
  cgroupRoot?: string;
  /** The tool's own cgroup, never frozen: a name or an absolute path. */
  own: string;
  /** Both tries together give up after this long. */
  timeoutMs: number;
  /** How often frozen states are read. */
  pollMs?: number;
  /** How long the first try waits before it looks whether a FUSE request holds it up (default 500 ms). */
  fuseProbeMs?: number;
  /** "waves": no first try, the two waves at once (tests). */
  fuseOrder?: "when-held-up" | "waves";
  /** Called between the two waves (the death test's moment). */
  betweenWaves?: () => void | Promise<void>;
}

/** How long the first try runs before it looks (and looks again) whether a FUSE request holds it up. */
const FUSE_PROBE_MS = 500;

/** The first try saw a FUSE request hold it up, and thawed. */
class FuseHeldUp extends Error {}

/**
 * Freezes every top-level cgroup under `cgroupRoot` except `own`, after moving the root cgroup's own processes
 * into `<root>/cryptsleep-frozen`; when a FUSE request holds that up, thaws and freezes again in two waves, FUSE
 * servers last. Waits until each reports `frozen 1`; on timeout, thaws and throws FreezeTimeoutError naming the
 * processes that did not freeze.
 */
export async function freezeUserspace(opts: FreezeOptions): Promise<Frozen> {
  const root = await resolveCgroup2(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const ownDir = opts.own.startsWith("/") ? opts.own : join(root.dir, opts.own);
  if (dirname(ownDir) !== root.dir) throw new Error(`own cgroup ${ownDir} must be a direct child of ${root.dir}`);
  if (!(await exists(join(ownDir, "cgroup.procs")))) {
    throw new Error(`own cgroup ${ownDir} does not exist: call joinOwnCgroup first`);
  }
  // Never freeze the process doing the freezing: it could not thaw anything.
  const self = await procCgroup(Deno.pid);
  if (self !== null) {
    const selfDir = cgroupDir(root, self);
    const inRoot = selfDir === root.dir || selfDir.startsWith(root.dir + "/");
    if (inRoot && !(selfDir === ownDir || selfDir.startsWith(ownDir + "/"))) {
      throw new Error(`this process (pid ${Deno.pid}) is in ${selfDir}, which would be frozen: join ${ownDir} first`);
    }
  }
  const targets: string[] = [];
  for await (const e of Deno.readDir(root.dir)) {
    if (!e.isDirectory || e.name === basename(ownDir) || e.name === FROZEN_NAME) continue;
    targets.push(join(root.dir, e.name));
  }
  targets.sort();

  const started = performance.now();
  const deadline = started + opts.timeoutMs;
  if (opts.fuseOrder !== "waves") {
    const probeAt = started + (opts.fuseProbeMs ?? FUSE_PROBE_MS);
    try {
      return await attempt(root, targets, null, { ...opts, started, deadline, probeAt });
    } catch (err) {
      if (!(err instanceof FuseHeldUp)) throw err;
    }
  }
  return await attempt(root, targets, await planWaves(root, targets), { ...opts, started, deadline, probeAt: null });
}

/** One try: all at once (`plan` null), or in the two waves of `plan`. */
async function attempt(
  root: Cgroup2Root,
  targets: string[],
  plan: WavePlan | null,
  opts: FreezeOptions & { started: number; deadline: number; probeAt: number | null },
): Promise<Frozen> {
  const frozenDir = join(root.dir, FROZEN_NAME);
  const below = (dir: string) => dirname(dir) !== root.dir; // not top-level: marked when frozen
  const cgroups: string[] = [];
  const alreadyFrozen: string[] = [];
  const movedPids: number[] = [];
  const unmovable: Frozen["unmovable"] = [];
  const refusedMove = new Set<number>();
  const kernelOwned = new Set<number>(); // not re-read on every poll
  const late = new Set(plan?.late); // root-cgroup FUSE servers and their children: moved in the last wave
  const split: string[] = [];
  let frozenCreated = false;
  let frozenUsed = false;
  let thawed = false;

  const frozen: Frozen = {
    cgroups,
    alreadyFrozen,
    movedPids,
    unmovable,
    ...(plan ? { fuse: { servers: plan.servers, lastWave: [], ...(plan.note ? { note: plan.note } : {}) } } : {}),
    tookMs: 0,
    async thaw() {
      if (thawed) return;
      thawed = true;
      const errors: string[] = [];
      // servers (the last wave) first: their clients' requests get answered as they thaw
      for (const dir of [...cgroups].reverse()) {
        try {
          writeFile(join(dir, "cgroup.freeze"), "0");
        } catch (err) {
          if (!(err instanceof Deno.errors.NotFound)) errors.push(describe(`write 0 to ${dir}/cgroup.freeze`, err));
          continue;
        }
        try {
          if (below(dir)) unmarkCgroup(dir);
        } catch (err) {
          errors.push(describe(`take the mark off ${dir}`, err));
        }
      }
      if (frozenUsed || frozenCreated) {
        await releaseFrozenCgroup(frozenDir, root.dir, errors);
      }
      // kept while anything below failed to thaw: the undo by looking follows them down to it
      if (!errors.length) {
        for (const dir of split) {
          try {
            unmarkCgroup(dir);
          } catch (err) {
            errors.push(describe(`take the mark off ${dir}`, err));
          }
        }
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
      procs = readProcs(root.dir);
    } catch (err) {
      throw new Error(describe(`read ${root.dir}/cgroup.procs`, err));
    }
    let count = 0;
    for (const pid of procs) {
      if (pid === Deno.pid || refusedMove.has(pid) || kernelOwned.has(pid) || late.has(pid)) continue;
      const st = readStat(`/proc/${pid}/stat`);
      if (!st) continue;
      if (isKernelOwned(st)) {
        kernelOwned.add(pid);
        continue;
      }
      if (late.has(st.ppid)) {
        late.add(pid); // a late server's new child (sshfs reconnecting its ssh): last too
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
        writeFile(join(frozenDir, "cgroup.freeze"), "1");
      }
      try {
        writeFile(join(frozenDir, "cgroup.procs"), String(pid));
        movedPids.push(pid);
        count++;
      } catch (err) {
        if (errnoCode(err) === "ESRCH") continue; // exited meanwhile
        refusedMove.add(pid);
        unmovable.push({ pid, comm: st.comm, error: describe(`move pid ${pid} to ${frozenDir}`, err) });
      }
    }
    return count;
  }

  /** Whether `dir` has a cgroup.freeze (the root cgroup has none); kernel memory, looked at synchronously. */
  function hasFreezeFile(dir: string): boolean {
    try {
      Deno.lstatSync(join(dir, "cgroup.freeze"));
      return true;
    } catch {
      return false;
    }
  }

  /** Writes 1 to each of `dirs`' cgroup.freeze; one already at 1 (someone else's) is waited for, never thawed. */
  function freezeDirs(dirs: string[]): void {
    for (const dir of dirs) {
      if (!hasFreezeFile(dir)) continue;
      if (readOr(join(dir, "cgroup.freeze"), "0") === "1") {
        alreadyFrozen.push(dir);
        // someone else's: a mark left from a cycle that died between a thaw and its unmark must not claim it
        if (below(dir)) unmarkCgroup(dir);
        continue;
      }
      try {
        // marked first, so that the undo by looking thaws it even if this process dies right after
        if (below(dir)) markCgroup(dir, "frozen");
      } catch (err) {
        if (errnoCode(err) === "ENOENT") continue; // removed meanwhile
        throw err;
      }
      try {
        writeFile(join(dir, "cgroup.freeze"), "1");
        cgroups.push(dir);
      } catch (err) {
        if (below(dir)) unmarkCgroup(dir);
        if (err instanceof Deno.errors.NotFound) continue; // removed meanwhile
        throw new Error(describe(`write 1 to ${dir}/cgroup.freeze`, err));
      }
    }
  }

  /** Waits until everything frozen so far reports frozen 1; at the deadline (or a FUSE hold-up) thaws all and throws. */
  async function waitFrozen(): Promise<void> {
    const poll = opts.pollMs ?? 10;
    for (;;) {
      // A process can appear in the root later (e.g. a daemon's child re-parented there): catch it too.
      const moved = await sweepRoot();
      const all = [...cgroups, ...alreadyFrozen, ...(frozenUsed ? [frozenDir] : [])];
      const pending = [];
      for (const dir of all) if (!isFrozen(dir)) pending.push(dir);
      if (!pending.length && moved === 0) return;
      const now = performance.now();
      if (now >= opts.deadline) {
        const refusers = await findRefusers(root, pending);
        let thawErrors: string[] = [];
        try {
          await frozen.thaw();
        } catch (err) {
          thawErrors = err instanceof CleanupError ? err.errors : [String(err)];
        }
        const how = plan ? "frozen again in two waves, FUSE servers last, after a FUSE request held it up" : "";
        throw new FreezeTimeoutError(opts.timeoutMs, refusers, thawErrors, how);
      }
      if (opts.probeAt !== null && now >= opts.probeAt && pending.length) {
        // looked at again every so often: a FUSE wait may begin late, or hide behind a busy thread
        opts.probeAt = now + (opts.fuseProbeMs ?? FUSE_PROBE_MS);
        if (fuseInUse() && await fuseWaitIn(pending)) {
          await frozen.thaw();
          throw new FuseHeldUp();
        }
      }
      await new Promise((r) => setTimeout(r, poll));
    }
  }

  try {
    for (const dir of plan?.split ?? []) {
      // top-level ones too: the undo by looking goes down only where it finds this mark
      try {
        markCgroup(dir, "split");
        split.push(dir);
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err; // removed meanwhile: nothing below it to freeze either
      }
    }
    // Processes in the root cgroup first: repeat while they fork.
    for (let round = 0; round < 10 && (await sweepRoot()) > 0; round++);
    freezeDirs(plan ? plan.first : targets);
    if (plan && (plan.last.length || late.size)) {
      await waitFrozen();
      await opts.betweenWaves?.();
      late.clear();
      freezeDirs(plan.last);
      frozen.fuse!.lastWave = [...plan.last, ...(plan.late.size ? [frozenDir] : [])];
    }
    await waitFrozen();
    frozen.tookMs = Math.round(performance.now() - opts.started);
    return frozen;
  } catch (err) {
    if (err instanceof FreezeTimeoutError || err instanceof FuseHeldUp) throw err;
    try {
      await frozen.thaw();
    } catch (cleanup) {
      throw new SuppressedError(cleanup, err, "freezing failed and so did the thaw");
    }
    throw err;
  }
}

/**
 * Moves everything in the cryptsleep-frozen cgroup back to the root (it all came from there, or was forked
 * there meanwhile) and removes it; failures go to `errors`.
 */
export async function releaseFrozenCgroup(frozenDir: string, rootDir: string, errors: string[]): Promise<void> {
  drain(frozenDir, rootDir, errors);
  try {
    await removeCgroup(frozenDir);
  } catch (err) {
    errors.push(describe(`rmdir ${frozenDir}`, err));
  }
}

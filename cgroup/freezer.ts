/**
 * The cgroup v2 freezer for the whole of userspace. The tool's own processes (supervisor, agent) first join
 * `<root>/cryptsleep` (own.ts), which is never frozen; then every other top-level cgroup is frozen (the
 * freeze propagates to its descendants), and processes living directly in the root cgroup (no systemd, e.g.
 * a busybox init) are moved into `<root>/cryptsleep-frozen` and frozen there, because the root cgroup has no
 * `cgroup.freeze`. Kernel threads and kernel usermode helpers (children of kthreadd) are never touched.
 * Thawing writes 0 where 1 was written, moves moved processes back to the root and removes created cgroups.
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
  cgroupDir,
  CleanupError,
  DEFAULT_CGROUP_ROOT,
  drain,
  FROZEN_NAME,
  isFrozen,
  isKernelOwned,
  procCgroup,
  readOr,
  readProcs,
  removeCgroup,
  resolveCgroup2,
  writeFile,
} from "./cgroup2.ts";
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
        if (errnoCode(err) === "ESRCH") continue; // exited meanwhile
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

/**
 * Moves everything in the cryptsleep-frozen cgroup back to the root (it all came from there, or was forked
 * there meanwhile) and removes it; failures go to `errors`.
 */
export async function releaseFrozenCgroup(frozenDir: string, rootDir: string, errors: string[]): Promise<void> {
  await drain(frozenDir, rootDir, errors);
  try {
    await removeCgroup(frozenDir);
  } catch (err) {
    errors.push(describe(`rmdir ${frozenDir}`, err));
  }
}

/**
 * The tool's own cgroup, `<root>/cryptsleep`: `cryptsleep suspend` joins it early in the cycle (so what it
 * allocates from then on is charged here) and moves its supervisor in as it starts; it is never frozen. Where the memory controller allows, `memory.swap.max=0` keeps their
 * memory out of swap (swap may sit on a volume being locked); their `oom_score_adj` is set to -1000.
 *
 * @example
 * ```ts
 * import { joinOwnCgroup } from "./own.ts";
 * await using own = await joinOwnCgroup({ pids: [Deno.pid] });
 * console.log(own.swapDisabled ? "swap off for us" : own.swapNote, own.warnings);
 * ```
 * @module
 */
import { join } from "../host/path.ts";
import { exists } from "../host/paths.ts";
import { describe, errnoCode } from "../host/errors.ts";
import {
  cgroupDir,
  CleanupError,
  DEFAULT_CGROUP_ROOT,
  drain,
  OWN_NAME,
  procCgroup,
  readOr,
  removeCgroup,
  resolveCgroup2,
  writeFile,
} from "./cgroup2.ts";

/** The tool's own cgroup, joined; dispose (or {@linkcode OwnCgroup.leave}) to leave it. */
export interface OwnCgroup extends AsyncDisposable {
  /** Absolute directory, e.g. /sys/fs/cgroup/cryptsleep. */
  path: string;
  /** Its name under the cgroup root. */
  name: string;
  /** The pids moved in. */
  pids: number[];
  /** memory.swap.max was set to 0 (and read back as 0). */
  swapDisabled: boolean;
  /** Why swap could not be disabled, or how it was. Never empty. */
  swapNote: string;
  /** Pids whose oom_score_adj is now -1000. */
  oomProtected: number[];
  /** What did not go as planned but did not stop the join (e.g. oom_score_adj refused). */
  warnings: string[];
  /** Moves one more process in (a child just started), as the join moved the first ones. */
  add(pid: number): Promise<void>;
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
          writeFile(`/proc/${pid}/oom_score_adj`, value);
        } catch (err) {
          if (errnoCode(err) !== "ESRCH" && !(err instanceof Deno.errors.NotFound)) {
            errors.push(describe(`restore /proc/${pid}/oom_score_adj=${value}`, err));
          }
        }
      }
      for (const [pid, origin] of origins) {
        const to = (await exists(join(origin, "cgroup.procs"))) ? origin : root.dir;
        try {
          writeFile(join(to, "cgroup.procs"), String(pid));
        } catch (err) {
          if (errnoCode(err) !== "ESRCH") errors.push(describe(`move pid ${pid} back to ${to}`, err));
        }
      }
      // Children forked while inside (e.g. an agent that is still exiting) go where the first pid came from.
      const fallback = [...origins.values()][0] ?? root.dir;
      drain(path, (await exists(fallback)) ? fallback : root.dir, errors);
      if (created) {
        try {
          await removeCgroup(path);
        } catch (err) {
          errors.push(describe(`rmdir ${path}`, err));
        }
      }
      if (enabledMemory) {
        try {
          writeFile(join(root.dir, "cgroup.subtree_control"), "-memory");
        } catch (err) {
          // Others may have started using it meanwhile; leaving it enabled is harmless.
          if (errnoCode(err) !== "EBUSY") {
            errors.push(describe(`write -memory to ${root.dir}/cgroup.subtree_control`, err));
          }
        }
      }
      if (errors.length) throw new CleanupError(`leaving ${path}`, errors);
    },
    [Symbol.asyncDispose]() {
      return this.leave();
    },
    async add(pid: number) {
      await moveIn([pid]);
      own.pids.push(pid);
    },
  };

  const moveIn = async (pids: number[]) => {
    for (const pid of pids) {
      const from = await procCgroup(pid);
      if (from === null) {
        throw new Error(`pid ${pid}: no such process (ESRCH) or no cgroup2 line in /proc/${pid}/cgroup`);
      }
      const fromDir = cgroupDir(root, from);
      try {
        writeFile(join(path, "cgroup.procs"), String(pid));
      } catch (err) {
        throw new Error(`${describe(`move pid ${pid} into ${path}/cgroup.procs`, err)}: run as root`);
      }
      if (fromDir !== path) origins.set(pid, fromDir);
    }
    for (const pid of pids) {
      const before = readOr(`/proc/${pid}/oom_score_adj`, "0");
      try {
        writeFile(`/proc/${pid}/oom_score_adj`, "-1000");
        oomBefore.set(pid, before);
        own.oomProtected.push(pid);
      } catch (err) {
        warnings.push(describe(`write -1000 to /proc/${pid}/oom_score_adj`, err));
      }
    }
  };

  try {
    // memory.swap.max only exists when the memory controller is enabled for the parent's children.
    const controllers = readOr(join(root.dir, "cgroup.controllers"), "").split(/\s+/);
    const subtree = readOr(join(root.dir, "cgroup.subtree_control"), "").split(/\s+/);
    if (!controllers.includes("memory")) {
      own.swapNote = `memory controller not available in cgroup2 at ${root.dir} (bound to cgroup v1, or ` +
        `cgroup_disable=memory): this process's memory may be swapped out while volumes are locked`;
    } else if (!subtree.includes("memory")) {
      try {
        writeFile(join(root.dir, "cgroup.subtree_control"), "+memory");
        enabledMemory = true;
      } catch (err) {
        own.swapNote = `${describe(`write +memory to ${root.dir}/cgroup.subtree_control`, err)}` +
          (errnoCode(err) === "EBUSY" ? " (a non-root cgroup with processes cannot delegate controllers)" : "");
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
        writeFile(join(path, "memory.swap.max"), "0");
        const back = readOr(join(path, "memory.swap.max"), "");
        if (back === "0") {
          own.swapDisabled = true;
          own.swapNote = `memory.swap.max=0 in ${path}`;
        } else own.swapNote = `memory.swap.max reads "${back}" after writing 0`;
      } catch (err) {
        own.swapNote = describe(`write 0 to ${path}/memory.swap.max`, err) +
          (err instanceof Deno.errors.NotFound ? " (kernel without swap accounting: swapaccount=1)" : "");
      }
    }

    await moveIn(opts.pids);
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

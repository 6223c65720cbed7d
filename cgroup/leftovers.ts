/**
 * Freezer questions that need no state: what a dry run would freeze, and what a supervisor finds still
 * frozen after the agent died (and thaws).
 *
 * @example
 * ```ts
 * import { listFreezable, thawLeftovers } from "./leftovers.ts";
 * const { cgroups, rootPids } = await listFreezable({ own: "cryptsleep" });
 * console.log(cgroups, rootPids.length, await thawLeftovers({ own: "cryptsleep", dryRun: true }));
 * ```
 * @module
 */
import { join } from "../host/path.ts";
import { exists } from "../host/paths.ts";
import { describe } from "../host/errors.ts";
import { readStat } from "../host/proc.ts";
import {
  cgroupMark,
  CleanupError,
  DEFAULT_CGROUP_ROOT,
  FROZEN_NAME,
  isKernelOwned,
  readOr,
  readProcs,
  resolveCgroup2,
  unmarkCgroup,
  writeFile,
} from "./cgroup2.ts";
import { releaseFrozenCgroup } from "./freezer.ts";

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
  for (const pid of readProcs(root.dir)) {
    const st = readStat(`/proc/${pid}/stat`);
    if (st && !isKernelOwned(st) && pid !== Deno.pid) rootPids.push(pid);
  }
  return { cgroups: cgroups.sort(), rootPids };
}

/**
 * The freeze's undo by looking (the supervisor after the agent died, or a freeze cut short): finds every cgroup
 * (but `own`) with cgroup.freeze=1 — at the top level, and below it those the freeze marked (fuse.ts) — and unless
 * `dryRun` thaws them, moving cryptsleep-frozen's processes back to the root. It reads state instead of trusting
 * the dead agent's account; a cgroup someone else had frozen before the cycle is thawed too — a thawed machine is
 * the lesser harm. Returns the cgroups found frozen.
 */
export async function thawLeftovers(opts: { cgroupRoot?: string; own: string; dryRun: boolean }): Promise<string[]> {
  const root = await resolveCgroup2(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const found: string[] = [];
  const errors: string[] = [];
  const thaw = (dir: string) => {
    found.push(dir);
    if (opts.dryRun) return true;
    try {
      writeFile(join(dir, "cgroup.freeze"), "0");
      return true;
    } catch (err) {
      errors.push(describe(`write 0 to ${dir}/cgroup.freeze`, err));
      return false;
    }
  };
  const frozenNow = (dir: string) => readOr(join(dir, "cgroup.freeze"), "0") === "1";
  // Below the top level only where the freeze left its marks (fuse.ts): down the "split" ones, thawing the "frozen"
  // ones; a mark goes once what it marks is thawed (so a failed round leaves the way for the next).
  const below = async (dir: string): Promise<boolean> => {
    const children: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (e.isDirectory) children.push(join(dir, e.name));
    } catch { /* removed meanwhile */ }
    let allThawed = true;
    for (const child of children.sort()) {
      const mark = cgroupMark(child);
      let ok: boolean;
      if (mark === "split") ok = await below(child);
      else if (mark === "frozen") ok = !frozenNow(child) || thaw(child);
      else continue;
      if (ok && !opts.dryRun) unmark(child);
      allThawed &&= ok;
    }
    return allThawed;
  };
  const unmark = (dir: string) => {
    try {
      unmarkCgroup(dir);
    } catch (err) {
      errors.push(describe(`take the mark off ${dir}`, err));
    }
  };
  for await (const e of Deno.readDir(root.dir)) {
    if (!e.isDirectory || e.name === opts.own) continue;
    const dir = join(root.dir, e.name);
    const thawed = !frozenNow(dir) || thaw(dir);
    if (cgroupMark(dir) === "split" && (await below(dir)) && thawed && !opts.dryRun) unmark(dir);
  }
  const frozenDir = join(root.dir, FROZEN_NAME);
  if (!opts.dryRun && (await exists(join(frozenDir, "cgroup.procs")))) {
    await releaseFrozenCgroup(frozenDir, root.dir, errors);
  }
  if (errors.length) throw new CleanupError("thaw leftovers", errors);
  return found.sort();
}

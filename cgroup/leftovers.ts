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
  CleanupError,
  DEFAULT_CGROUP_ROOT,
  FROZEN_NAME,
  isKernelOwned,
  readOr,
  readProcs,
  resolveCgroup2,
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
  for (const pid of await readProcs(root.dir)) {
    const st = await readStat(`/proc/${pid}/stat`);
    if (st && !isKernelOwned(st) && pid !== Deno.pid) rootPids.push(pid);
  }
  return { cgroups: cgroups.sort(), rootPids };
}

/**
 * The freeze's undo by looking (the supervisor after the agent died, or a freeze cut short): finds every top-level cgroup (but `own`) with cgroup.freeze=1 and
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

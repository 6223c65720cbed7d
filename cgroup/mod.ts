/**
 * The cgroup v2 freezer: the hierarchy and THE cgroup2 check (cgroup2.ts), the tool's own never-frozen
 * cgroup (own.ts), freezing and thawing userspace (freezer.ts) with FUSE servers last (fuse.ts), naming who
 * refused to freeze (refusers.ts), and the stateless questions of a dry run and a supervisor (leftovers.ts).
 *
 * @example
 * ```ts
 * import { freezeUserspace, joinOwnCgroup, thawLeftovers } from "./mod.ts";
 * await using own = await joinOwnCgroup({ pids: [Deno.pid] });
 * await using frozen = await freezeUserspace({ own: own.path, timeoutMs: 10_000 });
 * console.log(frozen.cgroups, await thawLeftovers({ own: own.name, dryRun: true }));
 * ```
 * @module
 */
export * from "./cgroup2.ts";
export * from "./freezer.ts";
export * from "./fuse.ts";
export * from "./leftovers.ts";
export * from "./own.ts";
export * from "./refusers.ts";

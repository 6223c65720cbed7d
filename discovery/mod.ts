/**
 * Discovery: which LUKS volumes exist, in which order to lock and unlock them, what depends on them.
 * Pure TypeScript over `/sys`, `/proc`, `/etc/crypttab` and the LUKS headers; every entry point takes a
 * `root` so recorded trees can be fed in tests.
 *
 * @example
 * ```ts
 * import { discover } from "./mod.ts";
 * const plan = await discover();
 * console.log(plan.lock.map((v) => v.dmName), plan.maxArgon2MemoryKiB);
 * ```
 * @module
 */
export * from "./discover.ts";
export * from "./luks_header.ts";
// host facts discovery reads, re-exported so users of mod.ts keep them
export * from "../host/paths.ts";
export * from "../host/mountinfo.ts";
export * from "../host/proc.ts";
export * from "./sysfs.ts";

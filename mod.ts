/**
 * cryptsleep locks every LUKS volume before suspend-to-RAM and unlocks them after wake: userspace is
 * frozen with the cgroup v2 freezer, each volume is suspended with libcryptsetup (luksSuspend semantics,
 * the volume key wiped from the kernel), and after wake the same process, its code locked in RAM and chrooted into an empty root, asks for the
 * passphrases and resumes the volumes bottom-up before userspace is thawed.
 *
 * This module re-exports the library API: discovery (which volumes, in which order, what depends on them)
 * and the FFI bindings (libcryptsetup, libc, device-mapper, the console).
 *
 * @example
 * ```ts
 * import { discover } from "./mod.ts";
 * const plan = await discover();
 * for (const v of plan.lock) console.log(`lock ${v.dmName} (${v.type} ${v.uuid}), then mounts`, v.mounts);
 * console.log(`unlock order: ${plan.unlock.map((v) => v.dmName).join(", ")}`);
 * console.log(`Argon2 needs ${plan.maxArgon2MemoryKiB} KiB on resume`);
 * ```
 * @module
 */
export * from "./discovery/mod.ts";
export { CliError } from "./cli/errors.ts";
export { ExitCode } from "./cli/exit_codes.ts";
export { VERSION } from "./cli/version.ts";
export * from "./ffi/mod.ts";

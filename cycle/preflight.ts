/**
 * @module
 * Phase 1, preflight: the plan from discovery, and every reason to refuse before anything is touched — a
 * requirement of cycle/requirements.ts not met (root, cgroup v2, the sleep state, sync_on_suspend,
 * libcryptsetup's calls, RAM for the largest Argon2 unlock, a watchdog that can be handed over: doctor checks the same list), nothing lockable
 * (unless plain suspend is allowed), a pinned key with --refuse-leak. It also reads the knobs to restore and
 * the volumes whose key is already pinned in a kernel keyring.
 *
 * @example
 * ```ts
 * import { defaultOptions } from "./job.ts";
 * import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
 * import { preflight } from "./preflight.ts";
 * const lib = Libcryptsetup.open();
 * try {
 *   const job = await preflight(defaultOptions(), lib.info, "/run/cryptsleep/root"); // or RefusedError
 *   console.log(job.plan.lock.map((v) => v.dmName), job.knobs);
 * } finally {
 *   lib.close();
 * }
 * ```
 */
import { discover, type Plan } from "../discovery/mod.ts";
import type { LibcryptsetupInfo } from "../ffi/libcryptsetup.ts";
import { writableFilesOn } from "../host/open_files.ts";
import { saveKnobs } from "../host/sysfs.ts";
import { resolveSleep } from "../systemd/sleep_conf.ts";
import { liveWatchdogUSec, watchdogDevices } from "../systemd/watchdog.ts";
import { RefusedError } from "./errors.ts";
import type { Job, SuspendOptions } from "./job.ts";
import { pinnedKeys } from "./pinned/mod.ts";
import { checkRequirements, type LibProbe, lockedMountpoints, refusals, type Verdict } from "./requirements.ts";

/** Where preflight evaluates the requirements: the live system, or (tests) a recorded tree and a uid. */
export interface PreflightHost {
  /** "/" or a recorded tree. */
  root: string;
  /** The uid the cycle runs as. */
  uid: number | null;
  /**
   * PID 1's RuntimeWatchdogUSec (see requirements.ts); asked of PID 1 when the root is "/", it is not given and a
   * watchdog device runs.
   */
  watchdogUSec?: string | null;
}

/** The requirements of cycle/requirements.ts for this cycle, on `host`: preflight refuses on each not "ok". */
export async function requirementsFor(
  options: Pick<SuspendOptions, "state">,
  lib: LibProbe,
  plan: Plan,
  host: PreflightHost = { root: "/", uid: Deno.uid() },
): Promise<Verdict[]> {
  // PID 1 is asked (a busctl process) only when a watchdog device runs: the verdict looks at its answer only then
  const watchdogUSec = "watchdogUSec" in host || host.root !== "/"
    ? host.watchdogUSec
    : (await watchdogDevices()).some((d) => d.active)
    ? await liveWatchdogUSec()
    : undefined;
  return checkRequirements({
    ...host,
    state: options.state,
    lib,
    argon2MemoryKiB: plan.maxArgon2MemoryKiB,
    watchdogUSec,
    writableOnLocked: host.root === "/" ? writableFilesOn(lockedMountpoints(plan)) : undefined,
    unsafe: plan.unsafe,
  });
}

/**
 * The options as systemd-sleep would sleep (for `--from-systemd`): sleep.conf's SuspendState= and MemorySleepMode=
 * against what the kernel offers; refuses, with systemd's reason, where systemd-sleep would not suspend.
 */
export async function sleepConfOptions(options: SuspendOptions): Promise<SuspendOptions> {
  const d = await resolveSleep();
  if (!d.ok) throw new RefusedError([`${d.reason}: ${d.fix}`]);
  return { ...options, state: d.state, memSleep: d.memSleep };
}

/** Runs `fn`, noting its milliseconds in `took[step]` (the report's `preflightMs`), whether it returns or throws. */
export async function timeStep<T>(took: Record<string, number>, step: string, fn: () => T | Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await fn();
  } finally {
    took[step] = Math.round(performance.now() - start);
  }
}

/**
 * Refuses (RefusedError, every reason at once) unless the host meets cycle/requirements.ts for this plan and
 * something is lockable; returns the job: the plan, the options, the knobs to restore, the volumes with a pinned key.
 * `took` gets the milliseconds of each step (the report's timeline: where preflight's time goes).
 */
export async function preflight(
  options: SuspendOptions,
  lib: LibcryptsetupInfo,
  ramfsRoot: string,
  plan?: Plan,
  took: Record<string, number> = {},
): Promise<Job> {
  const timed = <T>(step: string, fn: () => T | Promise<T>) => timeStep(took, step, fn);
  plan ??= await timed("discover", () => discover());
  const verdicts = await timed("requirements", () => requirementsFor(options, { ok: true, info: lib }, plan));
  const reasons = refusals(verdicts);
  if (plan.lock.length === 0 && !options.allowPlain) {
    reasons.push("no lockable LUKS volume is active (see cryptsleep plan); pass --allow-plain to suspend anyway");
  }

  const pinned: string[] = [];
  await timed("keyrings", async () => {
    for (const volume of plan.lock) {
      if ((await pinnedKeys(volume.uuid)).length > 0) pinned.push(volume.dmName);
    }
  });
  // with --release-at lock the lock itself releases the key (and refuses, unlocking, if it cannot)
  if (pinned.length && options.refuseLeak && options.releaseAt === "unlock") {
    reasons.push(
      `the volume key of ${pinned.join(", ")} is pinned in a kernel keyring and would stay in RAM during the ` +
        `suspend (--refuse-leak with --release-at unlock): use --release-at lock, or close the volume and reopen ` +
        `it with cryptsetup open --disable-keyring`,
    );
  }
  if (reasons.length) throw new RefusedError(reasons);
  return { plan, options, knobs: await timed("knobs", () => saveKnobs()), pinned, ramfsRoot };
}

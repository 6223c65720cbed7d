/**
 * @module
 * Phase 1, preflight: the plan from discovery, and every reason to refuse before anything is touched — not
 * root, no cgroup v2, the sleep state unsupported, not enough RAM for the largest Argon2 unlock (swap on a
 * volume being locked cannot help: MemAvailable counts no swap), nothing lockable (unless plain suspend is
 * allowed), libcryptsetup lacking a needed call. It also reads the knobs to restore and the volumes whose
 * key is already pinned in a kernel keyring.
 *
 * @example
 * ```ts ignore
 * const job = await preflight(defaultOptions()); // throws RefusedError with every reason
 * ```
 */
import { discover, type Plan } from "../discovery/mod.ts";
import type { LibcryptsetupInfo } from "../ffi/libcryptsetup.ts";
import { RefusedError } from "./errors.ts";
import type { Job, SuspendOptions } from "./job.ts";
import { pinnedKeys } from "./pinned/mod.ts";
import { isCgroup2Root, KNOBS, memAvailableKiB, readKnob, saveKnobs } from "../host/sysfs.ts";

/** Headroom for the agent itself beside the Argon2 memory (a deno process, measured ~60 MiB RSS). */
const AGENT_HEADROOM_KIB = 128 * 1024;

const NEEDED_SYMBOLS = ["crypt_suspend", "crypt_resume_by_passphrase", "crypt_safe_alloc", "crypt_volume_key_keyring"];

export async function preflight(
  options: SuspendOptions,
  lib: LibcryptsetupInfo,
  ramfsRoot: string,
  plan?: Plan,
): Promise<Job> {
  const reasons: string[] = [];
  if (Deno.uid() !== 0) reasons.push("not root: run cryptsleep suspend as root");
  if (!(await isCgroup2Root())) {
    reasons.push("no cgroup v2 at /sys/fs/cgroup: boot with systemd.unified_cgroup_hierarchy=1 or mount cgroup2 there");
  }
  const states = (await readKnob("/sys/power/state"))?.split(/\s+/) ?? [];
  if (!states.includes(options.state)) {
    reasons.push(
      `this kernel cannot sleep in "${options.state}" (/sys/power/state offers: ${states.join(" ") || "nothing"})`,
    );
  }
  if ((await readKnob(KNOBS.syncOnSuspend)) === null) {
    reasons.push("no /sys/power/sync_on_suspend (kernel < 5.6): the kernel's sync would hang on a locked volume");
  }
  for (const symbol of NEEDED_SYMBOLS) {
    if (!lib.symbols[symbol]) {
      reasons.push(`libcryptsetup ${lib.version} lacks ${symbol}: install libcryptsetup >= 2.4`);
    }
  }

  plan ??= await discover();
  if (plan.lock.length === 0 && !options.allowPlain) {
    reasons.push("no lockable LUKS volume is active (see cryptsleep plan); pass --allow-plain to suspend anyway");
  }
  const needKiB = plan.maxArgon2MemoryKiB + AGENT_HEADROOM_KIB;
  const haveKiB = await memAvailableKiB();
  if (haveKiB < needKiB) {
    reasons.push(
      `not enough RAM to unlock after wake: ${mib(needKiB)} MiB needed (Argon2 ${mib(plan.maxArgon2MemoryKiB)} MiB + ` +
        `agent), ${mib(haveKiB)} MiB available; close programs or lower the keyslot's pbkdf memory`,
    );
  }

  const pinned: string[] = [];
  for (const volume of plan.lock) {
    if ((await pinnedKeys(volume.uuid)).length > 0) pinned.push(volume.dmName);
  }
  // with --release-at lock the lock itself releases the key (and refuses, unlocking, if it cannot)
  if (pinned.length && options.refuseLeak && options.releaseAt === "unlock") {
    reasons.push(
      `the volume key of ${pinned.join(", ")} is pinned in a kernel keyring and would stay in RAM during the ` +
        `suspend (--refuse-leak with --release-at unlock): use --release-at lock, or close the volume and reopen ` +
        `it with cryptsetup open --disable-keyring`,
    );
  }
  if (reasons.length) throw new RefusedError(reasons);
  return { plan, options, knobs: await saveKnobs(), pinned, ramfsRoot, hostPid: Deno.pid };
}

function mib(kib: number): number {
  return Math.ceil(kib / 1024);
}

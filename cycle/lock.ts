/**
 * @module
 * Lock: for each volume, top-down, suspend the dm devices stacked above it (LVs, with lockfs so their
 * filesystems are frozen clean), then `crypt_suspend` the LUKS device, which wipes its key from dm-crypt. A
 * volume whose key is pinned (see pinned/mod.ts) is locked by the table swap instead, which releases it
 * (`--release-at unlock` leaves it to the re-open after the unlock). Each lock is verified: the mapping (or its
 * placeholder) reports suspended, and no `cryptsetup:<uuid>` key is left in a kernel keyring; a key that is left
 * is said before sleeping, or refused with `--refuse-leak`. The undo is the unlock (unlock.ts), bottom-up.
 *
 * @example
 * ```ts
 * import type { AgentContext } from "./context.ts";
 * import { lockVolumes } from "./lock.ts";
 *
 * export async function lockAll(ctx: AgentContext): Promise<void> {
 *   for (const r of await lockVolumes(ctx)) console.log(r.dmName, r.stillPinned ? "key still pinned" : "locked");
 * }
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import { CryptDevice } from "../ffi/libcryptsetup.ts";
import type { Volume } from "../discovery/mod.ts";
import { type AgentContext, warnUser } from "./context.ts";
import type { Job } from "./job.ts";
import { hostPath } from "../chroot/enter.ts";
import { forgetKeyFiles } from "./keyfile.ts";
import { goneBelow, HeaderGone, isRetired, lostDisk, retire } from "./gone.ts";
import {
  finishInterruptedReopen,
  isLive,
  onLoopDevice,
  pinnedKeys,
  placeholderName,
  releaseAtLock,
  waitUnpinned,
} from "./pinned/mod.ts";

/** What lock found per volume: whether its key stays pinned in RAM through the suspend. */
export interface LockResult {
  /** The volume. */
  dmName: string;
  /** Its key is still in a kernel keyring (said before sleeping). */
  stillPinned: boolean;
  /** Its disk was gone before the lock: retired (gone.ts) instead, its key dropped with the crypt table. */
  gone?: true;
}

/** Locks every volume of the plan, top-down. A failure leaves the rest untouched; the unlock undoes what was done. */
export async function lockVolumes(ctx: AgentContext): Promise<LockResult[]> {
  const results: LockResult[] = [];
  // a key file on a volume to lock is read again after the wake: its page-cache copy must not sleep in RAM
  await forgetKeyFiles(ctx);
  for (const volume of ctx.job.plan.lock) {
    // a long lock must not outlast the firmware cache the suspend after it needs (cycle/firmware.ts)
    await ctx.firmware?.keep(1_000);
    results.push(await lockVolume(ctx, volume));
  }
  return results;
}

/** Locks one volume (and what is stacked above it) and checks it; also used to lock again before a second sleep. */
export async function lockVolume(ctx: AgentContext, volume: Volume): Promise<LockResult> {
  finishInterruptedReopen(volume, ctx.log);
  const gone = goneBelow(volume.kname);
  if (gone.length) {
    // no header left to lock by, and nothing to unlock later: the error target drops the crypt table, key and all
    const pinned = (await pinnedKeys(volume.uuid)).length > 0;
    await retire(volume);
    // a key a kernel keyring pinned through the dropped table goes a moment later (the kernel's cleanup work)
    const stillPinned = pinned && (await waitUnpinned(volume.uuid)).length > 0;
    if (stillPinned && ctx.job.options.refuseLeak) {
      throw new Error(`lock ${volume.dmName}: ${lostDisk(gone)} and its key stays in a kernel keyring (--refuse-leak)`);
    }
    warnUser(
      ctx,
      `${volume.dmName}: ${lostDisk(gone)}: its mapping's key was dropped` +
        (stillPinned ? ", but a kernel keyring still holds it" : "") + "; its reads and writes now fail",
    );
    ctx.timeline.appendFact("diskGone", { volume: volume.dmName, devices: gone.join(", "), at: "lock" });
    return { dmName: volume.dmName, stillPinned, gone: true };
  }
  for (const above of volume.above) dm.suspend(above, { lockfs: true });
  const pinned = (await pinnedKeys(volume.uuid)).length > 0;
  // a pinned key survives luksSuspend: swap the table away so the file that pins it is closed
  const swapped = pinned && ctx.job.options.releaseAt === "lock" && await releaseAtLock(ctx, volume);
  if (!swapped) {
    using device = CryptDevice.initByName(ctx.lib, volume.dmName, detachedHeader(ctx.job, volume));
    // non-blocking: the lockfs flush can take a while, and the event loop keeps the timeline honest
    await device.suspendAsync(volume.dmName);
  }

  const locked = swapped ? dm.info(placeholderName(volume.dmName)).suspended : dm.info(volume.dmName).suspended;
  if (!locked) throw new Error(`lock ${volume.dmName}: the mapping is live after the lock`);
  const keys = swapped ? await waitUnpinned(volume.uuid) : await pinnedKeys(volume.uuid);
  const stillPinned = keys.length > 0;
  if (stillPinned) {
    if (ctx.job.options.refuseLeak) {
      throw new Error(
        `lock ${volume.dmName}: its volume key stays in a kernel keyring after luksSuspend (--refuse-leak)`,
      );
    }
    const pinnedBy = onLoopDevice(volume)
      ? "the loop device cryptsetup attached holds the opener's keyring"
      : "the device the dm table opened holds the opener's keyring (kernel 6.18)";
    const warning =
      `${volume.dmName}: its volume key stays in RAM during this suspend: kernel keyring key ${
        keys.map((k) => k.id).join(",")
      } is pinned out of root's reach: ${pinnedBy}; cryptsleep re-opens the volume after this unlock, so the ` +
      `next suspend is clean`;
    warnUser(ctx, warning);
  }
  if (swapped) ctx.timeline.appendFact("releasedAtLock", volume.dmName);
  ctx.log(`locked ${volume.dmName}${swapped ? " (table swapped)" : ""}${stillPinned ? " (key still pinned)" : ""}`);
  return { dmName: volume.dmName, stillPinned };
}

/**
 * The header path to pass libcryptsetup when it is not on the data device, as seen from the chroot. Throws while the
 * header cannot be read ({@linkcode headerReadable}).
 */
export function detachedHeader(job: Job, volume: Volume): string | undefined {
  if (!volume.header.detached) return undefined;
  headerReadable(job, volume);
  return hostPath(volume.header.path);
}

/**
 * Throws while a volume a detached header lives on is locked, or a device stacked on that volume (the LV holding the
 * file) is still suspended: libcryptsetup's read there would wait forever. The plan unlocks those first, but their
 * unlock may have failed; then this volume's unlock fails too and is asked again after theirs. Throws
 * {@linkcode HeaderGone} when that volume was retired (its disk gone): then this one cannot be unlocked at all.
 */
export function headerReadable(job: Job, volume: Volume): void {
  if (!volume.header.detached) return;
  // a holder retired for its gone disk never comes back this cycle: asking again would be for ever
  const gone = retiredHolders(volume);
  if (gone.length) throw new HeaderGone(volume, gone);
  const locked = (volume.header.on ?? []).filter((name) => {
    const holder = job.plan.lock.find((v) => v.dmName === name);
    return !holder || !isLive(holder) || holder.above.some((above) => {
      try {
        return dm.info(above).suspended;
      } catch {
        return true;
      }
    });
  });
  if (locked.length) {
    throw new Error(
      `${volume.dmName}: its detached header ${volume.header.path} is on ${locked.join(", ")}, still locked: ` +
        `unlock that first`,
    );
  }
}

/** The volumes `volume`'s detached header lives on that were retired for their gone disk (none when dm cannot tell). */
export function retiredHolders(volume: Volume): string[] {
  if (!volume.header.detached) return [];
  return (volume.header.on ?? []).filter((name) => {
    try {
      return isRetired(name);
    } catch {
      return false; // dm cannot tell: not known gone (headerReadable then counts it as locked)
    }
  });
}

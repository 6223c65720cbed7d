/**
 * @module
 * Phase 7, lock: for each volume, top-down, suspend the dm devices stacked above it (LVs, with lockfs so
 * their filesystems are frozen clean), then `crypt_suspend` the LUKS device, which wipes its key from
 * dm-crypt. A volume whose key an earlier opener's keyring pins (luksSuspend cannot remove that copy) is
 * locked by the table swap of hold.ts instead, which releases the pin (`--release-at unlock` leaves it to
 * reopen.ts). Each lock is verified: the mapping (or the placeholder) reports suspended, and no
 * `cryptsetup:<uuid>` key is left in a kernel keyring; a key that is left is said before sleeping, or refused
 * with `--refuse-leak`. The undo is the unlock (phase 9), bottom-up, by the same stack.
 *
 * @example
 * ```ts ignore
 * await using locked = await lockVolumes(ctx); // unlocks, bottom-up, when disposed
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import { CryptDevice } from "../ffi/libcryptsetup.ts";
import type { Volume } from "../discovery/mod.ts";
import { type AgentContext, warnUser } from "./context.ts";
import { keyringKeysFor } from "./keyring.ts";
import { detachedHeader, unlockVolume } from "./unlock.ts";
import { finishInterruptedReopen, keysGone } from "./reopen.ts";
import { holdName, holdVolume } from "./hold.ts";

/** What lock found per volume: whether its key stays in RAM through the suspend. */
export interface LockResult {
  dmName: string;
  keyLeft: boolean;
}

/** Locks every volume of the plan; the returned stack unlocks them in reverse when disposed. */
export async function lockVolumes(ctx: AgentContext): Promise<AsyncDisposableStack & { results: LockResult[] }> {
  await using stack = new AsyncDisposableStack();
  const results: LockResult[] = [];
  for (const volume of ctx.job.plan.lock) {
    results.push(await lockVolume(ctx, volume, stack));
  }
  return Object.assign(stack.move(), { results });
}

async function lockVolume(ctx: AgentContext, volume: Volume, stack: AsyncDisposableStack): Promise<LockResult> {
  finishInterruptedReopen(volume, ctx.log);
  for (const above of volume.above) {
    dm.suspend(above, { lockfs: true });
    stack.defer(() => Promise.resolve(dm.resume(above)));
  }
  // registered first: whatever state a failed lock leaves (suspended, keyless, held, frozen), the unlock undoes it
  stack.defer(() => unlockVolume(ctx, volume));
  const pinned = (await keyringKeysFor(volume.uuid)).length > 0;
  // a pinned key survives luksSuspend: swap the table away so the file that pins it is closed
  const held = pinned && ctx.job.options.releaseAt === "lock" && await holdVolume(ctx, volume);
  if (!held) {
    using device = CryptDevice.initByName(ctx.lib, volume.dmName, detachedHeader(ctx.job, volume));
    // non-blocking: the lockfs flush can take a while, and the event loop keeps the timeline honest
    await device.suspendAsync(volume.dmName);
  }

  const locked = held ? dm.info(holdName(volume.dmName)).suspended : dm.info(volume.dmName).suspended;
  if (!locked) throw new Error(`lock ${volume.dmName}: the mapping is live after the lock`);
  const keys = held ? await keysGone(volume.uuid) : await keyringKeysFor(volume.uuid);
  const keyLeft = keys.length > 0;
  if (keyLeft) {
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
  if (held) ctx.timeline.appendFact("heldAtLock", volume.dmName);
  ctx.log(`locked ${volume.dmName}${held ? " (table swapped)" : ""}${keyLeft ? " (key still pinned)" : ""}`);
  return { dmName: volume.dmName, keyLeft };
}

/** Whether the volume sits on a loop device (opened from an image file). */
export function onLoopDevice(volume: Volume): boolean {
  return volume.backing.some((b) => /\/loop\d+$/.test(b));
}

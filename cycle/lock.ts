/**
 * @module
 * Phase 7, lock: for each volume, top-down, suspend the dm devices stacked above it (LVs, with lockfs so
 * their filesystems are frozen clean), then `crypt_suspend` the LUKS device, which wipes its key from
 * dm-crypt. Each lock is verified: the mapping reports suspended, and no `cryptsetup:<uuid>` key is left
 * in a kernel keyring. The undo is the unlock (phase 9), bottom-up, by the same stack.
 *
 * @example
 * ```ts ignore
 * await using locked = await lockVolumes(ctx); // unlocks, bottom-up, when disposed
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import { CryptDevice } from "../ffi/libcryptsetup.ts";
import type { Volume } from "../discovery/mod.ts";
import type { AgentContext } from "./context.ts";
import { keyringKeysFor } from "./keyring.ts";
import { detachedHeader, unlockVolume } from "./unlock.ts";
import { finishInterruptedReopen } from "./reopen.ts";

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
  {
    using device = CryptDevice.initByName(ctx.lib, volume.dmName, detachedHeader(ctx.job, volume));
    // non-blocking: the lockfs flush can take a while, and the event loop keeps the timeline honest
    await device.suspendAsync(volume.dmName);
  }
  // the undo is registered before any check can throw, so a failed check still unlocks
  stack.defer(() => unlockVolume(ctx, volume));

  const info = dm.info(volume.dmName);
  if (!info.suspended) throw new Error(`lock ${volume.dmName}: crypt_suspend returned 0 but the mapping is live`);
  const keys = await keyringKeysFor(volume.uuid);
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
    ctx.timeline.warn(warning);
    // said before sleeping, where the user sees it
    ctx.console.write(`cryptsleep: warning: ${warning}\n`);
    ctx.log(`warning: ${warning}`);
  }
  ctx.log(`locked ${volume.dmName}${keyLeft ? " (key still pinned in a keyring)" : ""}`);
  return { dmName: volume.dmName, keyLeft };
}

/** Whether the volume sits on a loop device (opened from an image file). */
export function onLoopDevice(volume: Volume): boolean {
  return volume.backing.some((b) => /\/loop\d+$/.test(b));
}

/**
 * @module
 * Release at unlock: re-open a volume whose key is pinned (see mod.ts), so that every later suspend is clean.
 * After the volume is resumed (its key now in the dm-crypt table, not a keyring), with userspace still frozen:
 *
 * 1. read the live crypt table, key included (it stays in C memory);
 * 2. for a loop device cryptsetup attached, attach the same file to a fresh loop device, opened by us;
 * 3. create `cryptsleep-reopen-<name>` with that crypt table: a second, working path to the data;
 * 4. reload the volume as `linear` onto it and resume: I/O flows through it, the old table is gone, and with
 *    it the file that pinned the keyring (an autoclear loop device detaches itself);
 * 5. reload the volume with its crypt table again — the device is opened anew, by this keyring-clean
 *    process — resume, and remove the helper mapping.
 *
 * The volume keeps its name, uuid and type; from then on luksSuspend leaves no key behind.
 *
 * @example
 * ```ts
 * import type { AgentContext } from "../context.ts";
 * import type { Volume } from "../../discovery/mod.ts";
 * import { releaseAtUnlock } from "./at_unlock.ts";
 *
 * export async function afterUnlock(ctx: AgentContext, volume: Volume): Promise<void> {
 *   if (await releaseAtUnlock(ctx, volume)) console.log("re-opened: the pinned key is gone");
 * }
 * ```
 */
import { basename } from "../../host/path.ts";
import * as dm from "../../ffi/devmapper.ts";
import { attachLoop } from "../../ffi/loop.ts";
import type { Volume } from "../../discovery/mod.ts";
import type { AgentContext } from "../context.ts";
import { hostPath } from "../../chroot/enter.ts";
import { cryptsetupLoop, pinnedKeys, waitUnpinned } from "./keys.ts";
import { dieHereIfAsked } from "../runner.ts";

/** The helper mapping's name for a volume (dm names are at most 127 bytes). */
export function reopenName(dmName: string): string {
  return `cryptsleep-reopen-${dmName}`.slice(0, 127);
}

/**
 * Re-opens `volume` (resumed, with its key in the table) so no keyring key of it is left. Returns false when there
 * was nothing to release; throws when the key cannot be released, naming why, with the volume still working.
 */
export async function releaseAtUnlock(ctx: AgentContext, volume: Volume): Promise<boolean> {
  const pinned = await pinnedKeys(volume.uuid);
  if (pinned.length === 0) return false;
  const name = volume.dmName;
  const live = dm.info(name);

  using table = dm.readTableSecure(name);
  const [crypt] = table.targets;
  if (table.targets.length !== 1 || crypt.type !== "crypt") {
    throw new Error(`re-open ${name}: expected one crypt target, found ${table.targets.map((t) => t.type).join(",")}`);
  }
  if (dm.cryptKeyInKeyring(crypt.params)) {
    // cryptsleep resumes without the keyring: this volume was not locked this cycle (a lock that failed before
    // it), so there is no key in C memory to move; the next cycle releases it
    ctx.log(`re-open ${name}: not locked this cycle, its table still takes the key from the keyring; left as it is`);
    return false;
  }

  using stack = new DisposableStack();
  let params: Deno.PointerObject = crypt.params;
  const loop = await cryptsetupLoop(volume, dm.cryptDevice(crypt.params));
  if (loop) {
    const fresh = stack.use(attachLoop(hostPath(loop.settings.backingFile), { ...loop.settings }));
    params = stack.use(dm.cryptParamsOnDevice(crypt.params, fresh.devno)).pointer;
    ctx.log(`re-open ${name}: ${loop.name} → ${basename(fresh.path)} (same file, attached by cryptsleep)`);
  }

  const helper = reopenName(name);
  const through = dm.create(helper, [{ ...crypt, params }], { readOnly: live.readOnly });
  // the bed's death test stops the agent after each step: finishInterruptedReopen must find its way from each
  dieHereIfAsked("reopen:helper");
  try {
    dm.reload(name, [dm.linearOnto(crypt.length, through)], { readOnly: live.readOnly });
    dm.resume(name);
  } catch (err) {
    dm.remove(helper);
    throw err;
  }
  // the old table is gone: whatever pinned the opener's keyring is closed
  const left = await waitUnpinned(volume.uuid);
  dieHereIfAsked("reopen:through");
  // back to a crypt table of its own; the device is opened anew, by us
  dm.reload(name, [{ ...crypt, params }], { readOnly: live.readOnly });
  dieHereIfAsked("reopen:reloaded");
  dm.resume(name);
  dieHereIfAsked("reopen:resumed");
  dm.remove(helper);
  if (left.length > 0) {
    throw new Error(
      `re-open ${name}: keyring key ${left.map((k) => k.id).join(",")} is still there after the table swap`,
    );
  }
  ctx.log(`re-open ${name}: released keyring key ${pinned.map((k) => k.id).join(",")}`);
  return true;
}

/**
 * Finishes a re-open that an agent could not (it died between the table swaps), so the volume is a crypt mapping
 * again: if it still runs as `linear` through the helper, the helper's crypt table is copied back; then the
 * helper is removed. Returns whether there was one. Called before a volume is locked or unlocked.
 */
export function finishInterruptedReopen(volume: Volume, log: (m: string) => void): boolean {
  const helper = reopenName(volume.dmName);
  const through = dm.info(helper);
  if (!through.exists) return false;
  const throughHelper = dm.runsThrough(volume.dmName, through);
  if (throughHelper) {
    using crypt = dm.readTableSecure(helper);
    dm.reload(volume.dmName, crypt.targets, { readOnly: dm.info(volume.dmName).readOnly });
    dm.resume(volume.dmName);
  }
  dm.remove(helper);
  log(`re-open ${volume.dmName}: finished an interrupted re-open${throughHelper ? " (crypt table restored)" : ""}`);
  return true;
}

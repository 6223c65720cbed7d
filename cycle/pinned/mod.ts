/**
 * @module
 * The pinned key: a volume key that luksSuspend cannot take out of RAM. One word for it here — *pinned* — and
 * one for getting it out — *release*.
 *
 * The pin (measured on the bed): cryptsetup in keyring mode loads the volume key into its thread keyring, and the
 * kernel keeps that keyring alive through the credentials of a file cryptsetup opened — the device the dm table
 * opened (kernel 6.18), or the backing file of the loop device it attached for an image file (every kernel).
 * luksSuspend cannot remove it, nor can root. A table reload does not help: dm keeps a device it already has open
 * across reloads, and with it the pin. What helps is a moment where the mapping no longer uses that device.
 *
 * Three entry points, one per moment of the cycle:
 * - {@linkcode pinnedKeys} (keys.ts): is a key pinned? (preflight, doctor, the check after each lock);
 * - {@linkcode releaseAtLock} (at_lock.ts): the lock swaps the table onto a suspended placeholder, so the key
 *   leaves RAM at this very suspend; the unlock rebuilds the mapping from the passphrase;
 * - {@linkcode releaseAtUnlock} (at_unlock.ts): with `--release-at unlock`, or where the swap cannot be done,
 *   the unlocked volume is re-opened through a helper mapping, so the next suspend is clean.
 *
 * @example
 * ```ts
 * import { pinnedKeys } from "./mod.ts";
 * const pinned = await pinnedKeys("0b1f1c4e-0000-4000-8000-000000000000");
 * console.log(pinned.length ? "luksSuspend would leave this key in RAM" : "not pinned");
 * ```
 */
export { cryptsetupLoop, onLoopDevice, pinnedKeys, waitUnpinned } from "./keys.ts";
export {
  isLive,
  isSwapped,
  NotThisVolume,
  placeholderName,
  readSwapRecord,
  releaseAtLock,
  removeStrayPlaceholder,
  type SwapRecord,
  thawAfterFailedSwap,
  unlockSwapped,
} from "./at_lock.ts";
export { finishInterruptedReopen, releaseAtUnlock, reopenName } from "./at_unlock.ts";

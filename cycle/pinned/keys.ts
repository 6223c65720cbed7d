/**
 * @module
 * Finding a pinned key: libcryptsetup (LUKS2, keyring mode) loads the volume key as a `logon` key described
 * `cryptsetup:<uuid>-d<segment>`. After luksSuspend it should be gone; while an earlier opener's keyring is
 * pinned (see mod.ts) it stays, out of root's reach, and survives the suspend. /proc/keys shows it to root.
 *
 * @example
 * ```ts
 * import { pinnedKeys } from "./keys.ts";
 * console.log(await pinnedKeys("0b1f1c4e-0000-4000-8000-000000000000")); // []
 * ```
 */
import { basename } from "../../host/path.ts";
import { type ProcKey, readProcKeys } from "../../host/proc.ts";
import type { Volume } from "../../discovery/mod.ts";
import { type LoopSettings, loopSettings } from "../../ffi/loop.ts";

/** How long the kernel may take to free the keyring once nothing pins it (the key GC runs from a workqueue). */
const UNPIN_WAIT_MS = 5_000;

/** Every key in /proc/keys whose description names this LUKS uuid. */
export async function pinnedKeys(uuid: string, root = "/"): Promise<ProcKey[]> {
  return (await readProcKeys(root)).filter((k) => k.description.startsWith(`cryptsetup:${uuid}`));
}

/** Waits (bounded) for the pinned keys of `uuid` to go once nothing pins them; returns those still there. */
export async function waitUnpinned(uuid: string): Promise<ProcKey[]> {
  const until = Date.now() + UNPIN_WAIT_MS;
  for (;;) {
    const left = await pinnedKeys(uuid);
    if (left.length === 0 || Date.now() > until) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether the volume sits on a loop device (opened from an image file). */
export function onLoopDevice(volume: Volume): boolean {
  return volume.backing.some((b) => /\/loop\d+$/.test(b));
}

/** A loop device cryptsetup attached under a volume: it pins the opener's keyring and detaches itself. */
export interface CryptsetupLoop {
  /** Kernel name, e.g. `loop0`. */
  name: string;
  /** Its backing file, offset, size limit and flags, to attach the file again alike. */
  settings: LoopSettings;
}

/** The loop device under the volume with device number `devno`, when cryptsetup attached it (autoclear). */
export async function cryptsetupLoop(volume: Volume, devno: string): Promise<CryptsetupLoop | null> {
  for (const dev of volume.backing) {
    const name = basename(dev);
    if (!/^loop\d+$/.test(name)) continue;
    const number = await Deno.readTextFile(`/sys/block/${name}/dev`).then((s) => s.trim(), () => "");
    if (number !== devno) continue;
    const settings = await loopSettings(name);
    // a loop device the user attached holds the user's credentials, not cryptsetup's: keep it
    if (settings?.autoclear) return { name, settings };
  }
  return null;
}

/**
 * @module
 * Is a volume key still in a kernel keyring? libcryptsetup (LUKS2, keyring mode) loads the volume key as a
 * `logon` key described `cryptsetup:<uuid>-d<segment>`. After luksSuspend it should be gone; when the kernel
 * pins the opener's keyring (seen on 6.18, and for volumes opened from image files) it stays, out of root's
 * reach, and survives the suspend. /proc/keys shows it to root.
 *
 * @example
 * ```ts
 * import { keyringKeysFor } from "./keyring.ts";
 * console.log(await keyringKeysFor("0b1f1c4e-0000-4000-8000-000000000000")); // []
 * ```
 */
import { type ProcKey, readProcKeys } from "../discovery/proc.ts";

/** Every key in /proc/keys whose description names this LUKS uuid. */
export async function keyringKeysFor(uuid: string, root = "/"): Promise<ProcKey[]> {
  return (await readProcKeys(root)).filter((k) => k.description.startsWith(`cryptsetup:${uuid}`));
}

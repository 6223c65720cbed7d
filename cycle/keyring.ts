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
import { join } from "node:path";

export interface KeyringKey {
  id: string;
  type: string;
  description: string;
}

/** Every key in /proc/keys whose description names this LUKS uuid. */
export async function keyringKeysFor(uuid: string, root = "/"): Promise<KeyringKey[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(root, "proc/keys"));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  return parseProcKeys(text).filter((k) => k.description.startsWith(`cryptsetup:${uuid}`));
}

/** /proc/keys: `id flags usage timeout perm uid gid type description: summary`. */
export function parseProcKeys(text: string): KeyringKey[] {
  const keys: KeyringKey[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 9) continue;
    // the description may hold colons itself ("cryptsetup:<uuid>-d0"); the summary follows ": "
    const rest = f.slice(8).join(" ");
    const cut = rest.indexOf(": ");
    const description = cut >= 0 ? rest.slice(0, cut) : rest.replace(/:$/, "");
    keys.push({ id: f[0], type: f[7], description });
  }
  return keys;
}

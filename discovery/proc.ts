/**
 * Parsers for the text files discovery reads: `/proc/self/mountinfo`, `/proc/swaps`, `/etc/crypttab`,
 * `/proc/meminfo` and `/proc/keys`. Each `read*` takes the discovery root; a missing file reads as empty.
 *
 * @example
 * ```ts
 * import { readMountinfo, readSwaps } from "./proc.ts";
 * for (const m of await readMountinfo("/")) console.log(m.devno, m.mountpoint, m.fstype);
 * console.log(await readSwaps("/"));
 * ```
 * @module
 */
import { hostPath } from "./paths.ts";

/** One line of mountinfo. */
export interface MountEntry {
  devno: string;
  mountpoint: string;
  fstype: string;
  source: string;
}

/** One line of `/etc/crypttab`. */
export interface CrypttabEntry {
  name: string;
  device: string;
  /** Third field; undefined when `none`, `-` or absent. */
  keyFile?: string;
  options: Record<string, string | true>;
}

/** A key listed in `/proc/keys`. */
export interface ProcKey {
  id: string;
  type: string;
  description: string;
}

/** Decodes the octal escapes (`\040`) the kernel writes for spaces, tabs, newlines and backslashes. */
export function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

async function readOptional(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  }
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(" ");
    const sep = f.indexOf("-", 6);
    if (f.length < 10 || sep < 0) continue;
    out.push({
      devno: f[2],
      mountpoint: unescapeOctal(f[4]),
      fstype: f[sep + 1],
      source: unescapeOctal(f[sep + 2] ?? ""),
    });
  }
  return out;
}

/** Swap file or device paths from `/proc/swaps`. */
export function parseSwaps(text: string): string[] {
  return text.split("\n").slice(1).map((l) => l.trim()).filter((l) => l !== "").map((l) =>
    unescapeOctal(l.split(/\s+/)[0])
  );
}

export function parseCrypttab(text: string): CrypttabEntry[] {
  const out: CrypttabEntry[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [name, device = "", key, opts] = line.split(/\s+/);
    const options: Record<string, string | true> = {};
    for (const o of (opts ?? "").split(",")) {
      if (o === "") continue;
      const eq = o.indexOf("=");
      if (eq < 0) options[o] = true;
      else options[o.slice(0, eq)] = o.slice(eq + 1);
    }
    const entry: CrypttabEntry = { name, device, options };
    if (key !== undefined && key !== "none" && key !== "-" && key !== "") entry.keyFile = key;
    out.push(entry);
  }
  return out;
}

/** `/proc/meminfo` values in KiB. */
export function parseMeminfo(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^(\S+):\s+(\d+)/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** `/proc/keys`: `id flags usage timeout perm uid gid type description: summary`. */
export function parseProcKeys(text: string): ProcKey[] {
  const out: ProcKey[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 9) continue;
    const rest = f.slice(8).join(" ");
    // The summary follows the first ": " (descriptions like "cryptsetup:<uuid>-d0" contain bare colons).
    const sep = rest.indexOf(": ");
    out.push({ id: f[0], type: f[7], description: sep < 0 ? rest : rest.slice(0, sep) });
  }
  return out;
}

export async function readMountinfo(root = "/"): Promise<MountEntry[]> {
  return parseMountinfo(await readOptional(hostPath(root, "/proc/self/mountinfo")));
}
export async function readSwaps(root = "/"): Promise<string[]> {
  return parseSwaps(await readOptional(hostPath(root, "/proc/swaps")));
}
export async function readCrypttab(root = "/"): Promise<CrypttabEntry[]> {
  return parseCrypttab(await readOptional(hostPath(root, "/etc/crypttab")));
}
export async function readMeminfo(root = "/"): Promise<Record<string, number>> {
  return parseMeminfo(await readOptional(hostPath(root, "/proc/meminfo")));
}
export async function readProcKeys(root = "/"): Promise<ProcKey[]> {
  return parseProcKeys(await readOptional(hostPath(root, "/proc/keys")));
}

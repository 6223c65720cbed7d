/**
 * The one place where host paths (`/dev/vda2`, `/boot/hdr.img`) are turned into paths under a
 * discovery root, so recorded trees under `tests/fixtures/trees/` read like a live system.
 *
 * @example
 * ```ts
 * import { devNode, readOptional, underRoot } from "./paths.ts";
 * console.log(underRoot("/tmp/tree", "/proc/swaps")); // "/tmp/tree/proc/swaps"
 * console.log(devNode("/", "vda2")); // "/dev/vda2"
 * console.log((await readOptional("/", "/proc/swaps")).split("\n")[0]); // the header line
 * ```
 * @module
 */
import { join } from "./path.ts";

/** A host absolute path, as seen under `root` ("/" = the live system). */
export function underRoot(root: string, path: string): string {
  if (root === "/" || root === "") return path;
  return join(root, path);
}

/** `/dev/<node>` for a sysfs kernel name; sysfs writes `/` as `!` (`cciss!c0d0`). */
export function devPathOf(kname: string): string {
  return `/dev/${kname.replaceAll("!", "/")}`;
}

/** The node of a kernel block device under `root`: `<root>/dev/<kname>` (a real image file in recorded trees). */
export function devNode(root: string, kname: string): string {
  return underRoot(root, devPathOf(kname));
}

/** Undo LVM's dash doubling: `/dev/vg-a/lv` is the dm device `vg--a-lv`. */
export function lvmDmName(vg: string, lv: string): string {
  return `${vg.replaceAll("-", "--")}-${lv.replaceAll("-", "--")}`;
}

/** Whether `path` exists (a dangling symlink counts). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether host `path` exists under `root` (a recorded tree, or "/"); a dangling symlink counts. */
export function existsUnder(root: string, path: string): Promise<boolean> {
  return exists(underRoot(root, path));
}

/** The text of host file `path` under `root`; "" when it does not exist (a recorded tree may lack it). */
export async function readOptional(root: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(underRoot(root, path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  }
}

/** The trimmed text of host file `path` under `root`, or undefined when it cannot be read. */
export async function readTrimmed(root: string, path: string): Promise<string | undefined> {
  try {
    return (await Deno.readTextFile(underRoot(root, path))).trim();
  } catch {
    return undefined;
  }
}

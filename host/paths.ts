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

/**
 * Every place the kernel reads on its way to `path` under `root`: the path of each symlink it follows (its own
 * directory resolved first: a link in the middle lives on whatever filesystem that is), then the path it ends at,
 * all as host paths. A link's absolute target starts again at `root` (a recorded tree's links are its own).
 * Undefined when a part is missing or the links loop (40 of them, as the kernel's ELOOP).
 */
export async function pathReads(root: string, path: string): Promise<string[] | undefined> {
  const reads: string[] = [];
  const parts = path.split("/").filter((p) => p && p !== ".");
  let at = "/";
  let directory = true;
  for (let links = 0; parts.length;) {
    const part = parts.shift()!;
    if (part === "..") {
      // ENOTDIR, as the kernel: no `..` out of a file
      if (!directory) return undefined;
      at = at.slice(0, at.lastIndexOf("/")) || "/";
      continue;
    }
    const next = at === "/" ? `/${part}` : `${at}/${part}`;
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(underRoot(root, next));
    } catch {
      return undefined;
    }
    if (!info.isSymlink) {
      at = next;
      directory = info.isDirectory;
      continue;
    }
    if (++links > 40) return undefined;
    reads.push(next);
    const target = await Deno.readLink(underRoot(root, next));
    directory = true; // the target's own parts say what it is
    if (target.startsWith("/")) at = "/";
    parts.unshift(...target.split("/").filter((p) => p && p !== "."));
  }
  reads.push(at);
  return reads;
}

/**
 * The one place where host paths (`/dev/vda2`, `/boot/hdr.img`) are turned into paths under a
 * discovery root, so recorded trees under `tests/fixtures/trees/` read like a live system.
 *
 * @example
 * ```ts
 * import { devNode, hostPath } from "./paths.ts";
 * console.log(hostPath("/tmp/tree", "/proc/swaps")); // "/tmp/tree/proc/swaps"
 * console.log(devNode("/", "vda2")); // "/dev/vda2"
 * ```
 * @module
 */
import { join } from "node:path";

/** A host absolute path, as seen under `root` ("/" = the live system). */
export function hostPath(root: string, path: string): string {
  if (root === "/" || root === "") return path;
  return join(root, path);
}

/** `/dev/<node>` for a sysfs kernel name; sysfs writes `/` as `!` (`cciss!c0d0`). */
export function devPathOf(kname: string): string {
  return `/dev/${kname.replaceAll("!", "/")}`;
}

/** The node of a kernel block device under `root`: `<root>/dev/<kname>` (a real image file in recorded trees). */
export function devNode(root: string, kname: string): string {
  return hostPath(root, devPathOf(kname));
}

/** Undo LVM's dash doubling: `/dev/vg-a/lv` is the dm device `vg--a-lv`. */
export function lvmDmName(vg: string, lv: string): string {
  return `${vg.replaceAll("-", "--")}-${lv.replaceAll("-", "--")}`;
}

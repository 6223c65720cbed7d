/**
 * @module
 * Where the kernel's firmware loader reads from: `firmware_class.path` when it is set, then
 * `/lib/firmware/updates/<release>`, `/lib/firmware/updates`, `/lib/firmware/<release>` and `/lib/firmware`
 * (`fw_path` in drivers/base/firmware_loader/main.c), each looked up from PID 1's root. Its lookup goes through
 * every mount above those directories (`/`, a separate `/usr` under merged-usr's `/lib` link) and may go into one
 * below them. A volume with such a mount must be unlocked before the loader can read; it never reads any other
 * volume (`/home`, say). The cycle's firmware cache (cycle/firmware.ts) is kept only while one of these is locked.
 *
 * @example
 * ```ts
 * import { firmwareDirs, onFirmwarePath } from "./firmware_path.ts";
 * const dirs = await firmwareDirs("/");
 * console.log(onFirmwarePath("/", dirs), onFirmwarePath("/home", dirs)); // true false
 * ```
 */
import { pathReads, readTrimmed } from "../host/paths.ts";

/** The directories the loader looks in under `root` ("/" = live), and where the links among them lead. */
export async function firmwareDirs(root: string): Promise<string[]> {
  const release = await readTrimmed(root, "/proc/sys/kernel/osrelease");
  const custom = await readTrimmed(root, "/sys/module/firmware_class/parameters/path");
  const dirs = [
    ...(custom ? [custom] : []),
    ...(release ? [`/lib/firmware/updates/${release}`] : []),
    "/lib/firmware/updates",
    ...(release ? [`/lib/firmware/${release}`] : []),
    "/lib/firmware",
    // merged /usr: /lib is a link to usr/lib, on a /usr mount of its own where there is one
    "/usr/lib/firmware",
  ];
  const out = new Set(dirs);
  for (const dir of dirs) for (const p of await lookedAt(root, dir)) out.add(p);
  return [...out];
}

/** Whether a lookup in one of `dirs` can go through a filesystem mounted at `mountpoint`. */
export function onFirmwarePath(mountpoint: string, dirs: readonly string[]): boolean {
  const within = (path: string, dir: string) => dir === "/" || path === dir || path.startsWith(dir + "/");
  return dirs.some((d) => within(d, mountpoint) || within(mountpoint, d));
}

/**
 * Where a lookup of `dir` goes: each link it follows and where it ends ({@linkcode pathReads}), for the longest part
 * of it that exists, the rest added to where that ends (a directory not made yet may be made there later).
 */
async function lookedAt(root: string, dir: string): Promise<string[]> {
  const parts = dir.split("/").filter(Boolean);
  for (let n = parts.length; n > 0; n--) {
    const reads = await pathReads(root, `/${parts.slice(0, n).join("/")}`);
    if (!reads) continue;
    const rest = parts.slice(n).join("/");
    const end = reads.pop()!;
    return [...reads, rest ? `${end === "/" ? "" : end}/${rest}` : end];
  }
  return [];
}

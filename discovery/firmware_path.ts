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
import { readTrimmed, underRoot } from "../host/paths.ts";

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
  for (const dir of dirs) {
    const real = await realUnder(root, dir);
    if (real) out.add(real);
  }
  return [...out];
}

/** Whether a lookup in one of `dirs` can go through a filesystem mounted at `mountpoint`. */
export function onFirmwarePath(mountpoint: string, dirs: readonly string[]): boolean {
  const within = (path: string, dir: string) => dir === "/" || path === dir || path.startsWith(dir + "/");
  return dirs.some((d) => within(d, mountpoint) || within(mountpoint, d));
}

/** `path` with its links resolved, as a path under `root`; undefined when it does not exist or leads out of it. */
async function realUnder(root: string, path: string): Promise<string | undefined> {
  try {
    const real = await Deno.realPath(underRoot(root, path));
    if (root === "/" || root === "") return real;
    const base = await Deno.realPath(root);
    return real === base ? "/" : real.startsWith(base + "/") ? real.slice(base.length) : undefined;
  } catch {
    return undefined;
  }
}

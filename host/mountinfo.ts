/**
 * THE mountinfo parser: `/proc/<pid>/mountinfo` lines to {@linkcode MountEntry}, and the longest-prefix
 * lookup of the mount holding a path. Discovery reads it under a root (recorded trees), the freezer and
 * doctor to find cgroup2, the ramfs to list what is mounted below it, the hold to find the filesystem on a
 * volume as the outer process sees it.
 *
 * @example
 * ```ts
 * import { mountOf, readMountinfo } from "./mountinfo.ts";
 * const mounts = await readMountinfo("/");
 * const m = mountOf(mounts, "/sys/fs/cgroup");
 * console.log(m?.fstype, m?.mountpoint, m?.root, m?.devno, m?.source);
 * ```
 * @module
 */
import { readOptional } from "./paths.ts";

/** One line of mountinfo (see proc(5)); paths have their octal escapes decoded. */
export interface MountEntry {
  /** The mount's id (field 1), as `mnt_id:` in /proc/<pid>/fdinfo names it. */
  id: number;
  /** "major:minor" of the filesystem's device (field 3). */
  devno: string;
  /** The directory of the filesystem that is mounted here (field 4; "/" unless a bind or subtree mount). */
  root: string;
  /** Where it is mounted, in this process's view (field 5). */
  mountpoint: string;
  /** Filesystem type, e.g. "ext4", "cgroup2". */
  fstype: string;
  /** Mount source, e.g. "/dev/mapper/cryptroot", "cgroup2". */
  source: string;
  /** The filesystem's own options (the last field), e.g. "rw,mode=700". */
  superOptions: string;
}

/** Decodes the octal escapes (`\040`) the kernel writes for spaces, tabs, newlines and backslashes. */
export function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses mountinfo text; malformed lines are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(" ");
    // the optional fields end at the first "-" after the six fixed ones
    const sep = f.indexOf("-", 6);
    if (f.length < 10 || sep < 0) continue;
    out.push({
      id: Number(f[0]),
      devno: f[2],
      root: unescapeOctal(f[3]),
      mountpoint: unescapeOctal(f[4]),
      fstype: f[sep + 1],
      source: unescapeOctal(f[sep + 2] ?? ""),
      superOptions: f[sep + 3] ?? "",
    });
  }
  return out;
}

/** This process's mounts as recorded under `root` ("/" = live); a tree without the file has none. */
export async function readMountinfo(root = "/"): Promise<MountEntry[]> {
  return parseMountinfo(await readOptional(root, "/proc/self/mountinfo"));
}

/** The mounts as process `pid` sees them (its mount namespace); throws when unreadable. */
export async function readMountinfoOf(pid: number | "self"): Promise<MountEntry[]> {
  return parseMountinfo(await Deno.readTextFile(`/proc/${pid}/mountinfo`));
}

/** {@linkcode readMountinfoOf}, synchronously (for code that must not yield, e.g. an unmount loop). */
export function readMountinfoSync(pid: number | "self" = "self"): MountEntry[] {
  return parseMountinfo(Deno.readTextFileSync(`/proc/${pid}/mountinfo`));
}

/** The mount holding absolute `path` (longest mountpoint prefix; of two on the same point the later wins). */
export function mountOf(mounts: MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of mounts) {
    const mp = m.mountpoint;
    const inside = mp === "/" || path === mp || path.startsWith(mp + "/");
    if (inside && (!best || mp.length >= best.mountpoint.length)) best = m;
  }
  return best;
}

/**
 * @module
 * The files a process could write to on given filesystems: its fds open for writing (`/proc/<pid>/fdinfo` flags)
 * and its shared writable file mappings (`rw-s` in maps; sqlite's `-shm` index is one). Once those filesystems are
 * frozen by a dm suspend, one write blocks the writer for good: the cycle refuses before it begins (deno's cache
 * databases under DENO_DIR were the case found on the bed).
 *
 * @example
 * ```ts
 * import { writableFilesOn } from "./open_files.ts";
 * console.log(writableFilesOn(["/"])); // e.g. ["/root/.cache/deno/v8_code_cache_v2"]
 * ```
 */
import { mountOf, readMountinfoSync } from "./mountinfo.ts";
import { parseMaps } from "./maps.ts";

const O_ACCMODE = 3;

/** st_dev of "major:minor" as Linux encodes it (new_encode_dev). */
export function devOf(devno: string): number {
  const [major, minor] = devno.split(":").map(Number);
  return (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
}

/** Paths `pid` holds open for writing, or maps shared and writable, on a filesystem mounted at one of `mountpoints`. */
export function writableFilesOn(mountpoints: string[], pid: number | "self" = "self"): string[] {
  if (!mountpoints.length) return [];
  const mounts = readMountinfoSync(pid);
  const on = (path: string) => path.startsWith("/") && mountpoints.includes(mountOf(mounts, path)?.mountpoint ?? "");
  const ids = new Set(mounts.map((m) => m.id));
  const lockedDevs = new Set(mounts.filter((m) => mountpoints.includes(m.mountpoint)).map((m) => devOf(m.devno)));
  const found = new Set<string>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    const fd = `/proc/${pid}/fd/${entry.name}`;
    let target: string;
    let flags: number;
    let mntId: number;
    try {
      target = Deno.readLinkSync(fd);
      const info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${entry.name}`);
      flags = parseInt(/^flags:\s+([0-7]+)/m.exec(info)?.[1] ?? "0", 8);
      mntId = Number(/^mnt_id:\s+(\d+)/m.exec(info)?.[1] ?? -1);
    } catch {
      continue; // closed meanwhile
    }
    if ((flags & O_ACCMODE) === 0 || target.startsWith("/dev/")) continue;
    // on a mount this process no longer sees (opened in a chroot's root since unmounted, a lazy unmount): its
    // path names nothing here, its device does
    if (mntId >= 0 && !ids.has(mntId)) {
      const dev = (() => {
        try {
          return Deno.statSync(fd).dev;
        } catch {
          return null;
        }
      })();
      if (dev !== null && lockedDevs.has(dev)) found.add(target);
    } else if (on(target)) found.add(target);
  }
  for (const m of parseMaps(Deno.readTextFileSync(`/proc/${pid}/maps`))) {
    if (m.perms.startsWith("rw") && m.perms.endsWith("s") && m.inode !== 0 && on(m.path)) found.add(m.path);
  }
  return [...found].sort();
}

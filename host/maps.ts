/**
 * @module
 * `/proc/<pid>/maps`, read and sorted into what a process must keep resident while the disks are locked: every
 * mapping of a file (the runtime, its libraries, whatever it dlopened), never PROT_NONE reservations. And
 * `/proc/<pid>/smaps` summed into the RAM a group of processes holds ({@linkcode footprint}).
 *
 * @example
 * ```ts
 * import { parseMaps, toPin } from "./maps.ts";
 * const maps = parseMaps("7f00-7f10 r-xp 00000000 fe:01 1234 /usr/bin/deno\n7f10-7f20 ---p 00000000 00:00 0\n");
 * console.log(toPin(maps).map((m) => m.path)); // ["/usr/bin/deno"]
 * ```
 */

/** One line of /proc/<pid>/maps. */
export interface Mapping {
  /** First address. */
  start: bigint;
  /** One past the last address. */
  end: bigint;
  /** "r-xp" and the like. */
  perms: string;
  /** The file's inode; 0 for anonymous memory. */
  inode: number;
  /** The file, "[heap]", "[stack]", "[vdso]", … or "" for anonymous memory. */
  path: string;
}

/** Parses the text of /proc/<pid>/maps. */
export function parseMaps(text: string): Mapping[] {
  const out: Mapping[] = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$/);
    if (!m) continue;
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3], inode: Number(m[4]), path: m[5] });
  }
  return out;
}

/** A mapping backed by a file (a memfd or a deleted file too: it is paged from wherever it lives). */
export function isFileMapping(m: Mapping): boolean {
  return m.inode !== 0 && m.path.startsWith("/") && !m.path.startsWith("/dev/");
}

/** What to lock (chroot/pin.ts): the file mappings, except PROT_NONE ones (reserved, nothing to keep). */
export function toPin(maps: Mapping[]): Mapping[] {
  return maps.filter((m) => isFileMapping(m) && !m.perms.startsWith("---"));
}

/** RAM a group of processes holds: their files' resident pages once (shared), their anonymous pages each. */
export interface Footprint {
  /** Resident pages of mapped files, each (file, offset) once. */
  fileBytes: number;
  /** Anonymous pages of every process. */
  anonBytes: number;
}

/**
 * Sums /proc/<pid>/smaps over `pids`: the Rss of each file mapping counted once per (file, offset), as the page
 * cache holds it once however many map it, plus every mapping's Anonymous. A pid gone meanwhile counts nothing.
 */
export function footprint(pids: number[]): Footprint {
  const files = new Map<string, number>();
  let anonBytes = 0;
  for (const pid of pids) {
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/smaps`);
    } catch {
      continue;
    }
    let key: string | null = null;
    for (const line of text.split("\n")) {
      const head = line.match(/^[0-9a-f]+-[0-9a-f]+ \S{4} ([0-9a-f]+) \S+ (\d+)\s*(.*)$/);
      if (head) {
        key = head[2] !== "0" && head[3].startsWith("/") ? `${head[3]}@${head[1]}` : null;
        continue;
      }
      const kv = line.match(/^(Rss|Anonymous):\s+(\d+) kB/);
      if (!kv) continue;
      const bytes = Number(kv[2]) * 1024;
      if (kv[1] === "Anonymous") anonBytes += bytes;
      else if (key) files.set(key, Math.max(files.get(key) ?? 0, bytes));
    }
  }
  return { fileBytes: [...files.values()].reduce((a, b) => a + b, 0), anonBytes };
}

/** Reads and parses /proc/<pid>/maps ("self" by default). */
export function readMaps(pid: number | "self" = "self"): Mapping[] {
  return parseMaps(Deno.readTextFileSync(`/proc/${pid}/maps`));
}

/**
 * @module
 * Copying host files into a directory so that a chroot there sees them as the host does: each file at its
 * host path, every symlink met on the way recreated with the same target text (/lib → usr/lib, soname
 * links), and for ELF files their interpreter and shared libraries, recursively (RPATH/RUNPATH with $ORIGIN,
 * then the ld.so.conf directories). Also which shared objects this process maps, and finding a program on
 * PATH. chroot/ramfs.ts fills the agent's ramfs with it; nothing here mounts anything.
 *
 * @example
 * ```ts
 * import { Builder, mappedFiles } from "./copy.ts";
 * const b = new Builder(Deno.makeTempDirSync());
 * for (const file of mappedFiles()) {
 *   const canon = b.mirror(file);
 *   if (canon) b.elfDeps(canon);
 * }
 * console.log(`${b.files.length} files, ${b.bytes} bytes, ${Object.keys(b.links).length} links`, b.warnings);
 * ```
 */
import { dirname, join, normalize } from "node:path";
import { type ElfInfo, readElf } from "../host/elf.ts";

/** `Deno.lstatSync(path)`, or null when it cannot be stat'ed (missing, no access). */
export function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch {
    return null;
  }
}

/** The first regular file (symlinks followed) named `name` in PATH, /usr/sbin, /usr/bin, /sbin, /bin; or null. */
export function findOnPath(name: string): string | null {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
  for (const d of dirs.filter(Boolean)) {
    const st = lstatOrNull(join(d, name));
    if (st && (st.isFile || st.isSymlink)) {
      try {
        if (Deno.statSync(join(d, name)).isFile) return join(d, name);
      } catch { /* dangling */ }
    }
  }
  return null;
}

/** Library search directories: ld.so.conf(.d) plus the usual defaults. */
function librarySearchDirs(): string[] {
  const dirs: string[] = [];
  const conf = (path: string, depth = 0) => {
    let text = "";
    try {
      text = Deno.readTextFileSync(path);
    } catch {
      return;
    }
    for (const raw of text.split("\n")) {
      const line = raw.replace(/#.*/, "").trim();
      if (!line) continue;
      const inc = /^include\s+(.+)$/.exec(line);
      if (inc && depth < 3) {
        const pattern = inc[1];
        const base = dirname(pattern);
        const suffix = pattern.slice(base.length + 1);
        const re = new RegExp("^" + suffix.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*") + "$");
        try {
          for (const e of [...Deno.readDirSync(base)].sort((a, b) => a.name.localeCompare(b.name))) {
            if (re.test(e.name)) conf(join(base, e.name), depth + 1);
          }
        } catch { /* no such dir */ }
      } else if (line.startsWith("/")) dirs.push(line);
    }
  };
  conf("/etc/ld.so.conf");
  dirs.push("/lib64", "/usr/lib64", "/lib", "/usr/lib");
  return [...new Set(dirs)];
}

/**
 * Copies host files into the directory `root` at their host paths (see the module doc). Collects what it
 * copied and what it left out; copying the same file twice is a no-op.
 */
export class Builder {
  /** Sum of the copied regular files' sizes. */
  bytes = 0;
  /** Copied regular files, as paths inside `root`. */
  files: string[] = [];
  /** Symlinks recreated inside (path inside → target). */
  links: Record<string, string> = {};
  /** Things that were left out (not found, not a regular file, a library not found). */
  warnings: string[] = [];
  private done = new Set<string>();
  private elfDone = new Set<string>();
  private searchDirs = librarySearchDirs();

  /** Copies into the existing directory `root` (host path). */
  constructor(readonly root: string) {}

  /** Resolves `path` inside `root` (symlinks taken relative to `root`), creating missing dirs. */
  resolveInside(path: string): string {
    let cur = "/";
    const todo = normalize(path).split("/").filter(Boolean);
    for (let hops = 0; todo.length;) {
      const c = todo.shift()!;
      if (c === "..") {
        cur = dirname(cur);
        continue;
      }
      const next = join(cur, c);
      if (!todo.length) return next;
      const st = lstatOrNull(this.root + next);
      if (st?.isSymlink) {
        if (++hops > 40) throw new Error(`resolving ${path} inside ${this.root}: too many symlinks (ELOOP)`);
        const target = Deno.readLinkSync(this.root + next);
        todo.unshift(...target.split("/").filter(Boolean));
        if (target.startsWith("/")) cur = "/";
      } else {
        if (!st) Deno.mkdirSync(this.root + next, { mode: 0o755 });
        cur = next;
      }
    }
    return cur;
  }

  /**
   * Copies a host path at the same path, recreating every symlink met on the way (same target text), so
   * the chroot resolves it exactly like the host. Returns the canonical path.
   */
  mirror(path: string): string | null {
    let cur = "/";
    const todo = normalize(path).split("/").filter(Boolean);
    for (let hops = 0; todo.length;) {
      const c = todo.shift()!;
      if (c === "..") {
        cur = dirname(cur);
        continue;
      }
      const next = join(cur, c);
      const st = lstatOrNull(next);
      if (!st) {
        this.warnings.push(`not found, not copied: ${path}`);
        return null;
      }
      if (st.isSymlink) {
        if (++hops > 40) throw new Error(`resolving ${path}: too many symlinks (ELOOP)`);
        const target = Deno.readLinkSync(next);
        if (!lstatOrNull(this.root + next)) {
          Deno.symlinkSync(target, this.root + next);
          this.links[next] = target;
        }
        todo.unshift(...target.split("/").filter(Boolean));
        if (target.startsWith("/")) cur = "/";
        continue;
      }
      if (st.isDirectory) {
        if (!lstatOrNull(this.root + next)) Deno.mkdirSync(this.root + next, { mode: st.mode! & 0o7777 });
        cur = next;
        if (!todo.length) {
          for (const e of Deno.readDirSync(next)) this.mirror(join(next, e.name));
        }
        continue;
      }
      if (todo.length) {
        this.warnings.push(`not a directory, not copied: ${path}`);
        return null;
      }
      this.copyFile(next, next, st);
      return next;
    }
    return cur;
  }

  /** Copies one regular host file to an inside path. */
  copyFile(hostFile: string, insidePath: string, st = Deno.statSync(hostFile)): void {
    const dest = this.resolveInside(insidePath);
    if (this.done.has(dest)) return;
    if (!st.isFile) {
      this.warnings.push(`not a regular file, not copied: ${hostFile}`);
      return;
    }
    Deno.copyFileSync(hostFile, this.root + dest);
    Deno.chmodSync(this.root + dest, st.mode! & 0o7777);
    this.done.add(dest);
    this.files.push(dest);
    this.bytes += st.size;
  }

  /** For an ELF file already copied: its soname link and all its libraries, recursively. */
  elfDeps(hostFile: string): void {
    const real = Deno.realPathSync(hostFile);
    if (this.elfDone.has(real)) return;
    this.elfDone.add(real);
    const elf = readElf(real);
    if (!elf) return;
    // The loader asks ld.so.cache for the soname (e.g. libcryptsetup.so.12), a symlink beside the file.
    if (elf.soname && lstatOrNull(join(dirname(real), elf.soname))) this.mirror(join(dirname(real), elf.soname));
    if (elf.interp) {
      this.mirror(elf.interp);
    }
    for (const found of this.resolveNeeded(real, elf)) {
      this.mirror(found);
      this.elfDeps(found);
    }
  }

  /** Host paths of the libraries an ELF file needs (RPATH/RUNPATH with $ORIGIN, then ld.so.conf dirs). */
  resolveNeeded(real: string, elf: ElfInfo): string[] {
    const origin = (p: string) => p.replace(/\$(ORIGIN|\{ORIGIN\})/g, dirname(real));
    const dirs = [
      ...(elf.runpath.length ? [] : elf.rpath.map(origin)),
      ...elf.runpath.map(origin),
      ...this.searchDirs,
    ];
    const out: string[] = [];
    for (const name of elf.needed) {
      const found = name.includes("/") ? name : dirs.map((d) => join(d, name)).find((p) => {
        try {
          return Deno.statSync(p).isFile;
        } catch {
          return false;
        }
      });
      if (found) out.push(found);
      else this.warnings.push(`${real} needs ${name}, not found in ${dirs.join(":")}`);
    }
    return out;
  }
}

/** ELF files (shared objects) mapped by this process, excluding `exclude`. */
export function mappedFiles(exclude: string[] = []): string[] {
  const out = new Set<string>();
  for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
    const m = /^\S+ \S+ \S+ \S+ (\d+)\s+(\/.*)$/.exec(line);
    if (!m || m[1] === "0" || m[2].endsWith(" (deleted)") || m[2].startsWith("/dev/")) continue;
    if (exclude.some((e) => m[2] === e || m[2].startsWith(e + "/"))) continue;
    // Shared objects only: not e.g. Deno's sqlite cache files (*-shm), which also get mapped.
    if (!out.has(m[2]) && readElf(m[2]) === null) continue;
    out.add(m[2]);
  }
  return [...out];
}

/**
 * @module
 * The agent's root filesystem: a `ramfs` (never swapped, never written back to a disk) holding the Deno
 * runtime, the bundled script and every shared object the running process maps (libcryptsetup, libdevmapper
 * and their dependencies are mapped because the caller dlopened them first), each at its host path, with the
 * host's symlink chains (/lib → usr/lib, soname links) recreated so the dynamic loader finds them. `/dev`,
 * `/sys` (recursive binds, made slaves so no unmount propagates back), a new `/proc` and `/run/cryptsetup`
 * are mounted inside. Mounting uses mount(2)/umount2(2) from ffi/libc.ts (no tool is exec'd from the disk).
 *
 * @example
 * ```ts
 * import { buildRamfs } from "./ramfs.ts";
 * await using ramfs = await buildRamfs({ dir: "/run/cryptsleep/root", script: "/usr/lib/cryptsleep/cryptsleep.js" });
 * console.log(`${ramfs.files.length} files, ${(ramfs.bytes / 2 ** 20).toFixed(1)} MiB in ${ramfs.root}`);
 * ```
 */
import { dirname, join, normalize } from "node:path";
import { SysError } from "../ffi/errors.ts";
import { type ElfInfo, readElf } from "../host/elf.ts";
import { readMountinfoSync } from "../host/mountinfo.ts";
import {
  MNT_DETACH,
  mount,
  MS_BIND,
  MS_NODEV,
  MS_NOEXEC,
  MS_NOSUID,
  MS_PRIVATE,
  MS_REC,
  umount2,
} from "../ffi/libc.ts";

const MS_SLAVE = 1 << 19;

/** Where the deno runtime is inside the chroot. */
export const DENO_PATH = "/bin/deno";
/** Where the bundled script is inside the chroot. */
export const SCRIPT_PATH = "/cryptsleep.js";
/** DENO_DIR inside the chroot (deno's cache; empty, as the bundle needs nothing from it). */
export const DENO_DIR = "/deno-dir";

/** A built ramfs; dispose (or {@linkcode Ramfs.dispose}) unmounts and removes it. */
export interface Ramfs extends AsyncDisposable {
  /** Where the ramfs is mounted in the real root. */
  root: string;
  /** Sum of the copied regular files' sizes. */
  bytes: number;
  /** Copied regular files, as paths inside the chroot. */
  files: string[];
  /** Symlinks recreated inside (path inside → target). */
  links: Record<string, string>;
  /** The script inside (SCRIPT_PATH), or null when /bin/deno is a compiled binary embedding it. */
  script: string | null;
  /** ELF interpreter of /bin/deno, canonical inside path (e.g. /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2). */
  loader: string | null;
  /** A `chroot` program copied in (inside path, its libraries too), so entering needs nothing from the disk. */
  chroot: { path: string; static: boolean; busybox: boolean; libraryDirs: string[] } | null;
  /** Mount points inside (inside paths), in mount order. */
  mounts: string[];
  /** Things that were left out or done in a degraded way (e.g. a lazy unmount). Never secrets. */
  warnings: string[];
  /** Unmounts everything and removes the directory. Idempotent; throws an Error listing failures at the end. */
  dispose(): Promise<void>;
}

/** What {@linkcode buildRamfs} builds. */
export interface BuildRamfsOptions {
  /** Where to mount the ramfs (absolute, below /). */
  dir: string;
  /** The bundled script to copy in, or null when the runtime is a compiled binary embedding it. */
  script: string | null;
  /** Host paths copied at the same path (directories recursively; ELF files with their libraries). */
  extraFiles?: string[];
  /** The chroot program to copy in; default: `chroot` from PATH, /usr/sbin, /usr/bin, /sbin, /bin. */
  chrootBin?: string;
  /** Mount /dev, /proc, /sys, /run/cryptsetup inside (default true). */
  mountSystem?: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// helpers

function errText(err: unknown): string {
  if (err instanceof SysError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch {
    return null;
  }
}

/** Mount points at or below `dir` from /proc/self/mountinfo, deepest first. */
export function mountsUnder(dir: string): string[] {
  const out = readMountinfoSync().map((m) => m.mountpoint).filter((p) => p === dir || p.startsWith(dir + "/"));
  return out.sort((a, b) => b.split("/").length - a.split("/").length);
}

function findOnPath(name: string): string | null {
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

// ---------------------------------------------------------------------------------------------------------
// building

class Builder {
  bytes = 0;
  files: string[] = [];
  links: Record<string, string> = {};
  warnings: string[] = [];
  private done = new Set<string>();
  private elfDone = new Set<string>();
  private searchDirs = librarySearchDirs();

  constructor(readonly root: string) {}

  /** Resolves `path` inside the ramfs (symlinks taken relative to the ramfs), creating missing dirs. */
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

/** Mounts a ramfs at `dir` and fills it; see the module doc. */
export async function buildRamfs(opts: BuildRamfsOptions): Promise<Ramfs> {
  const dir = normalize(opts.dir).replace(/\/$/, "");
  if (!dir.startsWith("/") || dir === "/") throw new Error(`ramfs dir must be an absolute path below /: ${opts.dir}`);
  if (mountsUnder(dir).length) {
    throw new Error(`${dir} is already a mount point (left over by an earlier run?): unmount it (umount -R ${dir})`);
  }
  // Remember which parents we create, to remove them again.
  const created: string[] = [];
  for (let p = dir; !lstatOrNull(p); p = dirname(p)) created.unshift(p);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });

  const mounts: string[] = [];
  let disposed = false;
  const b = new Builder(dir);
  const ramfs: Ramfs = {
    root: dir,
    bytes: 0,
    files: b.files,
    links: b.links,
    script: opts.script === null ? null : SCRIPT_PATH,
    loader: null,
    chroot: null,
    mounts,
    warnings: b.warnings,
    async dispose() {
      if (disposed) return;
      disposed = true;
      const errors: string[] = [];
      // Deepest first; a busy one (e.g. the agent still runs) is detached lazily and freed by the kernel when
      // its last user leaves.
      for (let i = 0; i < 1000; i++) {
        const target = mountsUnder(dir)[0];
        if (!target) break;
        try {
          umount2(target);
        } catch (err) {
          try {
            umount2(target, MNT_DETACH);
            b.warnings.push(`${errText(err)}; detached lazily`);
          } catch (err2) {
            errors.push(errText(err2));
            break;
          }
        }
      }
      const left = mountsUnder(dir);
      if (left.length) errors.push(`still mounted after unmounting: ${left.join(" ")}`);
      else {
        for (const p of [...created].reverse().concat(created.length ? [] : [dir])) {
          try {
            await Deno.remove(p);
          } catch (err) {
            if (err instanceof Deno.errors.NotFound) continue;
            // A parent someone else put files into meanwhile stays.
            if (p !== dir && /os error 39/.test(String(err))) continue;
            errors.push(`rmdir ${p}: ${errText(err)}`);
          }
        }
      }
      if (errors.length) throw new Error(`removing the ramfs at ${dir}: ${errors.join("; ")}`);
    },
    [Symbol.asyncDispose]() {
      return this.dispose();
    },
  };

  try {
    mount("cryptsleep-ramfs", dir, "ramfs", MS_NOSUID | MS_NODEV, "mode=0700");
    mounts.push("/");
    // Nothing mounted below must propagate to (or from) the host's mount peers.
    mount(null, dir, null, MS_PRIVATE);

    const exe = Deno.realPathSync(Deno.execPath());
    b.copyFile(exe, DENO_PATH);
    b.elfDeps(exe);
    const interp = readElf(exe)?.interp ?? null;
    // Canonical, so it is also valid from outside the chroot (absolute symlinks inside would escape).
    ramfs.loader = interp ? Deno.realPathSync(interp) : null;
    if (opts.script !== null) b.copyFile(opts.script, SCRIPT_PATH);

    let libDir: string | null = null;
    for (const file of mappedFiles([exe, dir])) {
      const canon = b.mirror(file);
      if (canon) b.elfDeps(canon);
      if (/\/libcryptsetup\.so/.test(file) || (!libDir && /\/libc\.so/.test(file))) libDir = dirname(file);
    }
    b.mirror("/etc/ld.so.cache");
    // dlopened later by libcryptsetup / OpenSSL: token plugins and provider modules, with their libraries.
    for (const sub of libDir ? ["ossl-modules", "cryptsetup"] : []) {
      const p = join(libDir!, sub);
      if (!lstatOrNull(p)) continue;
      b.mirror(p);
      for (const e of Deno.readDirSync(p)) if (e.isFile) b.elfDeps(join(p, e.name));
    }
    for (const extra of opts.extraFiles ?? []) {
      const canon = b.mirror(extra);
      if (canon && Deno.statSync(canon).isFile) b.elfDeps(canon);
    }

    const chrootHost = opts.chrootBin ?? findOnPath("chroot");
    if (chrootHost) {
      const canon = b.mirror(chrootHost)!;
      b.elfDeps(canon);
      const real = Deno.realPathSync(chrootHost);
      const elf = readElf(real);
      // Canonical (symlink-free) directories of its libraries: valid from outside the chroot too.
      const libraryDirs = elf ? b.resolveNeeded(real, elf).map((f) => dirname(Deno.realPathSync(f))) : [];
      ramfs.chroot = {
        path: canon,
        static: !elf?.interp,
        busybox: /busybox/.test(real),
        libraryDirs: [...new Set(libraryDirs)],
      };
    } else b.warnings.push("no chroot program found (PATH, /usr/sbin, /usr/bin, /sbin, /bin): spawnChrooted needs one");

    for (const d of ["/tmp", DENO_DIR]) {
      const p = b.resolveInside(d + "/.");
      if (!lstatOrNull(dir + p)) Deno.mkdirSync(dir + p);
      Deno.chmodSync(dir + p, d === "/tmp" ? 0o1777 : 0o700);
    }

    if (opts.mountSystem ?? true) {
      const target = (p: string) => {
        const inside = b.resolveInside(p + "/.");
        if (!lstatOrNull(dir + inside)) Deno.mkdirSync(dir + inside, { mode: 0o755 });
        return dir + inside;
      };
      // /dev and /sys recursively (ptys, /dev/mapper links, /sys/fs/cgroup come along), then slave so an
      // unmount here never propagates back to the host's /dev or /sys.
      for (const p of ["/dev", "/sys"]) {
        mount(p, target(p), null, MS_BIND | MS_REC);
        mounts.push(p);
        mount(null, target(p), null, MS_SLAVE | MS_REC);
      }
      mount("proc", target("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
      mounts.push("/proc");
      // libcryptsetup's locks live in /run/cryptsetup; share them with the host's.
      await Deno.mkdir("/run/cryptsetup", { recursive: true, mode: 0o700 });
      mount("/run/cryptsetup", target("/run/cryptsetup"), null, MS_BIND);
      mount(null, target("/run/cryptsetup"), null, MS_PRIVATE);
      mounts.push("/run/cryptsetup");
    }
    ramfs.bytes = b.bytes;
    return ramfs;
  } catch (err) {
    try {
      await ramfs.dispose();
    } catch (cleanup) {
      throw new SuppressedError(cleanup, err, `building the ramfs at ${dir} failed and so did the cleanup`);
    }
    throw err;
  }
}

/**
 * For a dry run: what buildRamfs would copy at least (the runtime, the script, the shared objects mapped
 * now), without mounting or writing anything. Their libraries' own dependencies and plugins come on top.
 */
export function planRamfs(opts: { dir: string; script: string | null }): { files: string[]; bytes: number } {
  const files = [Deno.realPathSync(Deno.execPath()), ...(opts.script ? [opts.script] : [])];
  files.push(...mappedFiles([files[0], opts.dir]));
  const bytes = files.reduce((sum, f) => sum + Deno.statSync(f).size, 0);
  return { files, bytes };
}

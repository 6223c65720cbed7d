/**
 * @module
 * The agent's root filesystem: a `ramfs` (never swapped, never written back to a disk) holding the Deno
 * runtime, the bundled script and every shared object the running process maps (libcryptsetup, libdevmapper
 * and their dependencies are mapped because the caller dlopened them first), each at its host path, with the
 * host's symlink chains (/lib → usr/lib, soname links) recreated so the dynamic loader finds them. `/dev`,
 * `/sys` (recursive binds, made slaves so no unmount propagates back), a new `/proc` and `/run/cryptsetup`
 * are mounted inside. Mounting uses mount(2)/umount2(2) from ffi/libc.ts (no tool is exec'd from the disk).
 * The copying itself (symlink chains, libraries, what this process maps) is chroot/copy.ts.
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
import { readElf } from "../host/elf.ts";
import { Builder, findOnPath, lstatOrNull, mappedFiles } from "./copy.ts";
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

/** Mount points at or below `dir` from /proc/self/mountinfo, deepest first. */
export function mountsUnder(dir: string): string[] {
  const out = readMountinfoSync().map((m) => m.mountpoint).filter((p) => p === dir || p.startsWith(dir + "/"));
  return out.sort((a, b) => b.split("/").length - a.split("/").length);
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

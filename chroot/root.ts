/**
 * @module
 * The root the cycle's two processes chroot into once they are pinned (chroot/pin.ts): an empty `ramfs` with only
 * `/dev`, `/sys` (recursive binds, made slaves so no unmount propagates back), a new `/proc` and `/run/cryptsetup`
 * (libcryptsetup's locks) mounted inside. Nothing else is there, so a path nobody foresaw fails at once with ENOENT
 * instead of waiting forever on a locked disk. Mounting uses mount(2)/umount2(2) from ffi/libc.ts.
 *
 * @example
 * ```ts
 * import { mountRoot } from "./root.ts";
 * await using root = await mountRoot({ dir: "/run/cryptsleep/root" });
 * console.log(root.mounts); // ["/", "/dev", "/sys", "/proc", "/run/cryptsetup"]
 * ```
 */
import { dirname, normalize } from "../host/path.ts";
import { SysError } from "../ffi/errors.ts";
import { wipeArenas } from "../ffi/secret_arena.ts";
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

/** A mounted root; dispose (or {@linkcode Root.dispose}) unmounts and removes it. */
export interface Root extends AsyncDisposable {
  /** Where it is mounted in the real root. */
  root: string;
  /** Mount points inside (inside paths), in mount order. */
  mounts: string[];
  /** What was done in a degraded way (a lazy unmount). */
  warnings: string[];
  /** Unmounts everything and removes the directory. Idempotent; throws an Error listing failures at the end. */
  dispose(): Promise<void>;
}

function errText(err: unknown): string {
  if (err instanceof SysError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

/** Mount points at or below `dir` from /proc/self/mountinfo, deepest first. */
export function mountsUnder(dir: string): string[] {
  const out = readMountinfoSync().map((m) => m.mountpoint).filter((p) => p === dir || p.startsWith(dir + "/"));
  return out.sort((a, b) => b.split("/").length - a.split("/").length);
}

function lstatOrNull(p: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(p);
  } catch {
    return null;
  }
}

/**
 * Unmounts whatever is mounted at or below `dir`, deepest first and detached (a process may still be chrooted there),
 * then removes the directory: for a root whose process died before its own dispose (a crashed run, or the
 * supervisor finishing a cycle). Returns the mount points it detached.
 */
export async function detachRoot(dir: string): Promise<string[]> {
  const mounts = mountsUnder(dir);
  // a dead process's secrets: zeroed before the unmount frees their pages (the unmount goes on regardless)
  let unwiped: unknown = null;
  if (mounts.includes(dir)) {
    try {
      wipeArenas(dir);
    } catch (err) {
      unwiped = err;
    }
  }
  for (const m of mounts) umount2(m, MNT_DETACH);
  await Deno.remove(dir).catch(() => {});
  if (unwiped) throw unwiped;
  return mounts;
}

/** Mounts the empty root at `dir`; see the module doc. */
export async function mountRoot(opts: { dir: string }): Promise<Root> {
  const dir = normalize(opts.dir).replace(/\/$/, "");
  if (!dir.startsWith("/") || dir === "/") throw new Error(`root dir must be an absolute path below /: ${opts.dir}`);
  if (mountsUnder(dir).length) {
    throw new Error(`${dir} is already a mount point (left over by an earlier run?): unmount it (umount -R ${dir})`);
  }
  // the parents we create, to remove them again
  const created: string[] = [];
  for (let p = dir; !lstatOrNull(p); p = dirname(p)) created.unshift(p);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });

  const mounts: string[] = [];
  const warnings: string[] = [];
  let disposed = false;
  const root: Root = {
    root: dir,
    mounts,
    warnings,
    async dispose() {
      if (disposed) return;
      disposed = true;
      const errors: string[] = [];
      try {
        wipeArenas(dir);
      } catch (err) {
        errors.push(`wiping the secret arenas: ${errText(err)}`);
      }
      // deepest first; a busy one (a process still chrooted here) is detached and freed when it leaves
      for (let i = 0; i < 1000; i++) {
        const target = mountsUnder(dir)[0];
        if (!target) break;
        try {
          umount2(target);
        } catch (err) {
          try {
            umount2(target, MNT_DETACH);
            warnings.push(`${errText(err)}; detached lazily`);
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
            // a parent someone else put files into meanwhile stays
            if (p !== dir && /os error 39/.test(String(err))) continue;
            errors.push(`rmdir ${p}: ${errText(err)}`);
          }
        }
      }
      if (errors.length) throw new Error(`removing the root at ${dir}: ${errors.join("; ")}`);
    },
    [Symbol.asyncDispose]() {
      return this.dispose();
    },
  };

  try {
    mount("cryptsleep-root", dir, "ramfs", MS_NOSUID | MS_NODEV, "mode=0700");
    mounts.push("/");
    // nothing mounted below must propagate to (or from) the host's mount peers
    mount(null, dir, null, MS_PRIVATE);
    const inside = (p: string) => {
      Deno.mkdirSync(dir + p, { recursive: true, mode: 0o755 });
      return dir + p;
    };
    // /dev and /sys recursively (ptys, /dev/mapper, /sys/fs/cgroup come along), then slave so an unmount here
    // never propagates back to the host's /dev or /sys
    for (const p of ["/dev", "/sys"]) {
      mount(p, inside(p), null, MS_BIND | MS_REC);
      mounts.push(p);
      mount(null, dir + p, null, MS_SLAVE | MS_REC);
    }
    mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    mounts.push("/proc");
    // libcryptsetup's locks live in /run/cryptsetup; shared with the host's
    await Deno.mkdir("/run/cryptsetup", { recursive: true, mode: 0o700 });
    mount("/run/cryptsetup", inside("/run/cryptsetup"), null, MS_BIND);
    mount(null, dir + "/run/cryptsetup", null, MS_PRIVATE);
    mounts.push("/run/cryptsetup");
    return root;
  } catch (err) {
    try {
      await root.dispose();
    } catch (cleanup) {
      throw new SuppressedError(cleanup, err, `mounting the root at ${dir} failed and so did the cleanup`);
    }
    throw err;
  }
}

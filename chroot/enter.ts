/**
 * @module
 * Entering the cycle's root (chroot/root.ts) and leaving it again, for the whole process: chroot(2) there with a
 * directory fd of the real root kept open, and back with fchdir(fd) + chroot("."). While inside,
 * {@linkcode hostPath} reaches a path of the real root through that fd (`/proc/self/fd/N/...`): the mount points to
 * syncfs, a detached header, a loop file.
 *
 * Inside, secrets live in the process's secret arena, a file of the root (ffi/secret_arena.ts): if the process is
 * killed holding a key, whoever outlives it zeroes that file, where crypt_safe_alloc memory would be freed unzeroed.
 *
 * @example
 * ```ts
 * import { enterRoot, hostPath } from "./enter.ts";
 * using inside = enterRoot("/run/cryptsleep/root"); // as root, with the root mounted
 * console.log(hostPath("/home")); // "/proc/self/fd/7/home"
 * inside.leave();
 * ```
 */
import { chroot, chrootToFd, closeFd, O_CLOEXEC, O_DIRECTORY, O_RDONLY, openFd } from "../ffi/libc.ts";
import { type MountEntry, readMountinfoSync } from "../host/mountinfo.ts";
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import { SecretArena } from "../ffi/secret_arena.ts";

let realRootFd: number | null = null;
// inside, /proc/self/mountinfo shows only the mounts below the root: the real root's, read on the way in
let realMounts: MountEntry[] | null = null;

/** Whether this process is inside a root entered with {@linkcode enterRoot} (and not yet left). */
export function isChrooted(): boolean {
  return realRootFd !== null;
}

/** Inside the root; dispose (or leave) to go back to the real one. */
export interface Inside extends Disposable {
  /** Where we are chrooted, as a path of the real root. */
  dir: string;
  /** Back to the real root. Idempotent. */
  leave(): void;
}

/** chroot(2) into `dir` (a mounted root) for the whole process; see the module doc. */
export function enterRoot(dir: string): Inside {
  if (realRootFd !== null) throw new Error(`already chrooted (entering ${dir}): leave first`);
  const mounts = readMountinfoSync();
  const fd = openFd("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  try {
    chroot(dir);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  realRootFd = fd;
  realMounts = mounts;
  let arena: SecretArena;
  try {
    arena = SecretArena.open("/");
  } catch (err) {
    chrootToFd(fd);
    realRootFd = null;
    realMounts = null;
    closeFd(fd);
    throw err;
  }
  SafeBuffer.useArena(arena);
  let left = false;
  return {
    dir,
    leave() {
      if (left) return;
      // secrets still out stay where they are until freed; new ones outside come from crypt_safe_alloc
      SafeBuffer.useArena(null);
      try {
        arena.retire();
      } catch { /* its pages stay mapped, zeroed; the root's unmount removes the file */ }
      chrootToFd(fd);
      left = true;
      realRootFd = null;
      realMounts = null;
      closeFd(fd);
    },
    [Symbol.dispose]() {
      this.leave();
    },
  };
}

/** A path of the real root as this process reaches it now: itself outside the root, through the kept fd inside. */
export function hostPath(path: string): string {
  return realRootFd === null ? path : `/proc/self/fd/${realRootFd}${path}`;
}

/** The real root's mounts (mount points as paths of the real root): read now outside, as on the way in inside. */
export function hostMountinfo(): MountEntry[] {
  return realMounts ?? readMountinfoSync();
}

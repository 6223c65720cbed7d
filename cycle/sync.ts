/**
 * @module
 * Phases 4 and 6. `sync()` flushes everything while all processes still run (a global sync later would hang
 * on frozen FUSE daemons). After the freeze, `syncfs()` flushes only the filesystems on the volumes about to
 * be locked, so the lock finds nothing dirty. Neither has an undo: flushing changes no state to restore.
 *
 * @example
 * ```ts
 * import { syncAll } from "./sync.ts";
 * await syncAll();
 * ```
 */
import { syncAsync, syncfs } from "../ffi/libc.ts";
import { hostPath } from "../chroot/enter.ts";
import type { Job } from "./job.ts";

/** Non-blocking: with much dirty data it takes seconds, and the timeline's clock keeps running. */
export async function syncAll(): Promise<void> {
  await syncAsync();
}

/**
 * syncfs on each filesystem mounted from a volume to lock; returns the mount points flushed. The process is
 * chrooted in the cycle's root, so it reaches each mount point through the real root it kept (chroot/enter.ts).
 */
export async function syncVolumeFilesystems(job: Job): Promise<string[]> {
  const done: string[] = [];
  for (const volume of job.plan.lock) {
    for (const mount of volume.mounts) {
      if (done.includes(mount.mountpoint)) continue;
      await syncfs(hostPath(mount.mountpoint));
      done.push(mount.mountpoint);
    }
  }
  return done;
}

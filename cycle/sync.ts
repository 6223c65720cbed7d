/**
 * @module
 * `sync()` flushes everything while all processes still run (a global sync later would hang on frozen FUSE
 * daemons). It runs as a child process (`sync`, coreutils or busybox) watched for progress: a filesystem that cannot
 * write back (a dead NFS server, a stalled FUSE daemon, a hung disk) would hold it forever, and the kernel's freezer
 * could not suspend past it either. When writeback makes no progress for the given time, the cycle gives up with
 * nothing frozen or locked, and leaves the child behind (it is in the kernel's hands; it finishes when the device
 * does). After the freeze, `syncfs()` flushes only the filesystems on the volumes about to be locked, so the lock
 * finds nothing dirty. Neither has an undo: flushing changes no state to restore.
 *
 * @example
 * ```ts
 * import { syncAll } from "./sync.ts";
 * const ms = await syncAll({ stallMs: 30_000 }); // throws SyncStalled after 30 s without writeback progress
 * console.log(`synced in ${ms} ms`);
 * ```
 */
import { syncAsync, syncfs } from "../ffi/libc.ts";
import { hostPath } from "../chroot/enter.ts";
import type { Job } from "./job.ts";
import { goneBelow } from "./gone.ts";

/** Where `sync(1)` is looked for. */
const SYNC_BINARIES = ["/usr/bin/sync", "/bin/sync"];

/** The longest a sync may take, progress or not. */
export const SYNC_LIMIT_MS = 10 * 60_000;

/** sync() made no writeback progress for `stallMs`: a filesystem cannot write back. */
export class SyncStalled extends Error {
  /** `stallMs`: how long without progress; `totalMs`: since sync began. */
  constructor(readonly stallMs: number, readonly totalMs: number) {
    super(
      (totalMs >= SYNC_LIMIT_MS && stallMs < totalMs
        ? `sync() has not finished in ${Math.round(totalMs / 1000)} s, the most it may take: a `
        : `sync() made no progress for ${Math.round(stallMs / 1000)} s (${Math.round(totalMs / 1000)} s in all): a `) +
        "filesystem cannot write back (a dead NFS server, a stalled FUSE daemon, a hung disk), and the kernel could " +
        "not suspend past it either; nothing was frozen or locked. Find it with `grep -E 'nfs|fuse' /proc/mounts` " +
        "and `dmesg`; unmount it (umount -f / -l) or bring it back, then suspend again",
    );
    this.name = "SyncStalled";
  }
}

/** Pages written back so far and pages still dirty or under writeback (/proc/vmstat), or null when unreadable. */
async function writeback(): Promise<{ written: number; pending: number } | null> {
  try {
    const v: Record<string, number> = {};
    for (const line of (await Deno.readTextFile("/proc/vmstat")).split("\n")) {
      const [k, n] = line.split(" ");
      v[k] = Number(n);
    }
    // FUSE writes back through temporary pages, counted apart
    const pending = (v.nr_dirty ?? 0) + (v.nr_writeback ?? 0) + (v.nr_writeback_temp ?? 0);
    return { written: v.nr_written ?? 0, pending };
  } catch {
    return null;
  }
}

/**
 * Runs `sync` and waits for it while writeback makes progress (pages written back, or fewer dirty); throws
 * {@linkcode SyncStalled} after `stallMs` without progress or after {@linkcode SYNC_LIMIT_MS}. Returns the ms it took.
 */
export async function syncAll(opts: { stallMs: number; pollMs?: number }): Promise<number> {
  const start = performance.now();
  const bin = SYNC_BINARIES.find(isFile);
  // no sync(1): the call itself, unwatched
  if (!bin) return await syncAsync(), Math.round(performance.now() - start);
  const child = new Deno.Command(bin, { stdin: "null", stdout: "null", stderr: "inherit" }).spawn();
  let exited = false;
  const status = child.status.finally(() => exited = true);
  let seen = await writeback();
  let progressAt = performance.now();
  for (;;) {
    const tick = new Promise<null>((r) => setTimeout(r, opts.pollMs ?? 500, null));
    const done = await Promise.race([status, tick]);
    if (done) {
      if (!done.success) throw new Error(`${bin} exited with code ${done.code}`);
      return Math.round(performance.now() - start);
    }
    const now = await writeback();
    // no /proc/vmstat to judge by: progress is assumed, and only the limit ends the wait
    if (!now || !seen || now.written > seen.written || now.pending < seen.pending) progressAt = performance.now();
    seen = now ?? seen;
    const elapsed = performance.now() - start;
    if (!exited && (performance.now() - progressAt >= opts.stallMs || elapsed >= SYNC_LIMIT_MS)) {
      // left to the kernel: it exits when the filesystem can write again, and this process need not wait
      child.unref();
      throw new SyncStalled(performance.now() - progressAt, elapsed);
    }
  }
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * syncfs on each filesystem mounted from a volume to lock; returns the mount points flushed. The process is
 * chrooted in the cycle's root, so it reaches each mount point through the real root it kept (chroot/enter.ts).
 */
export async function syncVolumeFilesystems(job: Job): Promise<string[]> {
  const done: string[] = [];
  for (const volume of job.plan.lock) {
    // its disk is gone: nothing can reach it (syncfs fails with EIO); the lock retires it
    if (goneBelow(volume.kname).length) continue;
    for (const mount of volume.mounts) {
      if (done.includes(mount.mountpoint)) continue;
      await syncfs(hostPath(mount.mountpoint));
      done.push(mount.mountpoint);
    }
  }
  return done;
}

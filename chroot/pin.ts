/**
 * @module
 * Keeps the running process off the disks while they are locked, without copying anything: mlock(2) on each of
 * its file mappings (the runtime, the libraries it loaded, whatever they dlopened), so no page of code is ever read
 * back from a locked disk. Its anonymous memory is not locked: V8 madvises its heap pages away, which a locked
 * range refuses (it aborts; `mlockall` for the same reason). That memory stays out of swap by the tool's own cgroup
 * (`memory.swap.max=0`, cgroup/own.ts) from the moment the process joins it.
 *
 * Load everything first: a library dlopened after the pin is not pinned, and inside the cycle's root
 * (chroot/enter.ts) it is not found at all.
 *
 * @example
 * ```ts
 * import { pinMappings } from "./pin.ts";
 * using pinned = pinMappings(); // as root (CAP_IPC_LOCK: no RLIMIT_MEMLOCK)
 * console.log(`${(pinned.bytes / 2 ** 20).toFixed(1)} MiB of ${pinned.files.length} files locked`);
 * ```
 */
import { mlock, munlock } from "../ffi/libc.ts";
import { SysError } from "../ffi/errors.ts";
import { type Mapping, readMaps, toPin } from "../host/maps.ts";

const ENOMEM = 12;

/** The file mappings locked; dispose (or release) unlocks them. */
export interface Pinned extends Disposable {
  /** Bytes of the locked ranges. */
  bytes: number;
  /** The files mapped, each once. */
  files: string[];
  /** munlock every range still mapped. Idempotent. */
  release(): void;
}

function fileRanges(): Mapping[] {
  return toPin(readMaps());
}

/** Locks every file mapping of this process (see the module doc). */
export function pinMappings(): Pinned {
  const locked: Mapping[] = [];
  const release = () => {
    for (const m of locked.splice(0)) {
      try {
        munlock(m.start, m.end - m.start, m.path);
      } catch {
        // unmapped meanwhile (a library closed): its lock went with it
      }
    }
  };
  try {
    for (const m of fileRanges()) {
      try {
        mlock(m.start, m.end - m.start, m.path);
      } catch (err) {
        // unmapped between reading maps and the call (a worker's library closed): nothing there to keep
        if (err instanceof SysError && err.errno === ENOMEM && !fileRanges().some((n) => n.start === m.start)) continue;
        throw err;
      }
      locked.push(m);
    }
  } catch (err) {
    release();
    throw err;
  }
  return {
    bytes: locked.reduce((sum, m) => sum + Number(m.end - m.start), 0),
    files: [...new Set(locked.map((m) => m.path))],
    release,
    [Symbol.dispose]() {
      release();
    },
  };
}

/** For a dry run: what {@linkcode pinMappings} would lock now, without locking. */
export function planPin(): { bytes: number; files: string[] } {
  const maps = fileRanges();
  return {
    bytes: maps.reduce((sum, m) => sum + Number(m.end - m.start), 0),
    files: [...new Set(maps.map((m) => m.path))],
  };
}

/**
 * Secret memory that outlives a killed process until someone zeroes it: pages of a file on the cycle's ramfs,
 * mapped shared.
 *
 * A process killed while it holds a key (SIGKILL, the OOM killer) cannot zero its memory, and the kernel does not
 * zero the pages it frees (unless booted with `init_on_free=1`): the key of a volume the dead process was unlocking
 * stayed in free RAM, and was found there during the next suspend (the bed's death test, kernel 6.1). The pages of a
 * ramfs file are not freed with the process that mapped them: they stay the file's until it is removed. So whoever
 * outlives the process zeroes the file first ({@linkcode wipeArenas}): the supervisor as soon as it sees the cycle's
 * process gone, and the unmount of the cycle's root (a run's own end, or the next run cleaning a crashed one).
 * ramfs pages are never swapped out.
 *
 * Every block is zeroed when it is freed, so an arena file only ever holds the secrets still in use.
 *
 * @example
 * ```ts
 * import { SecretArena, wipeArenas } from "./secret_arena.ts";
 *
 * const arena = SecretArena.open("/run/cryptsleep/root"); // a ramfs; as root
 * const block = arena.alloc(64);
 * arena.free(block); // zeroed, then free for the next alloc
 * arena.retire();
 * wipeArenas("/run/cryptsleep/root"); // what a survivor does for a dead process
 * ```
 *
 * @module
 */
import {
  closeFd,
  fsMagic,
  mapShared,
  O_CLOEXEC,
  O_CREAT,
  O_EXCL,
  O_NOFOLLOW,
  O_RDWR,
  openFd,
  pageSize,
  truncateFd,
  unmap,
} from "./libc.ts";

const RAMFS_MAGIC = 0x858458f6;
/** An arena's file name: the prefix, the pid of the process that maps it, a dot and a number. */
const PREFIX = "secrets-";
/** Bytes mapped at a time (more when one block needs more). */
const CHUNK = 64 << 10;
/** Block sizes are rounded up to this (alignment for any C type). */
const ALIGN = 16;

interface Chunk {
  pointer: Deno.PointerObject;
  length: number;
  /** Free spans [offset, length] within the chunk, sorted by offset. */
  free: [number, number][];
}

function address(p: Deno.PointerObject): bigint {
  return BigInt(Deno.UnsafePointer.value(p));
}

/** A block of arena memory. */
export interface ArenaBlock {
  /** Its first byte. */
  pointer: Deno.PointerObject;
  /** Bytes asked for. */
  size: number;
}

let opened = 0;

/** Where secrets live in one process: see the module doc. */
export class SecretArena {
  /** The arena file's path (as this process saw it when it opened it). */
  readonly path: string;
  #fd: number;
  #fileSize = 0;
  #chunks: Chunk[] = [];
  #blocks = new Map<bigint, { chunk: Chunk; at: number; length: number }>();
  #retired = false;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /** Creates this process's arena file in `dir`, which must be a ramfs (anything else may be swapped out). */
  static open(dir: string): SecretArena {
    // numbered: a kept service enters the root again each cycle while an older arena may still have a block out
    const path = `${dir.replace(/\/$/, "")}/${PREFIX}${Deno.pid}.${++opened}`;
    const fd = openFd(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600);
    try {
      const magic = fsMagic(fd, path);
      if (magic !== RAMFS_MAGIC) {
        throw new Error(
          `secret arena ${path}: not on a ramfs (filesystem magic 0x${magic.toString(16)}): its pages could be ` +
            `swapped out; keep secrets in crypt_safe_alloc memory instead`,
        );
      }
    } catch (err) {
      closeFd(fd);
      Deno.removeSync(path);
      throw err;
    }
    return new SecretArena(path, fd);
  }

  /** `size` zeroed bytes. */
  alloc(size: number): ArenaBlock {
    if (this.#retired) throw new Error(`secret arena ${this.path}: alloc after retire`);
    const length = Math.ceil(size / ALIGN) * ALIGN;
    for (const chunk of this.#chunks) {
      const i = chunk.free.findIndex(([, len]) => len >= length);
      if (i < 0) continue;
      const [at, len] = chunk.free[i];
      if (len === length) chunk.free.splice(i, 1);
      else chunk.free[i] = [at + length, len - length];
      return this.#handOut(chunk, at, length, size);
    }
    const page = pageSize();
    const chunkLength = Math.ceil(Math.max(CHUNK, length) / page) * page;
    truncateFd(this.#fd, this.#fileSize + chunkLength, this.path);
    const pointer = mapShared(this.#fd, this.#fileSize, chunkLength, this.path);
    this.#fileSize += chunkLength;
    const chunk: Chunk = { pointer, length: chunkLength, free: [] };
    if (chunkLength > length) chunk.free.push([length, chunkLength - length]);
    this.#chunks.push(chunk);
    return this.#handOut(chunk, 0, length, size);
  }

  #handOut(chunk: Chunk, at: number, length: number, size: number): ArenaBlock {
    const pointer = at === 0 ? chunk.pointer : Deno.UnsafePointer.offset(chunk.pointer, at)!;
    this.#blocks.set(address(pointer), { chunk, at, length });
    return { pointer, size };
  }

  /** Zeroes the block and takes it back. */
  free(block: ArenaBlock): void {
    const b = this.#blocks.get(address(block.pointer));
    if (!b) throw new Error(`secret arena ${this.path}: free of a block it did not hand out`);
    this.#blocks.delete(address(block.pointer));
    new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(block.pointer, b.length)).fill(0);
    const free = b.chunk.free;
    free.push([b.at, b.length]);
    free.sort((x, y) => x[0] - y[0]);
    // neighbours merged: a long passphrase after short ones still fits
    for (let i = free.length - 1; i > 0; i--) {
      if (free[i - 1][0] + free[i - 1][1] === free[i][0]) {
        free[i - 1][1] += free[i][1];
        free.splice(i, 1);
      }
    }
    if (this.#retired && this.#blocks.size === 0) this.#close();
  }

  /** Blocks handed out and not freed. */
  get inUse(): number {
    return this.#blocks.size;
  }

  /** No more allocs; unmapped and closed once its last block is freed (now, if none is out). */
  retire(): void {
    this.#retired = true;
    if (this.#blocks.size === 0) this.#close();
  }

  #close(): void {
    if (this.#fd < 0) return;
    for (const c of this.#chunks) {
      new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(c.pointer, c.length)).fill(0);
      unmap(c.pointer, c.length, this.path);
    }
    this.#chunks = [];
    // only our own file: after leaving the root the same path names another one (or none); a file left is wiped
    // with the root's unmount; it may be gone already (wiped by a survivor)
    try {
      const mine = Deno.statSync(`/proc/self/fd/${this.#fd}`);
      const there = Deno.lstatSync(this.path);
      if (mine.dev === there.dev && mine.ino === there.ino) Deno.removeSync(this.path);
    } catch { /* gone */ }
    closeFd(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Zeroes and removes the arena files in `dir` (of processes that are dead, or done with their secrets), all but the
 * ones of pid `keep`. Returns the names wiped; throws, after trying every file, naming those it could not zero. Written through write(2): the zeros land in the very pages a dead
 * process's mapping used.
 */
export function wipeArenas(dir: string, keep?: number): string[] {
  const wiped: string[] = [];
  const failed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return wiped;
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.startsWith(PREFIX) || e.name.startsWith(`${PREFIX}${keep}.`)) continue;
    const path = `${dir.replace(/\/$/, "")}/${e.name}`;
    try {
      using f = Deno.openSync(path, { read: true, write: true });
      const size = f.statSync().size;
      const zeros = new Uint8Array(Math.min(size, CHUNK) || 1);
      for (let at = 0; at < size;) at += f.writeSync(zeros.subarray(0, Math.min(zeros.length, size - at)));
      Deno.removeSync(path);
      wiped.push(e.name);
    } catch (err) {
      // removed meanwhile (its process retired it): nothing left to zero
      if (!(err instanceof Deno.errors.NotFound)) failed.push(`${path}: ${(err as Error).message}`);
    }
  }
  if (failed.length) throw new Error(`could not zero secret arena(s): ${failed.join("; ")}`);
  return wiped;
}

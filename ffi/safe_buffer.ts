/**
 * Secret memory from libcryptsetup's `crypt_safe_alloc` (zeroed, mlock'ed when allowed, wiped on free), or, while a
 * process runs in the cycle's root, from its secret arena (secret_arena.ts: zeroed by a survivor if it is killed).
 *
 * Passphrases and keys live only here: never in a JS string, never in a JS-heap `Uint8Array`. There is no fallback to
 * JS memory: on a libcryptsetup older than 2.3 (no `crypt_safe_alloc`) {@linkcode SafeBuffer.alloc} throws.
 *
 * @example
 * ```ts
 * import { SafeBuffer } from "./safe_buffer.ts";
 *
 * using buf = SafeBuffer.alloc(512); // zeroed and freed by crypt_safe_free at scope end
 * buf.view()[0] = 0x61; // tests and byte writes only
 * buf.zero();
 * ```
 *
 * @module
 */
import { bindLibrary, type BoundLibrary } from "./bind.ts";
import type { ArenaBlock, SecretArena } from "./secret_arena.ts";

const DEFAULT_LIB = "libcryptsetup.so.12";

const SYMBOLS = {
  crypt_safe_alloc: { parameters: ["usize"], result: "pointer", optional: true },
  crypt_safe_free: { parameters: ["pointer"], result: "void", optional: true },
  crypt_safe_memzero: { parameters: ["pointer", "usize"], result: "void", optional: true },
} as const;

type SafeLib = BoundLibrary<typeof SYMBOLS>;

let lib: SafeLib | null = null;
let arena: SecretArena | null = null;
let libError: string | null = null;

function open(): SafeLib {
  if (lib) return lib;
  try {
    lib = bindLibrary(DEFAULT_LIB, SYMBOLS);
  } catch (e) {
    libError = `cannot dlopen ${DEFAULT_LIB}: ${(e as Error).message}`;
    throw new Error(`SafeBuffer: ${libError}`);
  }
  const s = lib.symbols;
  if (!s.crypt_safe_alloc || !s.crypt_safe_free || !s.crypt_safe_memzero) {
    libError = `${DEFAULT_LIB} has no crypt_safe_alloc/crypt_safe_free/crypt_safe_memzero (libcryptsetup < 2.3)`;
  }
  return lib;
}

/** A block of libcryptsetup safe memory. Dispose (or `using`) zeroes and frees it. */
export class SafeBuffer implements Disposable {
  /** Usable bytes. */
  readonly size: number;
  #pointer: Deno.PointerObject | null;
  #views: ArrayBuffer[] = [];
  /** The arena it came from (null: crypt_safe_alloc). */
  #arena: SecretArena | null;

  private constructor(pointer: Deno.PointerObject, size: number, from: SecretArena | null) {
    this.#pointer = pointer;
    this.size = size;
    this.#arena = from;
  }

  /**
   * Buffers allocated from now on come from `next` (null: crypt_safe_alloc again); those already out go back where
   * they came from.
   */
  static useArena(next: SecretArena | null): void {
    arena = next;
  }

  /** Allocate `size` zeroed bytes with crypt_safe_alloc. Throws if the symbol is missing or allocation fails. */
  static alloc(size: number): SafeBuffer {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`SafeBuffer.alloc: bad size ${size}`);
    const l = open();
    if (libError !== null || !l.symbols.crypt_safe_alloc) {
      throw new Error(`SafeBuffer: no secret memory available: ${libError}; refusing to keep secrets in JS memory`);
    }
    if (arena) return new SafeBuffer(arena.alloc(size).pointer, size, arena);
    const p = l.symbols.crypt_safe_alloc(BigInt(size));
    if (p === null) throw new Error(`SafeBuffer: crypt_safe_alloc(${size}) returned NULL (out of memory)`);
    return new SafeBuffer(p, size, null);
  }

  /** The C pointer (pass it to FFI calls). Throws after dispose. */
  get pointer(): Deno.PointerObject {
    if (this.#pointer === null) throw new Error("SafeBuffer: used after dispose");
    return this.#pointer;
  }

  /** Pointer to byte `offset` (for byte-wise reads straight into the buffer). */
  pointerAt(offset: number): Deno.PointerObject {
    if (!Number.isInteger(offset) || offset < 0 || offset >= this.size) {
      throw new RangeError(`SafeBuffer.pointerAt: ${offset} outside 0..${this.size - 1}`);
    }
    const p = Deno.UnsafePointer.offset(this.pointer, offset);
    if (p === null) throw new Error("SafeBuffer.pointerAt: null pointer");
    return p;
  }

  /**
   * A live view on the C memory (no copy). For tests and byte writes only: never decode it into a string.
   * Views are detached (length 0) when the buffer is disposed, so they cannot touch freed memory.
   */
  view(): Uint8Array {
    const ab = Deno.UnsafePointerView.getArrayBuffer(this.pointer, this.size);
    this.#views.push(ab);
    return new Uint8Array(ab);
  }

  /** Wipe all bytes (crypt_safe_memzero, not optimised away). */
  zero(): void {
    open().symbols.crypt_safe_memzero!(this.pointer, BigInt(this.size));
  }

  /** Zero, detach views, crypt_safe_free (or back to its arena). Idempotent. */
  [Symbol.dispose](): void {
    const p = this.#pointer;
    if (p === null) return;
    const s = open().symbols;
    s.crypt_safe_memzero!(p, BigInt(this.size));
    for (const ab of this.#views) {
      try {
        ab.transfer(0); // detaches: stale views now have length 0
      } catch { /* already detached */ }
    }
    this.#views = [];
    this.#pointer = null;
    if (this.#arena) this.#arena.free({ pointer: p, size: this.size } satisfies ArenaBlock);
    else s.crypt_safe_free!(p);
  }
}

/**
 * C string helpers shared by the `ffi/` modules (internal).
 *
 * @example
 * ```ts
 * import { cstr } from "./_cstring.ts";
 *
 * const s = cstr("/dev/null"); // NUL-terminated UTF-8 bytes for a "buffer" FFI parameter
 * console.log(s.at(-1)); // 0
 * ```
 *
 * @module
 */

const encoder = new TextEncoder();

/** NUL-terminated UTF-8 bytes of `s` (for `"buffer"` parameters; never use for secrets). */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  if (s.includes("\0")) throw new TypeError(`string contains a NUL byte: ${JSON.stringify(s)}`);
  const b = new Uint8Array(encoder.encode(s).length + 1);
  encoder.encodeInto(s, b);
  return b;
}

/** Like {@linkcode cstr}, but `null` stays `null` (C `NULL`). */
export function cstrOrNull(s: string | null | undefined): Uint8Array<ArrayBuffer> | null {
  return s === null || s === undefined ? null : cstr(s);
}

/** Read a C string owned by the library (copy); `NULL` becomes `null`. */
export function readCString(p: Deno.PointerValue): string | null {
  return p === null ? null : Deno.UnsafePointerView.getCString(p);
}

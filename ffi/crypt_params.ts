/**
 * The parameters of a dm-crypt table line (`<cipher> <key> <iv_offset> <device> <offset> [<#opts> <opts>]`) handled
 * without the key ever becoming a JS value: the key field is found with strchr(3) in C memory, copied C to C, or
 * written as hex straight into `crypt_safe_alloc` memory. What is around the key is plain text.
 *
 * The params come from {@linkcode readTableSecure} (libdevmapper's memory) and go back to `create`/`reload` of
 * devmapper.ts, which re-exports these functions.
 *
 * @example
 * ```ts
 * import { readTableSecure, reload, resume } from "./devmapper.ts";
 * import { cryptKeyInKeyring, cryptParamsOnDevice } from "./crypt_params.ts";
 *
 * using table = readTableSecure("cryptdata");
 * const [line] = table.targets;
 * if (!cryptKeyInKeyring(line.params)) {
 *   using params = cryptParamsOnDevice(line.params, "7:1"); // same key, now onto /dev/loop1
 *   reload("cryptdata", [{ ...line, params: params.pointer }]);
 *   resume("cryptdata");
 * }
 * ```
 *
 * @module
 */

import { indexOfByte } from "./libc.ts";
import { SafeBuffer } from "./safe_buffer.ts";

/**
 * Whether the key field of crypt `params` (`<cipher> <key> <iv_offset> <device> <offset> [<#opts> <opts>]`)
 * names a keyring key (`:<size>:<type>:<description>`) rather than holding the key in hex.
 */
export function cryptKeyInKeyring(params: Deno.PointerObject): boolean {
  const key = keyField(params);
  const colon = indexOfByte(Deno.UnsafePointer.offset(params, key.start)!, 0x3a);
  return colon === 0;
}

/** The device field (`major:minor`) of crypt `params`. No secret is read: the scan starts after the key. */
export function cryptDevice(params: Deno.PointerObject): string {
  return afterKey(params).split(/\s+/)[1] ?? "";
}

/**
 * The same crypt params with another device, built in secret memory: the cipher and key are copied C to C, the
 * rest (iv offset, device, offset, options) is text.
 */
export function cryptParamsOnDevice(params: Deno.PointerObject, device: string): SafeBuffer {
  if (!/^\d+:\d+$/.test(device)) throw new TypeError(`cryptParamsOnDevice: device must be major:minor, got ${device}`);
  const key = keyField(params);
  const rest = afterKey(params).split(/\s+/);
  if (rest.length < 3) throw new Error("crypt table: fewer fields than <cipher> <key> <iv_offset> <device> <offset>");
  rest[1] = device;
  const tail = new TextEncoder().encode(" " + rest.join(" "));
  const buf = SafeBuffer.alloc(key.end + tail.length + 1);
  const view = buf.view();
  view.set(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(params, key.end)), 0);
  view.set(tail, key.end);
  return buf; // zero-filled: NUL-terminated
}

/** Byte range of the key field, found with strchr so no key byte passes through JS. */
function keyField(params: Deno.PointerObject): { start: number; end: number } {
  const cipherEnd = indexOfByte(params, 0x20);
  if (cipherEnd === null) throw new Error("crypt table: no key field");
  const start = cipherEnd + 1;
  const len = indexOfByte(Deno.UnsafePointer.offset(params, start)!, 0x20);
  if (len === null || len === 0) throw new Error("crypt table: no field after the key");
  return { start, end: start + len };
}

/** The text after the key field (no secret in it), trimmed. */
function afterKey(params: Deno.PointerObject): string {
  return Deno.UnsafePointerView.getCString(params, keyField(params).end).trim();
}

/** The parts of crypt params around the key (no secret): `<cipher>` and `<iv_offset> <device> <offset> [opts]`. */
export function cryptTemplate(params: Deno.PointerObject): { cipher: string; rest: string } {
  const key = keyField(params);
  const cipher = new TextDecoder().decode(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(params, key.start - 1)));
  return { cipher, rest: afterKey(params) };
}

/**
 * Crypt params `<cipher> <hex key> <rest>` built in secret memory from a raw key in secret memory. The hex digits
 * are written straight into the buffer; no string ever holds the key.
 */
export function cryptParamsWithKey(cipher: string, key: SafeBuffer, keyBytes: number, rest: string): SafeBuffer {
  if (keyBytes <= 0 || keyBytes > key.size) throw new RangeError(`cryptParamsWithKey: bad key size ${keyBytes}`);
  const enc = new TextEncoder();
  const head = enc.encode(cipher + " "), tail = enc.encode(" " + rest);
  const out = SafeBuffer.alloc(head.length + keyBytes * 2 + tail.length + 1);
  const view = out.view(), raw = key.view();
  view.set(head, 0);
  const digits = enc.encode("0123456789abcdef");
  for (let i = 0, j = head.length; i < keyBytes; i++, j += 2) {
    view[j] = digits[raw[i] >> 4];
    view[j + 1] = digits[raw[i] & 15];
  }
  view.set(tail, head.length + keyBytes * 2);
  return out; // zero-filled: NUL-terminated
}

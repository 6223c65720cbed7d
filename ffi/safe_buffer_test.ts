import assert from "node:assert/strict";
import { SafeBuffer } from "./safe_buffer.ts";

Deno.test("SafeBuffer: crypt_safe_alloc memory is zeroed at start, writable, wiped by zero()", () => {
  using buf = SafeBuffer.alloc(64);
  assert.equal(buf.size, 64);
  const v = buf.view();
  assert.equal(v.length, 64);
  assert.ok(v.every((b) => b === 0), "fresh safe memory is zeroed");
  v.set([1, 2, 3, 250], 10);
  // A second view sees the same C memory (no copy).
  assert.deepEqual([...buf.view().subarray(10, 14)], [1, 2, 3, 250]);
  assert.equal(new Deno.UnsafePointerView(buf.pointerAt(13)).getUint8(), 250);
  buf.zero();
  assert.ok(buf.view().every((b) => b === 0), "zero() wiped every byte");
  assert.ok(v.every((b) => b === 0));
});

Deno.test("SafeBuffer: dispose wipes, detaches views, refuses reuse; bad sizes rejected", () => {
  const buf = SafeBuffer.alloc(32);
  const v = buf.view();
  v.fill(0xaa);
  buf[Symbol.dispose]();
  assert.equal(v.length, 0, "views are detached after free");
  assert.throws(() => buf.pointer, /after dispose/);
  assert.throws(() => buf.view(), /after dispose/);
  buf[Symbol.dispose](); // idempotent
  assert.throws(() => SafeBuffer.alloc(0), RangeError);
  assert.throws(() => SafeBuffer.alloc(-1), RangeError);
  using small = SafeBuffer.alloc(4);
  assert.throws(() => small.pointerAt(4), RangeError);
});

Deno.test("SafeBuffer: zero() wipes the C memory itself (read through the raw pointer)", () => {
  using buf = SafeBuffer.alloc(16);
  buf.view().fill(0x5c);
  const pv = new Deno.UnsafePointerView(buf.pointer);
  assert.equal(pv.getUint8(7), 0x5c);
  buf.zero();
  for (let i = 0; i < 16; i++) assert.equal(pv.getUint8(i), 0);
});

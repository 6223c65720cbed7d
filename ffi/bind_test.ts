import assert from "node:assert/strict";
import { bindLibrary } from "./bind.ts";

Deno.test("bindLibrary: calls as Deno.dlopen's symbols do, sync and nonblocking, buffers in, pointers out", async () => {
  const libc = bindLibrary(
    "libc.so.6",
    {
      getpid: { parameters: [], result: "i32" },
      strlen: { parameters: ["buffer"], result: "usize" },
      strlen_nb: { name: "strlen", parameters: ["buffer"], result: "usize", nonblocking: true },
      __errno_location: { parameters: [], result: "pointer" },
    } as const,
  );
  try {
    assert.equal(libc.symbols.getpid(), Deno.pid);
    const text = new TextEncoder().encode("cryptsleep\0");
    assert.equal(Number(libc.symbols.strlen(text)), 10);
    const pending = libc.symbols.strlen_nb(text);
    assert.ok(pending instanceof Promise, "nonblocking: a promise");
    assert.equal(Number(await pending), 10);
    assert.notEqual(libc.symbols.__errno_location(), null);
  } finally {
    libc.close();
  }
});

Deno.test("bindLibrary: errno of a failed call, read right after it, is the call's", () => {
  const libc = bindLibrary(
    "libc.so.6",
    {
      open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
      __errno_location: { parameters: [], result: "pointer" },
    } as const,
  );
  try {
    const fd = libc.symbols.open(new TextEncoder().encode("/nonexistent/cryptsleep\0"), 0, 0);
    const errno = new Deno.UnsafePointerView(libc.symbols.__errno_location()!).getInt32();
    assert.equal(fd, -1);
    assert.equal(errno, 2, "ENOENT");
  } finally {
    libc.close();
  }
});

Deno.test("bindLibrary: a missing optional function is null, nonblocking too; a missing required one throws", () => {
  const lib = bindLibrary(
    "libc.so.6",
    {
      cryptsleep_no_such: { parameters: [], result: "void", optional: true },
      cryptsleep_no_such_nb: { parameters: [], result: "void", optional: true, nonblocking: true },
    } as const,
  );
  assert.equal(lib.symbols.cryptsleep_no_such, null);
  assert.equal(lib.symbols.cryptsleep_no_such_nb, null);
  lib.close();
  assert.throws(
    () => bindLibrary("libc.so.6", { cryptsleep_no_such: { parameters: [], result: "void" } } as const),
    /cryptsleep_no_such/,
  );
  assert.throws(() => bindLibrary("libcryptsleep-none.so.0", {}), /libcryptsleep-none/);
});

Deno.test("bindLibrary: a function called after close throws instead of jumping into unmapped code", () => {
  const libc = bindLibrary("libc.so.6", { getpid: { parameters: [], result: "i32" } } as const);
  const getpid = libc.symbols;
  libc.close();
  assert.throws(() => getpid.getpid(), Deno.errors.BadResource);
});

// A real ramfs on this host (needs root), and a real SIGKILL of a child holding a secret.
import assert from "node:assert/strict";
import { join } from "node:path";
import { mount, umount2 } from "./libc.ts";
import { SafeBuffer } from "./safe_buffer.ts";
import { SecretArena, wipeArenas } from "./secret_arena.ts";

async function withRamfs(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "cryptsleep-arena-" });
  mount("ramfs", dir, "ramfs", 0, "mode=0700");
  try {
    await fn(dir);
  } finally {
    umount2(dir);
    Deno.removeSync(dir);
  }
}

Deno.test("SecretArena: zeroed blocks, zeroed when freed, space reused and merged; retire removes its file", async () => {
  await withRamfs((dir) => {
    const arena = SecretArena.open(dir);
    assert.ok(arena.path.startsWith(join(dir, `secrets-${Deno.pid}.`)), arena.path);
    const a = arena.alloc(100), b = arena.alloc(5);
    const av = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(a.pointer, 100));
    assert.ok(av.every((x) => x === 0));
    av.fill(0xa5);
    assert.ok(new Uint8Array(Deno.readFileSync(arena.path)).includes(0xa5), "the bytes are the file's pages");
    arena.free(a);
    assert.ok(av.every((x) => x === 0), "freed: zeroed");
    assert.ok(!new Uint8Array(Deno.readFileSync(arena.path)).includes(0xa5));
    // 100 bytes (rounded to 112) free before b: a 112-byte block goes there, not after b
    const c = arena.alloc(112);
    assert.equal(Deno.UnsafePointer.value(c.pointer), Deno.UnsafePointer.value(a.pointer));
    arena.free(c);
    arena.free(b);
    // everything merged back: one block of the whole chunk fits again at its start
    const whole = arena.alloc(64 << 10);
    assert.equal(Deno.UnsafePointer.value(whole.pointer), Deno.UnsafePointer.value(a.pointer));
    const big = arena.alloc(200_000); // a chunk of its own
    assert.equal(Deno.statSync(arena.path).size >= (64 << 10) + 200_000, true);
    assert.throws(() => arena.free({ pointer: Deno.UnsafePointer.offset(big.pointer, 16)!, size: 1 }), /did not hand/);
    arena.free(whole);
    arena.retire();
    assert.ok(Deno.statSync(arena.path).isFile, "a block is still out: the file stays");
    assert.throws(() => arena.alloc(1), /after retire/);
    arena.free(big);
    assert.throws(() => Deno.statSync(arena.path), Deno.errors.NotFound);
  });
});

Deno.test("SafeBuffer.useArena: buffers come from the arena and go back to where they came from", async () => {
  await withRamfs((dir) => {
    const arena = SecretArena.open(dir);
    const before = SafeBuffer.alloc(8); // crypt_safe_alloc
    SafeBuffer.useArena(arena);
    try {
      using inArena = SafeBuffer.alloc(40);
      inArena.view().fill(7);
      assert.equal(arena.inUse, 1);
      assert.ok(new Uint8Array(Deno.readFileSync(arena.path)).includes(7));
    } finally {
      SafeBuffer.useArena(null);
    }
    assert.equal(arena.inUse, 0);
    assert.ok(!new Uint8Array(Deno.readFileSync(arena.path)).includes(7), "disposed: zeroed");
    before[Symbol.dispose]();
    arena.retire();
  });
});

Deno.test("SecretArena: refuses a directory that is not a ramfs, and leaves nothing there", () => {
  const dir = Deno.makeTempDirSync({ prefix: "cryptsleep-arena-" });
  try {
    assert.throws(() => SecretArena.open(dir), /not on a ramfs .*crypt_safe_alloc/);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a process killed holding a secret: its arena keeps the bytes until wipeArenas zeroes and removes it", async () => {
  await withRamfs(async (dir) => {
    const here = new URL(".", import.meta.url).pathname;
    const marker = Array.from(crypto.getRandomValues(new Uint8Array(32)));
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { SafeBuffer } from "${here}safe_buffer.ts";
import { SecretArena } from "${here}secret_arena.ts";
SafeBuffer.useArena(SecretArena.open(${JSON.stringify(dir)}));
const secret = SafeBuffer.alloc(64);
secret.view().set(${JSON.stringify(marker)});
console.log("holding");
setInterval(() => {}, 1000);`,
      ],
      stdout: "piped",
    }).spawn();
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /holding/);
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    const [name] = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.match(name, new RegExp(`^secrets-${child.pid}\\.1$`));
    const path = join(dir, name);
    const has = (bytes: Uint8Array) => bytes.some((_, i) => marker.every((m, j) => bytes[i + j] === m));
    // kept open: the same inode, read after the wipe removed its name
    using kept = Deno.openSync(path);
    assert.ok(has(Deno.readFileSync(path)), "the dead process's secret is still in the file's pages");
    assert.deepEqual(wipeArenas(dir, Deno.pid), [name]);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    const after = new Uint8Array(kept.statSync().size);
    kept.seekSync(0, Deno.SeekMode.Start);
    for (let n = 0; n < after.length;) n += kept.readSync(after.subarray(n)) ?? after.length;
    assert.ok(after.length > 0 && after.every((b) => b === 0), "zeroed in place");
  });
});

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  LUKS2_SECONDARY_OFFSETS,
  luks2SecondaryUuidOf,
  LuksHeaderError,
  luksUuidOf,
  readLuksHeader,
} from "./luks_header.ts";

async function rejectsWithHeaderError(fn: () => Promise<unknown>): Promise<LuksHeaderError> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof LuksHeaderError, String(e));
    return e;
  }
  throw new assert.AssertionError({ message: "expected a LuksHeaderError" });
}

const KEY = "fixture passphrase, not a secret";

async function cryptsetup(...args: string[]): Promise<string> {
  const out = await new Deno.Command("cryptsetup", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`cryptsetup ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

async function withDir(fn: (dir: string, key: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cryptsleep-hdr-" });
  try {
    const key = join(dir, "key");
    await Deno.writeTextFile(key, KEY);
    await fn(dir, key);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function image(dir: string, name: string, size = 20 << 20): Promise<string> {
  const p = join(dir, name);
  const f = await Deno.open(p, { write: true, create: true });
  await f.truncate(size);
  f.close();
  return p;
}

interface DumpKdf {
  type: string;
  memory?: number;
  time?: number;
  cpus?: number;
  iterations?: number;
}

/** Compares what we read against libcryptsetup's own view (`luksDump --dump-json-metadata`). */
async function assertMatchesDump(path: string, extra: string[] = []): Promise<void> {
  const meta = JSON.parse(await cryptsetup("luksDump", "--dump-json-metadata", ...extra, path)) as {
    keyslots: Record<string, { kdf: DumpKdf }>;
  };
  const hdr = await readLuksHeader(path);
  const expected = Object.entries(meta.keyslots).map(([slot, ks]) => ({
    slot: Number(slot),
    type: ks.kdf.type,
    memoryKiB: ks.kdf.memory ?? 0,
    time: ks.kdf.time ?? ks.kdf.iterations,
    cpus: ks.kdf.cpus ?? 1,
  }));
  assert.deepEqual(
    hdr.keyslots.map((k) => ({
      slot: k.slot,
      type: k.kdf.type,
      memoryKiB: k.kdf.memoryKiB,
      time: k.kdf.time,
      cpus: k.kdf.cpus,
    })),
    expected,
  );
  assert.deepEqual(hdr.uuid, (await cryptsetup("luksUUID", path)).trim());
  // the unlock's identity check reads only the first block
  const bytes = await Deno.readFile(path);
  const first = bytes.subarray(0, 4096);
  assert.equal(luksUuidOf(first), hdr.uuid.toLowerCase());
  assert.equal(luksUuidOf(new Uint8Array(4096)), null, "no LUKS header: nothing to say");
  if (hdr.version === 2) {
    // a damaged primary: the secondary copy, at one of the offsets LUKS2 allows, still names the volume
    const found = LUKS2_SECONDARY_OFFSETS.map((o) => luks2SecondaryUuidOf(bytes.subarray(o, o + 4096)));
    assert.deepEqual(found.filter((u) => u !== null), [hdr.uuid.toLowerCase()]);
    assert.equal(luks2SecondaryUuidOf(first), null, "a primary is no secondary");
  }
}

Deno.test("LUKS2 argon2id: memory, time and cpus as formatted, same as luksDump", async () => {
  await withDir(async (dir, key) => {
    const img = await image(dir, "a.img");
    await cryptsetup(
      "luksFormat",
      "--batch-mode",
      "--type",
      "luks2",
      "--key-file",
      key,
      "--pbkdf",
      "argon2id",
      "--pbkdf-memory",
      "32768",
      "--pbkdf-force-iterations",
      "4",
      "--pbkdf-parallel",
      "2",
      img,
    ); // deno-fmt-ignore
    const hdr = await readLuksHeader(img);
    assert.deepEqual(hdr.version, 2);
    assert.deepEqual(hdr.keyslots.length, 1);
    assert.deepEqual(hdr.keyslots[0].kdf, { type: "argon2id", memoryKiB: 32768, time: 4, cpus: 2 });
    assert.deepEqual(hdr.maxArgon2MemoryKiB, 32768);
    assert.deepEqual(hdr.notes, []);
    await assertMatchesDump(img);
  });
});

Deno.test("LUKS2 with two keyslots (argon2id + argon2i): the max wins", async () => {
  await withDir(async (dir, key) => {
    const img = await image(dir, "b.img");
    await cryptsetup(
      "luksFormat",
      "--batch-mode",
      "--type",
      "luks2",
      "--key-file",
      key,
      "--label",
      "backup",
      "--pbkdf",
      "argon2id",
      "--pbkdf-memory",
      "8192",
      "--pbkdf-force-iterations",
      "4",
      img,
    ); // deno-fmt-ignore
    await cryptsetup(
      "luksAddKey", "--batch-mode", "--key-file", key, "--pbkdf", "argon2i", "--pbkdf-memory", "40000",
      "--pbkdf-force-iterations", "5", img, key,
    ); // deno-fmt-ignore
    const hdr = await readLuksHeader(img);
    assert.deepEqual(hdr.label, "backup");
    assert.deepEqual(hdr.keyslots.map((k) => [k.slot, k.kdf.type, k.kdf.memoryKiB, k.kdf.time]), [
      [0, "argon2id", 8192, 4],
      [1, "argon2i", 40000, 5],
    ]);
    assert.deepEqual(hdr.maxArgon2MemoryKiB, 40000);
    await assertMatchesDump(img);
  });
});

Deno.test("LUKS2 pbkdf2 and a larger metadata area: no Argon2 memory", async () => {
  await withDir(async (dir, key) => {
    const img = await image(dir, "c.img", 40 << 20);
    await cryptsetup(
      "luksFormat",
      "--batch-mode",
      "--type",
      "luks2",
      "--key-file",
      key,
      "--luks2-metadata-size",
      "64k",
      "--pbkdf",
      "pbkdf2",
      "--pbkdf-force-iterations",
      "1000",
      "--hash",
      "sha512",
      img,
    ); // deno-fmt-ignore
    const hdr = await readLuksHeader(img);
    assert.deepEqual(hdr.hdrSize, 65536);
    assert.deepEqual(hdr.keyslots[0].kdf, { type: "pbkdf2", memoryKiB: 0, time: 1000, cpus: 1, hash: "sha512" });
    assert.deepEqual(hdr.maxArgon2MemoryKiB, 0);
    await assertMatchesDump(img);
  });
});

Deno.test("LUKS1: PBKDF2 keyslots, UUID, no memory", async () => {
  await withDir(async (dir, key) => {
    const img = await image(dir, "d.img", 4 << 20);
    await cryptsetup(
      "luksFormat",
      "--batch-mode",
      "--type",
      "luks1",
      "--key-file",
      key,
      "--pbkdf-force-iterations",
      "1000",
      "--uuid",
      "01234567-89ab-cdef-0123-456789abcdef",
      img,
    ); // deno-fmt-ignore
    await cryptsetup("luksAddKey", "--batch-mode", "--key-file", key, "--pbkdf-force-iterations", "1500", img, key);
    const hdr = await readLuksHeader(img);
    assert.deepEqual(hdr.version, 1);
    assert.deepEqual(hdr.uuid, "01234567-89ab-cdef-0123-456789abcdef");
    assert.equal(luksUuidOf((await Deno.readFile(img)).subarray(0, 4096)), hdr.uuid);
    assert.deepEqual(hdr.keyslots.map((k) => [k.slot, k.kdf.type, k.kdf.time, k.kdf.memoryKiB]), [
      [0, "pbkdf2", 1000, 0],
      [1, "pbkdf2", 1500, 0],
    ]);
    assert.deepEqual(hdr.maxArgon2MemoryKiB, 0);
    // luksDump (text) of LUKS1 lists the same iterations
    const dump = await cryptsetup("luksDump", img);
    assert.deepEqual([...dump.matchAll(/Iterations:\s+(\d+)/g)].map((m) => Number(m[1])), [1000, 1500]);
  });
});

Deno.test("LUKS2 detached header file", async () => {
  await withDir(async (dir, key) => {
    const data = await image(dir, "data.img");
    const hdrFile = await image(dir, "hdr.img", 16 << 20);
    await cryptsetup(
      "luksFormat",
      "--batch-mode",
      "--type",
      "luks2",
      "--key-file",
      key,
      "--header",
      hdrFile,
      "--pbkdf",
      "argon2id",
      "--pbkdf-memory",
      "20000",
      "--pbkdf-force-iterations",
      "4",
      data,
    ); // deno-fmt-ignore
    assert.deepEqual((await readLuksHeader(hdrFile)).maxArgon2MemoryKiB, 20000);
    const e = await rejectsWithHeaderError(() => readLuksHeader(data));
    assert.deepEqual(e.code, "EINVAL");
  });
});

Deno.test("LUKS2 damaged primary copy: read from the secondary, noted", async () => {
  await withDir(async (dir, key) => {
    const img = await image(dir, "e.img");
    await cryptsetup(
      "luksFormat",
      "--batch-mode",
      "--type",
      "luks2",
      "--key-file",
      key,
      "--pbkdf",
      "argon2id",
      "--pbkdf-memory",
      "12345",
      "--pbkdf-force-iterations",
      "4",
      img,
    ); // deno-fmt-ignore
    // flip one byte of the primary JSON area: its checksum no longer matches
    const f = await Deno.open(img, { read: true, write: true });
    await f.seek(4096 + 2, Deno.SeekMode.Start);
    await f.write(new Uint8Array([0x20]));
    f.close();
    const hdr = await readLuksHeader(img);
    assert.deepEqual(hdr.maxArgon2MemoryKiB, 12345);
    assert.ok(hdr.notes.some((n) => n.includes("bad sha256 checksum")), hdr.notes.join("; "));
  });
});

Deno.test("not LUKS, missing file: LuksHeaderError with errno name", async () => {
  await withDir(async (dir) => {
    const blank = await image(dir, "blank.img", 1 << 20);
    assert.deepEqual((await rejectsWithHeaderError(() => readLuksHeader(blank))).code, "EINVAL");
    const missing = await rejectsWithHeaderError(() => readLuksHeader(join(dir, "nope")));
    assert.deepEqual(missing.code, "ENOENT");
    assert.ok(missing.message.includes("ENOENT"));
  });
});

Deno.test("LUKS2 tokens: type, keyslots and whether a PIN is asked, as cryptsetup token import wrote them", async () => {
  await withDir(async (dir, key) => {
    const img = await image(dir, "t.img");
    await cryptsetup(
      "luksFormat",
      "--batch-mode",
      "--type",
      "luks2",
      "--key-file",
      key,
      "--pbkdf",
      "pbkdf2",
      "--pbkdf-force-iterations",
      "1000",
      img,
    ); // deno-fmt-ignore
    const tpm = { type: "systemd-tpm2", keyslots: ["0"], "tpm2-pin": true, "tpm2-blob": "AA==", "tpm2-pcrs": [7], "tpm2-policy-hash": "00" };
    const bare = {
      type: "systemd-tpm2",
      keyslots: ["0"],
      "tpm2-blob": "AA==",
      "tpm2-pcrs": [],
      "tpm2-policy-hash": "00",
    };
    for (const [id, json] of [[0, tpm], [3, bare]] as const) {
      const file = join(dir, `token${id}.json`);
      await Deno.writeTextFile(file, JSON.stringify(json));
      await cryptsetup("token", "import", "--token-id", String(id), "--json-file", file, img);
    }
    const hdr = await readLuksHeader(img);
    assert.deepEqual(hdr.tokens, [
      { id: 0, type: "systemd-tpm2", keyslots: [0], pin: true },
      { id: 3, type: "systemd-tpm2", keyslots: [0], pin: false },
    ]);
  });
});

// Real LUKS images made by cryptsetup; no dm mapping (the unit-test host may lack device-mapper): a mapping's
// suspend and resume are tested in the VM tests, their failures here.
import assert from "node:assert/strict";
import { makeLuksImage } from "../tests/luks_images.ts";
import { readLuksHeader } from "../discovery/luks_header.ts";
import { CRYPT_ANY_SLOT, CRYPT_ANY_TOKEN, CryptDevice } from "./crypt_device.ts";
import { SysError } from "./errors.ts";
import { Libcryptsetup } from "./libcryptsetup.ts";
import { SafeBuffer } from "./safe_buffer.ts";

const enc = new TextEncoder();
const lib = Libcryptsetup.open();
globalThis.addEventListener("unload", () => lib.close());

/** Put test bytes into safe memory (tests only: real passphrases come from Console.readSecret). */
function secret(text: string): { buf: SafeBuffer; length: number } & Disposable {
  const bytes = enc.encode(text);
  const buf = SafeBuffer.alloc(256);
  buf.view().set(bytes);
  return { buf, length: bytes.length, [Symbol.dispose]: () => buf[Symbol.dispose]() };
}

async function expectSysError(p: Promise<unknown> | (() => unknown), call: string, code: string): Promise<SysError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    assert.ok(e instanceof SysError, `expected SysError, got ${e}`);
    assert.equal(e.call, call);
    assert.equal(e.code, code, e.message);
    assert.ok(e.errno > 0);
    assert.ok(e.message.includes(call) && e.message.includes(code));
    assert.ok(e.hint.length > 0);
    return e;
  }
  throw new Error(`expected ${call} to fail with ${code}`);
}

/** Unlocks the volume key with `text`; its size, the key disposed at once. */
async function keySize(dev: CryptDevice, keyslot: number, text: string): Promise<number> {
  using pass = secret(text);
  const { key, size } = await dev.volumeKeyGet(keyslot, pass.buf, pass.length);
  key[Symbol.dispose]();
  return size;
}

Deno.test("LUKS1 pbkdf2: load, passphrase check through the volume key", async () => {
  await using img = await makeLuksImage({ type: "luks1", pbkdf: "pbkdf2", passphrase: enc.encode("right one") });
  using dev = CryptDevice.init(lib, img.path);
  assert.equal(dev.uuid(), undefined, "no header loaded yet");
  dev.load();
  // the same UUID as the TypeScript parser reads from the header
  assert.equal(dev.uuid(), (await readLuksHeader(img.path)).uuid);
  assert.equal(await keySize(dev, CRYPT_ANY_SLOT, "right one"), 64);
  const e = await expectSysError(keySize(dev, CRYPT_ANY_SLOT, "wrong one"), "crypt_volume_key_get", "EPERM");
  assert.equal(e.subject, img.path);
});

Deno.test("LUKS2 argon2id: two keyslots, each passphrase opens its own", async () => {
  await using img = await makeLuksImage({
    type: "luks2",
    pbkdf: "argon2id",
    passphrase: enc.encode("first"),
    memoryKiB: 64,
    iterations: 5,
    extraPassphrases: [enc.encode("second")],
  });
  using dev = CryptDevice.init(lib, img.path);
  dev.load("LUKS2");
  assert.equal(await keySize(dev, CRYPT_ANY_SLOT, "second"), 64);
  assert.equal(await keySize(dev, 1, "second"), 64);
  // Restricted to slot 0, the second passphrase is wrong.
  await expectSysError(keySize(dev, 0, "second"), "crypt_volume_key_get", "EPERM");
  // Loading as the other LUKS version fails cleanly.
  using again = CryptDevice.init(lib, img.path);
  await expectSysError(() => again.load("LUKS1"), "crypt_load", "EINVAL");
});

Deno.test("detached header: a context on the header file alone unlocks the key; the data file has no header", async () => {
  await using img = await makeLuksImage({
    type: "luks2",
    pbkdf: "pbkdf2",
    passphrase: enc.encode("hdr pass"),
    headerFile: true,
  });
  assert.ok(img.headerPath);
  using dev = CryptDevice.init(lib, img.headerPath);
  dev.load();
  assert.equal(await keySize(dev, CRYPT_ANY_SLOT, "hdr pass"), 64);
  using bare = CryptDevice.init(lib, img.path);
  await expectSysError(() => bare.load(), "crypt_load", "EINVAL");
});

Deno.test("nonblocking: timers keep firing during a slow argon2id unlock", async () => {
  await using img = await makeLuksImage({
    type: "luks2",
    pbkdf: "argon2id",
    passphrase: enc.encode("slow"),
    memoryKiB: 65536,
    iterations: 8,
  });
  using dev = CryptDevice.init(lib, img.path);
  dev.load();
  using pass = secret("slow");
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const t0 = performance.now();
  try {
    assert.equal(await keySize(dev, CRYPT_ANY_SLOT, "slow"), 64);
  } finally {
    clearInterval(timer);
  }
  const ms = performance.now() - t0;
  assert.ok(ticks > 0, `no timer tick during ${ms.toFixed(0)} ms`);
  console.log(`argon2id 64 MiB x8: ${ms.toFixed(0)} ms, ${ticks} timer ticks meanwhile`);
  // One call at a time per context: a second one is refused while the first runs.
  const first = dev.volumeKeyGet(CRYPT_ANY_SLOT, pass.buf, pass.length);
  assert.throws(() => dev.load(), /still running/);
  await assert.rejects(dev.volumeKeyGet(CRYPT_ANY_SLOT, pass.buf, pass.length), /still running/);
  // Dispose while it runs: crypt_free waits until the call is over.
  dev[Symbol.dispose]();
  using key = (await first).key;
  assert.equal(key.size, 64);
  assert.throws(() => dev.load(), /after dispose/);
});

Deno.test("errors: init on a missing path names crypt_init and the errno; detail from libcryptsetup", async () => {
  // libcryptsetup reports a missing path as ENOTBLK ("does not exist or access denied").
  const e = await expectSysError(() => CryptDevice.init(lib, "/nonexistent/cryptsleep.img"), "crypt_init", "ENOTBLK");
  assert.equal(e.subject, "/nonexistent/cryptsleep.img");
  assert.match(e.detail ?? "", /does not exist|access denied/);
});

// The kernel's list, not the node: a stale /dev/mapper/control may exist without the driver.
const haveDm = /\bdevice-mapper\b/.test(await Deno.readTextFile("/proc/misc"));

Deno.test("errors: no such mapping (EOPNOTSUPP without device-mapper, ENODEV with it)", async () => {
  await using img = await makeLuksImage({ type: "luks2", pbkdf: "pbkdf2", passphrase: enc.encode("pw") });
  using dev = CryptDevice.init(lib, img.path);
  dev.load();
  const name = "cryptsleep-test-nonexistent";
  const e1 = await expectSysError(
    () => dev.isSuspended(name),
    "crypt_get_active_device",
    haveDm ? "ENODEV" : "EOPNOTSUPP",
  );
  assert.match(e1.message, new RegExp(name));
  using pass = secret("pw");
  const fails = async (p: Promise<unknown>, call: string) => {
    const e = await p.then(() => null, (e) => e);
    assert.ok(e instanceof SysError, `${call} of a missing mapping: ${e}`);
    assert.equal(e.call, call);
    assert.ok(e.errno > 0);
  };
  await fails(dev.resumeByPassphrase(name, CRYPT_ANY_SLOT, pass.buf, pass.length), "crypt_resume_by_passphrase");
  await fails(
    dev.resumeByKeyfileDeviceOffset(name, CRYPT_ANY_SLOT, img.keyFile, 0, 0n),
    "crypt_resume_by_keyfile_device_offset",
  );
  await fails(dev.suspendAsync(name), "crypt_suspend");
  if (lib.has("crypt_resume_by_token_pin")) {
    await fails(dev.resumeByTokenPin(name, null, CRYPT_ANY_TOKEN, null, 0), "crypt_resume_by_token_pin");
  }
  assert.throws(() => dev.resumeByPassphrase(name, -1, pass.buf, 999), RangeError);
});

Deno.test("activateByTokenPin: a header without tokens has none that unlocks (ENOENT); check only, nothing active", async () => {
  await using img = await makeLuksImage({ type: "luks2", pbkdf: "pbkdf2", passphrase: enc.encode("pw") });
  using dev = CryptDevice.init(lib, img.path);
  dev.load();
  assert.ok(lib.has("crypt_activate_by_token_pin"), "libcryptsetup >= 2.4 on the test host");
  await expectSysError(
    dev.activateByTokenPin(null, null, CRYPT_ANY_TOKEN, null, 0),
    "crypt_activate_by_token_pin",
    "ENOENT",
  );
  assert.throws(() => dev.activateByTokenPin(null, null, CRYPT_ANY_TOKEN, null, 1), RangeError);
});

Deno.test("CryptDevice: use after dispose is refused", async () => {
  await using img = await makeLuksImage({ type: "luks1", pbkdf: "pbkdf2", passphrase: enc.encode("pw") });
  const dev = CryptDevice.init(lib, img.path);
  dev.load();
  dev[Symbol.dispose]();
  dev[Symbol.dispose]();
  assert.throws(() => dev.load(), /after dispose/);
});
Deno.test("volumeKeyGet: the key luksDump shows, in secret memory, and the keyslot that opened; a wrong passphrase is EPERM", async () => {
  await using img = await makeLuksImage({
    type: "luks2",
    pbkdf: "argon2id",
    passphrase: enc.encode("right one"),
    extraPassphrases: [enc.encode("second one")],
  });
  const dump = new Deno.Command("cryptsetup", {
    args: ["luksDump", "--dump-volume-key", "--batch-mode", "--key-file", "-", img.path],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const w = dump.stdin.getWriter();
  await w.write(enc.encode("right one"));
  await w.close();
  const text = new TextDecoder().decode((await dump.output()).stdout);
  const hex = [...text.split(/MK dump:|Volume key:/)[1].matchAll(/\b[0-9a-f]{2}\b/g)].map((m) => m[0]).join("");
  assert.equal(hex.length, 128, text); // test data: a throwaway image's 64-byte key

  using dev = CryptDevice.init(lib, img.path);
  dev.load();
  {
    using good = secret("right one");
    const { key, size, keyslot } = await dev.volumeKeyGet(CRYPT_ANY_SLOT, good.buf, good.length);
    using _key = key;
    assert.equal(size, 64);
    assert.equal(keyslot, 0);
    assert.equal([...key.view().subarray(0, size)].map((b) => b.toString(16).padStart(2, "0")).join(""), hex);
  }
  {
    using second = secret("second one");
    const { key, keyslot } = await dev.volumeKeyGet(CRYPT_ANY_SLOT, second.buf, second.length);
    key[Symbol.dispose]();
    assert.equal(keyslot, 1, "the slot luksAddKey gave it");
  }
  using bad = secret("wrong one");
  await expectSysError(dev.volumeKeyGet(CRYPT_ANY_SLOT, bad.buf, bad.length), "crypt_volume_key_get", "EPERM");
});

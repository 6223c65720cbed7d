import assert from "node:assert/strict";
import { join } from "node:path";
import { makeLuksImage } from "../tests/luks_images.ts";
import { SysError } from "./errors.ts";
import {
  CRYPT_ANY_SLOT,
  CryptDevice,
  forgetVersionCache,
  Libcryptsetup,
  type LogLevel,
  probeLibcryptsetup,
} from "./libcryptsetup.ts";
import { SafeBuffer } from "./safe_buffer.ts";

const enc = new TextEncoder();
const lib = Libcryptsetup.open();

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

Deno.test("info: version from the library itself matches cryptsetup --version; symbols probed", async () => {
  const out = await new Deno.Command("cryptsetup", { args: ["--version"], stdout: "piped" }).output();
  const cli = new TextDecoder().decode(out.stdout).match(/cryptsetup (\S+)/)?.[1];
  assert.equal(lib.info.versionSource, "library");
  assert.equal(lib.info.version, cli);
  assert.match(lib.info.path, /libcryptsetup\.so\.12/);
  assert.equal(lib.info.symbols.crypt_init, true);
  assert.equal(lib.info.symbols.crypt_suspend, true);
  const [maj, min] = lib.info.version.split(".").map(Number);
  const atLeast = (m: number) => maj > 2 || (maj === 2 && min >= m);
  assert.equal(lib.info.symbols.crypt_safe_alloc, atLeast(3));
  assert.equal(lib.info.symbols.crypt_resume_by_volume_key, atLeast(3));
  assert.equal(lib.info.symbols.crypt_resume_by_token_pin, atLeast(5));
  assert.equal(lib.info.symbols.crypt_resume_by_keyslot_context, atLeast(7));
  assert.equal(lib.info.symbols.crypt_safe_memcpy, atLeast(8));
  // A second open in the same process no longer sees the version line; the cache keeps it exact.
  const probe = probeLibcryptsetup();
  assert.ok(probe.ok);
  assert.equal(probe.info.version, lib.info.version);
  assert.equal(probeLibcryptsetup("libcryptsetup-missing.so.99").ok, false);
  // Without the cache the library's version line is gone (logged once per process): API level from symbols.
  forgetVersionCache();
  const again = Libcryptsetup.open();
  try {
    assert.equal(again.info.versionSource, "symbols");
    assert.equal(again.info.version, lib.info.version.split(".").slice(0, 2).join("."));
  } finally {
    again.close();
  }
});

Deno.test("LUKS1 pbkdf2: load, type, uuid, device, keyslots, passphrase check", async () => {
  await using img = await makeLuksImage({ type: "luks1", pbkdf: "pbkdf2", passphrase: enc.encode("right one") });
  using dev = CryptDevice.init(lib, img.path);
  assert.equal(dev.type, null);
  dev.load();
  assert.equal(dev.type, "LUKS1");
  assert.equal(dev.uuid, img.uuid);
  assert.equal(dev.deviceName, img.path);
  assert.equal(dev.metadataDeviceName, null);
  assert.equal(dev.headerDetached, false);
  const slots = dev.keyslots();
  assert.equal(slots.length, 8);
  assert.equal(slots[0].status, "active-last");
  assert.equal(slots[0].pbkdf?.type, "pbkdf2");
  assert.equal(slots[0].pbkdf?.iterations, 1000);
  assert.equal(slots[0].pbkdf?.memoryKiB, 0);
  assert.ok(slots.slice(1).every((s) => s.status === "inactive" && s.pbkdf === undefined));

  {
    using good = secret("right one");
    assert.equal(await dev.activateByPassphrase(null, CRYPT_ANY_SLOT, good.buf, good.length), 0);
  }
  using bad = secret("wrong one");
  const e = await expectSysError(
    dev.activateByPassphrase(null, CRYPT_ANY_SLOT, bad.buf, bad.length),
    "crypt_activate_by_passphrase",
    "EPERM",
  );
  assert.match(e.hint, /wrong passphrase/);
});

Deno.test("LUKS2 argon2id: PBKDF memory equals the formatted cost; two keyslots", async () => {
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
  assert.equal(dev.type, "LUKS2");
  assert.equal(dev.uuid, img.uuid);
  const used = dev.keyslots().filter((s) => s.status !== "inactive");
  assert.deepEqual(used.map((s) => [s.slot, s.status]), [[0, "active"], [1, "active"]]);
  for (const s of used) {
    assert.equal(s.pbkdf?.type, "argon2id");
    assert.equal(s.pbkdf?.memoryKiB, 64);
    assert.equal(s.pbkdf?.iterations, 5);
    assert.equal(s.pbkdf?.parallel, 1);
  }
  using second = secret("second");
  assert.equal(await dev.activateByPassphrase(null, CRYPT_ANY_SLOT, second.buf, second.length), 1);
  // Restricted to slot 0, the second passphrase is wrong.
  await expectSysError(
    dev.activateByPassphrase(null, 0, second.buf, second.length),
    "crypt_activate_by_passphrase",
    "EPERM",
  );
  // Loading as the other LUKS version fails cleanly.
  using again = CryptDevice.init(lib, img.path);
  await expectSysError(() => again.load("LUKS1"), "crypt_load", "EINVAL");
});

Deno.test("detached header: crypt_init_data_device, metadata device, passphrase check", async () => {
  await using img = await makeLuksImage({
    type: "luks2",
    pbkdf: "pbkdf2",
    passphrase: enc.encode("hdr pass"),
    headerFile: true,
  });
  assert.ok(img.headerPath);
  using dev = CryptDevice.init(lib, img.path, img.headerPath);
  dev.load();
  assert.equal(dev.type, "LUKS2");
  assert.equal(dev.uuid, img.uuid);
  assert.equal(dev.metadataDeviceName, img.headerPath);
  assert.equal(dev.deviceName, img.path);
  assert.equal(dev.headerDetached, true);
  using pass = secret("hdr pass");
  assert.equal(await dev.activateByPassphrase(null, CRYPT_ANY_SLOT, pass.buf, pass.length), 0);
  // The data file alone has no header.
  using bare = CryptDevice.init(lib, img.path);
  await expectSysError(() => bare.load(), "crypt_load", "EINVAL");
});

Deno.test("nonblocking: timers keep firing during a slow argon2id check", async () => {
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
    assert.equal(await dev.activateByPassphrase(null, CRYPT_ANY_SLOT, pass.buf, pass.length), 0);
  } finally {
    clearInterval(timer);
  }
  const ms = performance.now() - t0;
  assert.ok(ticks > 0, `no timer tick during ${ms.toFixed(0)} ms`);
  console.log(`argon2id 64 MiB x8: ${ms.toFixed(0)} ms, ${ticks} timer ticks meanwhile`);
  // One call at a time per context: a second one is refused while the first runs.
  const first = dev.activateByPassphrase(null, CRYPT_ANY_SLOT, pass.buf, pass.length);
  assert.throws(() => dev.type, /still running/);
  await assert.rejects(dev.activateByPassphrase(null, CRYPT_ANY_SLOT, pass.buf, pass.length), /still running/);
  // Dispose while it runs: crypt_free waits until the call is over.
  dev[Symbol.dispose]();
  assert.equal(await first, 0);
  assert.throws(() => dev.type, /after dispose/);
});

Deno.test("log callback: libcryptsetup messages reach the logger (debug and error levels)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const junk = join(dir, "junk.img");
    await Deno.writeFile(junk, new Uint8Array(1024 * 1024));
    const seen: [LogLevel, string][] = [];
    lib.setLogger((level, msg) => seen.push([level, msg]));
    lib.setDebug(true);
    try {
      using dev = CryptDevice.init(lib, junk);
      await expectSysError(() => dev.load(), "crypt_load", "EINVAL");
    } finally {
      lib.setDebug(false);
      lib.setLogger(null);
    }
    assert.ok(seen.some(([l, m]) => l === "debug" && m.includes(junk)), JSON.stringify(seen.slice(0, 5)));
    assert.ok(seen.every(([, m]) => !m.endsWith("\n")));
    // With debug off, no debug lines arrive.
    const quiet: LogLevel[] = [];
    lib.setLogger((level) => quiet.push(level));
    try {
      using dev = CryptDevice.init(lib, junk);
      await expectSysError(() => dev.load(), "crypt_load", "EINVAL");
    } finally {
      lib.setLogger(null);
    }
    assert.ok(!quiet.includes("debug"));
    // Error-level lines arrive with debug off too (a failed init, before any device context exists).
    const errors: [LogLevel, string][] = [];
    lib.setLogger((level, msg) => errors.push([level, msg]));
    try {
      await expectSysError(() => CryptDevice.init(lib, join(dir, "missing.img")), "crypt_init", "ENOTBLK");
    } finally {
      lib.setLogger(null);
    }
    assert.deepEqual(errors, [["error", `Device ${join(dir, "missing.img")} does not exist or access denied.`]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("errors: init on a missing path names crypt_init and the errno; detail from libcryptsetup", async () => {
  // libcryptsetup reports a missing path as ENOTBLK ("does not exist or access denied").
  const e = await expectSysError(() => CryptDevice.init(lib, "/nonexistent/cryptsleep.img"), "crypt_init", "ENOTBLK");
  assert.equal(e.subject, "/nonexistent/cryptsleep.img");
  assert.match(e.detail ?? "", /does not exist|access denied/);
  await expectSysError(
    () => CryptDevice.init(lib, "/nonexistent/data", "/nonexistent/header"),
    "crypt_init_data_device",
    "ENOTBLK",
  );
});

// The kernel's list, not the node: a stale /dev/mapper/control may exist without the driver.
const haveDm = /\bdevice-mapper\b/.test(await Deno.readTextFile("/proc/misc"));

Deno.test("errors: no such mapping (EOPNOTSUPP without device-mapper, ENODEV with it)", async () => {
  await using img = await makeLuksImage({ type: "luks2", pbkdf: "pbkdf2", passphrase: enc.encode("pw") });
  using dev = CryptDevice.init(lib, img.path);
  dev.load();
  const name = "cryptsleep-test-nonexistent";
  assert.ok(["inactive", "invalid"].includes(dev.status(name)));
  const e1 = await expectSysError(
    () => dev.isSuspended(name),
    "crypt_get_active_device",
    haveDm ? "ENODEV" : "EOPNOTSUPP",
  );
  assert.match(e1.message, new RegExp(name));
  using pass = secret("pw");
  try {
    await dev.resumeByPassphrase(name, CRYPT_ANY_SLOT, pass.buf, pass.length);
    assert.fail("resume of a missing mapping succeeded");
  } catch (e) {
    assert.ok(e instanceof SysError);
    assert.equal(e.call, "crypt_resume_by_passphrase");
    assert.ok(e.errno > 0);
  }
  try {
    dev.suspend(name);
    assert.fail("suspend of a missing mapping succeeded");
  } catch (e) {
    assert.ok(e instanceof SysError);
    assert.equal(e.call, "crypt_suspend");
  }
  assert.throws(() => dev.resumeByPassphrase(name, -1, pass.buf, 999), RangeError);
});

Deno.test("CryptDevice: use after dispose is refused", async () => {
  await using img = await makeLuksImage({ type: "luks1", pbkdf: "pbkdf2", passphrase: enc.encode("pw") });
  const dev = CryptDevice.init(lib, img.path);
  dev.load();
  dev[Symbol.dispose]();
  dev[Symbol.dispose]();
  assert.throws(() => dev.type, /after dispose/);
});

Deno.test("volumeKeyGet: the key luksDump shows, in secret memory; a wrong passphrase is EPERM", async () => {
  await using img = await makeLuksImage({ type: "luks2", pbkdf: "argon2id", passphrase: enc.encode("right one") });
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
    const { key, size } = await dev.volumeKeyGet(CRYPT_ANY_SLOT, good.buf, good.length);
    using _key = key;
    assert.equal(size, 64);
    assert.equal([...key.view().subarray(0, size)].map((b) => b.toString(16).padStart(2, "0")).join(""), hex);
  }
  using bad = secret("wrong one");
  await expectSysError(dev.volumeKeyGet(CRYPT_ANY_SLOT, bad.buf, bad.length), "crypt_volume_key_get", "EPERM");
});

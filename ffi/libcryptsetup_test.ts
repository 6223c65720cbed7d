import assert from "node:assert/strict";
import { join } from "node:path";
import { readElf } from "../host/elf.ts";
import { SysError } from "./errors.ts";
import { CryptDevice, Libcryptsetup, type LogLevel, probeLibcryptsetup } from "./libcryptsetup.ts";

const lib = Libcryptsetup.open();
globalThis.addEventListener("unload", () => lib.close());

Deno.test("info: API level from the library file's symbol versions matches cryptsetup --version; symbols probed", async () => {
  const out = await new Deno.Command("cryptsetup", { args: ["--version"], stdout: "piped" }).output();
  const cli = new TextDecoder().decode(out.stdout).match(/cryptsetup (\d+\.\d+)/)?.[1];
  // 2.6.1 on this host: 2.6 added symbols, so its node CRYPTSETUP_2.6 is the newest (a release adding none would not).
  assert.equal(lib.info.version, cli);
  assert.match(lib.info.path, /^\/.*\/libcryptsetup\.so\.12/);
  assert.ok(readElf(lib.info.path)!.versions.includes(`CRYPTSETUP_${lib.info.version}`));
  assert.equal(lib.info.symbols.crypt_init, true);
  assert.equal(lib.info.symbols.crypt_suspend, true);
  assert.equal(lib.info.symbols.crypt_volume_key_get, true);
  const [maj, min] = lib.info.version.split(".").map(Number);
  const atLeast = (m: number) => maj > 2 || (maj === 2 && min >= m);
  assert.equal(lib.info.symbols.crypt_safe_alloc, true); // 2.3, under the 2.0 node: no version says it
  assert.equal(lib.info.symbols.crypt_activate_by_token_pin, atLeast(4));
  assert.equal(lib.info.symbols.crypt_resume_by_token_pin, atLeast(5));
  // Opened again, by its path this time: the same facts.
  const probe = probeLibcryptsetup(lib.info.path);
  assert.ok(probe.ok);
  assert.deepEqual(probe.info, lib.info);
  const missing = probeLibcryptsetup("libcryptsetup-missing.so.99");
  assert.ok(!missing.ok);
  assert.match(missing.error, /cannot load libcryptsetup-missing\.so\.99/);
});

Deno.test("log callback: libcryptsetup messages reach the logger (error level, no debug lines)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const junk = join(dir, "junk.img");
    await Deno.writeFile(junk, new Uint8Array(1024 * 1024));
    // Debug stays off: no debug lines arrive.
    const quiet: LogLevel[] = [];
    lib.setLogger((level) => quiet.push(level));
    try {
      using dev = CryptDevice.init(lib, junk);
      assert.throws(() => dev.load(), (e: unknown) => e instanceof SysError && e.code === "EINVAL");
    } finally {
      lib.setLogger(null);
    }
    assert.ok(!quiet.includes("debug"));
    // Error-level lines arrive (a failed init, before any device context exists), without a trailing newline.
    const errors: [LogLevel, string][] = [];
    lib.setLogger((level, msg) => errors.push([level, msg]));
    try {
      assert.throws(
        () => CryptDevice.init(lib, join(dir, "missing.img")),
        (e: unknown) => e instanceof SysError && e.call === "crypt_init" && e.code === "ENOTBLK",
      );
    } finally {
      lib.setLogger(null);
    }
    assert.deepEqual(errors, [["error", `Device ${join(dir, "missing.img")} does not exist or access denied.`]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

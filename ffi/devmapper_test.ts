import assert from "node:assert/strict";
import { join } from "node:path";
import {
  checkControl,
  cryptDevice,
  cryptKeyInKeyring,
  cryptParamsOnDevice,
  cryptParamsWithKey,
  cryptTemplate,
  info,
  resume,
  suspend,
} from "./devmapper.ts";
import { SysError } from "./errors.ts";
import { SafeBuffer } from "./safe_buffer.ts";

const kernelHasDm = /\bdevice-mapper\b/.test(await Deno.readTextFile("/proc/misc"));

Deno.test({
  name: "devmapper: clean SysError when the kernel has no device-mapper (host)",
  ignore: kernelHasDm,
  fn: () => {
    for (
      const fn of [() => info("cryptsleep-test"), () => suspend("cryptsleep-test"), () => resume("cryptsleep-test")]
    ) {
      assert.throws(fn, (e: unknown) => {
        assert.ok(e instanceof SysError, String(e));
        assert.equal(e.call, "open");
        assert.equal(e.subject, "/dev/mapper/control");
        assert.equal(e.code, "ENODEV");
        assert.match(e.hint, /modprobe dm_mod/);
        return true;
      });
    }
  },
});

Deno.test("devmapper.checkControl: decides from /proc/misc and the control node", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const withDm = join(dir, "misc-dm"), without = join(dir, "misc");
    await Deno.writeTextFile(withDm, " 63 vga_arbiter\n236 device-mapper\n");
    await Deno.writeTextFile(without, " 63 vga_arbiter\n");
    // Driver listed, node missing: fine, libdevmapper creates it.
    checkControl(join(dir, "control"), withDm);
    // Driver listed, node present and openable.
    checkControl("/dev/null", withDm);
    // Driver not listed: refused whatever the node.
    assert.throws(
      () => checkControl("/dev/null", without),
      (e: unknown) => e instanceof SysError && e.code === "ENODEV",
    );
    // No /proc (bare chroot): the node decides.
    checkControl("/dev/null", join(dir, "no-proc"));
    assert.throws(
      () => checkControl(join(dir, "control"), join(dir, "no-proc")),
      (e: unknown) => e instanceof SysError && e.code === "ENOENT" && e.subject === join(dir, "control"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "devmapper.info: an unknown name does not exist (needs device-mapper)",
  ignore: !kernelHasDm,
  fn: () => {
    const i = info(`cryptsleep-test-missing-${Deno.pid}`);
    assert.equal(i.exists, false);
    assert.equal(i.suspended, false);
  },
});

/** A C string in JS memory, standing in for a table libdevmapper returned (test data, not a real key). */
function cString(s: string): { buf: Uint8Array; ptr: Deno.PointerObject } {
  const buf = new TextEncoder().encode(s + "\0");
  return { buf, ptr: Deno.UnsafePointer.of(buf)! };
}

Deno.test("devmapper crypt params: key field kind, device, and the device swapped in secret memory", () => {
  const key = "00112233445566778899aabbccddeeff".repeat(4);
  const hex = cString(`capi:xts(aes)-plain64 ${key} 0 7:0 32768 1 allow_discards`);
  assert.equal(cryptKeyInKeyring(hex.ptr), false, "a ':' in the cipher is not a keyring key");
  assert.equal(cryptDevice(hex.ptr), "7:0");
  using swapped = cryptParamsOnDevice(hex.ptr, "7:3");
  const text = new TextDecoder().decode(swapped.view().subarray(0, swapped.size - 1));
  assert.equal(text, `capi:xts(aes)-plain64 ${key} 0 7:3 32768 1 allow_discards`);
  assert.equal(swapped.view()[swapped.size - 1], 0, "NUL-terminated");

  const ring = cString("aes-xts-plain64 :64:logon:cryptsetup:0b1f-d0 0 254:1 32768");
  assert.equal(cryptKeyInKeyring(ring.ptr), true);
  assert.equal(cryptDevice(ring.ptr), "254:1");

  assert.throws(() => cryptParamsOnDevice(hex.ptr, "/dev/loop3"), /major:minor/);
  assert.throws(() => cryptDevice(cString("aes-xts-plain64").ptr), /no key field/);
  assert.throws(() => cryptParamsOnDevice(cString(`aes ${key} 0`).ptr, "7:1"), /fewer fields/);
});

Deno.test("devmapper crypt params: template around the key, and params with a raw key written as hex", () => {
  const ring = cString("aes-xts-plain64 :64:logon:cryptsetup:0b1f-d0 0 254:1 32768 1 allow_discards");
  assert.deepEqual(cryptTemplate(ring.ptr), { cipher: "aes-xts-plain64", rest: "0 254:1 32768 1 allow_discards" });
  using key = SafeBuffer.alloc(64);
  key.view().set([0x00, 0x01, 0xab, 0xff]);
  using params = cryptParamsWithKey("aes-xts-plain64", key, 4, "0 7:2 32768");
  const text = new TextDecoder().decode(params.view().subarray(0, params.size - 1));
  assert.equal(text, "aes-xts-plain64 0001abff 0 7:2 32768");
  assert.throws(() => cryptParamsWithKey("aes", key, 0, "0 7:2 0"), RangeError);
});

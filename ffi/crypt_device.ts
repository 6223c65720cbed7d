/**
 * One libcryptsetup context (`struct crypt_device *`) on a LUKS device, header file or active mapping: luksSuspend
 * and luksResume of a dm-crypt mapping, and the volume key unlocked from a keyslot, into secret memory.
 *
 * - Every negative return (`-errno`) becomes a {@linkcode SysError} naming the call, the errno and what to do; the
 *   last error line libcryptsetup logged for that context is attached as `detail`.
 * - `crypt_resume_*`, `crypt_activate_by_token_pin`, `crypt_volume_key_get` and `crypt_suspend` are `nonblocking`
 *   FFI calls (Argon2 or an I/O flush may take seconds on another thread while the event loop keeps running); one
 *   such call per {@linkcode CryptDevice} at a time.
 *
 * @example
 * ```ts
 * import { CryptDevice } from "./crypt_device.ts";
 * import { Libcryptsetup } from "./libcryptsetup.ts";
 * import { SafeBuffer } from "./safe_buffer.ts";
 *
 * const lib = Libcryptsetup.open();
 * {
 *   using dev = CryptDevice.initByName(lib, "cryptroot");
 *   await dev.suspendAsync("cryptroot"); // luksSuspend: I/O held, key wiped from the kernel
 *   using pass = SafeBuffer.alloc(512);
 *   const length = 0; // fill pass first (Console.readSecret) and use the length it returns
 *   if (dev.isSuspended("cryptroot")) await dev.resumeByPassphrase("cryptroot", -1, pass, length);
 * }
 * lib.close();
 * ```
 *
 * @module
 */

import { cstr, cstrOrNull, readCString } from "./_cstring.ts";
import { SysError } from "./errors.ts";
import type { Libcryptsetup } from "./libcryptsetup.ts";
import { SafeBuffer } from "./safe_buffer.ts";

/** `CRYPT_ANY_SLOT`: any keyslot may open (the `keyslot` argument of the resume and key calls). */
export const CRYPT_ANY_SLOT: number = -1;
/** `CRYPT_ANY_TOKEN`: any token may unlock (the `token` argument of the token calls). */
export const CRYPT_ANY_TOKEN: number = -1;
/** `CRYPT_ACTIVATE_SUSPENDED` flag of `struct crypt_active_device`. */
const CRYPT_ACTIVATE_SUSPENDED = 1 << 21;

/** One libcryptsetup context (`struct crypt_device *`). Dispose to `crypt_free` it. */
export class CryptDevice implements Disposable {
  /** The library this context belongs to. */
  readonly lib: Libcryptsetup;
  #cd: Deno.PointerObject | null;
  #sink: number;
  #errors: string[] = [];
  #busy: string | null = null;
  #freeWhenIdle = false;

  private constructor(lib: Libcryptsetup, cd: Deno.PointerObject) {
    this.lib = lib;
    this.#cd = cd;
    this.#sink = lib.addSink((level, msg) => {
      if (level === 1) keepLast(this.#errors, msg);
    });
    lib.sym.crypt_set_log_callback(cd, lib.callbackPointer, Deno.UnsafePointer.create(BigInt(this.#sink)));
  }

  static #fromOut(lib: Libcryptsetup, call: string, subject: string, run: (out: BigUint64Array) => number) {
    const out = new BigUint64Array(1);
    lib.recentErrors = [];
    const r = run(out);
    if (r < 0) throw new SysError(call, -r, { subject, detail: lib.recentErrors.at(-1) });
    const cd = Deno.UnsafePointer.create(out[0]);
    if (cd === null) throw new SysError(call, 12, { subject, detail: "returned no context" });
    return new CryptDevice(lib, cd);
  }

  /** A context on a device, image file or detached header file (`crypt_init`). Call {@linkcode load} next. */
  static init(lib: Libcryptsetup, devicePath: string): CryptDevice {
    return CryptDevice.#fromOut(lib, "crypt_init", devicePath, (o) => lib.sym.crypt_init(o, cstr(devicePath)));
  }

  /** A context for an active dm mapping (`crypt_init_by_name[_and_header]`); the header is loaded already. */
  static initByName(lib: Libcryptsetup, dmName: string, headerPath?: string): CryptDevice {
    if (headerPath === undefined) {
      return CryptDevice.#fromOut(
        lib,
        "crypt_init_by_name",
        dmName,
        (o) => lib.sym.crypt_init_by_name(o, cstr(dmName)),
      );
    }
    return CryptDevice.#fromOut(
      lib,
      "crypt_init_by_name_and_header",
      `${dmName}, ${headerPath}`,
      (o) => lib.sym.crypt_init_by_name_and_header(o, cstr(dmName), cstr(headerPath)),
    );
  }

  /** The context for a call on this thread; refused while a nonblocking call uses it on another thread. */
  get #ptr(): Deno.PointerObject {
    if (this.#cd === null) throw new Error("CryptDevice: used after dispose");
    if (this.#busy) throw new Error(`CryptDevice: in use by ${this.#busy}, which is still running on this device`);
    return this.#cd;
  }

  #check(call: string, r: number, subject?: string): number {
    if (r < 0) throw new SysError(call, -r, { subject, detail: this.#errors.at(-1) });
    return r;
  }

  #sync<T>(call: string, fn: () => T): T {
    if (this.#busy) throw new Error(`CryptDevice: ${call} while ${this.#busy} is still running on this device`);
    this.#errors = [];
    return fn();
  }

  async #async(
    call: string,
    subject: string | undefined,
    fn: (cd: Deno.PointerObject) => Promise<number>,
  ): Promise<number> {
    const cd = this.#ptr;
    this.#busy = call;
    this.#errors = [];
    try {
      return this.#check(call, await fn(cd), subject);
    } finally {
      this.#busy = null;
      if (this.#freeWhenIdle) this[Symbol.dispose]();
    }
  }

  /** Data device path (`crypt_get_device_name`), the subject of error messages. */
  #deviceName(): string | undefined {
    return readCString(this.lib.sym.crypt_get_device_name(this.#ptr)) ?? undefined;
  }

  /** Read the header (`crypt_load`); `"LUKS"` or nothing accepts LUKS1 and LUKS2. */
  load(type?: "LUKS1" | "LUKS2" | "LUKS"): void {
    const t = type === undefined || type === "LUKS" ? null : cstr(type);
    this.#sync(
      "crypt_load",
      () => this.#check("crypt_load", this.lib.sym.crypt_load(this.#ptr, t, null), this.#deviceName()),
    );
  }

  /** The loaded header's UUID (`crypt_get_uuid`); undefined before {@linkcode CryptDevice.load}. */
  uuid(): string | undefined {
    return this.#sync("crypt_get_uuid", () => readCString(this.lib.sym.crypt_get_uuid(this.#ptr)) ?? undefined);
  }

  /** Whether the mapping is suspended (`crypt_get_active_device`, flag `CRYPT_ACTIVATE_SUSPENDED`). */
  isSuspended(dmName: string): boolean {
    // struct crypt_active_device { uint64_t offset, iv_offset, size; uint32_t flags; } = 32 bytes.
    const buf = new Uint8Array(32);
    this.#sync("crypt_get_active_device", () =>
      this.#check(
        "crypt_get_active_device",
        this.lib.sym.crypt_get_active_device(this.#ptr, cstr(dmName), buf),
        dmName,
      ));
    return (new DataView(buf.buffer).getUint32(24, true) & CRYPT_ACTIVATE_SUSPENDED) !== 0;
  }

  /** luksSuspend on another thread (`crypt_suspend`: flushes I/O, then wipes the volume key from the kernel). */
  async suspendAsync(dmName: string): Promise<void> {
    const name = cstr(dmName);
    await this.#async("crypt_suspend", dmName, (cd) => this.lib.sym.crypt_suspend(cd, name));
  }

  /**
   * `crypt_token_status`: what token `token` is. For an external token type (systemd's TPM2, FIDO2, PKCS#11) this
   * loads its plugin (dlopen), which stays loaded for later token calls. "external": its plugin is loaded;
   * "external-unknown": no plugin for it; "inactive": no such token.
   */
  tokenStatus(
    token: number,
  ): "inactive" | "internal" | "internal-unknown" | "external" | "external-unknown" | "invalid" {
    const r = this.#sync("crypt_token_status", () => this.lib.sym.crypt_token_status(this.#ptr, token, null));
    // enum crypt_token_info
    return (["invalid", "inactive", "internal", "internal-unknown", "external", "external-unknown"] as const)[r] ??
      "invalid";
  }

  /** Load LUKS2 volume keys via the kernel keyring (default on) or directly into dm-crypt. Library-wide switch. */
  setKeyring(enabled: boolean): void {
    this.#sync(
      "crypt_volume_key_keyring",
      () => this.#check("crypt_volume_key_keyring", this.lib.sym.crypt_volume_key_keyring(this.#ptr, enabled ? 1 : 0)),
    );
  }

  /** luksResume with a passphrase in safe memory; resolves to the keyslot that opened. Wrong passphrase: EPERM. */
  resumeByPassphrase(dmName: string, keyslot: number, pass: SafeBuffer, length: number): Promise<number> {
    checkLength(pass, length);
    const name = cstr(dmName);
    return this.#async(
      "crypt_resume_by_passphrase",
      dmName,
      (cd) => this.lib.sym.crypt_resume_by_passphrase(cd, name, keyslot, pass.pointer, BigInt(length)),
    );
  }

  /**
   * luksResume with a key file (`size` 0 = whole file, `offset` bytes into it); resolves to the keyslot. Not called
   * yet: kept for unlocking by key file (the next issue); libcryptsetup reads the file, no key passes through JS.
   */
  resumeByKeyfileDeviceOffset(
    dmName: string,
    keyslot: number,
    keyfile: string,
    size: number,
    offset: bigint,
  ): Promise<number> {
    const name = cstr(dmName), file = cstr(keyfile);
    return this.#async(
      "crypt_resume_by_keyfile_device_offset",
      dmName,
      (cd) => this.lib.sym.crypt_resume_by_keyfile_device_offset(cd, name, keyslot, file, BigInt(size), offset),
    );
  }

  /**
   * luksResume through a LUKS2 token (libcryptsetup 2.5+); `pin` may be null. Resolves to the keyslot.
   */
  resumeByTokenPin(
    dmName: string,
    tokenType: string | null,
    token: number,
    pin: SafeBuffer | null,
    pinLength: number,
  ): Promise<number> {
    const f = this.lib.sym.crypt_resume_by_token_pin;
    if (!f || !this.lib.has("crypt_resume_by_token_pin")) {
      return Promise.reject(missing("crypt_resume_by_token_pin", "2.5", this.lib));
    }
    if (pin) checkLength(pin, pinLength);
    else if (pinLength !== 0) throw new RangeError("resumeByTokenPin: pinLength must be 0 without a pin");
    const name = cstr(dmName), type = cstrOrNull(tokenType);
    return this.#async(
      "crypt_resume_by_token_pin",
      dmName,
      (cd) => f(cd, name, type, token, pin?.pointer ?? null, BigInt(pinLength), null),
    );
  }

  /**
   * `crypt_activate_by_token_pin` (libcryptsetup 2.4+): with `dmName` null it only checks that the token unlocks a
   * keyslot (nothing is activated). Resolves to the keyslot.
   */
  activateByTokenPin(
    dmName: string | null,
    tokenType: string | null,
    token: number,
    pin: SafeBuffer | null,
    pinLength: number,
    flags = 0,
  ): Promise<number> {
    const f = this.lib.sym.crypt_activate_by_token_pin;
    if (!f || !this.lib.has("crypt_activate_by_token_pin")) {
      return Promise.reject(missing("crypt_activate_by_token_pin", "2.4", this.lib));
    }
    if (pin) checkLength(pin, pinLength);
    else if (pinLength !== 0) throw new RangeError("activateByTokenPin: pinLength must be 0 without a pin");
    const name = cstrOrNull(dmName), type = cstrOrNull(tokenType);
    return this.#async(
      "crypt_activate_by_token_pin",
      dmName ?? "check only",
      (cd) => f(cd, name, type, token, pin?.pointer ?? null, BigInt(pinLength), null, flags),
    );
  }

  /**
   * The volume key, unlocked from a keyslot by a passphrase (`crypt_volume_key_get`, non-blocking: Argon2), into
   * secret memory. Needs a loaded header. Wrong passphrase: EPERM. The caller disposes the key.
   */
  async volumeKeyGet(
    keyslot: number,
    pass: SafeBuffer,
    length: number,
  ): Promise<{ key: SafeBuffer; size: number; keyslot: number }> {
    checkLength(pass, length);
    const size = this.#sync("crypt_get_volume_key_size", () => this.lib.sym.crypt_get_volume_key_size(this.#ptr));
    if (size <= 0) throw new Error("crypt_get_volume_key_size: no volume key size (is the header loaded?)");
    const subject = this.#deviceName();
    const key = SafeBuffer.alloc(size);
    const got = new BigUint64Array([BigInt(size)]);
    try {
      // its return is the keyslot that opened
      const opened = await this.#async(
        "crypt_volume_key_get",
        subject,
        (cd) => this.lib.sym.crypt_volume_key_get(cd, keyslot, key.pointer, got, pass.pointer, BigInt(length)),
      );
      return { key, size: Number(got[0]), keyslot: opened };
    } catch (err) {
      key[Symbol.dispose]();
      throw err;
    }
  }

  /** `crypt_free`. If a nonblocking call is still running, frees when it ends. Idempotent. */
  [Symbol.dispose](): void {
    if (this.#cd === null) return;
    if (this.#busy) {
      this.#freeWhenIdle = true;
      return;
    }
    this.lib.sym.crypt_free(this.#cd);
    this.#cd = null;
    this.lib.removeSink(this.#sink);
  }
}

/** Keep the last few error lines (they become SysError.detail). */
function keepLast(list: string[], msg: string): void {
  list.push(msg);
  if (list.length > 8) list.shift();
}

function checkLength(buf: SafeBuffer, length: number): void {
  if (!Number.isInteger(length) || length < 0 || length > buf.size) {
    throw new RangeError(`length ${length} outside 0..${buf.size} of the SafeBuffer`);
  }
}

function missing(call: string, since: string, lib: Libcryptsetup): SysError {
  return new SysError(call, 38, {
    hint: `libcryptsetup ${lib.info.version} (${lib.info.path}) lacks it; needs ${since} or newer`,
  });
}

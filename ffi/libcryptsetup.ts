/**
 * libcryptsetup (libcryptsetup.so.12, API 2.x) through `Deno.dlopen`: load LUKS headers, inspect keyslots and their
 * PBKDF cost, suspend/resume dm-crypt mappings (luksSuspend/luksResume), check passphrases.
 *
 * - Every negative return (`-errno`) becomes a {@linkcode SysError} naming the call, the errno and what to do; the
 *   last error line libcryptsetup logged for that device is attached as `detail`.
 * - `crypt_resume_*` and `crypt_activate_by_passphrase` are `nonblocking` FFI calls (Argon2 may run for seconds on
 *   another thread while the event loop keeps running); one such call per {@linkcode CryptDevice} at a time.
 * - Symbols newer than 2.2 are optional; {@linkcode LibcryptsetupInfo.symbols} tells which exist.
 * - Version: libcryptsetup has no version call (no `crypt_get_version` in 2.2…2.8). The library itself logs
 *   "… initialized in cryptsetup library version X." at debug level the first time its crypto backend starts, so
 *   {@linkcode Libcryptsetup.open} enables debug logging, triggers that (a `crypt_benchmark` that fails fast) and
 *   reads X (`versionSource: "library"`). If that line was already logged earlier in this process, the version is
 *   the highest API level whose marker symbol exists, e.g. `"2.6"` (`versionSource: "symbols"`).
 *
 * @example
 * ```ts
 * import { CryptDevice, Libcryptsetup } from "./libcryptsetup.ts";
 * import { SafeBuffer } from "./safe_buffer.ts";
 *
 * const lib = Libcryptsetup.open();
 * console.log(lib.info.version, lib.info.symbols.crypt_resume_by_token_pin);
 * using dev = CryptDevice.init(lib, "/path/to/luks.img");
 * dev.load();
 * console.log(dev.type, dev.uuid, dev.keyslots());
 * using pass = SafeBuffer.alloc(512);
 * // fill pass (e.g. Console.readSecret) then check it without activating anything:
 * // const slot = await dev.activateByPassphrase(null, -1, pass, length);
 * lib.close();
 * ```
 *
 * @module
 */

import { cstr, cstrOrNull, readCString } from "./_cstring.ts";
import { SysError } from "./errors.ts";
import { SafeBuffer } from "./safe_buffer.ts";

/** Default soname (Debian/Fedora/Arch package libcryptsetup12 / cryptsetup-libs). */
export const LIBCRYPTSETUP_SONAME = "libcryptsetup.so.12";

/** `CRYPT_ANY_SLOT`. */
export const CRYPT_ANY_SLOT = -1;
/** `CRYPT_ANY_TOKEN`. */
export const CRYPT_ANY_TOKEN = -1;
/** `CRYPT_ACTIVATE_SUSPENDED` flag of `struct crypt_active_device`. */
export const CRYPT_ACTIVATE_SUSPENDED = 1 << 21;
/** crypt_activate_*: reload the table of an active device (drops the old table and what it pinned). */
export const CRYPT_ACTIVATE_REFRESH = 1 << 18;
/** `CRYPT_ACTIVATE_READONLY`. */
export const CRYPT_ACTIVATE_READONLY = 1 << 0;
/** `CRYPT_DEBUG_ALL` / `CRYPT_DEBUG_NONE` for {@linkcode Libcryptsetup.setDebug}. */
export const CRYPT_DEBUG_ALL = -1;
const CRYPT_DEBUG_NONE = 0;

const SYMBOLS = {
  // Present since 2.0 (the oldest we support is 2.2).
  crypt_init: { parameters: ["buffer", "buffer"], result: "i32" },
  crypt_init_data_device: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  crypt_init_by_name: { parameters: ["buffer", "buffer"], result: "i32" },
  crypt_init_by_name_and_header: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  crypt_load: { parameters: ["pointer", "buffer", "pointer"], result: "i32" },
  crypt_free: { parameters: ["pointer"], result: "void" },
  crypt_get_type: { parameters: ["pointer"], result: "pointer" },
  crypt_get_uuid: { parameters: ["pointer"], result: "pointer" },
  crypt_get_device_name: { parameters: ["pointer"], result: "pointer" },
  crypt_get_metadata_device_name: { parameters: ["pointer"], result: "pointer" },
  crypt_keyslot_max: { parameters: ["buffer"], result: "i32" },
  crypt_keyslot_status: { parameters: ["pointer", "i32"], result: "i32" },
  crypt_keyslot_get_pbkdf: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  crypt_status: { parameters: ["pointer", "buffer"], result: "i32" },
  crypt_get_active_device: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  crypt_suspend: { parameters: ["pointer", "buffer"], result: "i32" },
  crypt_suspend_nb: { name: "crypt_suspend", parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  crypt_deactivate: { parameters: ["pointer", "buffer"], result: "i32" },
  crypt_resume_by_passphrase: {
    parameters: ["pointer", "buffer", "i32", "pointer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  crypt_resume_by_keyfile_device_offset: {
    parameters: ["pointer", "buffer", "i32", "buffer", "usize", "u64"],
    result: "i32",
    nonblocking: true,
  },
  crypt_activate_by_passphrase: {
    parameters: ["pointer", "buffer", "i32", "pointer", "usize", "u32"],
    result: "i32",
    nonblocking: true,
  },
  crypt_volume_key_keyring: { parameters: ["pointer", "i32"], result: "i32" },
  crypt_set_log_callback: { parameters: ["pointer", "function", "pointer"], result: "void" },
  crypt_set_debug_level: { parameters: ["i32"], result: "void" },
  crypt_benchmark: {
    parameters: ["pointer", "buffer", "buffer", "usize", "usize", "usize", "buffer", "buffer"],
    result: "i32",
  },
  // 2.3
  crypt_resume_by_volume_key: {
    parameters: ["pointer", "buffer", "pointer", "usize"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
  crypt_volume_key_get_nb: {
    name: "crypt_volume_key_get",
    parameters: ["pointer", "i32", "pointer", "buffer", "pointer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  crypt_get_volume_key_size: { parameters: ["pointer"], result: "i32" },
  crypt_safe_alloc: { parameters: ["usize"], result: "pointer", optional: true },
  crypt_safe_free: { parameters: ["pointer"], result: "void", optional: true },
  crypt_safe_memzero: { parameters: ["pointer", "usize"], result: "void", optional: true },
  // 2.4
  crypt_header_is_detached: { parameters: ["pointer"], result: "i32", optional: true },
  crypt_activate_by_token_pin: {
    parameters: ["pointer", "buffer", "buffer", "i32", "pointer", "usize", "pointer", "u32"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
  // 2.5
  crypt_resume_by_token_pin: {
    parameters: ["pointer", "buffer", "buffer", "i32", "pointer", "usize", "pointer"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
  // 2.6 (keyslot contexts)
  crypt_keyslot_context_free: { parameters: ["pointer"], result: "void", optional: true },
  // 2.7
  crypt_resume_by_keyslot_context: {
    parameters: ["pointer", "buffer", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
  // 2.8
  crypt_safe_memcpy: { parameters: ["pointer", "pointer", "usize"], result: "pointer", optional: true },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** First API level of each optional marker symbol, newest first (for the version fallback). */
const API_MARKERS: [string, string][] = [
  ["crypt_safe_memcpy", "2.8"],
  ["crypt_resume_by_keyslot_context", "2.7"],
  ["crypt_keyslot_context_free", "2.6"],
  ["crypt_resume_by_token_pin", "2.5"],
  ["crypt_activate_by_token_pin", "2.4"],
  ["crypt_safe_alloc", "2.3"],
];

/** What this libcryptsetup is and supports. */
export interface LibcryptsetupInfo {
  /** Real file mapped into the process (from /proc/self/maps), else the name given to dlopen. */
  path: string;
  /** E.g. "2.6.1" (from the library's own log line), or "2.6" (API level from symbols). */
  version: string;
  /** Where {@linkcode version} came from. */
  versionSource: "library" | "symbols";
  /** Every bound symbol → present. Optional ones (2.3+) may be false. */
  symbols: Record<string, boolean>;
}

/** libcryptsetup log levels by name. */
export type LogLevel = "debug" | "normal" | "error" | "verbose";
/** Receives libcryptsetup's messages (trailing newline removed). Never gets secrets: libcryptsetup logs none. */
export type Logger = (level: LogLevel, msg: string) => void;

function levelName(n: number): LogLevel {
  switch (n) {
    case 0:
      return "normal";
    case 1:
      return "error";
    case 2:
      return "verbose";
    default:
      return "debug"; // -1 CRYPT_LOG_DEBUG, -2 CRYPT_LOG_DEBUG_JSON
  }
}

/** The version line is logged once per loaded library, so remember it by real path. */
const versionCache = new Map<string, string>();
const VERSION_RE = /cryptsetup library version (\d+\.\d+(?:\.\d+)?(?:[-~][\w.]+)?)\.?\s*$/;

/** @internal for tests: forget cached versions (the next open falls back to symbols: the line is logged once). */
export function forgetVersionCache(): void {
  versionCache.clear();
}

/** Instances in open order: the newest open one owns the library-wide log callback. */
const openInstances: Libcryptsetup[] = [];

/**
 * Which symbols exist, via a separate handle declaring each one as optional and never calling it. Needed because
 * Deno 2.9 turns a missing `optional` + `nonblocking` symbol into a wrapper that throws when called, not into null.
 */
function presentSymbols(path: string): Record<string, boolean> {
  const names = Object.keys(SYMBOLS).filter((n) => !n.endsWith("_nb"));
  const decl = Object.fromEntries(names.map((n) => [n, { parameters: [], result: "void", optional: true }])) as Record<
    string,
    Deno.ForeignFunction<[], "void"> & { optional: true }
  >;
  const probe = Deno.dlopen(path, decl);
  try {
    return Object.fromEntries(names.map((n) => [n, probe.symbols[n] !== null]));
  } finally {
    probe.close();
  }
}

function mappedPath(fragment: string): string | null {
  try {
    for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
      const i = line.indexOf("/");
      if (i >= 0 && line.includes(fragment)) return line.slice(i);
    }
  } catch { /* no /proc in a bare chroot */ }
  return null;
}

/** Try to open libcryptsetup and report what it is, without keeping it open. */
export function probeLibcryptsetup(
  path?: string,
): { ok: true; info: LibcryptsetupInfo } | { ok: false; error: string } {
  try {
    const lib = Libcryptsetup.open(path);
    const info = lib.info;
    lib.close();
    return { ok: true, info };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
}

/** A dlopen'ed libcryptsetup with its log routing. */
export class Libcryptsetup {
  /** What this library is and supports. */
  readonly info: LibcryptsetupInfo;
  /** @internal raw symbols for {@linkcode CryptDevice}. */
  readonly sym: Lib["symbols"];
  #lib: Lib;
  #logger: Logger | null = null;
  #callback: Deno.UnsafeCallback<{ readonly parameters: ["i32", "pointer", "pointer"]; readonly result: "void" }>;
  #sinks = new Map<number, (level: number, msg: string) => void>();
  #nextId = 1;
  #debug = CRYPT_DEBUG_NONE;
  #closed = false;

  private constructor(lib: Lib, requested: string) {
    this.#lib = lib;
    this.sym = lib.symbols;
    this.#callback = new Deno.UnsafeCallback(
      { parameters: ["i32", "pointer", "pointer"], result: "void" } as const,
      (level, msg, usr) => this.#onLog(level, msg, usr),
    );
    const path = mappedPath("libcryptsetup") ?? requested;
    const symbols = presentSymbols(requested);
    this.#register();
    let version = versionCache.get(path) ?? this.#probeVersion();
    let versionSource: "library" | "symbols" = "library";
    if (version) versionCache.set(path, version);
    else {
      versionSource = "symbols";
      version = API_MARKERS.find(([s]) => symbols[s])?.[1] ?? "2.2";
    }
    this.info = { path, version, versionSource, symbols };
  }

  /** dlopen libcryptsetup (default {@linkcode LIBCRYPTSETUP_SONAME}). Throws if missing or older than 2.2. */
  static open(path: string = LIBCRYPTSETUP_SONAME): Libcryptsetup {
    let lib: Lib;
    try {
      lib = Deno.dlopen(path, SYMBOLS);
    } catch (e) {
      throw new Error(
        `cannot load ${path}: ${(e as Error).message}; install libcryptsetup 2.2 or newer (package libcryptsetup12)`,
      );
    }
    return new Libcryptsetup(lib, path);
  }

  /** Route libcryptsetup messages (all devices) to `fn`; `null` drops them. Debug lines need {@linkcode setDebug}. */
  setLogger(fn: Logger | null): void {
    this.#logger = fn;
  }

  /** Enable or disable libcryptsetup debug messages (global to the library: `crypt_set_debug_level`). */
  setDebug(enabled: boolean): void {
    this.#debug = enabled ? CRYPT_DEBUG_ALL : CRYPT_DEBUG_NONE;
    this.sym.crypt_set_debug_level(this.#debug);
  }

  /** True if `name` exists in this libcryptsetup. */
  has(name: keyof typeof SYMBOLS): boolean {
    return this.info.symbols[name] === true;
  }

  /** @internal a log sink for one device; returns its id to pass as usrptr. */
  addSink(fn: (level: number, msg: string) => void): number {
    const id = this.#nextId++;
    this.#sinks.set(id, fn);
    return id;
  }

  /** @internal */
  removeSink(id: number): void {
    this.#sinks.delete(id);
  }

  /** @internal pointer for crypt_set_log_callback. */
  get callbackPointer(): Deno.PointerObject {
    return this.#callback.pointer;
  }

  /** @internal recent library-wide error lines (crypt_init failures happen before a device exists). */
  recentErrors: string[] = [];

  #onLog(level: number, msgPtr: Deno.PointerValue, usr: Deno.PointerValue): void {
    if (msgPtr === null) return;
    const msg = Deno.UnsafePointerView.getCString(msgPtr).replace(/\n+$/, "");
    const id = usr === null ? 0 : Number(Deno.UnsafePointer.value(usr));
    const sink = this.#sinks.get(id);
    if (sink) sink(level, msg);
    else if (level === 1) keepLast(this.recentErrors, msg);
    try {
      this.#logger?.(levelName(level), msg);
    } catch { /* a throwing logger must not unwind into C */ }
  }

  #register(): void {
    this.sym.crypt_set_log_callback(null, this.#callback.pointer, null);
    const i = openInstances.indexOf(this);
    if (i >= 0) openInstances.splice(i, 1);
    openInstances.push(this);
  }

  #probeVersion(): string | null {
    let found: string | null = null;
    const id = this.addSink((_level, msg) => {
      found ??= msg.match(VERSION_RE)?.[1] ?? null;
    });
    const prevLogger = this.#logger;
    this.#logger = null;
    this.sym.crypt_set_log_callback(null, this.#callback.pointer, Deno.UnsafePointer.create(BigInt(id)));
    this.sym.crypt_set_debug_level(CRYPT_DEBUG_ALL);
    try {
      // Starts the crypto backend (which logs the version once), then fails fast on the null cipher.
      this.sym.crypt_benchmark(
        null,
        cstr("cipher_null"),
        cstr("ecb"),
        1n,
        0n,
        0n,
        new Float64Array(1),
        new Float64Array(1),
      );
    } finally {
      this.sym.crypt_set_debug_level(this.#debug);
      this.sym.crypt_set_log_callback(null, this.#callback.pointer, null);
      this.removeSink(id);
      this.#logger = prevLogger;
    }
    return found;
  }

  /** Unregister the log callback (handing it to another open instance) and dlclose. */
  close(): void {
    if (this.#closed) return;
    if (this.#sinks.size > 0) {
      throw new Error(`Libcryptsetup.close: ${this.#sinks.size} CryptDevice(s) still open; dispose them first`);
    }
    this.#closed = true;
    const i = openInstances.indexOf(this);
    if (i >= 0) openInstances.splice(i, 1);
    this.sym.crypt_set_log_callback(null, null, null);
    const next = openInstances.at(-1);
    if (next) next.#register();
    this.#callback.close();
    this.#lib.close();
  }
}

/** Keyslot state from `crypt_keyslot_status`. */
export type KeyslotStatus = "active" | "active-last" | "inactive" | "unbound";
/** PBKDF of one keyslot: what unlocking it costs. */
export interface KeyslotPbkdf {
  type: string;
  hash: string | null;
  /** Argon2 memory in KiB (0 for pbkdf2). */
  memoryKiB: number;
  /** pbkdf2 iterations or Argon2 time cost. */
  iterations: number;
  /** Argon2 threads (0 for pbkdf2). */
  parallel: number;
}
/** One keyslot. */
export interface Keyslot {
  slot: number;
  status: KeyslotStatus;
  pbkdf?: KeyslotPbkdf;
}
/** `struct crypt_active_device`. */
export interface ActiveDevice {
  offset: bigint;
  ivOffset: bigint;
  size: bigint;
  flags: number;
}

const SLOT_STATUS: Record<number, KeyslotStatus | undefined> = {
  1: "inactive",
  2: "active",
  3: "active-last",
  4: "unbound",
};
const DEVICE_STATUS = ["invalid", "inactive", "active", "busy"] as const;

/** One libcryptsetup context (`struct crypt_device *`). Dispose to `crypt_free` it. */
export class CryptDevice implements Disposable {
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

  /**
   * A context on a device or image file (`crypt_init`), or on a detached header with its data device
   * (`crypt_init_data_device`). Call {@linkcode load} next.
   */
  static init(lib: Libcryptsetup, devicePath: string, headerPath?: string): CryptDevice {
    if (headerPath === undefined) {
      return CryptDevice.#fromOut(lib, "crypt_init", devicePath, (o) => lib.sym.crypt_init(o, cstr(devicePath)));
    }
    return CryptDevice.#fromOut(
      lib,
      "crypt_init_data_device",
      `${headerPath}, ${devicePath}`,
      (o) => lib.sym.crypt_init_data_device(o, cstr(headerPath), cstr(devicePath)),
    );
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

  /** Read the header (`crypt_load`); `"LUKS"` or nothing accepts LUKS1 and LUKS2. */
  load(type?: "LUKS1" | "LUKS2" | "LUKS"): void {
    const t = type === undefined || type === "LUKS" ? null : cstr(type);
    this.#sync(
      "crypt_load",
      () => this.#check("crypt_load", this.lib.sym.crypt_load(this.#ptr, t, null), this.deviceName ?? undefined),
    );
  }

  /** "LUKS1", "LUKS2", … or null before load. */
  get type(): string | null {
    return readCString(this.lib.sym.crypt_get_type(this.#ptr));
  }
  /** LUKS UUID, or null before load. */
  get uuid(): string | null {
    return readCString(this.lib.sym.crypt_get_uuid(this.#ptr));
  }
  /** Data device path. */
  get deviceName(): string | null {
    return readCString(this.lib.sym.crypt_get_device_name(this.#ptr));
  }
  /** Header device path if detached, else null. */
  get metadataDeviceName(): string | null {
    return readCString(this.lib.sym.crypt_get_metadata_device_name(this.#ptr));
  }
  /** Whether the header is detached (`crypt_header_is_detached`, 2.4+; else from metadataDeviceName). */
  get headerDetached(): boolean {
    const f = this.lib.sym.crypt_header_is_detached;
    if (f && this.lib.has("crypt_header_is_detached")) return f(this.#ptr) === 1;
    return this.metadataDeviceName !== null;
  }

  /** All keyslots of the loaded header with status, and PBKDF for used ones. */
  keyslots(): Keyslot[] {
    const type = this.type;
    if (type === null) throw new Error("CryptDevice.keyslots: call load() first");
    const max = this.lib.sym.crypt_keyslot_max(cstr(type));
    if (max < 0) throw new SysError("crypt_keyslot_max", -max, { subject: type });
    const out: Keyslot[] = [];
    for (let slot = 0; slot < max; slot++) {
      const status = SLOT_STATUS[this.lib.sym.crypt_keyslot_status(this.#ptr, slot)];
      if (!status) continue; // CRYPT_SLOT_INVALID
      out.push(status === "inactive" ? { slot, status } : { slot, status, pbkdf: this.keyslotPbkdf(slot) });
    }
    return out;
  }

  /** `crypt_keyslot_get_pbkdf` for one slot: type, memory (what unlocking needs), iterations, threads. */
  keyslotPbkdf(slot: number): KeyslotPbkdf {
    // struct crypt_pbkdf_type { const char *type, *hash; uint32_t time_ms, iterations, max_memory_kb,
    //                           parallel_threads, flags; } = 16 + 20 bytes, padded to 40.
    const buf = new Uint8Array(40);
    this.#check("crypt_keyslot_get_pbkdf", this.lib.sym.crypt_keyslot_get_pbkdf(this.#ptr, slot, buf), `slot ${slot}`);
    const v = new DataView(buf.buffer);
    const ptr = (o: number) => Deno.UnsafePointer.create(v.getBigUint64(o, true));
    return {
      type: readCString(ptr(0)) ?? "unknown",
      hash: readCString(ptr(8)),
      iterations: v.getUint32(20, true),
      memoryKiB: v.getUint32(24, true),
      parallel: v.getUint32(28, true),
    };
  }

  /** `crypt_status` of a mapping. */
  status(dmName: string): "invalid" | "inactive" | "active" | "busy" {
    const r = this.#sync("crypt_status", () => this.lib.sym.crypt_status(this.#ptr, cstr(dmName)));
    return DEVICE_STATUS[r] ?? "invalid";
  }

  /** `crypt_get_active_device`: offset, size, flags of an active mapping. */
  activeDevice(dmName: string): ActiveDevice {
    // struct crypt_active_device { uint64_t offset, iv_offset, size; uint32_t flags; } = 32 bytes.
    const buf = new Uint8Array(32);
    this.#sync("crypt_get_active_device", () =>
      this.#check(
        "crypt_get_active_device",
        this.lib.sym.crypt_get_active_device(this.#ptr, cstr(dmName), buf),
        dmName,
      ));
    const v = new DataView(buf.buffer);
    return {
      offset: v.getBigUint64(0, true),
      ivOffset: v.getBigUint64(8, true),
      size: v.getBigUint64(16, true),
      flags: v.getUint32(24, true),
    };
  }

  /** Whether the mapping is suspended (`CRYPT_ACTIVATE_SUSPENDED`). */
  isSuspended(dmName: string): boolean {
    return (this.activeDevice(dmName).flags & CRYPT_ACTIVATE_SUSPENDED) !== 0;
  }

  /** luksSuspend: suspend I/O and wipe the volume key from the kernel (`crypt_suspend`, blocks the thread). */
  suspend(dmName: string): void {
    this.#sync(
      "crypt_suspend",
      () => this.#check("crypt_suspend", this.lib.sym.crypt_suspend(this.#ptr, cstr(dmName)), dmName),
    );
  }

  /** {@linkcode suspend} on another thread (flushing I/O may take long). */
  async suspendAsync(dmName: string): Promise<void> {
    const name = cstr(dmName);
    await this.#async("crypt_suspend", dmName, (cd) => this.lib.sym.crypt_suspend_nb(cd, name));
  }

  /** Remove an active mapping (`crypt_deactivate`). */
  deactivate(dmName: string): void {
    this.#sync(
      "crypt_deactivate",
      () => this.#check("crypt_deactivate", this.lib.sym.crypt_deactivate(this.#ptr, cstr(dmName)), dmName),
    );
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

  /** luksResume with a key file (`size` 0 = whole file, `offset` bytes into it). */
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

  /** luksResume through a LUKS2 token (libcryptsetup 2.5+); `pin` may be null. */
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
   * The volume key, unlocked from a keyslot by a passphrase (`crypt_volume_key_get`, non-blocking: Argon2), into
   * secret memory. Needs a loaded header. Wrong passphrase: EPERM. The caller disposes the key.
   */
  async volumeKeyGet(keyslot: number, pass: SafeBuffer, length: number): Promise<{ key: SafeBuffer; size: number }> {
    checkLength(pass, length);
    const size = this.#sync("crypt_get_volume_key_size", () => this.lib.sym.crypt_get_volume_key_size(this.#ptr));
    if (size <= 0) throw new Error("crypt_get_volume_key_size: no volume key size (is the header loaded?)");
    const key = SafeBuffer.alloc(size);
    const got = new BigUint64Array([BigInt(size)]);
    try {
      await this.#async(
        "crypt_volume_key_get",
        this.deviceName ?? undefined,
        (cd) => this.lib.sym.crypt_volume_key_get_nb(cd, keyslot, key.pointer, got, pass.pointer, BigInt(length)),
      );
      return { key, size: Number(got[0]) };
    } catch (err) {
      key[Symbol.dispose]();
      throw err;
    }
  }

  /** luksResume with the raw volume key (libcryptsetup 2.3+). */
  resumeByVolumeKey(dmName: string, key: SafeBuffer, length: number): Promise<number> {
    const f = this.lib.sym.crypt_resume_by_volume_key;
    if (!f || !this.lib.has("crypt_resume_by_volume_key")) {
      return Promise.reject(missing("crypt_resume_by_volume_key", "2.3", this.lib));
    }
    checkLength(key, length);
    const name = cstr(dmName);
    return this.#async("crypt_resume_by_volume_key", dmName, (cd) => f(cd, name, key.pointer, BigInt(length)));
  }

  /**
   * `crypt_activate_by_passphrase`; with `dmName` null it only checks the passphrase (nothing is activated).
   * Resolves to the keyslot used; a wrong passphrase rejects with SysError EPERM.
   */
  activateByPassphrase(
    dmName: string | null,
    keyslot: number,
    pass: SafeBuffer,
    length: number,
    flags = 0,
  ): Promise<number> {
    checkLength(pass, length);
    const name = cstrOrNull(dmName);
    return this.#async(
      "crypt_activate_by_passphrase",
      dmName ?? "check only",
      (cd) => this.lib.sym.crypt_activate_by_passphrase(cd, name, keyslot, pass.pointer, BigInt(length), flags),
    );
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

/**
 * libcryptsetup (libcryptsetup.so.12, API 2.x) through `Deno.dlopen`: which library it is, which of the calls
 * cryptsleep binds it has, and the routing of its log messages. The calls on a device are {@linkcode CryptDevice}'s.
 *
 * - Symbols newer than 2.0 are optional; {@linkcode LibcryptsetupInfo.symbols} tells which exist.
 * - Version: libcryptsetup has no version call (no `crypt_get_version` in 2.0…2.8), and the package database is not
 *   in the chroot the agent runs in. The library's file says it: its exported symbols are versioned, and every
 *   release that adds to the API adds a version node (`CRYPTSETUP_2.0`, `CRYPTSETUP_2.4`, …, lib/libcryptsetup.sym
 *   upstream; `readelf -V` shows them). {@linkcode LibcryptsetupInfo.version} is the newest node, e.g. `"2.6"` for
 *   2.6.1: the API level, not the release (2.1…2.3 added no node and read as `"2.0"`).
 *
 * @example
 * ```ts
 * import { CryptDevice, Libcryptsetup, probeLibcryptsetup } from "./libcryptsetup.ts";
 *
 * const probe = probeLibcryptsetup();
 * if (probe.ok) console.log(probe.info.version, probe.info.path, probe.info.symbols.crypt_resume_by_token_pin);
 * const lib = Libcryptsetup.open();
 * lib.setLogger((level, msg) => level === "error" && console.error(`libcryptsetup: ${msg}`));
 * {
 *   using dev = CryptDevice.init(lib, "/path/to/luks.img");
 *   dev.load();
 * }
 * lib.close();
 * ```
 *
 * @module
 */

import { bindLibrary, type BoundLibrary } from "./bind.ts";
import { readElf } from "../host/elf.ts";

export { CRYPT_ANY_SLOT, CRYPT_ANY_TOKEN, CryptDevice } from "./crypt_device.ts";

/** Default soname (Debian/Fedora/Arch package libcryptsetup12 / cryptsetup-libs). */
export const LIBCRYPTSETUP_SONAME = "libcryptsetup.so.12";

/** The libcryptsetup calls bound here: the keys of {@linkcode LibcryptsetupInfo.symbols}. */
export type LibcryptsetupSymbol =
  | "crypt_init"
  | "crypt_init_by_name"
  | "crypt_init_by_name_and_header"
  | "crypt_load"
  | "crypt_free"
  | "crypt_get_device_name"
  | "crypt_get_uuid"
  | "crypt_get_active_device"
  | "crypt_suspend"
  | "crypt_resume_by_passphrase"
  | "crypt_resume_by_keyfile_device_offset"
  | "crypt_volume_key_keyring"
  | "crypt_set_log_callback"
  | "crypt_volume_key_get"
  | "crypt_get_volume_key_size"
  | "crypt_safe_alloc"
  | "crypt_safe_free"
  | "crypt_safe_memzero"
  | "crypt_activate_by_token_pin"
  | "crypt_resume_by_token_pin"
  | "crypt_token_status";

const SYMBOLS = {
  // CRYPTSETUP_2.0
  crypt_init: { parameters: ["buffer", "buffer"], result: "i32" },
  crypt_init_by_name: { parameters: ["buffer", "buffer"], result: "i32" },
  crypt_init_by_name_and_header: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  crypt_load: { parameters: ["pointer", "buffer", "pointer"], result: "i32" },
  crypt_free: { parameters: ["pointer"], result: "void" },
  crypt_get_device_name: { parameters: ["pointer"], result: "pointer" },
  crypt_get_uuid: { parameters: ["pointer"], result: "pointer" },
  crypt_get_active_device: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  crypt_suspend: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  crypt_resume_by_passphrase: {
    parameters: ["pointer", "buffer", "i32", "pointer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  // kept for unlocking by key file (next issue)
  crypt_resume_by_keyfile_device_offset: {
    parameters: ["pointer", "buffer", "i32", "buffer", "usize", "u64"],
    result: "i32",
    nonblocking: true,
  },
  crypt_volume_key_keyring: { parameters: ["pointer", "i32"], result: "i32" },
  crypt_set_log_callback: { parameters: ["pointer", "function", "pointer"], result: "void" },
  crypt_volume_key_get: {
    parameters: ["pointer", "i32", "pointer", "buffer", "pointer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  crypt_get_volume_key_size: { parameters: ["pointer"], result: "i32" },
  crypt_token_status: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  // 2.3: probed only (preflight and doctor require them); SafeBuffer calls them through its own handle.
  crypt_safe_alloc: { parameters: ["usize"], result: "pointer", optional: true },
  crypt_safe_free: { parameters: ["pointer"], result: "void", optional: true },
  crypt_safe_memzero: { parameters: ["pointer", "usize"], result: "void", optional: true },
  // CRYPTSETUP_2.4
  crypt_activate_by_token_pin: {
    parameters: ["pointer", "buffer", "buffer", "i32", "pointer", "usize", "pointer", "u32"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
  // CRYPTSETUP_2.5: luksResume by a LUKS2 token
  crypt_resume_by_token_pin: {
    parameters: ["pointer", "buffer", "buffer", "i32", "pointer", "usize", "pointer"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
} as const satisfies Record<LibcryptsetupSymbol, Deno.ForeignFunction>;

type Lib = BoundLibrary<typeof SYMBOLS>;

/** What this libcryptsetup is and supports. */
export interface LibcryptsetupInfo {
  /** The library file (resolved, from /proc/self/maps when dlopen was given a soname). */
  path: string;
  /**
   * API level `"2.N"`: the newest `CRYPTSETUP_2.N` symbol version the file defines (see the module doc), or
   * `"unknown"` when the file cannot be read.
   */
  version: string;
  /** Every bound symbol → present. Optional ones (newer than 2.0) may be false. */
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

/** Instances in open order: the newest open one owns the library-wide log callback. */
const openInstances: Libcryptsetup[] = [];

/** Which symbols exist: bindLibrary leaves a missing optional one null (nonblocking ones too, unlike Deno.dlopen). */
function presentSymbols(lib: Lib): Record<string, boolean> {
  return Object.fromEntries(Object.keys(SYMBOLS).map((n) => [n, (lib.symbols as Record<string, unknown>)[n] !== null]));
}

/** The file dlopen loaded for `requested`: itself when it is a path, else the mapping named like the soname. */
function libraryFile(requested: string): string {
  if (requested.includes("/")) {
    try {
      return Deno.realPathSync(requested);
    } catch {
      return requested;
    }
  }
  try {
    for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
      const i = line.indexOf("/");
      if (i >= 0 && line.slice(i).includes("/libcryptsetup.so")) return line.slice(i);
    }
  } catch { /* no /proc in a bare chroot */ }
  return requested;
}

/** The newest `CRYPTSETUP_<major>.<minor>` version node `file` defines, as "major.minor". */
function apiLevel(file: string): string | null {
  let best: [number, number] | null = null;
  for (const name of readElf(file)?.versions ?? []) {
    const m = /^CRYPTSETUP_(\d+)\.(\d+)$/.exec(name);
    if (!m) continue;
    const v: [number, number] = [Number(m[1]), Number(m[2])];
    if (!best || v[0] > best[0] || (v[0] === best[0] && v[1] > best[1])) best = v;
  }
  return best && best.join(".");
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
  #closed = false;

  private constructor(lib: Lib, requested: string) {
    this.#lib = lib;
    this.sym = lib.symbols;
    this.#callback = new Deno.UnsafeCallback(
      { parameters: ["i32", "pointer", "pointer"], result: "void" } as const,
      (level, msg, usr) => this.#onLog(level, msg, usr),
    );
    const path = libraryFile(requested);
    this.info = { path, version: apiLevel(path) ?? "unknown", symbols: presentSymbols(lib) };
    this.#register();
  }

  /** dlopen libcryptsetup (default {@linkcode LIBCRYPTSETUP_SONAME}). Throws if missing or older than 2.0. */
  static open(path: string = LIBCRYPTSETUP_SONAME): Libcryptsetup {
    let lib: Lib;
    try {
      lib = bindLibrary(path, SYMBOLS);
    } catch (e) {
      throw new Error(
        `cannot load ${path}: ${(e as Error).message}; install libcryptsetup 2.0 or newer (package libcryptsetup12)`,
      );
    }
    return new Libcryptsetup(lib, path);
  }

  /** Route libcryptsetup messages (all devices) to `fn`; `null` drops them. Debug logging stays off. */
  setLogger(fn: Logger | null): void {
    this.#logger = fn;
  }

  /** True if `name` exists in this libcryptsetup. */
  has(name: LibcryptsetupSymbol): boolean {
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
    else if (level === 1) {
      this.recentErrors.push(msg);
      if (this.recentErrors.length > 8) this.recentErrors.shift();
    }
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

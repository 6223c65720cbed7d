/**
 * Device-mapper by name through libdevmapper (`libdevmapper.so.1.02.1`): info/suspend/resume for the devices
 * stacked above a LUKS mapping (LVM on LUKS, …), and create/reload/remove plus reading a table with its keys, for
 * re-opening a volume whose key an earlier opener's keyring pins. udev sync is off: no udev in the chroot.
 *
 * A crypt table holds the volume key. Tasks that carry one set libdevmapper's secure-data flag (the kernel and
 * libdevmapper wipe their copies), and the key only ever moves C to C: a table read back stays in libdevmapper's
 * memory until disposed, and a table built here is built in `crypt_safe_alloc` memory.
 *
 * Before touching libdevmapper this checks that the kernel lists device-mapper in /proc/misc and that
 * `/dev/mapper/control` opens, so a kernel without device-mapper gives a clean {@linkcode SysError} instead of
 * libdevmapper creating nodes or printing to stderr.
 *
 * @example
 * ```ts
 * import { info, resume, suspend } from "./devmapper.ts";
 *
 * const i = info("vg0-root");
 * if (i.exists && !i.suspended) {
 *   suspend("vg0-root", { lockfs: true });
 *   resume("vg0-root");
 * }
 * ```
 *
 * @module
 */

import { bindLibrary, type BoundLibrary } from "./bind.ts";
import { cstr, readCString } from "./_cstring.ts";
import { SysError } from "./errors.ts";
import { closeFd, errno, O_CLOEXEC, O_RDWR, openFd } from "./libc.ts";

// Building and reading crypt params around their key: its own module, part of this API.
export {
  cryptDevice,
  cryptKeyInKeyring,
  cryptParamsOnDevice,
  cryptParamsWithKey,
  cryptTemplate,
} from "./crypt_params.ts";

/** Soname of package libdevmapper1.02.1. */
const LIBDEVMAPPER_SONAME = "libdevmapper.so.1.02.1";
/** The control node libdevmapper opens. */
const DM_CONTROL = "/dev/mapper/control";

const DM_DEVICE_CREATE = 0;
const DM_DEVICE_RELOAD = 1;
const DM_DEVICE_REMOVE = 2;
const DM_DEVICE_SUSPEND = 4;
const DM_DEVICE_RESUME = 5;
const DM_DEVICE_INFO = 6;
const DM_DEVICE_TABLE = 11;
const DM_DEVICE_CLEAR = 14;
const DM_DEVICE_TARGET_MSG = 17;

const SYMBOLS = {
  dm_task_create: { parameters: ["i32"], result: "pointer" },
  dm_task_set_name: { parameters: ["pointer", "buffer"], result: "i32" },
  dm_task_skip_lockfs: { parameters: ["pointer"], result: "i32" },
  dm_task_no_flush: { parameters: ["pointer"], result: "i32" },
  dm_task_run: { parameters: ["pointer"], result: "i32" },
  dm_task_get_info: { parameters: ["pointer", "buffer"], result: "i32" },
  dm_task_get_uuid: { parameters: ["pointer"], result: "pointer" },
  dm_task_destroy: { parameters: ["pointer"], result: "void" },
  dm_task_get_errno: { parameters: ["pointer"], result: "i32", optional: true },
  dm_udev_set_sync_support: { parameters: ["i32"], result: "void" },
  dm_task_secure_data: { parameters: ["pointer"], result: "i32" },
  dm_task_set_message: { parameters: ["pointer", "buffer"], result: "i32" },
  dm_task_set_sector: { parameters: ["pointer", "u64"], result: "i32" },
  dm_task_set_ro: { parameters: ["pointer"], result: "i32" },
  dm_task_set_uuid: { parameters: ["pointer", "buffer"], result: "i32" },
  dm_task_retry_remove: { parameters: ["pointer"], result: "i32" },
  dm_task_add_target: { parameters: ["pointer", "u64", "u64", "buffer", "pointer"], result: "i32" },
  dm_get_next_target: { parameters: ["pointer", "pointer", "buffer", "buffer", "buffer", "buffer"], result: "pointer" },
} as const;

let lib: BoundLibrary<typeof SYMBOLS> | null = null;

/** `struct dm_info` plus the UUID. */
export interface DmInfo {
  /** False for an unknown name (then every other field is zero or empty). */
  exists: boolean;
  /** The device is suspended (I/O queued). */
  suspended: boolean;
  /** How many openers hold it (mounts, devices stacked above, processes). */
  openCount: number;
  /** Device number, major part. */
  major: number;
  /** Device number, minor part. */
  minor: number;
  /** The dm UUID (`CRYPT-LUKS2-…` for a LUKS mapping), empty when none. */
  uuid: string;
  /** The live table is read-only. */
  readOnly: boolean;
  /** Lines in the live table. */
  targetCount: number;
}

/**
 * Throws a SysError when the kernel has no device-mapper: /proc/misc (the kernel's own list) lacks it, or the control
 * node cannot be opened. A stale /dev/mapper/control node without the driver behind it is caught too.
 */
export function checkControl(control = DM_CONTROL, procMisc = "/proc/misc"): void {
  let misc: string | null = null;
  try {
    misc = Deno.readTextFileSync(procMisc);
  } catch { /* no /proc in a bare chroot: trust the node */ }
  const hint = "the kernel has no device-mapper driver: modprobe dm_mod";
  if (misc !== null && !/\bdevice-mapper\b/.test(misc)) {
    throw new SysError("open", 19, { subject: control, hint: `${hint} (not in ${procMisc})` });
  }
  let fd: number;
  try {
    fd = openFd(control, O_RDWR | O_CLOEXEC);
  } catch (e) {
    // A missing node is fine when the kernel has the driver: libdevmapper creates it.
    if (e instanceof SysError && e.code === "ENOENT" && misc !== null) return;
    if (e instanceof SysError) throw new SysError("open", e.errno, { subject: control, hint });
    throw e;
  }
  closeFd(fd);
}

/**
 * Whether {@linkcode checkControl} passed in this process: once there, the driver stays (dm_mod cannot be unloaded
 * under a live mapping), and its /proc/misc read and open of the node cost ~1 ms a call under the bed's emulation,
 * on every dm call of the wake's path.
 */
let controlChecked = false;

function open(): BoundLibrary<typeof SYMBOLS>["symbols"] {
  if (!lib) {
    try {
      lib = bindLibrary(LIBDEVMAPPER_SONAME, SYMBOLS);
    } catch (e) {
      throw new Error(`cannot load ${LIBDEVMAPPER_SONAME}: ${(e as Error).message}; install libdevmapper (dmsetup)`);
    }
    lib.symbols.dm_udev_set_sync_support(0);
  }
  return lib.symbols;
}

/** Creates a task on `name`, runs `prepare`, runs the task; the caller destroys it. */
function runTask(
  type: number,
  call: string,
  name: string,
  prepare: (s: ReturnType<typeof open>, t: Deno.PointerObject) => void,
): { s: ReturnType<typeof open>; t: Deno.PointerObject } {
  if (!controlChecked) {
    checkControl();
    controlChecked = true;
  }
  const s = open();
  const t = s.dm_task_create(type);
  if (t === null) throw new SysError("dm_task_create", 12, { subject: name });
  try {
    if (!s.dm_task_set_name(t, cstr(name))) throw new SysError("dm_task_set_name", 22, { subject: name });
    prepare(s, t);
    if (!s.dm_task_run(t)) {
      const e = s.dm_task_get_errno?.(t) || errno() || 5;
      throw new SysError(call, e, { subject: name });
    }
    return { s, t };
  } catch (err) {
    s.dm_task_destroy(t);
    throw err;
  }
}

/** Run one dm task on `name`; `prepare` sets flags; `read` extracts results before the task is destroyed. */
function task<T>(
  type: number,
  call: string,
  name: string,
  prepare: (s: ReturnType<typeof open>, t: Deno.PointerObject) => void,
  read: (s: ReturnType<typeof open>, t: Deno.PointerObject) => T,
): T {
  const { s, t } = runTask(type, call, name, prepare);
  try {
    return read(s, t);
  } finally {
    s.dm_task_destroy(t);
  }
}

function readInfo(s: ReturnType<typeof open>, t: Deno.PointerObject, name: string): DmInfo {
  // struct dm_info { int exists, suspended, live_table, inactive_table; int32_t open_count; uint32_t event_nr,
  //                  major, minor; int read_only; int32_t target_count; int deferred_remove, internal_suspend; }
  const buf = new Uint8Array(64);
  if (!s.dm_task_get_info(t, buf)) throw new SysError("dm_task_get_info", 22, { subject: name });
  const v = new DataView(buf.buffer);
  const exists = v.getInt32(0, true) !== 0;
  return {
    exists,
    suspended: v.getInt32(4, true) !== 0,
    openCount: v.getInt32(16, true),
    major: v.getUint32(24, true),
    minor: v.getUint32(28, true),
    readOnly: v.getInt32(32, true) !== 0,
    targetCount: v.getInt32(36, true),
    uuid: exists ? readCString(s.dm_task_get_uuid(t)) ?? "" : "",
  };
}

/** DM_DEVICE_INFO: `exists` is false for an unknown name (no error). */
export function info(name: string): DmInfo {
  return task(DM_DEVICE_INFO, "dm_task_run(info)", name, () => {}, (s, t) => readInfo(s, t, name));
}

/** DM_DEVICE_SUSPEND. `lockfs` (default true) freezes a mounted filesystem first; `noflush` keeps queued I/O. */
export function suspend(name: string, opts: { lockfs?: boolean; noflush?: boolean } = {}): void {
  task(DM_DEVICE_SUSPEND, "dm_task_run(suspend)", name, (s, t) => {
    if (opts.lockfs === false) s.dm_task_skip_lockfs(t);
    if (opts.noflush) s.dm_task_no_flush(t);
  }, () => undefined);
}

/**
 * DM_DEVICE_RESUME. A live device with a new table is suspended by the kernel first, freezing its filesystem
 * unless `lockfs: false` (DM_SKIP_LOCKFS_FLAG): needed when the caller holds a FIFREEZE on it already.
 */
export function resume(name: string, opts: { lockfs?: boolean } = {}): void {
  task(DM_DEVICE_RESUME, "dm_task_run(resume)", name, (s, t) => {
    if (opts.lockfs === false) s.dm_task_skip_lockfs(t);
  }, () => undefined);
}

/** One line of a table. `params` is text, or a C string that may hold a key and so never becomes a JS string. */
export interface Target {
  /** First sector (512 bytes) of the device this line maps. */
  start: bigint;
  /** Sectors it maps. */
  length: bigint;
  /** Target type: `crypt`, `linear`, `error`, … */
  type: string;
  /** The target's parameters: text, or a C string in secret or libdevmapper memory (a crypt key). */
  params: string | Deno.PointerObject;
}

/** A table read with its keys; `params` point into libdevmapper's memory, valid until the table is disposed. */
export class SecureTable implements Disposable {
  #destroy: (() => void) | null;
  /** The table's lines; their `params` stay valid until dispose. */
  readonly targets: (Target & { params: Deno.PointerObject })[];

  /** Built by {@linkcode readTableSecure}: the lines, and how to free the task that owns them. */
  constructor(targets: (Target & { params: Deno.PointerObject })[], destroy: () => void) {
    this.targets = targets;
    this.#destroy = destroy;
  }

  /** libdevmapper wipes the table (secure data) and frees it. */
  [Symbol.dispose](): void {
    this.#destroy?.();
    this.#destroy = null;
  }
}

/** DM_DEVICE_TABLE with secure data: the live table, keys included, kept in C memory. */
export function readTableSecure(name: string): SecureTable {
  const { s, t } = runTask(DM_DEVICE_TABLE, "dm_task_run(table)", name, (s, t) => {
    s.dm_task_secure_data(t);
  });
  try {
    const targets: (Target & { params: Deno.PointerObject })[] = [];
    const start = new BigUint64Array(1), length = new BigUint64Array(1);
    const type = new BigUint64Array(1), params = new BigUint64Array(1);
    let next: Deno.PointerValue = null;
    do {
      next = s.dm_get_next_target(t, next, start, length, type, params);
      const typePtr = Deno.UnsafePointer.create(type[0]);
      const paramsPtr = Deno.UnsafePointer.create(params[0]);
      if (typePtr === null || paramsPtr === null) break; // no table loaded
      targets.push({ start: start[0], length: length[0], type: readCString(typePtr) ?? "", params: paramsPtr });
    } while (next !== null);
    return new SecureTable(targets, () => s.dm_task_destroy(t));
  } catch (err) {
    s.dm_task_destroy(t);
    throw err;
  }
}

function addTargets(s: ReturnType<typeof open>, t: Deno.PointerObject, name: string, targets: Target[]): void {
  for (const target of targets) {
    const text = typeof target.params === "string" ? cstr(target.params) : null;
    const params = text ? Deno.UnsafePointer.of(text) : target.params as Deno.PointerObject;
    if (!s.dm_task_add_target(t, target.start, target.length, cstr(target.type), params)) {
      throw new SysError("dm_task_add_target", 12, { subject: name });
    }
  }
}

/** DM_DEVICE_CREATE with a table (libdevmapper loads and resumes it). Returns the new device's info. */
export function create(name: string, targets: Target[], opts: { uuid?: string; readOnly?: boolean } = {}): DmInfo {
  return task(DM_DEVICE_CREATE, "dm_task_run(create)", name, (s, t) => {
    s.dm_task_secure_data(t);
    if (opts.uuid && !s.dm_task_set_uuid(t, cstr(opts.uuid))) {
      throw new SysError("dm_task_set_uuid", 22, { subject: name });
    }
    if (opts.readOnly) s.dm_task_set_ro(t);
    addTargets(s, t, name, targets);
  }, (s, t) => readInfo(s, t, name));
}

/** DM_DEVICE_RELOAD: loads the inactive table; it goes live at the next {@linkcode resume}. */
export function reload(name: string, targets: Target[], opts: { readOnly?: boolean } = {}): void {
  task(DM_DEVICE_RELOAD, "dm_task_run(reload)", name, (s, t) => {
    s.dm_task_secure_data(t);
    if (opts.readOnly) s.dm_task_set_ro(t);
    addTargets(s, t, name, targets);
  }, () => undefined);
}

/** DM_DEVICE_CLEAR: drops the inactive table, if any (and the devices it holds). */
export function clear(name: string): void {
  task(DM_DEVICE_CLEAR, "dm_task_run(clear)", name, () => {}, () => undefined);
}

/** DM_DEVICE_REMOVE (retried a few times while something still has it open briefly). */
export function remove(name: string): void {
  task(DM_DEVICE_REMOVE, "dm_task_run(remove)", name, (s, t) => {
    s.dm_task_retry_remove(t);
  }, () => undefined);
}

/** A `linear` target of `length` sectors onto the whole of `dev` (to run a mapping through another one). */
export function linearOnto(length: bigint, dev: DmInfo): Target {
  return { start: 0n, length, type: "linear", params: `${dev.major}:${dev.minor} 0` };
}

/** Whether the live table of `name` is exactly one `linear` target onto `dev`. */
export function runsThrough(name: string, dev: DmInfo): boolean {
  using table = readTableSecure(name);
  const [t] = table.targets;
  return table.targets.length === 1 && t.type === "linear" &&
    paramsText(t).split(/\s+/)[0] === `${dev.major}:${dev.minor}`;
}

/** DM_DEVICE_TARGET_MSG at sector 0 (`key wipe` for dm-crypt). */
export function message(name: string, text: string): void {
  task(DM_DEVICE_TARGET_MSG, `dm_task_run(message ${text})`, name, (s, t) => {
    s.dm_task_secure_data(t);
    if (!s.dm_task_set_sector(t, 0n) || !s.dm_task_set_message(t, cstr(text))) {
      throw new SysError("dm_task_set_message", 22, { subject: name });
    }
  }, () => undefined);
}

/** The params of a target that holds no key (linear, error, …) as text; a crypt target is refused. */
function paramsText(target: Target): string {
  if (target.type === "crypt") throw new Error("paramsText: a crypt table holds a key; it stays in C memory");
  return typeof target.params === "string" ? target.params : Deno.UnsafePointerView.getCString(target.params);
}

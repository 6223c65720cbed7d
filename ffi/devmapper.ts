/**
 * Plain device-mapper info/suspend/resume by name through libdevmapper (`libdevmapper.so.1.02.1`), for the
 * non-crypt devices stacked above a LUKS mapping (LVM on LUKS, …). udev sync is off: no udev in the chroot.
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

import { cstr, readCString } from "./_cstring.ts";
import { SysError } from "./errors.ts";
import { closeFd, errno, O_CLOEXEC, O_RDWR, openFd } from "./libc.ts";

/** Default soname (package libdevmapper1.02.1). */
export const LIBDEVMAPPER_SONAME = "libdevmapper.so.1.02.1";
/** The control node libdevmapper opens. */
export const DM_CONTROL = "/dev/mapper/control";

const DM_DEVICE_SUSPEND = 4;
const DM_DEVICE_RESUME = 5;
const DM_DEVICE_INFO = 6;

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
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;
let libPath = LIBDEVMAPPER_SONAME;

/** Use another libdevmapper (before the first call). */
export function setDevmapperLibrary(path: string): void {
  if (lib) throw new Error("devmapper: library already loaded");
  libPath = path;
}

/** `struct dm_info` plus the UUID. */
export interface DmInfo {
  exists: boolean;
  suspended: boolean;
  openCount: number;
  major: number;
  minor: number;
  uuid: string;
  readOnly: boolean;
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

function open(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  if (!lib) {
    try {
      lib = Deno.dlopen(libPath, SYMBOLS);
    } catch (e) {
      throw new Error(`cannot load ${libPath}: ${(e as Error).message}; install libdevmapper (dmsetup)`);
    }
    lib.symbols.dm_udev_set_sync_support(0);
  }
  return lib.symbols;
}

/** Run one dm task on `name`; `prepare` sets flags; `read` extracts results before the task is destroyed. */
function task<T>(
  type: number,
  call: string,
  name: string,
  prepare: (s: ReturnType<typeof open>, t: Deno.PointerObject) => void,
  read: (s: ReturnType<typeof open>, t: Deno.PointerObject) => T,
): T {
  checkControl();
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

/** DM_DEVICE_RESUME. */
export function resume(name: string): void {
  task(DM_DEVICE_RESUME, "dm_task_run(resume)", name, () => {}, () => undefined);
}

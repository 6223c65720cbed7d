/**
 * The few libc calls cryptsleep needs (glibc `libc.so.6`, bound by bind.ts); failures throw {@linkcode SysError}
 * with the real `errno` (read from `__errno_location` right after the call).
 *
 * Calls that may block for long (`syncfs`, a write to `/sys/power/state`, an O_DIRECT read) run in a short-lived
 * Worker thread that makes the call synchronously and reads its own errno: a `nonblocking` FFI call would run on a
 * pool thread whose errno is lost. `mlockall` is deliberately absent (it breaks V8): chroot/pin.ts locks ranges.
 *
 * @example
 * ```ts
 * import { closeFd, O_RDONLY, openFd, setpriority, syncfs } from "./libc.ts";
 *
 * await syncfs("/"); // flush one filesystem without blocking the event loop
 * setpriority(Deno.pid, -10);
 * const fd = openFd("/proc/self/stat", O_RDONLY);
 * closeFd(fd);
 * ```
 *
 * @module
 */

import { bindLibrary, type BoundLibrary } from "./bind.ts";
import { cstr, cstrOrNull } from "./_cstring.ts";
import { SysError } from "./errors.ts";

const LIBC = "libc.so.6";
const arm = Deno.build.arch === "aarch64";

// open(2) flags (Linux x86_64 and aarch64).
/** open(2): read only. */
export const O_RDONLY = 0;
const O_WRONLY = 1;
/** open(2): read and write. */
export const O_RDWR = 2;
/** open(2): a terminal opened with it does not become the controlling tty. */
export const O_NOCTTY = 0o400;
/** open(2): fail unless the path is a directory. */
export const O_DIRECTORY = arm ? 0o40000 : 0o200000;
/** open(2): create the file if missing. */
export const O_CREAT = 0o100;
/** open(2): with O_CREAT, fail if the file exists. */
export const O_EXCL = 0o200;
/** open(2): fail if the last component is a symlink. */
export const O_NOFOLLOW = arm ? 0o100000 : 0o400000;
/** open(2): close the fd in exec'd children. */
export const O_CLOEXEC = 0o2000000;

/** mount(2): read-only. */
export const MS_RDONLY = 1;
/** mount(2): ignore set-user-ID bits. */
export const MS_NOSUID = 2;
/** mount(2): no device nodes. */
export const MS_NODEV = 4;
/** mount(2): no program execution. */
export const MS_NOEXEC = 8;
/** mount(2): a bind mount. */
export const MS_BIND = 4096;
/** mount(2): with MS_BIND or a propagation flag, the whole subtree. */
export const MS_REC = 16384;
/** mount(2): make the mount private (no propagation either way). */
export const MS_PRIVATE = 1 << 18;
/** umount2(2): lazy unmount (detach now, free when no longer busy). */
export const MNT_DETACH = 2;

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  sync_nb: { name: "sync", parameters: [], result: "void", nonblocking: true },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "pointer", "usize"], result: "isize" },
  write: { parameters: ["i32", "pointer", "usize"], result: "isize" },
  ioctl_ptr: { name: "ioctl", parameters: ["i32", "u64", "pointer"], result: "i32" },
  ioctl_int: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  poll_nb: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
  setsid: { parameters: [], result: "i32" },
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  reboot: { parameters: ["i32"], result: "i32" },
  mlock: { parameters: ["usize", "usize"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
  sysconf: { parameters: ["i32"], result: "i64" },
  munlock: { parameters: ["usize", "usize"], result: "i32" },
  chroot: { parameters: ["buffer"], result: "i32" },
  chdir: { parameters: ["buffer"], result: "i32" },
  fchdir: { parameters: ["i32"], result: "i32" },
  signal: { parameters: ["i32", "usize"], result: "usize" },
  tcgetattr: { parameters: ["i32", "buffer"], result: "i32" },
  tcsetattr: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  strchr: { parameters: ["pointer", "i32"], result: "pointer" },
  setxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  getxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  removexattr: { parameters: ["buffer", "buffer"], result: "i32" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  mkfifo: { parameters: ["buffer", "u32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
} as const;

let libc: BoundLibrary<typeof SYMBOLS> | null = null;
let errnoView: Deno.UnsafePointerView | null = null;

/** @internal the raw libc symbols (for tty.ts). */
export function libcSymbols(): BoundLibrary<typeof SYMBOLS>["symbols"] {
  if (!libc) {
    libc = bindLibrary(LIBC, SYMBOLS);
    // now, not at the first error: nothing may run between a failed call and its errno read
    errnoView = new Deno.UnsafePointerView(libc.symbols.__errno_location()!);
  }
  return libc.symbols;
}

/** errno of the main thread's last libc call. Read it right after the call. */
export function errno(): number {
  libcSymbols();
  return errnoView!.getInt32();
}

/** Throw SysError(call, errno) when `r` is -1 (or negative). Returns `r`. */
function check<T extends number | bigint>(call: string, r: T, subject?: string): T {
  if (r < 0) throw new SysError(call, errno(), { subject });
  return r;
}

function ptrValue(p: Deno.PointerValue): bigint {
  return p === null ? 0n : BigInt(Deno.UnsafePointer.value(p));
}

// ---- plain calls -------------------------------------------------------------------------------------------------

/** sync(2) on another thread (sync has no error to report). */
export async function syncAsync(): Promise<void> {
  await libcSymbols().sync_nb();
}

/** open(2); returns the fd. Add O_CLOEXEC yourself when the fd must not leak into children. */
export function openFd(path: string, flags: number, mode = 0): number {
  return check("open", libcSymbols().open(cstr(path), flags, mode), path);
}

/** mkfifo(3) with `mode` (less this process's umask). */
export function mkfifo(path: string, mode: number): void {
  check("mkfifo", libcSymbols().mkfifo(cstr(path), mode), path);
}

/** close(2). */
export function closeFd(fd: number): void {
  check("close", libcSymbols().close(fd), `fd ${fd}`);
}

/** eventfd(2)'s flags: closed in exec'd children, never blocking. */
const EFD_CLOEXEC_NONBLOCK = O_CLOEXEC | 0o4000;

/**
 * A new eventfd(2) to poll beside another fd, so that something else can end the wait at once
 * ({@linkcode signalEventFd}); -1 when none can be made (poll(2) skips a negative fd: the wait just runs its time).
 */
export function eventFd(): number {
  return libcSymbols().eventfd(0, EFD_CLOEXEC_NONBLOCK);
}

/**
 * Makes an {@linkcode eventFd} readable: a poll(2) on it returns. Never throws (it runs in abort listeners, where a
 * throw ends the process); a wake that fails leaves the poll to run its time.
 */
export function signalEventFd(fd: number): void {
  if (fd < 0) return;
  try {
    writeFdSync(fd, new Uint8Array(new BigUint64Array([1n]).buffer), `eventfd ${fd}`);
  } catch { /* the poll's own timeout still ends it */ }
}

/** write(2) all of `bytes` (sync, retries short writes and EINTR). Not for secrets. */
export function writeFdSync(fd: number, bytes: Uint8Array, label = `fd ${fd}`): void {
  let off = 0;
  while (off < bytes.length) {
    const part = bytes.subarray(off);
    const r = Number(libcSymbols().write(fd, Deno.UnsafePointer.of(part), BigInt(part.length)));
    if (r < 0) {
      const e = errno();
      if (e === 4) continue; // EINTR
      throw new SysError("write", e, { subject: label });
    }
    off += r;
  }
}

/**
 * Offset of the first `byte` in the C string at `p` (strchr(3)), or null. The scan happens in C, so the bytes of a
 * secret string (a dm-crypt table holding a key) never pass through JS.
 */
export function indexOfByte(p: Deno.PointerObject, byte: number): number | null {
  const hit = libcSymbols().strchr(p, byte);
  return hit === null ? null : Number(ptrValue(hit) - ptrValue(p));
}

const FIFREEZE = 0xc0045877;
const FITHAW = 0xc0045878;

/** FIFREEZE: freeze the filesystem mounted at `mountpoint` (flushed, no writes until {@linkcode fsThaw}). */
export function fsFreeze(mountpoint: string): void {
  mountpointIoctl(mountpoint, FIFREEZE, "FIFREEZE");
}

/** FITHAW: the undo of {@linkcode fsFreeze}. */
export function fsThaw(mountpoint: string): void {
  mountpointIoctl(mountpoint, FITHAW, "FITHAW");
}

function mountpointIoctl(mountpoint: string, request: number, name: string): void {
  const fd = openFd(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  try {
    ioctlInt(fd, request, 0, name);
  } catch (err) {
    throw err instanceof SysError ? new SysError(err.call, err.errno, { subject: mountpoint }) : err;
  } finally {
    closeFd(fd);
  }
}

/** ioctl(2) with a pointer argument (a struct or int buffer). */
export function ioctlPtr(
  fd: number,
  request: number,
  arg: Uint8Array | null,
  name = `0x${request.toString(16)}`,
): number {
  const p = arg === null ? null : Deno.UnsafePointer.of(arg);
  return check(`ioctl(${name})`, libcSymbols().ioctl_ptr(fd, BigInt(request), p), `fd ${fd}`);
}

/** ioctl(2) with an integer argument. */
export function ioctlInt(fd: number, request: number, arg: number, name = `0x${request.toString(16)}`): number {
  return check(`ioctl(${name})`, libcSymbols().ioctl_int(fd, BigInt(request), BigInt(arg)), `fd ${fd}`);
}

/** mount(2). `data` is the comma-separated option string. */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null = null,
): void {
  const r = libcSymbols().mount(cstrOrNull(source), cstr(target), cstrOrNull(fstype), BigInt(flags), cstrOrNull(data));
  check("mount", r, `${source ?? "none"} on ${target}${fstype ? ` type ${fstype}` : ""}`);
}

/** umount2(2). */
export function umount2(target: string, flags = 0): void {
  check("umount2", libcSymbols().umount2(cstr(target), flags), target);
}

/** ENODATA: no such extended attribute (the same number on x86_64 and arm64). */
const ENODATA = 61;

/** setxattr(2): extended attribute `name` of `path` set to `value`. */
export function setXattr(path: string, name: string, value: string): void {
  const v = new TextEncoder().encode(value);
  check("setxattr", libcSymbols().setxattr(cstr(path), cstr(name), v, BigInt(v.length), 0), `${name} of ${path}`);
}

/** getxattr(2): the value (up to 255 bytes) of extended attribute `name` of `path`, or null where it has none. */
export function getXattr(path: string, name: string): string | null {
  const buf = new Uint8Array(255);
  const r = Number(libcSymbols().getxattr(cstr(path), cstr(name), buf, BigInt(buf.length)));
  if (r < 0) {
    const e = errno();
    if (e === ENODATA) return null;
    throw new SysError("getxattr", e, { subject: `${name} of ${path}` });
  }
  return new TextDecoder().decode(buf.subarray(0, r));
}

/** removexattr(2); an attribute already gone, or its file, is no error. */
export function removeXattr(path: string, name: string): void {
  if (libcSymbols().removexattr(cstr(path), cstr(name)) < 0) {
    const e = errno();
    if (e !== ENODATA && e !== ENOENT) throw new SysError("removexattr", e, { subject: `${name} of ${path}` });
  }
}

const ENOENT = 2;
const linkBuf = new Uint8Array(64);

/**
 * Whether symlink `path` reads exactly `target` (readlink(2); false where it is no link or is gone). A third of
 * the time of Deno.readLinkSync: for scans of every fd of every process.
 */
export function linksTo(path: string, target: Uint8Array): boolean {
  const r = Number(libcSymbols().readlink(cstr(path), linkBuf, BigInt(linkBuf.length)));
  if (r !== target.length) return false;
  for (let i = 0; i < r; i++) if (linkBuf[i] !== target[i]) return false;
  return true;
}

/** setpriority(PRIO_PROCESS, pid, prio): -20 (first) … 19 (last); 0 = this process. */
export function setpriority(pid: number, prio: number): void {
  check("setpriority", libcSymbols().setpriority(0, pid, prio), `pid ${pid}`);
}

/**
 * setpriority(2) for every thread of this process: Linux applies PRIO_PROCESS to one thread, and the runtime's
 * other threads (async file reads, blocking calls) would stay behind. A thread gone meanwhile is skipped.
 */
export function setpriorityAllThreads(prio: number): void {
  for (const e of Deno.readDirSync("/proc/self/task")) {
    try {
      setpriority(Number(e.name), prio);
    } catch (err) {
      if (!(err instanceof SysError && err.code === "ESRCH")) throw err;
    }
  }
}

/**
 * prctl(PR_SET_DUMPABLE, 0): this process leaves no core dump. A crash after the lock would otherwise hand its
 * memory (typed passphrases included) to the core_pattern helper — a program of the locked root when it is a pipe
 * (systemd-coredump), whose exec waits forever there.
 */
export function setNotDumpable(): void {
  check("prctl(PR_SET_DUMPABLE)", libcSymbols().prctl(4, 0n, 0n, 0n, 0n), `pid ${Deno.pid}`);
}

/** Whether this process may leave a core dump (prctl PR_GET_DUMPABLE). */
export function isDumpable(): boolean {
  return check("prctl(PR_GET_DUMPABLE)", libcSymbols().prctl(3, 0n, 0n, 0n, 0n), `pid ${Deno.pid}`) !== 0;
}

/** setsid(2): a new session and process group, with no controlling terminal; returns the session id. */
export function setsid(): number {
  return check("setsid", libcSymbols().setsid(), `pid ${Deno.pid}`);
}

/**
 * reboot(2) with RB_POWER_OFF: the machine powers off now, without a sync (a sync would wait forever on a locked
 * volume). Returns only when the kernel refuses.
 */
export function powerOff(): never {
  check("reboot", libcSymbols().reboot(0x4321fedc), "RB_POWER_OFF");
  throw new SysError("reboot", 0, { subject: "RB_POWER_OFF", hint: "returned without powering off" });
}

/** mlock(2) `length` bytes at address `start` (a range of /proc/self/maps): resident until unlocked or unmapped. */
export function mlock(start: bigint, length: bigint, subject: string): void {
  check("mlock", libcSymbols().mlock(start, length), subject);
}

/** munlock(2): the undo of {@linkcode mlock}. */
export function munlock(start: bigint, length: bigint, subject: string): void {
  check("munlock", libcSymbols().munlock(start, length), subject);
}

/** ftruncate(2): the file open on `fd` is `size` bytes long. */
export function truncateFd(fd: number, size: number, subject: string): void {
  check("ftruncate", libcSymbols().ftruncate(fd, BigInt(size)), subject);
}

/** fstatfs(2): the `f_type` magic of the filesystem holding `fd` (e.g. 0x858458f6 for ramfs). */
export function fsMagic(fd: number, subject: string): number {
  // struct statfs: f_type is the first word on x86_64 and arm64 (120 bytes in all)
  const buf = new BigInt64Array(16);
  check("fstatfs", libcSymbols().fstatfs(fd, buf), subject);
  return Number(BigInt.asUintN(32, buf[0]));
}

/** The size of a page (sysconf(_SC_PAGESIZE)): mmap offsets are multiples of it. */
export function pageSize(): number {
  return Number(check("sysconf", libcSymbols().sysconf(30), "_SC_PAGESIZE"));
}

/** mmap(2) `length` bytes of the file on `fd` from `offset`, read-write and shared (its pages are the file's). */
export function mapShared(fd: number, offset: number, length: number, subject: string): Deno.PointerObject {
  const PROT_READ_WRITE = 3, MAP_SHARED = 1;
  const p = libcSymbols().mmap(null, BigInt(length), PROT_READ_WRITE, MAP_SHARED, fd, BigInt(offset));
  // MAP_FAILED is (void *)-1
  if (p === null || BigInt(Deno.UnsafePointer.value(p)) === 0xffffffffffffffffn) {
    throw new SysError("mmap", errno(), { subject });
  }
  return p;
}

/** munmap(2): the undo of {@linkcode mapShared}. */
export function unmap(pointer: Deno.PointerObject, length: number, subject: string): void {
  check("munmap", libcSymbols().munmap(pointer, BigInt(length)), subject);
}

/**
 * SIGTTIN and SIGTTOU set to SIG_IGN for the whole process: a background process then gets EIO from a read of its
 * terminal and may write and set its modes, instead of being stopped (mid-cycle, a stop would hold the machine).
 */
export function ignoreJobControlSignals(): void {
  const SIG_ERR = 0xffffffffffffffffn;
  for (const [name, signo] of [["SIGTTIN", 21], ["SIGTTOU", 22]] as const) {
    if (libcSymbols().signal(signo, 1n) === SIG_ERR) throw new SysError("signal", errno(), { subject: name });
  }
}

/**
 * Gives up the controlling terminal (TIOCNOTTY on /dev/tty), for this process only when it is not the session
 * leader: the terminal's job control (a background read stopped or refused) and its Ctrl-C no longer reach it,
 * while an fd it opened on that terminal still reads and writes. Returns false when it had none.
 */
export function dropControllingTerminal(): boolean {
  const TIOCNOTTY = 0x5422;
  let fd: number;
  try {
    fd = openFd("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  } catch (err) {
    if (err instanceof SysError && err.errno === 6) return false; // ENXIO: no controlling terminal
    throw err;
  }
  try {
    ioctlInt(fd, TIOCNOTTY, 0, "TIOCNOTTY");
    return true;
  } finally {
    closeFd(fd);
  }
}

/** chroot(2) to `path`, then chdir("/") so no path resolves outside it by accident. For the whole process. */
export function chroot(path: string): void {
  check("chroot", libcSymbols().chroot(cstr(path)), path);
  check("chdir", libcSymbols().chdir(cstr("/")), `/ in ${path}`);
}

/** Back to the root that `rootFd` (a directory opened before chroot) is: fchdir, chroot("."), chdir("/"). */
export function chrootToFd(rootFd: number): void {
  check("fchdir", libcSymbols().fchdir(rootFd), `fd ${rootFd}`);
  check("chroot", libcSymbols().chroot(cstr(".")), `fd ${rootFd}`);
  check("chdir", libcSymbols().chdir(cstr("/")), `fd ${rootFd}`);
}

// ---- long calls in a worker thread (exact errno, event loop keeps running) ----------------------------------------

/**
 * The worker: a synchronous libc call per message, then its errno from the same thread. Plain JS: no files; it binds
 * libc with this module's own {@linkcode bindLibrary} (its source, inlined), so no trampoline is compiled there either.
 */
const WORKER_SOURCE = `
const bindLibrary = ${bindLibrary.toString()};
const l = bindLibrary(${JSON.stringify(LIBC)}, {
  __errno_location: { parameters: [], result: "pointer" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  syncfs: { parameters: ["i32"], result: "i32" },
  pread: { parameters: ["i32", "pointer", "usize", "i64"], result: "isize" },
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
});
const POSIX_FADV_DONTNEED = 4;
const en = () => new Deno.UnsafePointerView(l.symbols.__errno_location()).getInt32();
self.onmessage = (ev) => {
  const m = ev.data;
  let res;
  if (m.op === "syncfs") {
    const fd = l.symbols.open(m.path, m.flags, 0);
    if (fd < 0) res = { call: "open", errno: en() };
    else {
      const r = l.symbols.syncfs(fd);
      res = r < 0 ? { call: "syncfs", errno: en() } : { ok: true };
      l.symbols.close(fd);
    }
  } else if (m.op === "write") {
    let off = 0;
    res = { ok: true };
    while (off < m.bytes.length) {
      const part = m.bytes.subarray(off);
      const r = Number(l.symbols.write(m.fd, part, BigInt(part.length)));
      if (r < 0) { const e = en(); if (e === 4) continue; res = { call: "write", errno: e }; break; }
      off += r;
    }
  } else if (m.op === "readDirect") {
    // O_DIRECT wants an aligned buffer: over-allocate and start at the next 4096 boundary
    const buf = new Uint8Array(m.size + 4096);
    const base = Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf));
    const aligned = Deno.UnsafePointer.create((base + 4095n) & ~4095n);
    const fd = l.symbols.open(m.path, m.flags, 0);
    if (fd < 0) res = { call: "open", errno: en() };
    else {
      const r = Number(l.symbols.pread(fd, aligned, BigInt(m.size), BigInt(m.offset)));
      const from = Number(Deno.UnsafePointer.value(aligned) - base);
      res = r < 0
        ? { call: "pread", errno: en() }
        : { ok: true, value: r, ...(m.keep ? { bytes: buf.slice(from, from + r) } : {}) };
      l.symbols.close(fd);
    }
  } else if (m.op === "readKey" || m.op === "dropCache") {
    // read(2) straight into the caller's C memory, then the file's clean pages out of the page cache: the only
    // copy left is the caller's
    const fd = l.symbols.open(m.path, m.flags, 0);
    if (fd < 0) res = { call: "open", errno: en() };
    else {
      let got = 0;
      res = { ok: true, value: 0 };
      while (m.op === "readKey" && got < m.max) {
        const to = Deno.UnsafePointer.create(BigInt(m.pointer) + BigInt(got));
        const r = Number(l.symbols.pread(fd, to, BigInt(m.max - got), BigInt(m.offset + got)));
        if (r < 0) { const e = en(); if (e === 4) continue; res = { call: "pread", errno: e }; break; }
        if (r === 0) break;
        got += r;
      }
      if (res.ok) res.value = got;
      const a = l.symbols.posix_fadvise(fd, 0n, 0n, POSIX_FADV_DONTNEED);
      if (a !== 0 && res.ok && m.op === "dropCache") res = { call: "posix_fadvise", errno: a };
      l.symbols.close(fd);
    }
  } else res = { call: m.op, errno: 22 };
  // it may be asked again (the cycle's kept worker): the library stays open until the thread ends
  self.postMessage(res);
};
`;

type WorkerResult = { ok: true; value?: number; bytes?: Uint8Array } | { ok?: false; call: string; errno: number };

let workerUrl: string | null = null;

function spawnWorker(): Worker {
  workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  return new Worker(workerUrl, { type: "module" });
}

/** The worker kept between {@linkcode keepWorker} and {@linkcode releaseWorker}, and whether a call holds it. */
let kept: { worker: Worker; busy: boolean } | null = null;

/**
 * Keeps one worker thread for the calls below until {@linkcode releaseWorker}, instead of starting one per call:
 * a start is a new isolate, ~15 ms of CPU on the host and ~0.4 s under the bed's emulation, and a cycle makes about
 * eight of these calls. A call that comes while the kept one is busy (a syncfs that hangs) gets a fresh worker.
 */
export function keepWorker(): void {
  if (kept && !kept.busy) return;
  // one stuck in a call (a syncfs on a hung disk) is not kept: its call's end terminates it (inWorker)
  kept = null;
  const mine = { worker: spawnWorker(), busy: false };
  // an error while idle (its start-up, before any call) must not end the process as an unhandled worker error;
  // the worker is dropped and the next call gets one of its own
  mine.worker.addEventListener("error", (e) => {
    e.preventDefault();
    if (kept === mine) kept = null;
    if (!mine.busy) mine.worker.terminate();
  });
  kept = mine;
}

/** Ends the kept worker (left to the process's exit if a call still holds it: a thread in a syscall cannot stop). */
export function releaseWorker(): void {
  if (kept && !kept.busy) kept.worker.terminate();
  kept = null;
}

// listeners, not on* properties: the kept worker's own error listener stays when a call ends
function call(w: Worker, msg: Record<string, unknown>): Promise<WorkerResult> {
  return new Promise<WorkerResult>((resolve, reject) => {
    const done = () => {
      w.removeEventListener("message", answered);
      w.removeEventListener("error", failed);
    };
    const answered = (e: MessageEvent) => {
      done();
      resolve(e.data as WorkerResult);
    };
    const failed = (e: ErrorEvent) => {
      e.preventDefault();
      done();
      reject(new Error(`libc worker failed: ${e.message}`));
    };
    w.addEventListener("message", answered);
    w.addEventListener("error", failed);
    w.postMessage(msg);
  });
}

async function inWorker(msg: Record<string, unknown>): Promise<WorkerResult> {
  const mine = kept && !kept.busy ? kept : null;
  if (mine) {
    mine.busy = true;
    let answered = false;
    try {
      const r = await call(mine.worker, msg);
      answered = true;
      return r;
    } finally {
      mine.busy = false;
      if (!answered && kept === mine) kept = null; // a worker that failed is not asked again
      // released (or failed) while this call ran: its end was left to here
      if (kept !== mine) mine.worker.terminate();
    }
  }
  const w = spawnWorker();
  try {
    return await call(w, msg);
  } finally {
    w.terminate();
  }
}

/** syncfs(2) on the filesystem holding `path` (opens it, syncs, closes) without blocking the event loop. */
export async function syncfs(path: string): Promise<void> {
  const r = await inWorker({ op: "syncfs", path: cstr(path), flags: O_RDONLY | O_CLOEXEC });
  if (!r.ok) throw new SysError(r.call, r.errno, { subject: path });
}

/**
 * Reads `size` bytes at `offset` of a block device with O_DIRECT on a worker thread, past the page cache:
 * proof that I/O reaches the device (e.g. a mapping just resumed). Returns the bytes read; the data is dropped.
 */
export async function readBlockDirect(path: string, offset: number, size: number): Promise<number> {
  const O_DIRECT = arm ? 0o200000 : 0o40000;
  const r = await inWorker({
    op: "readDirect",
    path: cstr(path),
    flags: O_RDONLY | O_CLOEXEC | O_DIRECT,
    offset,
    size,
  });
  if (!r.ok) throw new SysError(r.call, r.errno, { subject: path });
  return r.value ?? 0;
}

/**
 * {@linkcode readBlockDirect} that hands back what it read (never a secret: a LUKS header's first block, say).
 * `size` is a multiple of the device's logical block size.
 */
export async function readDirectBytes(path: string, offset: number, size: number): Promise<Uint8Array> {
  const O_DIRECT = arm ? 0o200000 : 0o40000;
  const flags = O_RDONLY | O_CLOEXEC | O_DIRECT;
  const r = await inWorker({ op: "readDirect", path: cstr(path), flags, offset, size, keep: true });
  if (!r.ok) throw new SysError(r.call, r.errno, { subject: path });
  return r.bytes ?? new Uint8Array();
}

/**
 * Reads up to `max` bytes of `path` from `offset` straight into C memory at `into` (a `crypt_safe_alloc` buffer: a
 * key file's bytes never pass through JS), on a worker thread, then drops the file's clean pages from the page
 * cache. Returns how many bytes were read (fewer at the end of the file).
 */
export async function readInto(path: string, into: Deno.PointerObject, offset: number, max: number): Promise<number> {
  const pointer = Deno.UnsafePointer.value(into).toString();
  const r = await inWorker({ op: "readKey", path: cstr(path), flags: O_RDONLY | O_CLOEXEC, pointer, offset, max });
  if (!r.ok) throw new SysError(r.call, r.errno, { subject: path });
  return r.value ?? 0;
}

/** Drops the clean pages of `path` from the page cache (posix_fadvise DONTNEED), on a worker thread. */
export async function dropPageCache(path: string): Promise<void> {
  const r = await inWorker({ op: "dropCache", path: cstr(path), flags: O_RDONLY | O_CLOEXEC });
  if (!r.ok) throw new SysError(r.call, r.errno, { subject: path });
}

/** write(2) all of `bytes` to `fd` on a worker thread (e.g. "mem" to /sys/power/state). Not for secrets. */
async function writeFd(fd: number, bytes: Uint8Array, label = `fd ${fd}`): Promise<void> {
  const r = await inWorker({ op: "write", fd, bytes: bytes.slice() });
  if (!r.ok) throw new SysError(`write(${label})`, r.errno, { subject: `fd ${fd}` });
}

/** Open `path` write-only, write `text`, close; the write runs on a worker (e.g. writeFile("/sys/power/state", "mem")). */
export async function writeFile(path: string, text: string): Promise<void> {
  const fd = openFd(path, O_WRONLY | O_CLOEXEC);
  try {
    await writeFd(fd, new TextEncoder().encode(text), path);
  } finally {
    closeFd(fd);
  }
}

/**
 * Typed errors for every native call in `ffi/`: the failing call, its errno (number and name) and what to do.
 *
 * libcryptsetup returns `-errno`; libc returns -1 and sets `errno`. Both end up here as a {@linkcode SysError}.
 *
 * @example
 * ```ts
 * import { errnoName, SysError } from "./errors.ts";
 *
 * const e = new SysError("crypt_resume_by_passphrase", 1, { subject: "cryptroot" });
 * console.log(e.code, errnoName(16)); // "EPERM" "EBUSY"
 * console.log(e.hint); // wrong passphrase: no keyslot opened with it; try again
 * ```
 *
 * @module
 */

/** Linux errno numbers (asm-generic, same on x86_64 and aarch64) to names. */
const NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  15: "ENOTBLK",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  26: "ETXTBSY",
  27: "EFBIG",
  28: "ENOSPC",
  29: "ESPIPE",
  30: "EROFS",
  31: "EMLINK",
  32: "EPIPE",
  33: "EDOM",
  34: "ERANGE",
  35: "EDEADLK",
  36: "ENAMETOOLONG",
  37: "ENOLCK",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  42: "ENOMSG",
  43: "EIDRM",
  55: "ENOANO",
  61: "ENODATA",
  62: "ETIME",
  71: "EPROTO",
  74: "EBADMSG",
  75: "EOVERFLOW",
  84: "EILSEQ",
  95: "EOPNOTSUPP",
  105: "ENOBUFS",
  110: "ETIMEDOUT",
  114: "EALREADY",
  115: "EINPROGRESS",
  116: "ESTALE",
  121: "EREMOTEIO",
  122: "EDQUOT",
  123: "ENOMEDIUM",
  124: "EMEDIUMTYPE",
  125: "ECANCELED",
  126: "ENOKEY",
  127: "EKEYEXPIRED",
  128: "EKEYREVOKED",
  129: "EKEYREJECTED",
};

/** Short descriptions (strerror-like) for the errnos this project meets. */
const TEXT: Record<string, string> = {
  EPERM: "operation not permitted",
  ENOENT: "no such file or directory",
  EINTR: "interrupted system call",
  EIO: "input/output error",
  ENXIO: "no such device or address",
  EBADF: "bad file descriptor",
  EAGAIN: "resource temporarily unavailable",
  ENOMEM: "cannot allocate memory",
  EACCES: "permission denied",
  EFAULT: "bad address",
  ENOTBLK: "block device required",
  EBUSY: "device or resource busy",
  EEXIST: "file exists",
  ENODEV: "no such device",
  ENOTDIR: "not a directory",
  EINVAL: "invalid argument",
  ENOTTY: "inappropriate ioctl for device",
  ENOSPC: "no space left on device",
  EROFS: "read-only file system",
  ENOSYS: "function not implemented",
  ENOANO: "no anode (token PIN missing or wrong)",
  EOPNOTSUPP: "operation not supported",
  ETIMEDOUT: "timed out",
  ECANCELED: "operation canceled",
  ENOKEY: "required key not available",
  EKEYEXPIRED: "key has expired",
  EKEYREVOKED: "key has been revoked",
  EKEYREJECTED: "key was rejected by service",
};

/** Name of an errno number (`16` → `"EBUSY"`); unknown numbers become `"E<n>"`. Accepts negative values. */
export function errnoName(n: number): string {
  return NAMES[Math.abs(n)] ?? `E${Math.abs(n)}`;
}

/** strerror-like text for an errno number. */
function errnoText(n: number): string {
  return TEXT[errnoName(n)] ?? `errno ${Math.abs(n)}`;
}

/** Hints that depend on the call family and the errno, first match wins. */
const CALL_HINTS: [RegExp, string, string][] = [
  [
    /^crypt_(resume|activate)_by_(passphrase|keyfile)/,
    "EPERM",
    "wrong passphrase: no keyslot opened with it; try again",
  ],
  [/^crypt_(resume|activate)_by_token/, "EPERM", "the token gave a passphrase that opens no keyslot"],
  [/^crypt_(resume|activate)_by_token/, "ENOANO", "the token needs a PIN, or the PIN given is wrong"],
  [/^crypt_(resume|activate)_by_token/, "ENOENT", "no token (or keyslot assigned to it) can unlock this device"],
  [/^crypt_(resume|activate)_by_token/, "EAGAIN", "the token needs hardware that is not present (plug it in)"],
  [/^crypt_(resume|activate)/, "ENOENT", "no usable keyslot (the requested keyslot is empty or disabled)"],
  [
    /^crypt_(resume|activate)/,
    "ENOMEM",
    "not enough memory for the PBKDF (Argon2 memory cost); free memory before unlocking",
  ],
  [/^crypt_resume/, "EINVAL", "the mapping is not suspended or not LUKS (check with isSuspended())"],
  [/^crypt_resume/, "ENODEV", "no such dm mapping (check the name with `dmsetup ls`)"],
  [/^crypt_activate/, "EEXIST", "a dm mapping with that name already exists"],
  [/^crypt_activate/, "EBUSY", "the device is in use or already active"],
  [/^crypt_suspend/, "EINVAL", "not an active LUKS mapping, or it is already suspended"],
  [/^crypt_suspend/, "EBUSY", "the mapping is busy: suspend the devices stacked above it first"],
  [/^crypt_suspend/, "ENODEV", "no such dm mapping (check the name with `dmsetup ls`)"],
  [/^crypt_suspend/, "EOPNOTSUPP", "the kernel dm-crypt target cannot wipe its key (too old kernel)"],
  [/^crypt_init_by_name/, "ENODEV", "no active dm mapping with that name (check `dmsetup ls`)"],
  [/^crypt_init/, "ENOENT", "the device or header path does not exist"],
  [/^crypt_init/, "ENOTBLK", "the path does not exist, is not readable, or is not a block device or regular file"],
  [/^crypt_load/, "EINVAL", "no LUKS header of the requested type on this device (wrong device or header file?)"],
  [/^crypt_load/, "ENOENT", "the device or header vanished"],
  [/^crypt_get_active_device/, "ENODEV", "no active dm mapping with that name"],
  [/^crypt_/, "EOPNOTSUPP", "device-mapper is not available (is the dm_mod kernel module loaded?)"],
  [/^dm_/, "ENXIO", "no such dm device"],
  [/^dm_/, "ENODEV", "no such dm device, or device-mapper missing (modprobe dm_mod)"],
  [/^ioctl\(VT_/, "ENOTTY", "the fd is not a virtual console (use /dev/tty0 or a /dev/ttyN)"],
  [/^ioctl\(VT_/, "EPERM", "needs CAP_SYS_TTY_CONFIG (run as root)"],
  [/^write\(\/sys\/power\/state\)/, "EBUSY", "another suspend is in progress"],
  [/^write\(\/sys\/power\/state\)/, "EINVAL", "this sleep state is not supported (see /sys/power/state)"],
];

const GENERIC_HINTS: Record<string, string> = {
  EPERM: "operation not permitted: run as root",
  EACCES: "permission denied: run as root",
  ENOENT: "the path does not exist",
  ENOMEM: "out of memory",
  EIO: "I/O error on the device: check the disk and dmesg",
  EBUSY: "busy: something else holds it; retry after it is released",
  ENODEV: "no such device",
  EINVAL: "invalid argument or wrong state",
  EINTR: "interrupted by a signal: retry",
  EAGAIN: "temporarily unavailable: retry",
  ENOTTY: "not a terminal or the ioctl is not supported by this fd",
  ENOSYS: "not implemented by this kernel",
  EOPNOTSUPP: "not supported here",
};

/** What the user should do for this call and errno. */
function hintFor(call: string, errno: number): string {
  const code = errnoName(errno);
  for (const [re, c, hint] of CALL_HINTS) if (c === code && re.test(call)) return hint;
  return GENERIC_HINTS[code] ?? "see the call's man page";
}

/** Options for {@linkcode SysError}. */
export interface SysErrorOptions {
  /** What the call acted on (device path, dm name, fd path). */
  subject?: string;
  /** The library's own message (e.g. libcryptsetup's last error log line). */
  detail?: string;
  /** Override the computed hint. */
  hint?: string;
}

/** A failed native call: `call` names it, `errno`/`code` say why, `hint` says what to do. */
export class SysError extends Error {
  /** The native call, e.g. `"crypt_suspend"`. */
  readonly call: string;
  /** Positive errno number. */
  readonly errno: number;
  /** errno name, e.g. `"EBUSY"`. */
  readonly code: string;
  /** What the user should do. */
  readonly hint: string;
  /** What the call acted on. */
  readonly subject?: string;
  /** The library's own message, if any. */
  readonly detail?: string;

  /** `errno` may be negative (libcryptsetup's `-errno` returns). */
  constructor(call: string, errno: number, opts: SysErrorOptions = {}) {
    const n = Math.abs(errno);
    const code = errnoName(n);
    const hint = opts.hint ?? hintFor(call, n);
    const what = opts.subject === undefined ? call : `${call}(${opts.subject})`;
    const detail = opts.detail ? ` [${opts.detail}]` : "";
    super(`${what} failed: ${code} (${errnoText(n)})${detail}: ${hint}`);
    this.name = "SysError";
    this.call = call;
    this.errno = n;
    this.code = code;
    this.hint = hint;
    this.subject = opts.subject;
    this.detail = opts.detail;
  }
}

/**
 * Loop devices: attach a file with `LOOP_CONFIGURE` (Linux 5.8+), read an attached device's settings from sysfs.
 *
 * A loop device keeps the credentials of whoever opened its backing file for as long as it is attached. When
 * cryptsetup attached it, those credentials carry cryptsetup's thread keyring and with it the volume key; a
 * fresh loop device attached by a keyring-clean process does not pin anything.
 *
 * The device stays open until the returned handle is disposed: with autoclear set, the kernel detaches a loop
 * device at its last close, so the caller must have something else (a dm table) holding it first.
 *
 * @example
 * ```ts
 * import { attachLoop } from "./loop.ts";
 *
 * using loop = attachLoop("/srv/vault.img", { autoclear: true });
 * console.log(loop.path, loop.devno); // /dev/loop1 7:1
 * ```
 *
 * @module
 */
import { join } from "../host/path.ts";
import { SysError } from "./errors.ts";
import { closeFd, ioctlInt, ioctlPtr, O_CLOEXEC, O_RDONLY, O_RDWR, openFd } from "./libc.ts";

const LOOP_CTL_GET_FREE = 0x4c82;
const LOOP_CONFIGURE = 0x4c0a;
const LO_FLAGS_READ_ONLY = 1;
const LO_FLAGS_AUTOCLEAR = 4;
const LO_FLAGS_DIRECT_IO = 16;

/** Settings of an attached loop device, as sysfs shows them. */
export interface LoopSettings {
  /** Path of the file it reads from (as the kernel recorded it at attach). */
  backingFile: string;
  /** Bytes into the file where the device starts. */
  offset: number;
  /** Bytes of the file it covers; 0 = up to the end. */
  sizeLimit: number;
  /** Attached read-only. */
  readOnly: boolean;
  /** Detached by the kernel at its last close. */
  autoclear: boolean;
  /** Reads and writes bypass the page cache of the file. */
  directIo: boolean;
  /** Logical block size in bytes. */
  blockSize: number;
}

/** Reads `/sys/block/<name>/loop/*`; null when `name` is not an attached loop device. */
export async function loopSettings(name: string, sys = "/sys"): Promise<LoopSettings | null> {
  const dir = join(sys, "block", name);
  const read = (p: string) => Deno.readTextFile(join(dir, p)).then((s) => s.trim(), () => null);
  const backingFile = await read("loop/backing_file");
  if (!backingFile) return null;
  const num = async (p: string) => Number(await read(p) ?? 0);
  return {
    backingFile,
    offset: await num("loop/offset"),
    sizeLimit: await num("loop/sizelimit"),
    readOnly: (await read("ro")) === "1",
    autoclear: (await read("loop/autoclear")) === "1",
    directIo: (await read("loop/dio")) === "1",
    blockSize: await num("queue/logical_block_size"),
  };
}

/** An attached loop device, held open until disposed. */
export interface AttachedLoop extends Disposable {
  /** The device node, e.g. `/dev/loop1`. */
  path: string;
  /** `major:minor` */
  devno: string;
}

/**
 * Attaches `file` to a free loop device. `dev` is where device nodes are (devtmpfs); `file` is opened by this
 * process, so the loop device holds this process's credentials.
 */
export function attachLoop(
  file: string,
  opts: {
    offset?: number;
    sizeLimit?: number;
    readOnly?: boolean;
    autoclear?: boolean;
    directIo?: boolean;
    blockSize?: number;
    dev?: string;
    sys?: string;
  } = {},
): AttachedLoop {
  const dev = opts.dev ?? "/dev";
  const control = openFd(join(dev, "loop-control"), O_RDWR | O_CLOEXEC);
  let number: number;
  try {
    number = ioctlInt(control, LOOP_CTL_GET_FREE, 0, "LOOP_CTL_GET_FREE");
  } finally {
    closeFd(control);
  }
  const path = join(dev, `loop${number}`);
  const backing = openFd(file, (opts.readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  let loopFd = -1;
  let devno: string;
  try {
    loopFd = openFd(path, (opts.readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    // struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 reserved[8]; }
    const config = new Uint8Array(304);
    const v = new DataView(config.buffer);
    v.setUint32(0, backing, true);
    v.setUint32(4, opts.blockSize ?? 0, true);
    const info = 8; // loop_info64: lo_offset @24, lo_sizelimit @32, lo_flags @52, lo_file_name[64] @56
    v.setBigUint64(info + 24, BigInt(opts.offset ?? 0), true);
    v.setBigUint64(info + 32, BigInt(opts.sizeLimit ?? 0), true);
    const flags = (opts.readOnly ? LO_FLAGS_READ_ONLY : 0) | (opts.autoclear ? LO_FLAGS_AUTOCLEAR : 0) |
      (opts.directIo ? LO_FLAGS_DIRECT_IO : 0);
    v.setUint32(info + 52, flags, true);
    new TextEncoder().encodeInto(file.slice(-63), config.subarray(info + 56, info + 56 + 63));
    ioctlPtr(loopFd, LOOP_CONFIGURE, config, "LOOP_CONFIGURE");
    // the minor is not always the number (max_part shifts it): ask sysfs
    devno = Deno.readTextFileSync(join(opts.sys ?? "/sys", "block", `loop${number}`, "dev")).trim();
  } catch (err) {
    if (loopFd >= 0) closeFd(loopFd);
    throw err instanceof SysError ? new SysError(err.call, err.errno, { subject: `${path} on ${file}` }) : err;
  } finally {
    closeFd(backing); // the kernel holds its own reference
  }
  const fd = loopFd;
  let open = true;
  return {
    path,
    devno,
    [Symbol.dispose]() {
      if (open) closeFd(fd);
      open = false;
    },
  };
}

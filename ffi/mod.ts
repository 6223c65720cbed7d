/**
 * cryptsleep's native layer: the only code that touches pointers and `Deno.dlopen`.
 *
 * - {@linkcode Libcryptsetup} / {@linkcode CryptDevice}: luksSuspend/luksResume, volume keys into secret memory.
 * - {@linkcode SafeBuffer}: secret memory from `crypt_safe_alloc`.
 * - {@linkcode Console}: prompts with echo off, secrets read straight into a SafeBuffer; VT allocation.
 * - libc: sync/syncfs, mount/umount2, setpriority, FIFREEZE/FITHAW, O_DIRECT reads, sysfs writes.
 * - devmapper: info/suspend/resume of plain dm devices; tables that hold a key, kept in C memory.
 * - loop: attach a file by LOOP_CONFIGURE, read an attached device's settings.
 * - {@linkcode SysError}: every failure names its call, errno and what to do.
 *
 * @example
 * ```ts
 * import { CryptDevice, Libcryptsetup, probeLibcryptsetup } from "./mod.ts";
 *
 * const probe = probeLibcryptsetup();
 * if (probe.ok) console.log(probe.info.version, probe.info.symbols.crypt_resume_by_token_pin);
 * const lib = Libcryptsetup.open();
 * using dev = CryptDevice.initByName(lib, "cryptroot");
 * console.log(dev.isSuspended("cryptroot"));
 * ```
 *
 * @module
 */

export { errnoName, SysError, type SysErrorOptions } from "./errors.ts";
export { CRYPT_ANY_SLOT, CRYPT_ANY_TOKEN, CryptDevice } from "./crypt_device.ts";
export {
  Libcryptsetup,
  LIBCRYPTSETUP_SONAME,
  type LibcryptsetupInfo,
  type LibcryptsetupSymbol,
  type Logger,
  type LogLevel,
  probeLibcryptsetup,
} from "./libcryptsetup.ts";
export { SafeBuffer } from "./safe_buffer.ts";
export {
  fsFreeze,
  fsThaw,
  MNT_DETACH,
  mount,
  MS_BIND,
  MS_NODEV,
  MS_NOEXEC,
  MS_NOSUID,
  MS_PRIVATE,
  MS_REC,
  readBlockDirect,
  setpriority,
  syncAsync,
  syncfs,
  umount2,
  writeFile,
} from "./libc.ts";
export { Console, type ReadSecretOptions } from "./tty.ts";
export * as devmapper from "./devmapper.ts";
export * as loop from "./loop.ts";

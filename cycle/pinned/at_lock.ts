/**
 * @module
 * Release at lock: a volume whose key is pinned (see mod.ts) is locked by a table swap, so that the key leaves
 * RAM at this very suspend.
 *
 * luksSuspend wipes the key from dm-crypt, but the pinned copy stays as long as the dm table holds the file that
 * pins it. So the table has to go while the volume is locked:
 *
 * 1. freeze the filesystem on the volume (FIFREEZE: a dm resume would otherwise thaw it, and its first write
 *    would wait forever on the placeholder);
 * 2. suspend the mapping without lockfs and wipe its key (`key wipe`: what crypt_suspend does);
 * 3. create the placeholder `cryptsleep-hold-<name>`, an `error` mapping of the same size, and suspend it: I/O
 *    sent to it waits;
 * 4. reload the volume as `linear` onto it and resume: the crypt table is destroyed, the file that pinned the
 *    keyring is closed (an autoclear loop device detaches), and the key goes with it.
 *
 * The unlock cannot luksResume a table that is gone, so it rebuilds the stack: the passphrase opens a keyslot
 * (`crypt_volume_key_get`), the crypt table is loaded into the placeholder and resumed (waiting I/O flows), then
 * into the volume, and the placeholder is removed; the filesystem is thawed. What the unlock needs is kept in a
 * record in the cycle's root (a ramfs both processes are chrooted into), so the supervisor can do the same if
 * cryptsleep suspend dies.
 *
 * @example
 * ```ts
 * import type { AgentContext } from "../context.ts";
 * import type { Volume } from "../../discovery/mod.ts";
 * import { releaseAtLock } from "./at_lock.ts";
 *
 * export async function lock(ctx: AgentContext, volume: Volume): Promise<void> {
 *   if (await releaseAtLock(ctx, volume)) console.log("locked, table swapped, pinned key released");
 * }
 * ```
 */
import { basename } from "../../host/path.ts";
import * as dm from "../../ffi/devmapper.ts";
import { fsFreeze, fsThaw } from "../../ffi/libc.ts";
import { attachLoop, type LoopSettings } from "../../ffi/loop.ts";
import { CryptDevice } from "../../ffi/libcryptsetup.ts";
import { SysError } from "../../ffi/errors.ts";
import type { SafeBuffer } from "../../ffi/safe_buffer.ts";
import type { Volume } from "../../discovery/mod.ts";
import type { AgentContext } from "../context.ts";
import { hostMountinfo, hostPath } from "../../chroot/enter.ts";
import type { Secret } from "../secrets.ts";
import { cryptsetupLoop } from "./keys.ts";
import { dieHereIfAsked } from "../runner.ts";

/** What the unlock needs to rebuild a swapped volume; nothing secret. */
export interface SwapRecord {
  /** The volume. */
  dmName: string;
  /** Its size in 512-byte sectors (the crypt target's length). */
  length: string;
  /** The crypt target's cipher spec, e.g. `aes-xts-plain64`. */
  cipher: string;
  /** `<iv_offset> <device> <offset> [opts]` of the crypt table. */
  rest: string;
  /** The mapping is read-only. */
  readOnly: boolean;
  /** Where the LUKS header is read from (a path of the real root, or a /dev node). */
  header: string;
  /** A loop device cryptsetup attached (it detaches itself): the unlock attaches the file again. */
  loop: (LoopSettings & { file: string }) | null;
  /** Mountpoints frozen with FIFREEZE (paths of the real root: each process reaches them by hostPath). */
  frozen: string[];
}

/** The placeholder's dm name. */
export function placeholderName(dmName: string): string {
  return `cryptsleep-hold-${dmName}`.slice(0, 127);
}

function recordPath(dmName: string): string {
  return `/hold-${dmName}.json`;
}

/** The record of a swapped volume, or null (the cycle's root is the supervisor's too). */
export function readSwapRecord(dmName: string): SwapRecord | null {
  try {
    // the cycle's root is memory: read synchronously (the wake's path looks here for every volume)
    return JSON.parse(Deno.readTextFileSync(recordPath(dmName))) as SwapRecord;
  } catch {
    return null;
  }
}

/**
 * Locks `volume` by the table swap. Returns false, with nothing touched, when the volume's table is not one crypt
 * target, its loop device has an offset, or its filesystem cannot be frozen (then the caller locks it the usual
 * way and the unlock re-opens it).
 */
export async function releaseAtLock(ctx: AgentContext, volume: Volume): Promise<boolean> {
  const name = volume.dmName;
  const live = dm.info(name);
  let record: SwapRecord;
  {
    using table = dm.readTableSecure(name);
    const [crypt] = table.targets;
    if (table.targets.length !== 1 || crypt.type !== "crypt") return false;
    const { cipher, rest } = dm.cryptTemplate(crypt.params);
    const loop = await cryptsetupLoop(volume, dm.cryptDevice(crypt.params));
    if (loop && (loop.settings.offset !== 0 || loop.settings.sizeLimit !== 0)) return false;
    const file = loop ? loop.settings.backingFile : null;
    record = {
      dmName: name,
      length: String(crypt.length),
      cipher,
      rest,
      readOnly: live.readOnly,
      header: volume.header.detached ? volume.header.path : file ?? volume.header.path,
      loop: loop && file ? { ...loop.settings, file } : null,
      frozen: [],
    };
  }
  // the filesystem mounted on the volume itself (those above are frozen by their own dm suspend); bind mounts
  // share the superblock, so one mountpoint is enough
  const own = hostMountinfo().find((m) => m.devno === volume.devno);
  if (own) record.frozen.push(own.mountpoint);
  await Deno.writeTextFile(recordPath(name), JSON.stringify(record));

  try {
    for (const m of record.frozen) fsFreeze(hostPath(m));
  } catch (err) {
    // a filesystem without FIFREEZE: lock it the usual way (the unlock re-opens it); nothing was frozen
    ctx.log(`lock ${name}: no table swap, cannot freeze ${record.frozen}: ${(err as Error).message}`);
    await Deno.remove(recordPath(name)).catch(() => {});
    return false;
  }
  // from here on the volume is locked whatever fails: the lock phase's undo (the unlock) undoes it, by what it
  // finds after each of these steps (the bed's death test stops the agent at each)
  dieHereIfAsked("hold:frozen");
  dm.suspend(name, { lockfs: false });
  dm.message(name, "key wipe");
  dieHereIfAsked("hold:wiped");
  const hold = placeholderName(name);
  const placeholder = dm.create(hold, [{ start: 0n, length: BigInt(record.length), type: "error", params: "" }]);
  dm.suspend(hold, { lockfs: false, noflush: true });
  dieHereIfAsked("hold:placeholder");
  dm.reload(name, [dm.linearOnto(BigInt(record.length), placeholder)], { readOnly: record.readOnly });
  dieHereIfAsked("hold:reloaded");
  dm.resume(name);
  ctx.log(`locked ${name} by table swap onto ${hold}${record.frozen.length ? `; froze ${record.frozen}` : ""}`);
  return true;
}

/**
 * The volume is live: it exists, is not suspended and not locked by the table swap. False too when dm cannot tell
 * (a read there might never return).
 */
export function isLive(volume: Volume): boolean {
  try {
    const info = dm.info(volume.dmName);
    return info.exists && !info.suspended && !isSwapped(volume);
  } catch {
    return false;
  }
}

/** Whether `volume` is swapped: it runs as `linear` onto its placeholder. */
export function isSwapped(volume: Volume): boolean {
  const hold = dm.info(placeholderName(volume.dmName));
  return hold.exists && dm.runsThrough(volume.dmName, hold);
}

/** Removes a placeholder the volume does not use (a swap that failed before it was done). */
export function removeStrayPlaceholder(volume: Volume): void {
  const hold = placeholderName(volume.dmName);
  const info = dm.info(hold);
  if (!info.exists) return;
  // a linear table loaded but never resumed still holds the placeholder open
  dm.clear(volume.dmName);
  if (info.suspended) dm.resume(hold);
  dm.remove(hold);
}

/**
 * Unlocks a swapped volume with `secret`: false when the passphrase opens no keyslot. The placeholder, then the
 * volume, get the crypt table back; the filesystem is thawed.
 */
export async function unlockSwapped(ctx: AgentContext, volume: Volume, secret: Secret): Promise<boolean> {
  const record = readSwapRecord(volume.dmName);
  if (!record) throw new Error(`unlock ${volume.dmName}: swapped, but its record ${recordPath(volume.dmName)} is gone`);
  let unlocked: { key: SafeBuffer; size: number; keyslot: number };
  {
    using device = CryptDevice.init(ctx.lib, hostPath(record.header));
    device.load();
    // nothing holds a swapped volume's device while it sleeps: the header must still be this volume's, or the
    // rebuild would give its filesystem another volume's data
    const uuid = device.uuid()?.toLowerCase();
    if (uuid !== volume.uuid.toLowerCase()) throw new NotThisVolume(volume, record.header, uuid);
    try {
      unlocked = await device.volumeKeyGet(secret.keyslot ?? -1, secret.buffer, secret.length);
      // a key file's slot is remembered for the next wake, as after a resume
      secret.opened = unlocked.keyslot;
    } catch (err) {
      if (err instanceof SysError && err.code === "EPERM") return false;
      throw err;
    }
  }
  using key = unlocked.key;
  using stack = new DisposableStack();
  let rest = record.rest;
  if (record.loop) {
    const fresh = stack.use(attachLoop(hostPath(record.loop.file), { ...record.loop }));
    const fields = rest.split(/\s+/);
    fields[1] = fresh.devno;
    rest = fields.join(" ");
    ctx.log(`unlock ${volume.dmName}: ${basename(record.loop.file)} attached again as ${basename(fresh.path)}`);
  }
  using params = dm.cryptParamsWithKey(record.cipher, key, unlocked.size, rest);
  const crypt: dm.Target = { start: 0n, length: BigInt(record.length), type: "crypt", params: params.pointer };
  const hold = placeholderName(volume.dmName);
  // the placeholder first: I/O waiting in it flows to dm-crypt; then the volume gets its own crypt table
  dm.reload(hold, [crypt], { readOnly: record.readOnly });
  dm.resume(hold);
  dieHereIfAsked("rebuild:placeholder");
  dm.reload(volume.dmName, [crypt], { readOnly: record.readOnly });
  dieHereIfAsked("rebuild:reloaded");
  // the volume is live (linear onto the placeholder) with its filesystem frozen by our FIFREEZE: the kernel's
  // suspend inside this resume must not freeze it a second time (before 6.8 that is EBUSY)
  dm.resume(volume.dmName, { lockfs: false });
  dieHereIfAsked("rebuild:resumed");
  dm.remove(hold);
  dieHereIfAsked("rebuild:removed");
  for (const m of record.frozen) fsThaw(hostPath(m));
  await Deno.remove(recordPath(volume.dmName)).catch(() => {});
  return true;
}

/**
 * Where a locked volume's header was, another LUKS volume's header is now (or none): a disk or image exchanged while
 * the machine slept. Nothing is unlocked or rebuilt onto it; the caller retires the volume.
 */
export class NotThisVolume extends Error {
  /** `header`: where the header was read; `found`: the UUID there, or undefined for no LUKS header. */
  constructor(volume: Volume, header: string, found: string | undefined) {
    super(
      `${volume.dmName}: ${header} now holds ${found ? `LUKS volume ${found}` : "no LUKS header"}, not ` +
        `${volume.uuid}: its disk was exchanged while the machine slept. Nothing of it is used; ` +
        `${volume.dmName}'s reads and writes now fail`,
    );
    this.name = "NotThisVolume";
  }
}

/** Thaws what a swap froze when the volume is unlocked another way (the swap failed before it was done). */
export async function thawAfterFailedSwap(volume: Volume): Promise<void> {
  const record = readSwapRecord(volume.dmName);
  if (!record) return;
  for (const m of record.frozen) {
    try {
      fsThaw(hostPath(m));
    } catch (err) {
      // EINVAL: not frozen (the freeze itself failed)
      if (!(err instanceof SysError && err.code === "EINVAL")) throw err;
    }
  }
  await Deno.remove(recordPath(volume.dmName)).catch(() => {});
}

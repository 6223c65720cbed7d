/**
 * @module
 * A disk that went away while the machine slept (a USB disk pulled out, a disk hot-unplugged): the volume on it
 * cannot be unlocked — its LUKS header went with it — and a prompt for it would keep the machine frozen for nothing.
 * {@linkcode goneOf} sees it in sysfs; {@linkcode retire} gives the mapping dm's `error` target, so every read and
 * write on it fails at once, as on a disk pulled out while awake, instead of waiting forever on a suspended device,
 * and what is stacked above it can resume. Nothing of the key is needed: the lock wiped it.
 *
 * @example
 * ```ts
 * import { goneBelow } from "./gone.ts";
 * console.log(goneBelow("dm-0")); // [] while nothing under dm-0 is lost; ["sdb"] once it was pulled out
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import type { Volume } from "../discovery/mod.ts";
import { basename } from "../host/path.ts";
import { isSwapped, placeholderName, readSwapRecord, thawAfterFailedSwap } from "./pinned/mod.ts";

/**
 * The lost devices under `kname` that take it down. A device is lost when its sysfs entry is gone (the kernel
 * removed the disk; the `slaves/` link dangles), when its disk's driver gave it up ({@linkcode deadDisk}: it is
 * still there but would never answer a read), when it is a retired mapping, or when what is under it is lost: any
 * of its devices for a dm mapping (linear, striped, crypt: each holds part of it), all of them for an md array (one leg
 * of a mirror gone leaves it working). (A dm mirror, raid or multipath is counted as linear: rare on a laptop.)
 * A dead disk is named with why: `vdc: virtio status 0x00000000`.
 */
export function goneBelow(kname: string, sysBlock = "/sys/block"): string[] {
  const slaves = slavesOf(kname, sysBlock);
  const lost: string[] = [];
  let whole = 0;
  for (const s of slaves) {
    try {
      // the link resolves while the device it points to is there
      Deno.statSync(`${sysBlock}/${kname}/slaves/${s}`);
    } catch {
      lost.push(s);
      whole++;
      continue;
    }
    const dead = deadDisk(`${sysBlock}/${kname}/slaves/${s}`);
    const below = dead ? [`${s}: ${dead}`] : retiredKname(s, sysBlock) ? [s] : goneBelow(s, sysBlock);
    if (below.length) whole++;
    lost.push(...below);
  }
  return kname.startsWith("md") && whole < slaves.length ? [] : lost;
}

/**
 * The lost devices of a locked volume ({@linkcode goneBelow}). A table-swapped one runs onto its placeholder, which
 * holds no device: its data device is the one its swap record names ({@linkcode goneUnder}).
 */
export function goneOf(volume: Volume, sysBlock = "/sys/block"): string[] {
  const record = isSwapped(volume) ? readSwapRecord(volume.dmName) : null;
  if (!record) return goneBelow(volume.kname, sysBlock);
  // an image file: left alone (its file is read to see, and the volume holding it may be locked still)
  if (record.loop) return [];
  return goneUnder(record.rest.split(/\s+/)[1] ?? "", sysBlock);
}

/**
 * Whether the device numbered `devno` (`major:minor`) is lost: gone from sysfs, retired, or with what is under it
 * lost (an LV whose disk was pulled stays, its own `slaves/` link dangling).
 */
export function goneUnder(devno: string, sysBlock = "/sys/block"): string[] {
  if (!/^\d+:\d+$/.test(devno)) return [];
  let kname: string;
  try {
    kname = basename(Deno.realPathSync(`${sysBlock}/../dev/block/${devno}`));
  } catch {
    return [devno];
  }
  const dead = deadDisk(`${sysBlock}/../dev/block/${devno}`);
  if (dead) return [`${kname}: ${dead}`];
  return retiredKname(kname, sysBlock) ? [kname] : goneBelow(kname, sysBlock);
}

/** A virtio disk's device status (`device/status`, `0x%08x`), or null for any other disk. */
function virtioStatus(disk: string): number | null {
  try {
    const text = Deno.readTextFileSync(`${disk}/device/status`).trim();
    return /^0x[0-9a-f]{8}$/.test(text) ? Number.parseInt(text, 16) : null;
  } catch {
    return null;
  }
}

/**
 * Whether every disk under `kname` is virtio: its requests have no timeout in the kernel, so one not answered is
 * never answered. Other disks (SCSI, NVMe, USB) get an error from their driver in the end (timeouts, resets, retries).
 */
export function onlyVirtioBelow(kname: string, sysBlock = "/sys/block"): boolean {
  const slaves = slavesOf(kname, sysBlock);
  return slaves.length > 0 &&
    slaves.every((s) =>
      virtioStatus(diskOf(`${sysBlock}/${kname}/slaves/${s}`)) !== null || onlyVirtioBelow(s, sysBlock)
    );
}

/** The devices right under `kname` (sysfs `slaves/`); none for a disk or a partition. */
export function slavesOf(kname: string, sysBlock = "/sys/block"): string[] {
  try {
    return [...Deno.readDirSync(`${sysBlock}/${kname}/slaves`)].map((e) => e.name);
  } catch {
    return [];
  }
}

/** The sysfs directory of the disk holding block device `dir`: itself, or a partition's disk. */
function diskOf(dir: string): string {
  try {
    Deno.statSync(`${dir}/partition`);
    return `${dir}/..`;
  } catch {
    return dir;
  }
}

/** How the console names what happened: `its disk is gone (sdb)`, `its disk does not answer (vdc: …)`. */
export function lostDisk(lost: string[]): string {
  const dead = lost.filter((l) => l.includes(": ")).length;
  const what = dead === 0 ? "is gone" : dead === lost.length ? "does not answer" : "is gone or does not answer";
  return `its disk ${what} (${lost.join(", ")})`;
}

/** SCSI (`device/state`) and NVMe controller (`device/state`) states after which the disk answers no more I/O. */
const DEAD_STATES = new Set([
  "offline",
  "transport-offline",
  "cancel",
  "deleted",
  "dead",
  "deleting",
  "deleting (no IO)",
]);
/** virtio's device status bits (include/uapi/linux/virtio_config.h). */
const VIRTIO_DRIVER_OK = 0x4, VIRTIO_NEEDS_RESET = 0x40, VIRTIO_FAILED = 0x80;

/**
 * Why the disk of block device `dir` (its sysfs directory, a partition's disk for a partition) would never answer
 * I/O though it is still there, or null. A read of such a disk waits forever (virtio has no timeout): a disk taken
 * away while the machine slept, whose driver could not bring it back at resume, stays with its queue stopped and its
 * virtio status reset (seen on the bed: `device refuses features`, resume -19, status 0). Read from sysfs only: the
 * disk itself is never touched.
 */
export function deadDisk(dir: string): string | null {
  const disk = diskOf(dir);
  const status = virtioStatus(disk);
  if (status !== null && (!(status & VIRTIO_DRIVER_OK) || status & (VIRTIO_NEEDS_RESET | VIRTIO_FAILED))) {
    return `virtio status 0x${status.toString(16).padStart(8, "0")}`;
  }
  try {
    const state = Deno.readTextFileSync(`${disk}/device/state`).trim();
    if (DEAD_STATES.has(state)) return `state ${state}`;
  } catch { /* neither SCSI nor NVMe */ }
  return null;
}

function retiredKname(kname: string, sysBlock: string): boolean {
  if (!kname.startsWith("dm-")) return false;
  try {
    return isRetired(Deno.readTextFileSync(`${sysBlock}/${kname}/dm/name`).trim(), sysBlock);
  } catch {
    return false;
  }
}

/** Whether the live table of dm device `name` is all `error` lines: retired by {@linkcode retire}. */
export function isRetired(name: string, sysBlock = "/sys/block"): boolean {
  const info = dm.info(name);
  if (!info.exists || info.suspended) return false;
  // a table that maps onto devices holds them (slaves/): only one without any is read, so a live crypt table and
  // its key are never copied out of the kernel here
  try {
    if ([...Deno.readDirSync(`${sysBlock}/dm-${info.minor}/slaves`)].length > 0) return false;
  } catch {
    return false;
  }
  using table = dm.readTableSecure(name);
  return table.targets.length > 0 && table.targets.every((t) => t.type === "error");
}

/**
 * Gives the volume's mapping the `error` target of the same size and resumes it: reads and writes fail (EIO), a
 * filesystem on it sees errors and can be unmounted, and the devices stacked above can resume. A table swap's
 * placeholder goes first and is removed, and a filesystem it froze is thawed (onto the error target). Again on a
 * retired volume, it finishes one cut short. The mapping stays, for the user to close.
 */
export async function retire(volume: Volume, sysBlock = "/sys/block"): Promise<void> {
  const hold = placeholderName(volume.dmName);
  const held = dm.info(hold);
  // what the swapped volume sent after the lock waits in its suspended placeholder (an error table): resumed first,
  // it fails at once; the suspend the volume's new table needs would otherwise wait for it forever
  if (held.exists && held.suspended) dm.resume(hold, { lockfs: false });
  const sectors = BigInt(Deno.readTextFileSync(`${sysBlock}/${volume.kname}/size`).trim());
  dm.reload(volume.dmName, [{ start: 0n, length: sectors, type: "error", params: "" }]);
  // a live mapping is suspended by the kernel for the new table: no filesystem freeze, whose writes could only fail
  dm.resume(volume.dmName, { lockfs: false });
  if (held.exists) {
    try {
      dm.remove(hold);
    } catch {
      // unused now (an error table): left is harmless, and must not keep a filesystem frozen behind it
    }
  }
  await thawAfterFailedSwap(volume);
}

/**
 * A volume whose detached header lives on a volume retired for its gone disk (`holders`): it cannot be unlocked this
 * cycle, so it is retired too (its unlock would otherwise be asked for ever behind a frozen machine).
 */
export class HeaderGone extends Error {
  /** `holders`: the retired volumes the header was on. */
  constructor(volume: Volume, holders: string[]) {
    super(
      `${volume.dmName}: its detached header ${volume.header.path} was on ${holders.join(", ")}, whose disk is ` +
        "gone: it cannot be unlocked; its reads and writes now fail",
    );
    this.name = "HeaderGone";
  }
}

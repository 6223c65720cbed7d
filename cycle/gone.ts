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
 * console.log(goneBelow("dm-0")); // [] while a device under dm-0 is there; ["sdb"] once it was pulled out
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import type { Volume } from "../discovery/mod.ts";
import { isSwapped, placeholderName, readSwapRecord } from "./pinned/mod.ts";

/**
 * The lost devices under `kname` that take it down. A device is lost when its sysfs entry is gone (the kernel
 * removed the disk; the `slaves/` link dangles), when it is a retired mapping, or when what is under it is lost: any
 * of its devices for a dm mapping (linear, striped, crypt: each holds part of it), all of them for an md array (one leg
 * of a mirror gone leaves it working). (A dm mirror, raid or multipath is counted as linear: rare on a laptop.)
 */
export function goneBelow(kname: string, sysBlock = "/sys/block"): string[] {
  let slaves: string[];
  try {
    slaves = [...Deno.readDirSync(`${sysBlock}/${kname}/slaves`)].map((e) => e.name);
  } catch {
    return []; // a disk or a partition: nothing under it
  }
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
    const below = retiredKname(s, sysBlock) ? [s] : goneBelow(s, sysBlock);
    if (below.length) whole++;
    lost.push(...below);
  }
  return kname.startsWith("md") && whole < slaves.length ? [] : lost;
}

/**
 * The lost devices of a locked volume ({@linkcode goneBelow}). A table-swapped one runs onto its placeholder, which
 * holds no device: its data device is the one its swap record names, gone when sysfs no longer has its number.
 */
export async function goneOf(volume: Volume, sysBlock = "/sys/block"): Promise<string[]> {
  const record = isSwapped(volume) ? await readSwapRecord(volume.dmName) : null;
  if (!record) return goneBelow(volume.kname, sysBlock);
  if (record.loop) return []; // an image file: its own volume below is the one to lose its disk
  const devno = record.rest.split(/\s+/)[1] ?? "";
  if (!/^\d+:\d+$/.test(devno)) return [];
  try {
    Deno.statSync(`${sysBlock}/../dev/block/${devno}`);
    return [];
  } catch {
    return [devno];
  }
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
 * placeholder goes first and is removed. Again on a retired volume, it finishes one cut short. The mapping stays,
 * for the user to close.
 */
export function retire(volume: Volume, sysBlock = "/sys/block"): void {
  const hold = placeholderName(volume.dmName);
  const held = dm.info(hold);
  // what the swapped volume sent after the lock waits in its suspended placeholder (an error table): resumed first,
  // it fails at once; the suspend the volume's new table needs would otherwise wait for it forever
  if (held.exists && held.suspended) dm.resume(hold, { lockfs: false });
  const sectors = BigInt(Deno.readTextFileSync(`${sysBlock}/${volume.kname}/size`).trim());
  dm.reload(volume.dmName, [{ start: 0n, length: sectors, type: "error", params: "" }]);
  // a live mapping is suspended by the kernel for the new table: no filesystem freeze, whose writes could only fail
  dm.resume(volume.dmName, { lockfs: false });
  if (held.exists) dm.remove(hold);
}

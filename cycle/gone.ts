/**
 * @module
 * A disk that went away while the machine slept (a USB disk pulled out, a disk hot-unplugged): the volume on it
 * cannot be unlocked — its LUKS header went with it — and a prompt for it would keep the machine frozen for nothing.
 * {@linkcode goneBelow} sees it in sysfs; {@linkcode retire} gives the mapping dm's `error` target, so every read and
 * write on it fails at once, as on a disk pulled out while awake, instead of waiting forever on a suspended device,
 * and what is stacked above it can resume. Nothing of the key is needed: the lock wiped it.
 *
 * @example
 * ```ts
 * import { goneBelow } from "./gone.ts";
 * console.log(goneBelow("dm-0")); // [] while every device under dm-0 is there; ["sdb"] once it was pulled out
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import { basename } from "../host/path.ts";
import type { Volume } from "../discovery/mod.ts";
import { placeholderName } from "./pinned/mod.ts";

/**
 * The devices under `kname` (sysfs `slaves/`, all the way down) whose sysfs entry is gone: the kernel removed the
 * disk. A dm device whose `slaves/` lost every entry is gone below too (the kernel may drop the link with the disk);
 * its names are then unknown and `["?"]` stands for them.
 */
export function goneBelow(kname: string, sysBlock = "/sys/block"): string[] {
  let slaves: string[];
  try {
    slaves = [...Deno.readDirSync(`${sysBlock}/${kname}/slaves`)].map((e) => e.name);
  } catch {
    return []; // a disk or a partition: nothing under it
  }
  if (slaves.length === 0 && kname.startsWith("dm-") && !retiredKname(kname, sysBlock)) return ["?"];
  return slaves.flatMap((s) => {
    try {
      // the link resolves while the device it points to is there
      Deno.statSync(`${sysBlock}/${kname}/slaves/${s}`);
    } catch {
      return [s];
    }
    return goneBelow(s, sysBlock);
  });
}

/** What the report and the console call the volume's gone disks: what sysfs still names, else its backing. */
export function goneNames(volume: Volume, gone: string[]): string[] {
  const named = gone.filter((g) => g !== "?");
  return named.length ? named : volume.backing.map((b) => basename(b));
}

function retiredKname(kname: string, sysBlock: string): boolean {
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
 * Gives the volume's mapping (and a table swap's placeholder under it) the `error` target of the same size and
 * resumes it: reads and writes fail (EIO), a filesystem on it sees errors and can be unmounted, and the devices
 * stacked above can resume. The mapping stays, for the user to close.
 */
export function retire(volume: Volume, sysBlock = "/sys/block"): void {
  const sectors = BigInt(Deno.readTextFileSync(`${sysBlock}/${volume.kname}/size`).trim());
  const error = [{ start: 0n, length: sectors, type: "error", params: "" }];
  dm.reload(volume.dmName, error);
  // a live mapping is suspended by the kernel for the swap: no filesystem freeze, whose writes could only fail (EIO)
  dm.resume(volume.dmName, { lockfs: false });
  // a table swap's placeholder holds the crypt table (its key wiped): it could never resume; nothing uses it now
  const hold = placeholderName(volume.dmName);
  const held = dm.info(hold);
  if (held.exists) {
    if (held.suspended) {
      dm.reload(hold, error);
      dm.resume(hold, { lockfs: false });
    }
    dm.remove(hold);
  }
}

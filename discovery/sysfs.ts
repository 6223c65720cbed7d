/**
 * Reads the block device graph from `<root>/sys/block`: every disk, its partitions, loop backing
 * files, device-mapper name/uuid/suspended state, and the `holders`/`slaves` edges between them.
 *
 * @example
 * ```ts
 * import { readBlockDevices } from "./sysfs.ts";
 * const devs = await readBlockDevices("/");
 * for (const d of devs.values()) if (d.dm) console.log(d.kname, d.dm.name, d.dm.uuid);
 * ```
 * @module
 */
import { join } from "../host/path.ts";
import { underRoot } from "../host/paths.ts";

/** One kernel block device (`vda`, `vda2`, `dm-0`, `loop0`). */
export interface BlockDevice {
  /** Kernel name (`vda2`, `dm-0`; `!` for `/`). */
  kname: string;
  /** "major:minor" from `dev`. */
  devno: string;
  /** Disk of a partition. */
  parent?: string;
  /** A device-mapper device's name, uuid and suspended state. */
  dm?: { name: string; uuid: string; suspended: boolean };
  /** Devices stacked directly on this one (`holders/`). */
  holders: string[];
  /** Devices this one is stacked on directly (`slaves/`). */
  slaves: string[];
  /** `loop/backing_file` of a loop device. */
  loopBackingFile?: string;
}

/** `<root>/sys/block` is missing: no sysfs, nothing can be discovered. */
export class NoSysfsError extends Error {
  /** The missing `<root>/sys/block`. */
  readonly path: string;
  /** Says to mount sysfs. */
  constructor(path: string) {
    super(`${path} not found: sysfs is not mounted (mount -t sysfs sysfs /sys)`);
    this.name = "NoSysfsError";
    this.path = path;
  }
}

// sync: these sysfs attributes are kernel memory, never a wait, and an async op each cost more than the read
function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

function listNames(dir: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) if (!e.name.startsWith(".")) out.push(e.name);
  } catch {
    // absent dir = no edges
  }
  return out.sort();
}

// `entries`: the names in `dir`. Only what is there is read: a failed open throws, and ~25 of them per device
// were most of preflight's time under emulation
function readOne(dir: string, kname: string, entries: string[], parent?: string): BlockDevice {
  const has = new Set(entries);
  const dev: BlockDevice = {
    kname,
    devno: readText(join(dir, "dev")) ?? "",
    holders: has.has("holders") ? listNames(join(dir, "holders")) : [],
    slaves: has.has("slaves") ? listNames(join(dir, "slaves")) : [],
  };
  if (parent) dev.parent = parent;
  const dmName = has.has("dm") ? readText(join(dir, "dm", "name")) : undefined;
  if (dmName !== undefined) {
    dev.dm = {
      name: dmName,
      uuid: readText(join(dir, "dm", "uuid")) ?? "",
      suspended: readText(join(dir, "dm", "suspended")) === "1",
    };
  }
  const backing = has.has("loop") ? readText(join(dir, "loop", "backing_file")) : undefined;
  if (backing) dev.loopBackingFile = backing;
  return dev;
}

/** All block devices under `<root>/sys/block`, partitions included, keyed by kernel name. */
export async function readBlockDevices(root = "/"): Promise<Map<string, BlockDevice>> {
  const base = underRoot(root, "/sys/block");
  try {
    await Deno.stat(base);
  } catch {
    throw new NoSysfsError(base);
  }
  const devices = new Map<string, BlockDevice>();
  for (const kname of listNames(base)) {
    const dir = join(base, kname);
    const entries = listNames(dir);
    devices.set(kname, readOne(dir, kname, entries));
    // Partitions are subdirectories named after the disk (vda1, nvme0n1p1) holding a `partition` file
    for (const name of entries.filter((e) => e.startsWith(kname))) {
      const sub = join(dir, name);
      const subEntries = listNames(sub);
      if (subEntries.includes("partition")) devices.set(name, readOne(sub, name, subEntries, kname));
    }
  }
  return devices;
}

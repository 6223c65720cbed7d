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

async function readText(path: string): Promise<string | undefined> {
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch {
    return undefined;
  }
}

async function listNames(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (!e.name.startsWith(".")) out.push(e.name);
  } catch {
    // absent dir = no edges
  }
  return out.sort();
}

async function readOne(dir: string, kname: string, parent?: string): Promise<BlockDevice> {
  const dev: BlockDevice = {
    kname,
    devno: (await readText(join(dir, "dev"))) ?? "",
    holders: await listNames(join(dir, "holders")),
    slaves: await listNames(join(dir, "slaves")),
  };
  if (parent) dev.parent = parent;
  const dmName = await readText(join(dir, "dm", "name"));
  if (dmName !== undefined) {
    dev.dm = {
      name: dmName,
      uuid: (await readText(join(dir, "dm", "uuid"))) ?? "",
      suspended: (await readText(join(dir, "dm", "suspended"))) === "1",
    };
  }
  const backing = await readText(join(dir, "loop", "backing_file"));
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
  for (const kname of await listNames(base)) {
    const dir = join(base, kname);
    devices.set(kname, await readOne(dir, kname));
    // Partitions are subdirectories holding a `partition` file.
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(".")) continue;
      const sub = join(dir, e.name);
      if ((await readText(join(sub, "partition"))) === undefined) continue;
      devices.set(e.name, await readOne(sub, e.name, kname));
    }
  }
  return devices;
}

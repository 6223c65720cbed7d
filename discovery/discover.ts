/**
 * Finds every active LUKS volume and works out the order to lock and unlock them, what is stacked on
 * each (LVM, other dm devices), the filesystems and swaps that depend on it, where its header is, and
 * how much memory its Argon2 keyslots need on unlock, and which ones the kernel's firmware loader reads. Reads only
 * `<root>/sys`, `<root>/proc`, `<root>/etc/crypttab`, the LUKS headers and the links to the firmware's directories,
 * so a recorded tree can stand in for the live system.
 *
 * @example
 * ```ts
 * import { discover } from "./discover.ts";
 * const plan = await discover({ root: "/" });
 * for (const v of plan.lock) console.log("lock", v.dmName, "then", v.above.join(", "));
 * console.log("needs", plan.maxArgon2MemoryKiB, "KiB on resume");
 * ```
 * @module
 */
import { declinedToken, tokenType } from "./token_types.ts";
import { type LuksHeader, LuksHeaderError, type LuksToken, readLuksHeader } from "./luks_header.ts";
import { devPathOf, lvmDmName, pathReads, underRoot } from "../host/paths.ts";
import { type MountEntry, mountOf, readMountinfo } from "../host/mountinfo.ts";
import { type CrypttabEntry, readCrypttab, readSwaps } from "../host/proc.ts";
import { type BlockDevice, readBlockDevices } from "./sysfs.ts";
import { firmwareDirs, onFirmwarePath } from "./firmware_path.ts";

/** A filesystem mounted on a device at or above a volume. */
export interface Mount {
  /** Where it is mounted. */
  mountpoint: string;
  /** Filesystem type, e.g. "ext4". */
  fstype: string;
  /** The mount source as the kernel reports it (`/dev/mapper/vg-root`). */
  device: string;
}

/** One LUKS volume that will be locked. */
export interface Volume {
  /** Its dm name (`cryptroot`). */
  dmName: string;
  /** `/dev/dm-N` */
  device: string;
  /** LUKS UUID (with dashes). */
  uuid: string;
  /** LUKS version. */
  type: "LUKS1" | "LUKS2";
  /** The devices it is mapped on (`/dev/vda2`). */
  backing: string[];
  /**
   * Where its LUKS header is read from, and whether that is a detached header file or device; `on`: for a detached
   * header, the volumes it lives on (they are unlocked first, and it is never read while one is locked).
   */
  header: { path: string; detached: boolean; on?: string[] };
  /** The UUID the header there holds, lowercased, when discovery could read it (dm's may differ: `uuid`). */
  headerUuid?: string;
  /** dm names stacked above, top-down: suspend these first, resume them after the volume. */
  above: string[];
  /** Filesystems mounted on it or on anything above it. */
  mounts: Mount[];
  /** Swap devices or files on this volume (or on anything above it). */
  swaps: string[];
  /**
   * Whether the kernel's firmware loader reads through a mount on it (`/`, `/usr`, one below `/lib/firmware`;
   * firmware_path.ts): while it is locked, a firmware read waits for ever.
   */
  holdsFirmware: boolean;
  /** Largest Argon2 memory (KiB) over its keyslots; 0 for PBKDF2 only or an unreadable header. */
  argon2MemoryKiB: number;
  /** Kernel name (`dm-0`). */
  kname: string;
  /** `major:minor`. */
  devno: string;
  /** dm reports the device suspended already. */
  suspended: boolean;
  /** Its keyslots in use: number, KDF, Argon2 memory (KiB, 0 for PBKDF2). */
  keyslots: { slot: number; kdf: string; memoryKiB: number }[];
  /** Its `/etc/crypttab` line, if any. */
  crypttab?: { device: string; keyFile?: string; options: Record<string, string | true> };
  /** The key file its crypttab line names, tried after wake before a passphrase is asked for. */
  keyFile?: KeyFile;
  /** Its LUKS2 tokens: one with a PIN is asked for after wake before the passphrase. */
  tokens: LuksToken[];
}

/**
 * A crypttab key file, read after wake into `crypt_safe_alloc` memory, never before the lock: nothing of it is in
 * RAM while asleep (its page-cache copy is dropped before the lock).
 */
export interface KeyFile {
  /** The file (or block device) as crypttab names it. */
  path: string;
  /** systemd's `path:device` form: the device holding the file (`UUID=…`, `LABEL=…`, `/dev/…`), mounted read-only. */
  device?: string;
  /** `keyfile-offset=`: bytes skipped at its start. */
  offset: number;
  /** `keyfile-size=`: bytes read; default the rest of the file, at most {@linkcode MAX_KEYFILE}. */
  size?: number;
  /** `keyslot=` / `key-slot=`: the only keyslot tried (saves a KDF run per other slot). */
  keyslot?: number;
  /**
   * Without `keyslot=`: the keyslot it opened at an earlier wake this boot (cycle/keyfile.ts's
   * {@linkcode recallKeyslots}), tried first; every slot after it if it no longer opens that one.
   */
  learnedKeyslot?: number;
  /**
   * The locked volumes it lives on: it is read only once they are unlocked (they are unlocked first). When they
   * include its own volume (the initramfs' key file on the root), it is never read after wake.
   */
  on: string[];
}

/** Largest key file read without `keyfile-size=` (cryptsetup's default limit, 8 MiB). */
export const MAX_KEYFILE = 8 << 20;

/** A dm-crypt mapping that libcryptsetup cannot suspend and resume. */
export interface NotLockable {
  /** Its dm name. */
  name: string;
  /** Why it cannot be locked. */
  reason: string;
  /** Its `/dev/dm-N`, when known. */
  device?: string;
}

/** What `cryptsleep plan` shows and the suspend cycle follows. */
export interface Plan {
  /** Top-down: a volume stacked above another is locked first. */
  lock: Volume[];
  /** The reverse of `lock`. */
  unlock: Volume[];
  /** dm-crypt mappings left unlocked, with the reason. */
  notLockable: NotLockable[];
  /** What the user should know (swap on a volume, a missing header…). */
  warnings: string[];
  /** Layouts a cycle would hang on (a header it could not read after the lock): preflight refuses; also in warnings. */
  unsafe: string[];
  /** Largest Argon2 memory (KiB) any volume needs on unlock. */
  maxArgon2MemoryKiB: number;
  /** The root the plan was read from ("/" = live system). */
  root: string;
  /** How many device-mapper devices exist (to tell "no dm at all" from "no dm-crypt"). */
  dmDevices: number;
}

/** Inputs of {@linkcode discover}; the defaults describe the live system. */
export interface DiscoverOptions {
  /** Directory standing for "/" (default "/"). */
  root?: string;
  /** Effective uid to judge "not root" by (default `Deno.uid()`). */
  uid?: number | null;
}

const NOT_LOCKABLE: Record<string, string> = {
  PLAIN: "plain dm-crypt has no LUKS header: libcryptsetup can suspend and resume only LUKS1/LUKS2",
  TCRYPT: "TrueCrypt/VeraCrypt mapping: libcryptsetup can suspend and resume only LUKS1/LUKS2",
  BITLK: "BitLocker mapping: libcryptsetup can suspend and resume only LUKS1/LUKS2",
  LOOPAES: "loop-AES mapping: libcryptsetup can suspend and resume only LUKS1/LUKS2",
  FVAULT2: "FileVault2 mapping: libcryptsetup can suspend and resume only LUKS1/LUKS2",
};
/** dm uuid prefixes of devices that are part of a stack but hold no key of their own to lock. */
const HELPER_PREFIXES = ["CRYPT-INTEGRITY-", "INTEGRITY-", "CRYPT-SUBDEV-", "CRYPT-VERITY-"];

/** `CRYPT-LUKS2-<32 hex>-<name>` → LUKS type and the UUID with its dashes put back. */
export function parseCryptUuid(dmUuid: string): { type: string; uuid?: string } | null {
  const m = /^CRYPT-([A-Z0-9]+)-(.*)$/.exec(dmUuid);
  if (!m) return null;
  const hex = /^([0-9a-fA-F]{32})-/.exec(m[2]);
  if (!hex) return { type: m[1] };
  const h = hex[1].toLowerCase();
  return {
    type: m[1],
    uuid: `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`,
  };
}

/** Walks the device graph and answers the questions discovery asks of it. */
class Graph {
  readonly byDevno = new Map<string, string>();
  readonly byDmName = new Map<string, string>();
  /** Loop devices whose backing file lives on a device (device → loops): above it, though sysfs does not say so. */
  readonly #fileHolders = new Map<string, string[]>();
  /** Order-only edges (device → the devices locked before it): a volume whose key file or header lives on it. */
  readonly #orderHolders = new Map<string, string[]>();
  #heights = new Map<string, number>();

  constructor(readonly root: string, readonly devs: Map<string, BlockDevice>, readonly mounts: MountEntry[]) {
    for (const d of devs.values()) {
      if (d.devno) this.byDevno.set(d.devno, d.kname);
      if (d.dm) this.byDmName.set(d.dm.name, d.kname);
    }
  }

  /**
   * Records, for each loop device, the device holding its backing file: an image file on a volume makes the volume
   * opened from it sit above that volume, so it must be locked first (its lock writes through the loop device).
   */
  async linkLoopFiles(): Promise<void> {
    for (const d of this.devs.values()) {
      if (!d.loopBackingFile) continue;
      // the kernel appends " (deleted)" to a backing file that was unlinked; it still lives on the same filesystem
      const file = d.loopBackingFile.replace(/ \(deleted\)$/, "");
      const m = this.mountOf(file);
      const host = m ? await this.mountDevice(m) : undefined;
      if (host === undefined || host === d.kname) continue;
      this.#fileHolders.set(host, [...(this.#fileHolders.get(host) ?? []), d.kname]);
    }
    this.#heights.clear();
  }

  /**
   * Orders `first` above `then` (locked before it, unlocked after it), as if stacked on it: a key file of `first`
   * or detached header lives on `then`. Refused (false) when `then` already sits above `first`: the order would go round in a circle.
   */
  orderBefore(first: string, then: string): boolean {
    if (first === then || this.#upward(first).has(then)) return false;
    this.#orderHolders.set(then, [...(this.#orderHolders.get(then) ?? []), first]);
    this.#heights.clear();
    return true;
  }

  /** Every device above `k` by data (holders, loop devices on its files): what a read of `k`'s files goes through. */
  dependents(k: string): Set<string> {
    return this.#walk(k, false);
  }

  #holdersOf(k: string, withOrder: boolean): string[] {
    return [
      ...(this.devs.get(k)?.holders ?? []),
      ...(this.#fileHolders.get(k) ?? []),
      ...(withOrder ? this.#orderHolders.get(k) ?? [] : []),
    ];
  }

  /** Everything above `k`, order edges included. */
  #upward(k: string): Set<string> {
    return this.#walk(k, true);
  }

  #walk(k: string, withOrder: boolean): Set<string> {
    const out = new Set<string>();
    const todo = [...this.#holdersOf(k, withOrder)];
    while (todo.length) {
      const h = todo.pop()!;
      if (out.has(h)) continue;
      out.add(h);
      todo.push(...this.#holdersOf(h, withOrder));
    }
    return out;
  }

  /** Distance to the top of the stack: 0 when nothing holds the device (loop devices on its files count). */
  height(k: string, seen = new Set<string>()): number {
    const known = this.#heights.get(k);
    if (known !== undefined) return known;
    if (seen.has(k)) return 0; // a cycle can't exist in sysfs; don't loop if a recording has one
    seen.add(k);
    const holders = this.#holdersOf(k, true);
    const h = holders.length === 0 ? 0 : 1 + Math.max(...holders.map((x) => this.height(x, seen)));
    this.#heights.set(k, h);
    return h;
  }

  /** Every device above `k` (not `k`); `stop` devices are neither included nor walked past. */
  above(k: string, stop: (k: string) => boolean = () => false): Set<string> {
    const out = new Set<string>();
    const todo = [...(this.devs.get(k)?.holders ?? [])];
    while (todo.length) {
      const h = todo.pop()!;
      if (out.has(h) || stop(h)) continue;
      out.add(h);
      todo.push(...(this.devs.get(h)?.holders ?? []));
    }
    return out;
  }

  /** Kernel name of a `/dev/...` path: by name, `/dev/mapper/x`, `/dev/vg/lv`, else by following symlinks. */
  async resolveDevPath(path: string): Promise<string | undefined> {
    if (!path.startsWith("/dev/")) return undefined;
    const rest = path.slice(5);
    const direct = rest.replaceAll("/", "!");
    if (this.devs.has(direct)) return direct;
    const parts = rest.split("/");
    if (parts[0] === "mapper" && parts.length === 2) return this.byDmName.get(parts[1]);
    if (parts.length === 2 && this.byDmName.has(lvmDmName(parts[0], parts[1]))) {
      return this.byDmName.get(lvmDmName(parts[0], parts[1]));
    }
    try {
      const real = await Deno.realPath(underRoot(this.root, path));
      const devDir = await Deno.realPath(underRoot(this.root, "/dev"));
      if (real.startsWith(devDir + "/")) {
        const k = real.slice(devDir.length + 1).replaceAll("/", "!");
        if (this.devs.has(k)) return k;
      }
    } catch {
      // not present under root
    }
    return undefined;
  }

  async mountDevice(m: MountEntry): Promise<string | undefined> {
    return this.byDevno.get(m.devno) ?? (await this.resolveDevPath(m.source));
  }

  /** The mount holding a file path (longest mountpoint prefix; a later mount on the same point wins). */
  mountOf(path: string): MountEntry | undefined {
    return mountOf(this.mounts, path);
  }

  /** Kernel name of the device holding a block device path or a file. */
  async deviceOfPath(path: string): Promise<string | undefined> {
    const dev = await this.resolveDevPath(path);
    if (dev) return dev;
    const m = this.mountOf(path);
    return m ? await this.mountDevice(m) : undefined;
  }

  label(k: string): string {
    const d = this.devs.get(k);
    return d?.dm ? d.dm.name : k;
  }
}

/**
 * The key file of a crypttab line: `path`, or systemd's `path:device`; `keyfile-offset=`, `keyfile-size=`,
 * `keyslot=`. A `keyscript=` line's third field is the script's argument, not a file: a passphrase is asked instead.
 */
function keyFileOf(v: Volume, warnings: string[]): KeyFile | undefined {
  const field = v.crypttab?.keyFile;
  const opts = v.crypttab?.options ?? {};
  if (!field) return undefined;
  if (opts["keyscript"] !== undefined) {
    warnings.push(
      `volume ${v.dmName}: its crypttab keyscript= is not run after wake (it lives on the disk); a passphrase is ` +
        `asked for instead, so keep a passphrase keyslot`,
    );
    return undefined;
  }
  const m = /^(\/[^:]*):(.+)$/.exec(field);
  const kf: KeyFile = { path: m ? m[1] : field, offset: 0, on: [] };
  if (m) {
    // udev is frozen after wake: only what a superblock or the kernel's own name tells can be found
    if (!/^(UUID|LABEL)=.|^\/dev\/(?!disk\/by-(?!uuid\/|label\/))/.test(m[2])) {
      warnings.push(
        `volume ${v.dmName}: crypttab key file ${field}: ${m[2]} can't be found with udev frozen after wake; name ` +
          `the device by UUID= or LABEL= (its filesystem's); a passphrase is asked for meanwhile`,
      );
      return undefined;
    }
    kf.device = m[2];
  }
  const num = (name: string): number | undefined => {
    const raw = opts[name];
    if (raw === undefined) return undefined;
    const n = typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n)) {
      warnings.push(`volume ${v.dmName}: crypttab ${name}=${raw} is not a number of bytes; ignored`);
      return undefined;
    }
    return n;
  };
  kf.offset = num("keyfile-offset") ?? 0;
  const size = num("keyfile-size");
  if (size !== undefined && size > 0) kf.size = Math.min(size, MAX_KEYFILE);
  const slot = num("keyslot") ?? num("key-slot");
  if (slot !== undefined) kf.keyslot = slot;
  if (!kf.path.startsWith("/")) {
    warnings.push(`volume ${v.dmName}: crypttab key file ${field} is not an absolute path; a passphrase is asked for`);
    return undefined;
  }
  return kf;
}

function describeHeaderError(
  e: unknown,
  vol: { dmName: string; header: { path: string; detached: boolean } },
  resolved: string,
) {
  // Name the host path, not where a recorded tree keeps it.
  const msg = (e instanceof Error ? e.message : String(e)).replaceAll(resolved, vol.header.path);
  let hint = "";
  if (e instanceof LuksHeaderError) {
    if (e.code === "EACCES") hint = "; run as root";
    else if (e.code === "EINVAL" && !vol.header.detached) {
      hint = "; if it has a detached header, add header=<path> to its /etc/crypttab line";
    } else if (e.code === "ENOENT") hint = "; is the device or header file present?";
  }
  if (vol.header.detached) {
    return `volume ${vol.dmName}: cannot read its detached LUKS header at ${vol.header.path} (${msg}): it could ` +
      `not be unlocked after wake; check header= on its /etc/crypttab line${hint}`;
  }
  return `volume ${vol.dmName}: cannot read its LUKS header at ${vol.header.path} (${msg}): ` +
    `Argon2 memory unknown, counted as 0${hint}`;
}

/**
 * Why the cycle could not read a crypttab `header=` value, or undefined: a relative path, or systemd's `path:device`
 * form (a file on a filesystem systemd mounts for it; `/dev/disk/by-path/pci-0000:00:…` names are plain paths).
 */
function unusableHeader(value: string): string | undefined {
  if (!value.startsWith("/")) return "is not an absolute path";
  // systemd splits at the last colon, and takes what follows for a device when it is a path or a tag
  const device = value.slice(value.lastIndexOf(":") + 1);
  if (value.includes(":") && (/^(UUID|LABEL|PARTUUID|PARTLABEL|ID)=/.test(device) || device.startsWith("/"))) {
    return "names a file on another device (systemd's path:device form), which cryptsleep does not mount";
  }
  return undefined;
}

/** Filesystems on exactly the one device their mount names. */
const ONE_DEVICE_FS = new Set(["ext2", "ext3", "ext4", "xfs", "f2fs", "jfs", "reiserfs", "nilfs2", "vfat", "exfat"]);
/** Filesystems on no device at all. */
const IN_MEMORY_FS = new Set(["tmpfs", "ramfs"]);

/** Discovers the LUKS volumes under `root` and plans how to lock and unlock them. */
export async function discover(opts: DiscoverOptions = {}): Promise<Plan> {
  const root = opts.root ?? "/";
  const uid = opts.uid === undefined ? Deno.uid() : opts.uid;
  const devs = await readBlockDevices(root);
  const mounts = await readMountinfo(root);
  const swaps = await readSwaps(root);
  const crypttab = await readCrypttab(root);
  const g = new Graph(root, devs, mounts);
  await g.linkLoopFiles();
  const warnings: string[] = [];
  const unsafe: string[] = [];
  const notLockable: NotLockable[] = [];

  if (uid !== null && uid !== 0) {
    warnings.push("not running as root: LUKS headers may be unreadable and locking needs root; run it as root");
  }

  const dms = [...devs.values()].filter((d) => d.dm).sort((a, b) => a.dm!.name.localeCompare(b.dm!.name));
  const volumes: Volume[] = [];
  for (const d of dms) {
    const dm = d.dm!;
    const parsed = parseCryptUuid(dm.uuid);
    if (!parsed) continue;
    if (parsed.type !== "LUKS1" && parsed.type !== "LUKS2") {
      if (HELPER_PREFIXES.some((p) => dm.uuid.startsWith(p))) continue;
      const reason = NOT_LOCKABLE[parsed.type] ??
        `dm-crypt type ${parsed.type}: libcryptsetup can suspend and resume only LUKS1/LUKS2`;
      notLockable.push({
        name: dm.name,
        reason: `${reason}; its key stays in RAM while asleep`,
        device: `/dev/${d.kname}`,
      });
      continue;
    }
    const entry: CrypttabEntry | undefined = crypttab.find((c) => c.name === dm.name);
    const headerOpt = entry?.options["header"];
    const header = typeof headerOpt === "string"
      ? { path: headerOpt, detached: true }
      : { path: d.slaves.length ? devPathOf(d.slaves[0]) : "", detached: false };
    const vol: Volume = {
      dmName: dm.name,
      device: devPathOf(d.kname),
      uuid: parsed.uuid ?? "",
      type: parsed.type,
      backing: d.slaves.map(devPathOf),
      header,
      above: [],
      mounts: [],
      swaps: [],
      holdsFirmware: false,
      argon2MemoryKiB: 0,
      kname: d.kname,
      devno: d.devno,
      suspended: dm.suspended,
      keyslots: [],
      tokens: [],
    };
    if (entry) {
      vol.crypttab = { device: entry.device, options: entry.options };
      if (entry.keyFile) vol.crypttab.keyFile = entry.keyFile;
    }
    if (d.slaves.length !== 1) {
      warnings.push(`volume ${dm.name}: expected one backing device, sysfs lists ${d.slaves.length}`);
    }
    if (dm.suspended) warnings.push(`volume ${dm.name} is suspended already (dm suspended=1)`);
    const headerUnusable = typeof headerOpt === "string" ? unusableHeader(headerOpt) : undefined;
    if (headerUnusable) {
      unsafe.push(
        `volume ${dm.name}: header=${headerOpt} ${headerUnusable}: it could not be unlocked after wake; name the ` +
          `header by an absolute path on a mounted filesystem in /etc/crypttab (header=/path/to/header)`,
      );
    } else if (header.path) {
      let hdr: LuksHeader | undefined;
      const resolved = underRoot(root, header.path);
      try {
        hdr = await readLuksHeader(resolved);
      } catch (e) {
        // a detached header read nowhere else: libcryptsetup would lock the volume and never unlock it
        (header.detached ? unsafe : warnings).push(describeHeaderError(e, vol, resolved));
      }
      if (hdr) {
        vol.argon2MemoryKiB = hdr.maxArgon2MemoryKiB;
        vol.keyslots = hdr.keyslots.map((k) => ({ slot: k.slot, kdf: k.kdf.type, memoryKiB: k.kdf.memoryKiB }));
        vol.tokens = hdr.tokens;
        for (const t of hdr.tokens.filter((t) => !t.pin && tokenType(t.type))) {
          warnings.push(
            `volume ${dm.name}: its ${t.type} token ${t.id} needs no PIN: it would unlock with nobody at the machine, ` +
              `so it is not used after wake unless suspend is given --token-without-pin; the passphrase is asked ` +
              `for (enroll it with a PIN to use it)`,
          );
        }
        for (const t of hdr.tokens) {
          const why = declinedToken(t.type);
          if (why) {
            warnings.push(
              `volume ${dm.name}: its ${t.type} token ${t.id} is not used after wake (${why}); its key file or ` +
                "passphrase opens it instead",
            );
          }
        }
        vol.headerUuid = hdr.uuid.toLowerCase();
        if (!vol.uuid) vol.uuid = hdr.uuid;
        else if (hdr.uuid.toLowerCase() !== vol.uuid) {
          warnings.push(`volume ${dm.name}: header at ${header.path} has UUID ${hdr.uuid}, dm says ${vol.uuid}`);
        }
        if (`LUKS${hdr.version}` !== vol.type) {
          warnings.push(`volume ${dm.name}: header at ${header.path} is LUKS${hdr.version}, dm says ${vol.type}`);
        }
        for (const n of hdr.notes) warnings.push(`volume ${dm.name}: header ${header.path}: ${n}`);
      }
    } else {
      warnings.push(`volume ${dm.name}: no backing device and no header= in /etc/crypttab: header not found`);
    }
    volumes.push(vol);
  }

  // The volumes a file lives on: through loop devices too (a file in an image file's filesystem on a volume).
  // A path through symlinks counts for the volumes of every link on the way and of where it ends.
  const volumesHolding = async (path: string): Promise<Volume[]> => {
    if (!path.startsWith("/")) return [];
    const ks = new Set<string>();
    // the path as written only when its parts cannot be followed (a lexical `..` would name a volume never read)
    for (const p of new Set(await pathReads(root, path) ?? [path])) {
      const k = await g.deviceOfPath(p);
      if (k !== undefined) ks.add(k);
    }
    return volumes.filter((w) => [...ks].some((k) => w.kname === k || g.dependents(w.kname).has(k)));
  };

  // A detached header is read to lock its volume and again to unlock it: one that lives on another volume (a file on
  // the root) is locked before that volume and unlocked after it, whatever the names; else the read waits forever.
  // Before the key files' edges: a key file only saves a passphrase, a header is needed.
  for (const v of volumes.filter((v) => v.header.detached && !unusableHeader(v.header.path))) {
    const under = await volumesHolding(v.header.path);
    v.header.on = under.map((w) => w.dmName);
    const circle = under.includes(v) ? [v] : under.filter((w) => !g.orderBefore(v.kname, w.kname));
    if (circle.length) {
      const why = circle[0] === v
        ? `it can't be read while ${v.dmName} is locked`
        : `${circle.map((w) => w.dmName).join(", ")} needs ${v.dmName} unlocked first`;
      unsafe.push(
        `volume ${v.dmName}: its detached header ${v.header.path} is on ` +
          `${circle.map((w) => w.dmName).join(", ")}, and ${why}: it could not be unlocked after wake; move the ` +
          `header to an unencrypted disk (/boot) or to another volume, and set header= in /etc/crypttab`,
      );
    }
  }

  // A key file on a locked volume is read once that volume is unlocked: it is unlocked first, so locked last.
  for (const v of volumes) {
    const kf = keyFileOf(v, warnings);
    if (!kf) continue;
    v.keyFile = kf;
    if (kf.device) continue; // on a device of its own (a USB stick): found after wake
    const under = await volumesHolding(kf.path);
    kf.on = under.map((w) => w.dmName);
    if (under.includes(v)) {
      // kept, so its page-cache copy is dropped before the lock like any other's; never read after wake
      warnings.push(
        `volume ${v.dmName}: its crypttab key file ${kf.path} is on ${v.dmName} itself: it can't be read while ` +
          `${v.dmName} is locked, so a passphrase is asked for after wake`,
      );
      continue;
    }
    const circle = under.filter((w) => !g.orderBefore(v.kname, w.kname));
    if (circle.length) {
      // unlocked in whatever order; the key file is read only if its volumes happen to be open by then
      warnings.push(
        `volume ${v.dmName}: its crypttab key file ${kf.path} is on ${circle.map((w) => w.dmName).join(", ")}, ` +
          `which needs ${v.dmName} unlocked first: the two wait on each other, so a passphrase may be asked for`,
      );
    }
    if (!under.length) {
      warnings.push(
        `volume ${v.dmName}: its crypttab key file ${kf.path} stays readable while ${v.dmName} is locked: ` +
          `whoever takes the sleeping machine can unlock it; remove the key file or keep it on a locked volume`,
      );
    }
  }

  // Top-down: the higher a volume sits in the stack (an image file's volume above the one holding the file), the
  // earlier it is locked.
  const lock = [...volumes].sort((a, b) => g.height(a.kname) - g.height(b.kname) || a.dmName.localeCompare(b.dmName));
  const lockable = new Set(lock.map((v) => v.kname));

  // Each dm device above a volume is suspended by the first volume (in lock order) that reaches it without
  // passing another LUKS volume; so it goes down before any volume under it and comes back after all of them.
  const claimed = new Set<string>();
  for (const v of lock) {
    const mine = [...g.above(v.kname, (k) => lockable.has(k))].filter((k) => !claimed.has(k));
    for (const k of mine) claimed.add(k);
    const notDm = mine.filter((k) => !devs.get(k)?.dm);
    for (const k of notDm) {
      warnings.push(
        `volume ${v.dmName}: ${k} is stacked above it but is not a device-mapper device: it can't be suspended`,
      );
    }
    v.above = mine.filter((k) => devs.get(k)?.dm)
      .sort((a, b) => g.height(a) - g.height(b) || g.label(a).localeCompare(g.label(b)))
      .map((k) => g.label(k));
  }

  // Mounts and swaps: on the volume or on anything above it, LUKS volumes above included.
  const dependsOn = new Map<string, Set<string>>();
  for (const v of lock) dependsOn.set(v.kname, new Set([v.kname, ...g.above(v.kname)]));
  const lockedDevs = new Set<string>();
  for (const set of dependsOn.values()) for (const k of set) lockedDevs.add(k);
  const mountDevs = await Promise.all(mounts.map((m) => g.mountDevice(m)));
  const firmware = await firmwareDirs(root);
  // a mount on the firmware's way whose volumes cannot be told (not traced to a device, or a filesystem that may span
  // several: btrfs, ZFS, overlay): every volume counts as holding the firmware, as before they were told apart
  const untold = mounts.some((m, i) =>
    onFirmwarePath(m.mountpoint, firmware) && !IN_MEMORY_FS.has(m.fstype) &&
    (mountDevs[i] === undefined || !ONE_DEVICE_FS.has(m.fstype))
  );
  for (const v of lock) {
    const set = dependsOn.get(v.kname)!;
    v.mounts = mounts.filter((_, i) => mountDevs[i] !== undefined && set.has(mountDevs[i]!))
      .map((m) => ({ mountpoint: m.mountpoint, fstype: m.fstype, device: m.source }));
    v.holdsFirmware = untold || v.mounts.some((m) => onFirmwarePath(m.mountpoint, firmware));
  }
  for (const s of swaps) {
    const k = await g.deviceOfPath(s);
    if (k === undefined) continue;
    const on = lock.filter((v) => dependsOn.get(v.kname)!.has(k));
    for (const v of on) v.swaps.push(s);
    if (on.length) {
      warnings.push(
        `swap ${s} is on ${on.map((v) => v.dmName).join(", ")}, which will be locked: nothing may page out while ` +
          `it is locked (cryptsleep disables swap for itself); swapoff it before sleeping or use a random-key swap`,
      );
    }
  }

  for (const n of notLockable) {
    const k = n.device ? n.device.slice(5) : undefined;
    if (k && lockedDevs.has(k)) {
      warnings.push(`${n.name} sits on a volume that will be locked but stays open itself: its key stays in RAM`);
    }
  }

  return {
    lock,
    unlock: [...lock].reverse(),
    notLockable,
    warnings: [...warnings, ...unsafe],
    unsafe,
    maxArgon2MemoryKiB: lock.reduce((m, v) => Math.max(m, v.argon2MemoryKiB), 0),
    root,
    dmDevices: dms.length,
  };
}

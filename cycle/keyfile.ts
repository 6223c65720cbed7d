/**
 * @module
 * Crypttab key files after wake. A key file is read only after the wake, straight into `crypt_safe_alloc` memory
 * (read(2) on a worker thread into C memory: no JS copy), tried, and zeroed; its page-cache copy is dropped before
 * the lock and again after the read, so nothing of it is in RAM while asleep.
 *
 * - On a locked volume (the root, say): read once that volume is unlocked; discovery orders it first.
 * - On a device of its own (systemd's `path:device`, a USB stick): the device is found without udev (frozen) by
 *   the UUID or label in its ext2/3/4 or FAT superblock, mounted read-only inside the cycle's root, read and
 *   unmounted. When it is absent the prompt asks for a passphrase and, meanwhile, watches for the device.
 *
 * @example
 * ```ts
 * import type { AgentContext } from "./context.ts";
 * import type { Volume } from "../discovery/mod.ts";
 * import { readKeyFile } from "./keyfile.ts";
 *
 * export async function keyOf(ctx: AgentContext, volume: Volume): Promise<void> {
 *   const key = await readKeyFile(ctx, volume);
 *   if ("why" in key) console.log(`no key file: ${key.why}`);
 *   else key.buffer[Symbol.dispose](); // zeroed
 * }
 * ```
 */
import {
  dropPageCache,
  MNT_DETACH,
  mount,
  MS_NODEV,
  MS_NOEXEC,
  MS_NOSUID,
  MS_RDONLY,
  readInto,
  umount2,
} from "../ffi/libc.ts";
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import { type KeyFile, MAX_KEYFILE, type Plan, type Volume } from "../discovery/mod.ts";
import { LAST_REPORT } from "./report.ts";
import { hostPath } from "../chroot/enter.ts";
import type { AgentContext } from "./context.ts";
import type { Job } from "./job.ts";
import type { Secret } from "./secrets.ts";
import { isLive } from "./pinned/mod.ts";
import { messages } from "./errors.ts";

/** Either the key file's bytes, or why they could not be read (said on the prompt); `absent`: its device is not there. */
export type KeyFileRead = Secret | { why: string; absent?: boolean };

/**
 * Reads `volume`'s key file. Never touches a volume still locked (a read there would wait forever): a key file on
 * one is reported as not readable yet.
 */
export async function readKeyFile(ctx: AgentContext, volume: Volume): Promise<KeyFileRead> {
  const kf = volume.keyFile;
  if (!kf) return { why: "no key file" };
  const locked = kf.on.filter((name) => {
    const holder = ctx.job.plan.lock.find((v) => v.dmName === name);
    return !holder || !isLive(holder);
  });
  if (locked.length) return { why: `${locked.join(", ")} holding it is still locked` };
  try {
    if (!kf.device) return await readKeyBytes(hostPath(kf.path), kf);
    const dev = await findKeyDevice(kf.device);
    if (!dev) return { why: `${kf.device} is not there`, absent: true };
    return await readFromDevice(ctx, volume, dev, kf);
  } catch (err) {
    return { why: messages(err).join("; ") };
  }
}

/** Before the lock: drops the page-cache copy of every key file that lives on a volume about to be locked. */
export async function forgetKeyFiles(ctx: AgentContext): Promise<void> {
  for (const v of ctx.job.plan.lock) {
    const kf = v.keyFile;
    if (!kf || kf.device || !kf.on.length) continue;
    await dropPageCache(hostPath(kf.path)).catch((err) =>
      ctx.log(`key file of ${v.dmName}: ${messages(err).join("; ")}`)
    );
  }
}

/** The filesystem drivers a key on a USB stick may need to be mounted, with FAT's default code pages. */
const KEY_DEVICE_MODULES = ["vfat", "nls_cp437", "nls_iso8859-1", "nls_utf8", "ext4"];

/**
 * Before the lock, when a key file lives on a device of its own: loads the filesystem drivers mounting it needs. A
 * driver missing after the lock would be loaded by modprobe from the disk, maybe the locked one, and the mount would
 * wait forever. Best effort: one that cannot be loaded (built in, or absent) is left to the mount to report.
 */
export async function loadKeyDeviceDrivers(job: Job, log: (m: string) => void): Promise<void> {
  if (!job.plan.lock.some((v) => v.keyFile?.device)) return;
  const r = await new Deno.Command("modprobe", {
    args: ["-q", "-a", ...KEY_DEVICE_MODULES],
    stdout: "null",
    stderr: "null",
  })
    .output().catch(() => null);
  log(`key device drivers: modprobe ${KEY_DEVICE_MODULES.join(" ")}: ${r ? `exit ${r.code}` : "not run"}`);
}

/**
 * The device `spec` names (`UUID=…`, `LABEL=…`, `/dev/…`; by-uuid and by-label links read as the same), or null
 * when it is not there. udev is frozen, so its links may be stale: the superblocks are read instead.
 */
export async function findKeyDevice(spec: string, sysBlock = "/sys/class/block"): Promise<string | null> {
  const want = keySpec(spec);
  if (want.path) {
    try {
      return (await Deno.stat(want.path)).isBlockDevice ? want.path : null;
    } catch {
      return null;
    }
  }
  for await (const e of Deno.readDir(sysBlock)) {
    // a floppy drive without a disk answers a read only after seconds of retries
    if (e.name.startsWith("fd") || !await physical(`${sysBlock}/${e.name}`)) continue;
    const dev = `/dev/${e.name.replaceAll("!", "/")}`;
    const fs = await probeFs(dev).catch(() => null);
    if (fs && (want.uuid ? fs.uuid.toLowerCase() === want.uuid.toLowerCase() : fs.label === want.label)) return dev;
  }
  return null;
}

/** What a filesystem's superblock says of itself. */
export interface FsProbe {
  /** "ext4" (mounts ext2/3/4 alike) or "vfat". */
  type: "ext4" | "vfat";
  /** As blkid shows it: dashed lowercase hex for ext*, `XXXX-XXXX` for FAT. */
  uuid: string;
  /** Volume label, "" when none. */
  label: string;
}

/** Reads the UUID and label of an ext2/3/4 or FAT filesystem on `dev`; null for anything else. */
export async function probeFs(dev: string): Promise<FsProbe | null> {
  const b = new Uint8Array(2048);
  using f = await Deno.open(dev, { read: true });
  let got = 0;
  for (let r; got < b.length && (r = await f.read(b.subarray(got))) !== null;) got += r;
  const v = new DataView(b.buffer);
  const text = (from: number, len: number) =>
    new TextDecoder().decode(b.subarray(from, from + len)).replace(/\0.*$/s, "").trimEnd();
  if (got >= 2048 && v.getUint16(1024 + 56, true) === 0xef53) {
    const h = [...b.subarray(1024 + 104, 1024 + 120)].map((x) => x.toString(16).padStart(2, "0")).join("");
    const uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    return { type: "ext4", uuid, label: text(1024 + 120, 16) };
  }
  if (got >= 512 && b[510] === 0x55 && b[511] === 0xaa) {
    const fat32 = text(82, 8) === "FAT32";
    if (!fat32 && !text(54, 8).startsWith("FAT")) return null;
    const serial = v.getUint32(fat32 ? 67 : 39, true).toString(16).toUpperCase().padStart(8, "0");
    const label = text(fat32 ? 71 : 43, 11);
    return { type: "vfat", uuid: `${serial.slice(0, 4)}-${serial.slice(4)}`, label: label === "NO NAME" ? "" : label };
  }
  return null;
}

function keySpec(spec: string): { uuid?: string; label?: string; path?: string } {
  const link = /^\/dev\/disk\/by-(uuid|label)\/(.+)$/.exec(spec);
  if (link) return link[1] === "uuid" ? { uuid: link[2] } : { label: unescapeUdev(link[2]) };
  if (spec.startsWith("UUID=")) return { uuid: spec.slice(5) };
  if (spec.startsWith("LABEL=")) return { label: spec.slice(6) };
  return { path: spec };
}

/** udev's `\x2f`-style escapes in by-label names. */
function unescapeUdev(s: string): string {
  return s.replace(/\\x([0-9a-fA-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

/**
 * A block device worth probing: a disk or partition of real hardware (a USB stick), with sectors. Virtual ones are
 * never read: a dm, md or bcache device, a loop device or an nbd may sit on a locked volume, or on a daemon that is
 * frozen, and a read there would never return.
 */
async function physical(sys: string): Promise<boolean> {
  const real = await Deno.realPath(sys).catch(() => "/devices/virtual/");
  if (real.includes("/devices/virtual/")) return false;
  const size = await Deno.readTextFile(`${sys}/size`).then((t) => t.trim(), () => "0");
  return size !== "0";
}

async function readKeyBytes(path: string, kf: KeyFile): Promise<Secret> {
  const st = await Deno.stat(path);
  const rest = st.isFile ? Math.max(0, st.size - kf.offset) : MAX_KEYFILE;
  const size = Math.min(kf.size ?? rest, MAX_KEYFILE);
  if (size === 0) throw new Error(`key file ${kf.path} is empty past keyfile-offset=${kf.offset}`);
  const buffer = SafeBuffer.alloc(size);
  try {
    const length = await readInto(path, buffer.pointer, kf.offset, size);
    if (kf.size !== undefined && length < kf.size) {
      throw new Error(
        `key file ${kf.path} has ${length} bytes past keyfile-offset=${kf.offset}, keyfile-size=${kf.size}`,
      );
    }
    const secret: Secret = { buffer, length };
    const keyslot = kf.keyslot ?? kf.learnedKeyslot;
    if (keyslot !== undefined) secret.keyslot = keyslot;
    return secret;
  } catch (err) {
    buffer[Symbol.dispose]();
    throw err;
  }
}

/** Mounts the key device read-only inside the cycle's root, reads the key file, unmounts. */
async function readFromDevice(ctx: AgentContext, volume: Volume, dev: string, kf: KeyFile): Promise<Secret> {
  const fs = await probeFs(dev);
  if (!fs) throw new Error(`${dev}: no ext2/3/4 or FAT filesystem on it`);
  // a driver not loaded yet would be loaded by modprobe from the disk: maybe a locked one
  const known = (await Deno.readTextFile("/proc/filesystems")).split("\n").some((l) => l.trim().endsWith(fs.type));
  if (!known) throw new Error(`${dev}: the ${fs.type} driver is not loaded (modprobe ${fs.type} before sleeping)`);
  const dir = `/run/cryptsleep-key-${volume.dmName}`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    mount(dev, dir, fs.type, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
    try {
      ctx.log(`key file of ${volume.dmName}: ${dev} (${fs.type}) mounted read-only`);
      return await readKeyBytes(`${dir}${kf.path}`, kf);
    } finally {
      // the key read stays the caller's whatever the unmount does: it is zeroed after its try
      try {
        umount2(dir);
      } catch (err) {
        ctx.log(`key file of ${volume.dmName}: unmounting ${dev}: ${messages(err).join("; ")}; detached lazily`);
        try {
          umount2(dir, MNT_DETACH);
        } catch { /* the cycle's root goes away with everything under it */ }
      }
    }
  } finally {
    await Deno.remove(dir).catch(() => {});
  }
}

/** The keyslot each key file opened, by volume UUID (a slot number is no secret: kept in the report and on disk). */
export type KeyslotMemory = Record<string, { path: string; keyslot: number }>;

/**
 * Where the keyslots learned survive a reboot: the report (/run) is gone then, and the first wake after a boot would
 * run the KDF once per keyslot before the key file's own (a key file added after the passphrase: two runs, not one).
 */
export const KEYSLOT_MEMORY = "/var/lib/cryptsleep/keyslots.json";

/**
 * The keyslots key files opened at earlier wakes (the last report's `keyFileSlots`), each set on its
 * key file in `plan` as {@linkcode KeyFile.learnedKeyslot} where crypttab names no `keyslot=`: a key file added
 * after the passphrase (slot 1) costs one KDF run instead of two; `memory` is {@linkcode readKeyslotMemory}'s.
 */
export function recallKeyslots(plan: Pick<Plan, "lock">, memory: KeyslotMemory): void {
  for (const v of plan.lock) {
    const m = Object.hasOwn(memory, v.uuid) ? memory[v.uuid] : undefined;
    if (v.keyFile && v.keyFile.keyslot === undefined && m?.path === v.keyFile.path) {
      v.keyFile.learnedKeyslot = m.keyslot;
    }
  }
}

/** The well-formed entries of a `keyFileSlots` object read from JSON; the rest is dropped. */
function wellFormed(kept: unknown): KeyslotMemory {
  const memory: KeyslotMemory = {};
  if (typeof kept !== "object" || kept === null) return memory;
  for (const [uuid, m] of Object.entries(kept) as [string, { path?: unknown; keyslot?: unknown }][]) {
    if (uuid === "__proto__" || typeof m?.path !== "string" || !Number.isInteger(m.keyslot)) continue;
    memory[uuid] = { path: m.path, keyslot: m.keyslot as number };
  }
  return memory;
}

async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch {
    return undefined; // not there yet, or not JSON: nothing learned from it
  }
}

/**
 * The keyslots learned at earlier wakes: this boot's last report (`keyFileSlots`: what a cycle carries on in its own
 * report whatever becomes of it, so no report forgets them), over what earlier boots left in `kept`
 * ({@linkcode KEYSLOT_MEMORY}). Read before the lock, on the real root.
 */
export async function readKeyslotMemory(report = LAST_REPORT, kept = KEYSLOT_MEMORY): Promise<KeyslotMemory> {
  const thisBoot = (await readJson(report) as { facts?: { keyFileSlots?: unknown } } | undefined)?.facts?.keyFileSlots;
  // a report has the final say, forgotten slots included: the file is what an earlier report said
  if (thisBoot !== undefined) return wellFormed(thisBoot);
  return wellFormed(await readJson(kept));
}

/**
 * Writes `memory` to `kept` for the next boot when it differs from what is there (a cycle that learned nothing
 * writes nothing). Only after a cycle that ended with every volume unlocked: a write to a locked disk would wait
 * forever. Atomic: a crash leaves the old file or the new one. Returns whether it wrote.
 */
export async function saveKeyslotMemory(memory: KeyslotMemory, kept = KEYSLOT_MEMORY): Promise<boolean> {
  const now = wellFormed(memory);
  const before = wellFormed(await readJson(kept));
  const same = (a: KeyslotMemory, b: KeyslotMemory) =>
    Object.keys(a).length === Object.keys(b).length &&
    Object.entries(a).every(([u, m]) => Object.hasOwn(b, u) && b[u].path === m.path && b[u].keyslot === m.keyslot);
  if (same(now, before)) return false;
  const dir = kept.slice(0, kept.lastIndexOf("/")) || "/";
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = `${kept}.new`;
  {
    // on the disk before the rename: a crash then leaves the old file or the new one, never an empty one
    using file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o644 });
    const bytes = new TextEncoder().encode(JSON.stringify(now, null, 2) + "\n");
    for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
    await file.syncData();
  }
  await Deno.rename(tmp, kept);
  return true;
}

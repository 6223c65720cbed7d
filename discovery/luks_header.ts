/**
 * A small reader for LUKS1 and LUKS2 headers: version, UUID and the key derivation of every keyslot,
 * so the plan knows how much memory Argon2 needs when the volumes are unlocked on resume.
 * Pure TypeScript, read-only; it never touches key material (the keyslot areas are not read).
 *
 * LUKS1: one 592-byte binary header, eight PBKDF2 keyslots (no memory cost).
 * LUKS2: a 4096-byte binary header followed by the JSON area (`hdr_size - 4096` bytes); a secondary
 * copy sits at offset `hdr_size`. Both carry a checksum and a sequence id: the valid copy with the
 * highest sequence id wins, as in libcryptsetup.
 *
 * @example
 * ```ts
 * import { readLuksHeader } from "./luks_header.ts";
 * const hdr = await readLuksHeader("/dev/vda2");
 * console.log(hdr.version, hdr.uuid, hdr.maxArgon2MemoryKiB);
 * ```
 * @module
 */
import { tokenType } from "./token_types.ts";

/** Key derivation of one keyslot. `memoryKiB` is 0 for PBKDF2. */
export interface LuksKdf {
  /** The KDF, as the header names it. */
  type: "pbkdf2" | "argon2i" | "argon2id" | string;
  /** Argon2 memory cost in KiB (LUKS2 JSON `memory`), 0 for PBKDF2. */
  memoryKiB: number;
  /** Argon2 `time` cost, or PBKDF2 iterations. */
  time: number;
  /** Argon2 `cpus` (parallel lanes), 1 for PBKDF2. */
  cpus: number;
  /** PBKDF2's hash (LUKS2 `hash`; LUKS1 the header's hash spec). */
  hash?: string;
}

/** One keyslot in use. */
export interface LuksKeyslot {
  /** Keyslot number. */
  slot: number;
  /** LUKS2 keyslot type ("luks2", "reencrypt"), "luks1" for LUKS1. */
  type: string;
  /** How its passphrase is stretched. */
  kdf: LuksKdf;
}

/** What the header says. */
export interface LuksHeader {
  /** LUKS version. */
  version: 1 | 2;
  /** The header's UUID (with dashes). */
  uuid: string;
  /** LUKS2 label ("" for none, and for LUKS1). */
  label: string;
  /** Size of one header copy in bytes (LUKS2 `hdr_size`; 592 for LUKS1). */
  hdrSize: number;
  /** The keyslots in use. */
  keyslots: LuksKeyslot[];
  /** The largest Argon2 memory over all keyslots (KiB): what one unlock may need at worst. */
  maxArgon2MemoryKiB: number;
  /** Notes about the header (a bad checksum on one copy, an unknown checksum algorithm). */
  notes: string[];
  /** LUKS2 tokens (none for LUKS1). */
  tokens: LuksToken[];
}

/** A LUKS2 token: a way to a keyslot's passphrase other than typing it (systemd's TPM2, FIDO2, PKCS#11). */
export interface LuksToken {
  /** Its number. */
  id: number;
  /** "systemd-tpm2", "systemd-fido2", "systemd-pkcs11", "luks2-keyring", … */
  type: string;
  /** The keyslots it opens. */
  keyslots: number[];
  /** It wants a PIN (its type's rule, discovery/token_types.ts; false for a type cryptsleep does not use). */
  pin: boolean;
}

/** A header could not be read or is not LUKS. `code` is an errno name when the read failed. */
export class LuksHeaderError extends Error {
  /** The header file or device. */
  readonly path: string;
  /** errno name of a failed read ("EACCES"), or "EINVAL" when it is not LUKS. */
  readonly code: string;
  /** Says what is wrong with which file. */
  constructor(path: string, code: string, message: string) {
    super(message);
    this.name = "LuksHeaderError";
    this.path = path;
    this.code = code;
  }
}

const LUKS_MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]; // "LUKS\xba\xbe"
const LUKS2_SECONDARY_MAGIC = [0x53, 0x4b, 0x55, 0x4c, 0xba, 0xbe]; // "SKUL\xba\xbe"
const LUKS1_KEYSLOT_ACTIVE = 0x00ac71f3;
const LUKS2_BIN_SIZE = 4096;
/** Offsets where a LUKS2 secondary header may live (it follows a primary of that size). */
const LUKS2_HDR_SIZES = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];

function cString(b: Uint8Array, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const end = s.indexOf(0);
  return new TextDecoder().decode(end < 0 ? s : s.subarray(0, end));
}

function hasMagic(b: Uint8Array, magic: number[]): boolean {
  return magic.every((m, i) => b[i] === m);
}

function errnoCode(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "ENOENT";
  if (e instanceof Deno.errors.PermissionDenied) return "EACCES";
  if (e instanceof Deno.errors.IsADirectory) return "EISDIR";
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" ? code : "EIO";
}

/** Reads up to `len` bytes at `offset`; shorter only at end of file. */
async function readAt(file: Deno.FsFile, offset: number, len: number): Promise<Uint8Array> {
  const buf = new Uint8Array(len);
  await file.seek(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < len) {
    const n = await file.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return buf.subarray(0, got);
}

function parseLuks1(b: Uint8Array): LuksHeader {
  if (b.length < 592) throw new Error("LUKS1 header truncated");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const hash = cString(b, 72, 32);
  const keyslots: LuksKeyslot[] = [];
  for (let i = 0; i < 8; i++) {
    const off = 208 + i * 48;
    if (dv.getUint32(off) !== LUKS1_KEYSLOT_ACTIVE) continue;
    keyslots.push({
      slot: i,
      type: "luks1",
      kdf: { type: "pbkdf2", memoryKiB: 0, time: dv.getUint32(off + 4), cpus: 1, hash },
    });
  }
  return {
    version: 1,
    uuid: cString(b, 168, 40),
    label: "",
    hdrSize: 592,
    keyslots,
    maxArgon2MemoryKiB: 0,
    notes: [],
    tokens: [],
  };
}

interface Luks2Copy {
  seqid: bigint;
  hdrSize: number;
  label: string;
  uuid: string;
  json: string;
  checksum: "ok" | "bad" | "unchecked";
  alg: string;
}

const SUBTLE_ALGS: Record<string, string> = {
  sha1: "SHA-1",
  sha256: "SHA-256",
  sha384: "SHA-384",
  sha512: "SHA-512",
};

/** Parses one LUKS2 header copy (`area` holds binary header + JSON area) and checks its checksum. */
async function parseLuks2Copy(area: Uint8Array): Promise<Luks2Copy> {
  const dv = new DataView(area.buffer, area.byteOffset, area.byteLength);
  const hdrSize = Number(dv.getBigUint64(8));
  if (hdrSize < LUKS2_BIN_SIZE || area.length < hdrSize) throw new Error(`LUKS2 hdr_size ${hdrSize} out of range`);
  const alg = cString(area, 72, 32);
  let checksum: Luks2Copy["checksum"] = "unchecked";
  const subtle = SUBTLE_ALGS[alg];
  if (subtle) {
    // The checksum covers binary header + JSON area with the csum field zeroed.
    const copy = area.slice(0, hdrSize);
    const stored = copy.slice(448, 448 + 64);
    copy.fill(0, 448, 448 + 64);
    const digest = new Uint8Array(await crypto.subtle.digest(subtle, copy));
    checksum = digest.every((v, i) => v === stored[i]) ? "ok" : "bad";
  }
  const jsonBytes = area.subarray(LUKS2_BIN_SIZE, hdrSize);
  const end = jsonBytes.indexOf(0);
  return {
    seqid: dv.getBigUint64(16),
    hdrSize,
    label: cString(area, 24, 48),
    uuid: cString(area, 168, 40),
    json: new TextDecoder().decode(end < 0 ? jsonBytes : jsonBytes.subarray(0, end)),
    checksum,
    alg,
  };
}

interface Luks2Json {
  tokens?: Record<string, Record<string, unknown>>;
  keyslots?: Record<string, {
    type?: string;
    kdf?: { type?: string; memory?: number; time?: number; cpus?: number; iterations?: number; hash?: string };
  }>;
}

function luks2Tokens(json: string): LuksToken[] {
  const meta = JSON.parse(json) as Luks2Json;
  return Object.entries(meta.tokens ?? {}).map(([id, t]) => {
    const type = String(t.type ?? "unknown");
    const pin = tokenType(type)?.wantsPin(t) ?? false;
    const keyslots = Array.isArray(t.keyslots) ? t.keyslots.map(Number) : [];
    return { id: Number(id), type, keyslots, pin };
  }).sort((a, b) => a.id - b.id);
}

function luks2Keyslots(json: string): LuksKeyslot[] {
  const meta = JSON.parse(json) as Luks2Json;
  const out: LuksKeyslot[] = [];
  for (const [id, ks] of Object.entries(meta.keyslots ?? {})) {
    const kdf = ks.kdf ?? {};
    const type = kdf.type ?? "none";
    const argon = type === "argon2i" || type === "argon2id";
    out.push({
      slot: Number(id),
      type: ks.type ?? "unknown",
      kdf: {
        type,
        memoryKiB: argon ? Number(kdf.memory ?? 0) : 0,
        time: argon ? Number(kdf.time ?? 0) : Number(kdf.iterations ?? 0),
        cpus: argon ? Number(kdf.cpus ?? 1) : 1,
        ...(kdf.hash ? { hash: kdf.hash } : {}),
      },
    });
  }
  return out.sort((a, b) => a.slot - b.slot);
}

/**
 * The UUID in a LUKS1 or LUKS2 primary header's first block (`first`: its bytes from offset 0), lowercased; null
 * when the block holds no LUKS header (a damaged primary whose secondary copy still serves is null too).
 */
export function luksUuidOf(first: Uint8Array): string | null {
  if (first.length < 208 || !hasMagic(first, LUKS_MAGIC)) return null;
  const version = new DataView(first.buffer, first.byteOffset, first.byteLength).getUint16(6);
  return version === 1 || version === 2 ? cString(first, 168, 40).toLowerCase() : null;
}

/** Where a LUKS2 secondary header may start on its device (right after a primary of each size LUKS2 allows). */
export const LUKS2_SECONDARY_OFFSETS: readonly number[] = LUKS2_HDR_SIZES;

/** The UUID in a LUKS2 secondary header's first block (`block`: its bytes from its offset), lowercased; else null. */
export function luks2SecondaryUuidOf(block: Uint8Array): string | null {
  if (block.length < 208 || !hasMagic(block, LUKS2_SECONDARY_MAGIC)) return null;
  return new DataView(block.buffer, block.byteOffset, block.byteLength).getUint16(6) === 2
    ? cString(block, 168, 40).toLowerCase()
    : null;
}

/**
 * Reads the LUKS header at `path` (a block device, an image file, or a detached header file).
 * Throws {@link LuksHeaderError} when the file can't be read or holds no valid LUKS header.
 */
export async function readLuksHeader(path: string): Promise<LuksHeader> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    const code = errnoCode(e);
    throw new LuksHeaderError(path, code, `open(${path}) failed: ${code}`);
  }
  try {
    const first = await readAt(file, 0, LUKS2_BIN_SIZE);
    if (first.length < 8 || !hasMagic(first, LUKS_MAGIC)) {
      throw new LuksHeaderError(path, "EINVAL", `${path}: no LUKS header (magic missing)`);
    }
    const version = new DataView(first.buffer, first.byteOffset, first.byteLength).getUint16(6);
    if (version === 1) return parseLuks1(first);
    if (version !== 2) throw new LuksHeaderError(path, "EINVAL", `${path}: unsupported LUKS version ${version}`);

    const copies: Luks2Copy[] = [];
    const notes: string[] = [];
    const primarySize = Number(new DataView(first.buffer, first.byteOffset).getBigUint64(8));
    try {
      copies.push(await parseLuks2Copy(await readAt(file, 0, Math.min(primarySize, 0x400000))));
    } catch (e) {
      notes.push(`primary header unreadable: ${(e as Error).message}`);
    }
    // The secondary copy starts right after the primary; if the primary is damaged, probe the known sizes.
    const offsets = LUKS2_HDR_SIZES.includes(primarySize) ? [primarySize] : LUKS2_HDR_SIZES;
    for (const off of offsets) {
      const bin = await readAt(file, off, LUKS2_BIN_SIZE);
      if (bin.length < LUKS2_BIN_SIZE || !hasMagic(bin, LUKS2_SECONDARY_MAGIC)) continue;
      const size = Number(new DataView(bin.buffer, bin.byteOffset).getBigUint64(8));
      try {
        copies.push(await parseLuks2Copy(await readAt(file, off, Math.min(size, 0x400000))));
      } catch (e) {
        notes.push(`secondary header unreadable: ${(e as Error).message}`);
      }
      break;
    }
    for (const [i, c] of copies.entries()) {
      const which = i === 0 ? "first" : "second";
      if (c.checksum === "bad") notes.push(`${which} header copy has a bad ${c.alg} checksum`);
      if (c.checksum === "unchecked") notes.push(`${which} header copy: checksum ${c.alg} not verified`);
    }
    const usable = copies.filter((c) => c.checksum !== "bad").sort((a, b) => (a.seqid < b.seqid ? 1 : -1));
    if (usable.length === 0) {
      throw new LuksHeaderError(path, "EINVAL", `${path}: no valid LUKS2 header copy (${notes.join("; ")})`);
    }
    const best = usable[0];
    let keyslots: LuksKeyslot[];
    let tokens: LuksToken[];
    try {
      keyslots = luks2Keyslots(best.json);
      tokens = luks2Tokens(best.json);
    } catch (e) {
      throw new LuksHeaderError(path, "EINVAL", `${path}: LUKS2 JSON area unparsable: ${(e as Error).message}`);
    }
    return {
      version: 2,
      uuid: best.uuid,
      label: best.label,
      hdrSize: best.hdrSize,
      keyslots,
      maxArgon2MemoryKiB: keyslots.reduce((m, k) => Math.max(m, k.kdf.memoryKiB), 0),
      notes,
      tokens,
    };
  } catch (e) {
    if (e instanceof LuksHeaderError) throw e;
    const code = errnoCode(e);
    throw new LuksHeaderError(path, code, `read(${path}) failed: ${code}: ${(e as Error).message}`);
  } finally {
    file.close();
  }
}

/**
 * Just enough ELF to answer what a shared object needs and provides, read from the file (no FFI, no loader): its
 * interpreter (PT_INTERP), the libraries it needs (DT_NEEDED) and where it looks for them (DT_RUNPATH, DT_RPATH),
 * its soname (DT_SONAME), the symbol versions it defines (`.gnu.version_d`, reached through DT_VERDEF), and the
 * libraries it loads later with dlopen(3) as its `.note.dlopen` notes declare them (systemd's convention).
 *
 * Only 64-bit little-endian files (x86_64, aarch64): anything else reads as "not an ELF" (`null`).
 *
 * @example
 * ```ts
 * import { readElf } from "./elf.ts";
 *
 * const elf = readElf("/usr/lib/x86_64-linux-gnu/libcryptsetup.so.12");
 * console.log(elf?.soname, elf?.needed, elf?.versions); // libcryptsetup.so.12 [...] ["CRYPTSETUP_2.0", …]
 * ```
 *
 * @module
 */

/** The dynamic-linking facts of one ELF file. */
export interface ElfInfo {
  /** PT_INTERP: the program interpreter (dynamic loader), null for a shared object or a static program. */
  interp: string | null;
  /** DT_NEEDED: sonames of the libraries it needs, in order. */
  needed: string[];
  /** DT_RUNPATH directories (may contain `$ORIGIN`). */
  runpath: string[];
  /** DT_RPATH directories (ignored by the loader when DT_RUNPATH exists). */
  rpath: string[];
  /** DT_SONAME. */
  soname: string | null;
  /**
   * Symbol version nodes it defines (`Elf64_Verdef` entries other than the file's base), in file order, e.g.
   * `["CRYPTSETUP_2.0", "CRYPTSETUP_2.4"]`. Empty when it has no version definitions.
   */
  versions: string[];
  /**
   * `.note.dlopen` (owner "FDO"): what it may dlopen later, per feature, each entry's sonames in the order tried
   * (e.g. `{ feature: "tpm", soname: ["libtss2-esys.so.0"] }`). Empty when it declares none.
   */
  dlopen: { feature: string; soname: string[] }[];
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_NOTE = 4;
const NT_FDO_DLOPEN = 0x407c0c0a;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;
const DT_VERDEF = 0x6ffffffc;
const DT_VERDEFNUM = 0x6ffffffd;
const VER_FLG_BASE = 1;

/** Reads the dynamic-linking facts of an ELF file; null when it cannot be opened or is not a 64-bit LE ELF. */
export function readElf(path: string): ElfInfo | null {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path, { read: true });
  } catch {
    return null;
  }
  try {
    const read = (offset: number, length: number): Uint8Array<ArrayBuffer> => {
      const buf = new Uint8Array(length);
      f.seekSync(offset, Deno.SeekMode.Start);
      let got = 0;
      while (got < length) {
        const n = f.readSync(buf.subarray(got));
        if (n === null) break;
        got += n;
      }
      return buf.subarray(0, got);
    };
    const eh = read(0, 64);
    if (eh.length < 64 || eh[0] !== 0x7f || eh[1] !== 0x45 || eh[2] !== 0x4c || eh[3] !== 0x46) return null;
    if (eh[4] !== 2 || eh[5] !== 1) return null; // ELFCLASS64, little-endian only
    const h = new DataView(eh.buffer);
    const phoff = Number(h.getBigUint64(32, true));
    const phentsize = h.getUint16(54, true);
    const phnum = h.getUint16(56, true);
    const ph = read(phoff, phentsize * phnum);
    const pv = new DataView(ph.buffer);
    const loads: { vaddr: number; offset: number; filesz: number }[] = [];
    let interp: string | null = null;
    let dyn: { offset: number; size: number } | null = null;
    const notes: { offset: number; size: number }[] = [];
    for (let i = 0; i < phnum; i++) {
      const o = i * phentsize;
      const type = pv.getUint32(o, true);
      const offset = Number(pv.getBigUint64(o + 8, true));
      const vaddr = Number(pv.getBigUint64(o + 16, true));
      const filesz = Number(pv.getBigUint64(o + 32, true));
      if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
      if (type === PT_DYNAMIC) dyn = { offset, size: filesz };
      if (type === PT_INTERP) interp = new TextDecoder().decode(read(offset, filesz)).replace(/\0.*$/s, "");
      if (type === PT_NOTE) notes.push({ offset, size: filesz });
    }
    const dlopen = notes.flatMap((n) => dlopenNotes(read(n.offset, n.size)));
    const info: ElfInfo = { interp, needed: [], runpath: [], rpath: [], soname: null, versions: [], dlopen };
    if (!dyn) return info;
    // Dynamic entries hold addresses; the file offset is the address within its PT_LOAD segment.
    const fileOffset = (vaddr: number): number | null => {
      const seg = loads.find((l) => vaddr >= l.vaddr && vaddr < l.vaddr + l.filesz);
      return seg ? vaddr - seg.vaddr + seg.offset : null;
    };
    const d = read(dyn.offset, dyn.size);
    const dv = new DataView(d.buffer);
    const entries: [number, number][] = [];
    let strtab = -1;
    let strsz = 0;
    for (let o = 0; o + 16 <= d.length; o += 16) {
      const tag = Number(dv.getBigInt64(o, true));
      const val = Number(dv.getBigUint64(o + 8, true));
      if (tag === DT_NULL) break;
      if (tag === DT_STRTAB) strtab = val;
      else if (tag === DT_STRSZ) strsz = val;
      else entries.push([tag, val]);
    }
    const strOffset = strtab < 0 ? null : fileOffset(strtab);
    if (strOffset === null) return info;
    const strings = read(strOffset, strsz);
    const str = (at: number) => {
      const end = strings.indexOf(0, at);
      return new TextDecoder().decode(strings.subarray(at, end < 0 ? undefined : end));
    };
    let verdef: number | null = null;
    let verdefnum = 0;
    for (const [tag, val] of entries) {
      if (tag === DT_NEEDED) info.needed.push(str(val));
      else if (tag === DT_SONAME) info.soname = str(val);
      else if (tag === DT_RPATH) info.rpath.push(...str(val).split(":").filter(Boolean));
      else if (tag === DT_RUNPATH) info.runpath.push(...str(val).split(":").filter(Boolean));
      else if (tag === DT_VERDEF) verdef = fileOffset(val);
      else if (tag === DT_VERDEFNUM) verdefnum = val;
    }
    // Elf64_Verdef { u16 version, flags, ndx, cnt; u32 hash, aux, next } → Elf64_Verdaux { u32 name, next }; the
    // first aux names the version, the others its parents.
    for (let i = 0, at = verdef; at !== null && i < verdefnum; i++) {
      const vdBytes = read(at, 20);
      if (vdBytes.length < 20) break; // truncated file
      const vd = new DataView(vdBytes.buffer);
      const auxBytes = read(at + vd.getUint32(12, true), 8);
      if (auxBytes.length < 8) break;
      const aux = new DataView(auxBytes.buffer);
      if (!(vd.getUint16(2, true) & VER_FLG_BASE)) info.versions.push(str(aux.getUint32(0, true)));
      const next = vd.getUint32(16, true);
      at = next === 0 ? null : at + next;
    }
    return info;
  } finally {
    f.close();
  }
}

/** The `FDO` dlopen notes in a PT_NOTE segment: Elf64_Nhdr { namesz, descsz, type }, name, desc (JSON), 4-aligned. */
function dlopenNotes(seg: Uint8Array<ArrayBuffer>): { feature: string; soname: string[] }[] {
  const out: { feature: string; soname: string[] }[] = [];
  const v = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
  const align = (n: number) => (n + 3) & ~3;
  for (let o = 0; o + 12 <= seg.length;) {
    const namesz = v.getUint32(o, true), descsz = v.getUint32(o + 4, true), type = v.getUint32(o + 8, true);
    const name = new TextDecoder().decode(seg.subarray(o + 12, o + 12 + namesz)).replace(/\0.*$/s, "");
    const desc = o + 12 + align(namesz);
    if (name === "FDO" && type === NT_FDO_DLOPEN) {
      try {
        const text = new TextDecoder().decode(seg.subarray(desc, desc + descsz)).replace(/\0.*$/s, "");
        for (const e of JSON.parse(text) as { feature?: string; soname?: string[] }[]) {
          if (Array.isArray(e.soname)) out.push({ feature: String(e.feature ?? ""), soname: e.soname.map(String) });
        }
      } catch { /* a note that is not JSON declares nothing */ }
    }
    o = desc + align(descsz);
  }
  return out;
}

/**
 * @module
 * The install record (`/var/lib/cryptsleep/install.json`): each file `cryptsleep install` wrote, with what was
 * there before — absent, a file (its bytes and mode), or a symlink (its target) — and each directory it
 * created, so `cryptsleep uninstall` restores exactly that. Also the file steps both commands are made of.
 *
 * @example
 * ```ts
 * import { readRecord, snapshot } from "./record.ts";
 * console.log(await readRecord("/"), await snapshot("/", "/etc/hostname"));
 * ```
 */
import { dirname } from "../host/path.ts";
import { describe } from "../host/errors.ts";
import { underRoot } from "../host/paths.ts";

/** Where the record lives (persistent: an install outlives reboots). */
export const RECORD = "/var/lib/cryptsleep/install.json";

/** What a path held before install wrote it. */
export type Before =
  | { kind: "absent" }
  | {
    kind: "file";
    /** Its bytes. */
    bytes: Uint8Array;
    /** Its bytes as UTF-8, or null when they are not. */
    text: string | null;
    /** Its permission bits. */
    mode: number;
  }
  | {
    kind: "symlink";
    /** Where it pointed. */
    target: string;
  };

/** One file install wrote. */
export interface RecordedFile {
  /** Host path. */
  path: string;
  /** What it held before the first install. */
  before: Before;
  /** What install wrote (to tell a later edit). */
  wrote: string;
}

/** The record as read. */
export interface InstallRecord {
  /** Format version. */
  version: 1;
  /** When it was written. */
  installedAt: string;
  /** The ExecStart's cryptsleep. */
  exec: string;
  /** The files, in the order written. */
  files: RecordedFile[];
  /** Directories install created, parents first. */
  createdDirs: string[];
}

/** One file action: what it says (for --dry-run), and doing it. */
export interface Step {
  /** "write /etc/… (new)". */
  line: string;
  /** Does it. */
  apply(): Promise<void>;
}

/** What `path` under `root` holds now. */
export async function snapshot(root: string, path: string): Promise<Before> {
  const at = underRoot(root, path);
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(at);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { kind: "absent" };
    throw new Error(`${describe(`lstat ${path}`, err)}; fix its permissions and retry`);
  }
  if (st.isSymlink) return { kind: "symlink", target: await Deno.readLink(at) };
  const bytes = await Deno.readFile(at);
  let text: string | null;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    text = null;
  }
  return { kind: "file", bytes, text, mode: (st.mode ?? 0o644) & 0o7777 };
}

/** The record's JSON text. */
export function recordText(rec: InstallRecord): string {
  const files = rec.files.map((f) => ({
    ...f,
    before: f.before.kind === "file"
      ? { kind: "file", base64: toBase64(f.before.bytes), mode: f.before.mode }
      : f.before,
  }));
  return JSON.stringify({ ...rec, files }, null, 2) + "\n";
}

/** The record under `root`, or null when there is none. */
export async function readRecord(root: string): Promise<InstallRecord | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(underRoot(root, RECORD));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new Error(`${describe(`read ${RECORD}`, err)}; fix its permissions and retry`);
  }
  try {
    // deno-lint-ignore no-explicit-any
    const raw = JSON.parse(text) as any;
    const files: RecordedFile[] = raw.files.map(
      (f: { path: string; wrote: string; before: Record<string, unknown> }) => {
        if (f.before.kind !== "file") return f;
        const bytes = fromBase64(String(f.before.base64));
        return { ...f, before: { kind: "file", bytes, text: new TextDecoder().decode(bytes), mode: f.before.mode } };
      },
    );
    return { ...raw, files } as InstallRecord;
  } catch (err) {
    throw new Error(
      `${RECORD} is not a cryptsleep install record (${err instanceof Error ? err.message : err}): ` +
        "restore it from a backup, or remove it and undo the drop-in by hand",
    );
  }
}

/** Standard base64 with padding, as node's `Buffer.toString("base64")` wrote it before. */
function toBase64(bytes: Uint8Array): string {
  let binary = "";
  // in slices: spreading a whole large file into fromCharCode overflows the argument limit
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/**
 * The bytes of `text` read as Deno's `Buffer.from(text, "base64")` read them, so a record written by an earlier
 * version, or edited by hand, reads the same: it ends at the first "=", skips what is not base64 (line breaks,
 * spaces), takes the URL alphabet too, and drops a lone last character (fewer than 8 bits). atob alone would throw.
 */
function fromBase64(text: string): Uint8Array {
  let s = text.split("=")[0].replace(/[^A-Za-z0-9+/_-]/g, "").replaceAll("-", "+").replaceAll("_", "/");
  if (s.length % 4 === 1) s = s.slice(0, -1);
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

/** Writes `text` at `path` (mode 0644), its directory made first. */
export function writeStep(root: string, path: string, text: string, line: string): Step {
  return {
    line,
    apply: async () => {
      const at = underRoot(root, path);
      try {
        await Deno.mkdir(dirname(at), { recursive: true });
        // a symlink there is replaced, not written through
        await Deno.remove(at).catch(() => {});
        await Deno.writeTextFile(at, text, { mode: 0o644 });
      } catch (err) {
        throw new Error(`${describe(`write ${path}`, err)}; run as root on a writable /etc`);
      }
    },
  };
}

/** Puts back what `f` held before install; says so when it was changed since. */
export async function restoreStep(root: string, f: RecordedFile): Promise<Step> {
  const now = await snapshot(root, f.path);
  const edited = now.kind !== "file" || now.text !== f.wrote
    ? " — it was changed since install; the change is lost"
    : "";
  const at = underRoot(root, f.path);
  const b = f.before;
  const line = b.kind === "absent"
    ? `remove ${f.path}${now.kind === "absent" ? " (already gone)" : ""}${now.kind === "absent" ? "" : edited}`
    : `restore ${f.path} (${
      b.kind === "symlink" ? `symlink to ${b.target}` : `the file it replaced, mode ${b.mode.toString(8)}`
    })${edited}`;
  return {
    line,
    apply: async () => {
      try {
        await Deno.remove(at).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        });
        if (b.kind === "symlink") await Deno.symlink(b.target, at);
        if (b.kind === "file") {
          await Deno.writeFile(at, b.bytes, { mode: b.mode });
          await Deno.chmod(at, b.mode);
        }
      } catch (err) {
        throw new Error(`${describe(`restore ${f.path}`, err)}; run as root, then cryptsleep uninstall again`);
      }
    },
  };
}

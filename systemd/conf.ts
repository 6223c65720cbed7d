/**
 * @module
 * systemd's configuration files as systemd reads them (src/shared/conf-parser.c, systemd v256–v257): the main
 * file is the first of `/etc/<name>`, `/run/<name>`, `/usr/local/lib/<name>`, `/usr/lib/<name>` that exists;
 * then every `*.conf` in `<name>.d/` under those four directories, sorted by file name, where a name in an
 * earlier directory hides the same name in a later one (so /etc overrides /usr/lib). A drop-in that is empty or a
 * symlink to /dev/null masks the name. Lines: `[Section]`, `Key=value`, `#`/`;` comments, a trailing `\` joins
 * the next line. Paths are read under a root so tests run on scratch trees.
 *
 * @example
 * ```ts
 * import { readConfig } from "./conf.ts";
 * const { entries, files } = await readConfig("/", "systemd/sleep.conf", "Sleep");
 * console.log(files, entries.map((e) => `${e.key}=${e.value}`));
 * ```
 */
import { join } from "../host/path.ts";
import { underRoot } from "../host/paths.ts";

/** The directories systemd searches for configuration, highest priority first (CONF_PATHS). */
export const CONF_DIRS: readonly string[] = ["/etc", "/run", "/usr/local/lib", "/usr/lib"];

/** One `Key=value` assignment, where it came from. */
export interface Entry {
  /** The section it is in, without brackets. */
  section: string;
  /** The key, as written. */
  key: string;
  /** The value, trimmed (may be empty: an empty assignment resets a list). */
  value: string;
  /** The host path of the file. */
  file: string;
  /** Its line number (of the first line, for a continued line). */
  line: number;
}

/** The assignments of one file's text, in order; lines before any section have section "". */
export function parseConf(text: string, file: string): Entry[] {
  const out: Entry[] = [];
  let section = "";
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i];
    // a continued line: systemd joins it with a space in place of the backslash
    while (line.endsWith("\\") && i + 1 < lines.length) line = line.slice(0, -1) + " " + lines[++i];
    const t = line.trim();
    if (t === "" || t.startsWith("#") || t.startsWith(";")) continue;
    if (t.startsWith("[") && t.endsWith("]")) {
      section = t.slice(1, -1);
      continue;
    }
    const eq = t.indexOf("=");
    if (eq <= 0) continue; // systemd warns and ignores a line without an assignment
    out.push({ section, key: t.slice(0, eq).trim(), value: t.slice(eq + 1).trim(), file, line: start });
  }
  return out;
}

/** Whether host path `path` under root is a mask: a symlink to /dev/null or an empty file. */
async function isMask(root: string, path: string): Promise<boolean> {
  try {
    const link = await Deno.readLink(underRoot(root, path));
    if (link === "/dev/null") return true;
  } catch {
    // not a symlink
  }
  try {
    return (await Deno.stat(underRoot(root, path))).size === 0;
  } catch {
    return false;
  }
}

async function exists(root: string, path: string): Promise<boolean> {
  try {
    await Deno.stat(underRoot(root, path));
    return true;
  } catch {
    return false;
  }
}

/**
 * The drop-ins of directory `dropinDir` (e.g. "systemd/sleep.conf.d") under the given directories, as host
 * paths in the order systemd applies them: by file name, the first directory holding a name wins, masks left out.
 * `suffix` filters names (".conf").
 */
export async function listDropins(
  root: string,
  dropinDir: string,
  dirs: readonly string[] = CONF_DIRS,
  suffix = ".conf",
): Promise<string[]> {
  const byName = new Map<string, string>();
  for (const dir of dirs) {
    const path = join(dir, dropinDir);
    let names: string[];
    try {
      names = (await Array.fromAsync(Deno.readDir(underRoot(root, path)))).map((e) => e.name);
    } catch {
      continue; // absent or unreadable: systemd skips it the same way
    }
    for (const name of names) if (name.endsWith(suffix) && !byName.has(name)) byName.set(name, join(path, name));
  }
  const out: string[] = [];
  for (const name of [...byName.keys()].sort()) {
    const path = byName.get(name)!;
    if (!(await isMask(root, path))) out.push(path);
  }
  return out;
}

/** The files systemd reads for `name` ("systemd/sleep.conf"), in order: the main file, then its drop-ins. */
export async function configFiles(root: string, name: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of CONF_DIRS) {
    const path = join(dir, name);
    if (await exists(root, path)) {
      out.push(path);
      break;
    }
  }
  return [...out, ...(await listDropins(root, `${name}.d`))];
}

/** What {@linkcode readConfig} found. */
export interface Config {
  /** The assignments of `section`, in the order systemd applies them. */
  entries: Entry[];
  /** The files read, in order (host paths). */
  files: string[];
}

/** Reads `name` with its drop-ins and keeps the assignments of `section`. */
export async function readConfig(root: string, name: string, section: string): Promise<Config> {
  const files = await configFiles(root, name);
  const entries: Entry[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await Deno.readTextFile(underRoot(root, file));
    } catch (err) {
      throw new Error(`read ${file}: ${err instanceof Error ? err.message : err}; fix its permissions or remove it`);
    }
    entries.push(...parseConf(text, file).filter((e) => e.section === section));
  }
  return { entries, files };
}

/** The value of the last assignment of `key`, or undefined; systemd's rule for single-valued settings. */
export function lastValue(entries: readonly Entry[], key: string): Entry | undefined {
  return entries.findLast((e) => e.key === key);
}

/** systemd's boolean words (parse_boolean); undefined for anything else. */
export function parseBoolean(value: string): boolean | undefined {
  const v = value.toLowerCase();
  if (["1", "yes", "y", "true", "t", "on"].includes(v)) return true;
  if (["0", "no", "n", "false", "f", "off"].includes(v)) return false;
  return undefined;
}

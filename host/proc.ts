/**
 * Parsers for the procfs and /etc text files the tool reads: `/proc/swaps`, `/etc/crypttab`, `/proc/meminfo`,
 * `/proc/keys` and `/proc/<pid>/stat`. Each `read*` but {@linkcode readStat} takes the discovery root; a
 * missing file reads as empty. (mountinfo has its own module, `mountinfo.ts`.)
 *
 * @example
 * ```ts
 * import { readMeminfo, readStat, readSwaps } from "./proc.ts";
 * console.log(await readSwaps("/"), (await readMeminfo("/")).MemAvailable);
 * console.log(readStat(`/proc/${Deno.pid}/stat`)?.state); // "R"
 * ```
 * @module
 */
import { unescapeOctal } from "./mountinfo.ts";
import { readOptional } from "./paths.ts";

/** One line of `/etc/crypttab`. */
export interface CrypttabEntry {
  /** The dm name to create. */
  name: string;
  /** Second field: a path, `UUID=…`, `PARTUUID=…`, `LABEL=…`. */
  device: string;
  /** Third field; undefined when `none`, `-` or absent. */
  keyFile?: string;
  /** Fourth field: `name` → true, `name=value` → value. */
  options: Record<string, string | true>;
}

/** A key listed in `/proc/keys`. */
export interface ProcKey {
  /** Serial number, hex as listed. */
  id: string;
  /** Key type, e.g. "logon", "keyring". */
  type: string;
  /** Description, e.g. "cryptsetup:<uuid>-d0". */
  description: string;
}

/** The fields of `/proc/<pid>/stat` the freezer needs. */
export interface ProcStat {
  /** Process (or thread) id. */
  pid: number;
  /** Command name, as in the parentheses (may contain spaces and parentheses). */
  comm: string;
  /** State letter: R, S, D (uninterruptible), T/t (stopped), Z… */
  state: string;
  /** Parent pid. */
  ppid: number;
  /** Kernel `PF_*` flags. */
  flags: number;
  /** CPU time used, user + system, in USER_HZ ticks (1/100 s on Linux's architectures but alpha). */
  cpuTicks: number;
  /** When it started, in USER_HZ ticks after boot. */
  startTicks: number;
  /** Its nice value (of a process's stat: its main thread's). */
  nice: number;
}

/** `/proc` counts times in USER_HZ: 100 per second, whatever the kernel's HZ (alpha's 1024 aside). */
export const USER_HZ = 100;

/** Swap file or device paths from `/proc/swaps`. */
export function parseSwaps(text: string): string[] {
  return text.split("\n").slice(1).map((l) => l.trim()).filter((l) => l !== "").map((l) =>
    unescapeOctal(l.split(/\s+/)[0])
  );
}

/** Entries of `/etc/crypttab`; comments and blank lines are skipped. */
export function parseCrypttab(text: string): CrypttabEntry[] {
  const out: CrypttabEntry[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [name, device = "", key, opts] = line.split(/\s+/);
    const options: Record<string, string | true> = {};
    for (const o of (opts ?? "").split(",")) {
      if (o === "") continue;
      const eq = o.indexOf("=");
      if (eq < 0) options[o] = true;
      else options[o.slice(0, eq)] = o.slice(eq + 1);
    }
    const entry: CrypttabEntry = { name, device, options };
    if (key !== undefined && key !== "none" && key !== "-" && key !== "") entry.keyFile = key;
    out.push(entry);
  }
  return out;
}

/** `/proc/meminfo` values in KiB. */
export function parseMeminfo(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^(\S+):\s+(\d+)/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** `/proc/keys`: `id flags usage timeout perm uid gid type description: summary`. */
export function parseProcKeys(text: string): ProcKey[] {
  const out: ProcKey[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 9) continue;
    const rest = f.slice(8).join(" ");
    // The summary follows the first ": " (descriptions like "cryptsetup:<uuid>-d0" contain bare colons).
    const sep = rest.indexOf(": ");
    out.push({ id: f[0], type: f[7], description: sep < 0 ? rest : rest.slice(0, sep) });
  }
  return out;
}

/** `/proc/<pid>/stat` text; the command name is taken up to the last ")", as it may contain any byte. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const rest = text.slice(close + 2).split(" ");
  return {
    pid: Number(text.slice(0, open).trim()),
    comm: text.slice(open + 1, close),
    state: rest[0],
    ppid: Number(rest[1]),
    flags: Number(rest[6]),
    cpuTicks: Number(rest[11]) + Number(rest[12]),
    startTicks: Number(rest[19]),
    nice: Number(rest[16]),
  };
}

/** Swap areas in use under `root`. */
export async function readSwaps(root = "/"): Promise<string[]> {
  return parseSwaps(await readOptional(root, "/proc/swaps"));
}
/** `/etc/crypttab` under `root`. */
export async function readCrypttab(root = "/"): Promise<CrypttabEntry[]> {
  return parseCrypttab(await readOptional(root, "/etc/crypttab"));
}
/** `/proc/meminfo` under `root`, in KiB. */
export async function readMeminfo(root = "/"): Promise<Record<string, number>> {
  return parseMeminfo(await readOptional(root, "/proc/meminfo"));
}
/** `/proc/keys` under `root` (root sees every key). */
export async function readProcKeys(root = "/"): Promise<ProcKey[]> {
  return parseProcKeys(await readOptional(root, "/proc/keys"));
}

/** CPU milliseconds (user + system) process `pid` has used so far; null when it is gone. */
export function cpuMsOf(pid: number): number | null {
  try {
    return parseStat(Deno.readTextFileSync(`/proc/${pid}/stat`)).cpuTicks * (1000 / USER_HZ);
  } catch {
    return null;
  }
}

/**
 * Milliseconds from this process's start to its runtime's time origin (`performance.now()` = 0): the runtime's own
 * start, before any of the program ran, and before it what ran in the process until it exec'd deno (a wrapper's
 * shell: /proc's start time is the fork's); ±10 ms (`/proc` counts in USER_HZ). Null where `/proc` is not mounted.
 */
export function runtimeStartMs(): number | null {
  try {
    const uptimeMs = uptimeS() * 1000;
    const startedMs = parseStat(Deno.readTextFileSync("/proc/self/stat")).startTicks * (1000 / USER_HZ);
    return Math.max(0, Math.round(uptimeMs - performance.now() - startedMs));
  } catch {
    return null;
  }
}

/** Seconds since boot, time asleep included (/proc/uptime's first field, CLOCK_BOOTTIME cut to 1/100 s). */
export function uptimeS(): number {
  return Number(Deno.readTextFileSync("/proc/uptime").split(" ")[0]);
}

/** This process's main thread's nice value. */
export function niceOfSelf(): number {
  return parseStat(Deno.readTextFileSync("/proc/self/stat")).nice;
}

/**
 * Parsed `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) at `path`, or null when the process is gone. Read
 * synchronously: it is kernel memory, never a wait, and the freezer reads one per process (an async read cost ~5×
 * the read itself, and each is a point where thawed processes take the only CPU).
 */
export function readStat(path: string): ProcStat | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return null;
  }
  return parseStat(text);
}

/**
 * "PID START" for process `pid` (START: its start in ticks after boot), or null when it is gone. A pid alone may
 * name whatever process gets the number later; with its start it names one process only.
 */
export function processIdentity(pid: number): string | null {
  const st = readStat(`/proc/${pid}/stat`);
  return st ? `${pid} ${st.startTicks}` : null;
}

/**
 * The pid an identity ({@linkcode processIdentity}) names while that very process runs; else null: gone, its pid
 * taken by another since, or dead and not yet reaped (a zombie keeps its stat). packaging/cryptsleep-request's
 * `alive` is the same test in shell.
 */
export function livingPid(identity: string): number | null {
  const m = /^(\d+) (\d+)$/.exec(identity.trim());
  if (!m) return null;
  const st = readStat(`/proc/${m[1]}/stat`);
  return st && st.startTicks === Number(m[2]) && !/^[ZX]$/.test(st.state) ? Number(m[1]) : null;
}

/**
 * @module
 * The pure half of `deno task soak` (scripts/soak.ts drives the guest): its options, the shell of the loads that run
 * in the guest during the whole soak (appenders that print `ACK <writer> <n>` on the console only once the record's
 * fsync returned, a reader walking the tree), the parse of what they print, the check that every ACKed record is in
 * its file, one row per cycle from `cryptsleep status --json`, the summary with its verdict, the Markdown table, and
 * a plot of each phase's time across the cycles (SVG).
 *
 * ```ts
 * import { LoadLog, missingRecords, parseSoakRuns } from "./soak_lib.ts";
 * const [options] = parseSoakRuns(["--cycles", "20", "--kernel", "6.1", "--layout", "root+data"]);
 * const log = new LoadLog();
 * log.feed("ACK root 1\nACK root 2\nWALK reader 1\n");
 * console.log(options.cycles, missingRecords(log.acked("root"), [[1, 1]])); // 20 [2]
 * ```
 */

import type { TimelineJSON } from "../cycle/timeline.ts";
import { escapeXml, formatBytes, formatInt, svgDocument } from "./bench_lib.ts";

/**
 * The volumes a soak runs with: the LUKS root alone, or the root and a volume on the data disk mounted on /mnt/data —
 * LUKS2 (`root+data`), LVM on LUKS2 with a home LV and a swap LV in use, LUKS2 on an LVM LV, LUKS1, LUKS2 with its
 * detached header a file on the root, btrfs on LUKS2 (scripts/soak_layouts.ts sets each up in the guest).
 */
export type Layout = "root" | "root+data" | "lvm-on-luks" | "luks-on-lvm" | "luks1" | "detached-header" | "btrfs";
/** Every layout `--layout` takes. */
export const LAYOUTS: readonly Layout[] = [
  "root",
  "root+data",
  "lvm-on-luks",
  "luks-on-lvm",
  "luks1",
  "detached-header",
  "btrfs",
];

/** What `deno task soak` was asked to do. */
export interface SoakOptions {
  /** Full cycles to run. */
  cycles: number;
  /** Kernel selector of scripts/guest/build.ts ("6.1", "6.12", "6.18", "7.3"). */
  kernel: string;
  /** Which volumes are open (and locked by each cycle). */
  layout: Layout;
  /** RAM is dumped and searched for the volume keys every this many cycles, and always at the first and last. */
  dumpEvery: number;
  /** Where the JSON and the SVG go; null: nowhere (the VM test). */
  out: string | null;
  /** The guest's virtual CPUs (a laptop has several: the kernel takes the others offline and back at each S3). */
  cpus: number;
}

/** The usage line of `deno task soak`. */
export const USAGE = "usage: deno task soak -- --cycles N [--kernel 6.1|6.12|6.18|7.3[,…]|all] " +
  `[--layout ${LAYOUTS.join("|")}[,…]|all] [--dump-every k] [--cpus n] [--out dir]`;

function count(name: string, value: string, min: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new Error(`${name} ${value}: want a count ≥ ${min}`);
  }
  return n;
}

/**
 * Parses the arguments (a `--` that `deno task` passes on is skipped) into the soaks to run, one per kernel × layout:
 * `--kernel` and `--layout` each take one, a comma-separated list or `all` (the matrix). Defaults: kernel
 * `$CRYPTSLEEP_KERNEL` or 6.1, layout root+data, a dump every 10 cycles, 1 vCPU, out `defaultOut` (a folder
 * `<kernel>-<layout>` in it for each soak when there are several). Throws on anything unknown or malformed.
 */
export function parseSoakRuns(
  args: string[],
  defaults: { kernel?: string; out?: string; kernels?: readonly string[] } = {},
): SoakOptions[] {
  let kernels = [defaults.kernel ?? "6.1"];
  let layouts: Layout[] = ["root+data"];
  let dumpEvery = 10;
  let cpus = 1;
  let out: string | null = defaults.out ?? "dist/soak";
  let cycles: number | null = null;
  const list = <T extends string>(name: string, v: string, known: readonly T[]): T[] => {
    const items = v === "all" ? [...known] : v.split(",");
    for (const item of items) {
      if (!known.includes(item as T)) throw new Error(`${name} ${item}: one of ${known.join(", ")}, or all`);
    }
    return [...new Set(items)] as T[];
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") continue;
    const eq = a.indexOf("=");
    const [name, inline] = a.startsWith("--") && eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, null];
    const value = (): string => {
      if (inline !== null) return inline;
      const v = args[++i];
      if (v === undefined || v.startsWith("--")) throw new Error(`${name} wants a value`);
      return v;
    };
    switch (name) {
      case "--cycles":
        cycles = count(name, value(), 1);
        break;
      case "--kernel": {
        const v = value();
        kernels = defaults.kernels ? list(name, v, defaults.kernels) : v.split(",");
        break;
      }
      case "--layout":
        layouts = list(name, value(), LAYOUTS);
        break;
      case "--dump-every":
        dumpEvery = count(name, value(), 1);
        break;
      case "--cpus":
        cpus = count(name, value(), 1);
        break;
      case "--out":
        out = value();
        break;
      default:
        throw new Error(`unknown argument ${a}`);
    }
  }
  if (cycles === null) throw new Error("--cycles is required");
  const several = kernels.length * layouts.length > 1;
  return kernels.flatMap((kernel) =>
    layouts.map((layout) => ({
      cycles: cycles!,
      kernel,
      layout,
      dumpEvery,
      cpus,
      out: out !== null && several ? `${out}/${kernel}-${layout}` : out,
    }))
  );
}

/** How many CPUs a kernel CPU list names (`0-3,6`: 5); NaN for one that is not a list. */
export function cpuCount(list: string): number {
  let n = 0;
  for (const range of list.trim().split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(range);
    if (!m || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) return NaN;
    n += m[2] === undefined ? 1 : Number(m[2]) - Number(m[1]) + 1;
  }
  return n;
}

/** Whether cycle `i` (1-based) of `n` dumps RAM: the first, the last, and every `every`-th. */
export function isDumpCycle(i: number, n: number, every: number): boolean {
  return i === 1 || i === n || i % every === 0;
}

/** The text of each record after its writer and number: a line cut short or garbled does not match it. */
export const PAYLOAD = "0123456789abcdef".repeat(4);

/** Seconds each appender waits between two records (fork + dd + fsync under TCG take longer still). */
export const WRITER_PAUSE_S = 0.05;
/** Seconds the reader waits between two walks of the tree. */
export const READER_PAUSE_S = 1;

/**
 * The blocks (O_DIRECT) or pages (mmap) a block writer's file holds records in, after a block 0 left as a hole:
 * record n goes to slot `(n - 1) % SLOTS + 1`, so a long soak rewrites its file (8 MiB) instead of filling the disk
 * (a 200-cycle soak wrote 40 MB of blocks and filled the 48 MiB data volume at cycle 64). A record overwritten by a
 * later one in its slot is not lost ({@linkcode missingRecords}).
 */
export const SLOTS = 2048;
/** Seconds the mmap writer waits between two records: a deno process, dearer per record under TCG than dd. */
export const MMAP_PAUSE_S = 0.2;

/**
 * The mmap writer, run by the guest's deno (`deno run -A mmap.js STATE CONSOLE NAME FILE`): maps FILE shared and,
 * for record n, grows FILE to cover its slot's page ({@linkcode SLOTS}), writes `NAME n PAYLOAD` at the start of
 * that page (the rest NUL, as the O_DIRECT writer's blocks) and msync(MS_SYNC)s it; only once msync returned 0 it
 * prints `ACK NAME n` to CONSOLE (`ERR NAME n CALL errno E` else). Stops when STATE/stop exists, printing `END NAME n`.
 */
export const MMAP_JS = `// cryptsleep soak load: see scripts/soak_lib.ts (MMAP_JS)
const [state, consolePath, name, file] = Deno.args;
const libc = Deno.dlopen("libc.so.6", {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  msync: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
});
// read at once after the failed call: what it set
const errno = () => new Deno.UnsafePointerView(libc.symbols.__errno_location()).getInt32();
const say = (line) => Deno.writeTextFileSync(consolePath, line + "\\n", { append: true });
const size = ${(SLOTS + 1) * 4096};
Deno.mkdirSync(file.slice(0, file.lastIndexOf("/")), { recursive: true });
const fd = libc.symbols.open(new TextEncoder().encode(file + "\\0"), 0o1102 /* O_RDWR|O_CREAT|O_TRUNC */, 0o644);
if (fd < 0) throw new Error("open " + file);
const base = libc.symbols.mmap(null, BigInt(size), 3 /* PROT_READ|PROT_WRITE */, 1 /* MAP_SHARED */, fd, 0n);
if (Deno.UnsafePointer.value(base) === 0xffffffffffffffffn) throw new Error("mmap " + file);
const pages = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(base, size));
let n = 0;
const stop = () => { try { Deno.statSync(state + "/stop"); return true; } catch { return false; } };
let grown = 4096;
while (!stop()) {
  n++;
  const at = ((n - 1) % ${SLOTS} + 1) * 4096;
  // a page past the file's end would be SIGBUS: the file grows first
  if (at + 4096 > grown) {
    if (libc.symbols.ftruncate(fd, BigInt(at + 4096)) !== 0) {
      say("ERR " + name + " " + n + " ftruncate errno " + errno());
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    grown = at + 4096;
  }
  pages.fill(0, at, at + 4096);
  pages.set(new TextEncoder().encode(name + " " + n + " ${PAYLOAD}\\n"), at);
  const page = Deno.UnsafePointer.offset(base, at);
  if (libc.symbols.msync(page, 4096n, 4 /* MS_SYNC */) === 0) say("ACK " + name + " " + n);
  else say("ERR " + name + " " + n + " msync errno " + errno());
  await new Promise((r) => setTimeout(r, ${MMAP_PAUSE_S * 1000}));
}
say("END " + name + " " + n);
`;

/**
 * The loads, one shell script for every kind (busybox ash and dash alike):
 *
 *     sh load.sh STATE CONSOLE writer NAME FILE
 *     sh load.sh STATE CONSOLE direct NAME FILE
 *     sh load.sh STATE CONSOLE mmap NAME FILE     (runs STATE/mmap.js: MMAP_JS)
 *     sh load.sh STATE CONSOLE reader NAME TREE...
 *
 * A writer appends `NAME n PAYLOAD` to FILE with `dd oflag=append conv=fsync` (one write, then fsync) and only once
 * dd returned prints `ACK NAME n` to CONSOLE (`ERR NAME n WHY` when dd failed, WHY its last line of stderr: that
 * record is never ACKed). The reader
 * reads every file under 256 KiB of the TREEs (one filesystem each) and prints `WALK NAME n` (`ERR NAME n WHY` on an
 * error other than a file that went away). Both stop when STATE/stop exists, printing `END NAME n`.
 */
export const LOAD_SH = `#!/bin/sh
# cryptsleep soak load: see scripts/soak_lib.ts (LOAD_SH)
state=$1; console=$2; kind=$3; name=$4; shift 4
n=0
# writes record n with the command "$1" (its stdin: the record), ACKed only once it returned 0
writes() {
  mkdir -p "$(dirname "$f")"
  while [ ! -e "$state/stop" ]; do
    n=$((n + 1))
    if printf '%s %d %s\\n' "$name" "$n" ${PAYLOAD} | "$1" 2> "$state/$name.dd"; then
      echo "ACK $name $n" >> "$console"
    else
      # dd's own words carry the errno's text (ENOSPC, EIO): the test says which
      echo "ERR $name $n $(tail -n 1 "$state/$name.dd" | cut -c 1-160)" >> "$console"
      sleep 1
    fi
    sleep ${WRITER_PAUSE_S}
  done
}
# one write appended, then fsync
append() { dd of="$f" oflag=append conv=notrunc,fsync; }
# record n in its slot's block (SLOTS), O_DIRECT: past the page cache, then fsync; the rest of the block is NULs
direct() { dd of="$f" bs=4096 seek=$(( (n - 1) % ${SLOTS} + 1 )) oflag=direct conv=notrunc,sync,fsync; }
if [ "$kind" = writer ]; then
  f=$1
  writes append
elif [ "$kind" = direct ]; then
  f=$1
  writes direct
elif [ "$kind" = mmap ]; then
  exec "\${DENO:-deno}" run -A --no-config --no-lock "$state/mmap.js" "$state" "$console" "$name" "$1"
else
  while [ ! -e "$state/stop" ]; do
    n=$((n + 1))
    find "$@" -xdev -type f -size -256k -exec cat {} + > /dev/null 2> "$state/$name.err"
    if grep -v 'No such file' "$state/$name.err" | grep -q .; then
      echo "ERR $name $n $(grep -v 'No such file' "$state/$name.err" | head -n 1 | cut -c 1-160)" >> "$console"
      cat "$state/$name.err" >> "$state/$name.errors"
    else
      echo "WALK $name $n" >> "$console"
    fi
    sleep ${READER_PAUSE_S}
  done
fi
echo "END $name $n" >> "$console"
`;

/**
 * Shell that prints what FILE holds of writer NAME's records: `REC NAME lines=L bad=B` (B lines that are not
 * `NAME n PAYLOAD`), `DUP NAME D` (numbers found twice) and `RANGES NAME a-b,c-d` (the numbers found, as runs), or
 * `REC NAME missing` when there is no FILE. `tmp`: a scratch file.
 */
export function recordsScript(name: string, file: string, tmp: string, direct = false): string {
  const re = `^${name} [0-9]+ ${PAYLOAD}$`;
  // the O_DIRECT writer's file: a record per 4096-byte block, NUL-padded (block 0 a hole): read without the NULs
  const text = direct ? `${tmp}.txt` : file;
  return [
    `if [ ! -f ${file} ]; then echo "REC ${name} missing"; else`,
    ...(direct ? [`tr -d '\\000' < ${file} > ${text}`] : []),
    `echo "REC ${name} lines=$(wc -l < ${text}) bad=$(grep -cvE '${re}' ${text})"`,
    `grep -E '${re}' ${text} | cut -d' ' -f2 | sort -n > ${tmp}`,
    `echo "DUP ${name} $(uniq -d ${tmp} | wc -l)"`,
    `uniq ${tmp} | awk 'NR==1{s=$1;e=$1;next} $1==e+1{e=$1;next} {r=r s "-" e ","; s=$1; e=$1} ` +
    `END{if (NR) r=r s "-" e; print "RANGES ${name} " r}'`,
    `rm -f ${tmp}${direct ? ` ${text}` : ""}; fi`,
  ].join("\n");
}

/** What a record file holds, from {@linkcode recordsScript}'s output; null when the file is missing. */
export interface RecordFile {
  /** Lines in the file. */
  lines: number;
  /** Lines that are not a whole record of this writer. */
  bad: number;
  /** Record numbers found more than once. */
  dups: number;
  /** The record numbers found, as inclusive runs, ascending. */
  ranges: [number, number][];
}

/** Parses {@linkcode recordsScript}'s output for writer `name`; null when the file is missing; throws on garbage. */
export function parseRecords(out: string, name: string): RecordFile | null {
  const esc = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  if (new RegExp(`^REC ${esc} missing$`, "m").test(out)) return null;
  const rec = new RegExp(`^REC ${esc} lines=\\s*(\\d+) bad=\\s*(\\d+)$`, "m").exec(out);
  const dup = new RegExp(`^DUP ${esc}\\s+(\\d+)$`, "m").exec(out);
  const runs = new RegExp(`^RANGES ${esc} ?([\\d,-]*)$`, "m").exec(out);
  if (!rec || !dup || !runs) throw new Error(`no record summary of ${name} in:\n${out}`);
  const ranges = runs[1].split(",").filter(Boolean).map((r) => {
    const [a, b] = r.split("-").map(Number);
    return [a, b] as [number, number];
  });
  return { lines: Number(rec[1]), bad: Number(rec[2]), dups: Number(dup[1]), ranges };
}

/**
 * The numbers of `acked` (ascending) that no run of `ranges` (ascending) holds: records ACKed, then lost. With
 * `slots` (a block writer's file, {@linkcode SLOTS}), one whose slot holds a later record (n + k·slots) was
 * overwritten, not lost; one whose slot holds an older record or nothing was lost.
 */
export function missingRecords(acked: number[], ranges: [number, number][], slots?: number): number[] {
  const missing: number[] = [];
  let r = 0;
  for (const n of acked) {
    while (r < ranges.length && ranges[r][1] < n) r++;
    if (r >= ranges.length || n < ranges[r][0]) missing.push(n);
  }
  if (!slots || !missing.length) return missing;
  // the newest record found in each slot
  const newest = new Map<number, number>();
  for (const [a, b] of ranges) {
    for (let m = Math.max(a, b - slots + 1); m <= b; m++) {
      const slot = (m - 1) % slots;
      if ((newest.get(slot) ?? 0) < m) newest.set(slot, m);
    }
  }
  return missing.filter((n) => (newest.get((n - 1) % slots) ?? 0) <= n);
}

/** How many numbers the runs hold. */
export function rangeCount(ranges: [number, number][]): number {
  return ranges.reduce((sum, [a, b]) => sum + b - a + 1, 0);
}

/** A kernel log line as the console shows it (they come in between other output, even mid-line). */
const KERNEL_LINE = /\[\s*\d+\.\d{6}\] [^\n]*\n/g;
/** A line a load printed. */
const LOAD_LINE = /(ACK|WALK|END|ERR) ([A-Za-z0-9_-]+) (\d+)\n|ERR ([A-Za-z0-9_-]+) (\d+) ([^\n]*)\n/g;

/** `text` without the lines the loads print (for output read over the console they share). */
export function stripLoadLines(text: string): string {
  return text.replace(LOAD_LINE, "");
}

/**
 * What the loads printed on the console, fed in pieces as it arrives (only up to the last complete line is
 * taken: {@linkcode LoadLog.feed} returns how much it took). Kernel log lines are cut out first, as they can come
 * in the middle of a load's line; a line mangled otherwise is not counted, so a record can only be missed by the
 * check, never counted lost wrongly.
 */
export class LoadLog {
  readonly #acks = new Map<string, number[]>();
  readonly #walks = new Map<string, number>();
  readonly #ended = new Map<string, number>();
  /** `ERR name n` lines, as printed. */
  readonly errors: string[] = [];

  /** Takes the complete lines of `text`; returns how many characters it took (up to its last newline). */
  feed(text: string): number {
    const end = text.lastIndexOf("\n") + 1;
    const lines = text.slice(0, end).replace(KERNEL_LINE, "");
    for (const m of lines.matchAll(LOAD_LINE)) {
      // an ERR line may say why (only ERR: a tail on another line is garbled, not counted)
      const [kind, name, num, why] = m[1] ? [m[1], m[2], m[3], ""] : ["ERR", m[4], m[5], m[6]];
      const n = Number(num);
      if (kind === "ACK") {
        const list = this.#acks.get(name) ?? [];
        if (!list.length || list[list.length - 1] < n) list.push(n);
        else if (!list.includes(n)) list.splice(list.findIndex((x) => x > n), 0, n);
        this.#acks.set(name, list);
      } else if (kind === "WALK") this.#walks.set(name, Math.max(this.#walks.get(name) ?? 0, n));
      else if (kind === "END") this.#ended.set(name, n);
      else this.errors.push(`ERR ${name} ${n}` + (why ? ` ${why}` : ""));
    }
    return end;
  }

  /** The record numbers writer `name` ACKed, ascending. */
  acked(name: string): number[] {
    return [...(this.#acks.get(name) ?? [])];
  }

  /** How many walks reader `name` finished. */
  walks(name: string): number {
    return this.#walks.get(name) ?? 0;
  }

  /** Whether load `name` printed its END line. */
  ended(name: string): boolean {
    return this.#ended.has(name);
  }

  /** Progress so far: ACKs per writer and walks per reader. */
  progress(): Record<string, number> {
    const p: Record<string, number> = {};
    for (const [k, v] of this.#acks) p[k] = v.length;
    for (const [k, v] of this.#walks) p[k] = v;
    return p;
  }
}

/** Kernel log lines that tell of an I/O or filesystem error. */
export const IO_ERROR =
  /I\/O error|blk_update_request|print_req_error|EXT4-fs error|EXT4-fs \(\S+\): (?:error|Remounting)|JBD2: .*(?:error|abort)|Aborting journal|critical (?:medium|target) error|Remounting filesystem read-only|end_request: I\/O/i;

/** The lines of `dmesg` output (or console text) that match {@linkcode IO_ERROR}, with the load lines cut out. */
export function ioErrorLines(text: string): string[] {
  return stripLoadLines(text).split("\n").map((l) => l.trim()).filter((l) => IO_ERROR.test(l));
}

/** One cycle of the soak, as measured on the host and read from the report. */
export interface CycleRow {
  /** 1-based. */
  cycle: number;
  /** QEMU's SUSPEND event came (the guest reached S3). */
  s3: boolean;
  /** Exit code of `cryptsleep suspend`; null when it never came (the soak stopped there). */
  exitCode: number | null;
  /** The report's `ok`; null without a report. */
  reportOk: boolean | null;
  /** The report's startedAt (guest clock): a cycle that wrote none leaves the previous cycle's in place. */
  reportStartedAt: string | null;
  /** Host ms from typing the command to SUSPEND; null without S3. */
  toSuspendMs: number | null;
  /** Host ms from the command typed to its exit code on the console. */
  cycleMs: number | null;
  /** Passphrase prompts answered. */
  prompts: number;
  /** The freeze phase's ms; null when it did not run. */
  freezeMs: number | null;
  /** Each phase's ms (summed when a phase ran more than once), in the order they ran. */
  phases: Record<string, number>;
  /** Agent's VmHWM (the report's peakRssKiB) in bytes. */
  peakRssBytes: number | null;
  /** The report's ramHeldBytes: what agent and supervisor held, their files counted once. */
  ramHeldBytes: number | null;
  /** The report's pinnedBytes. */
  pinnedBytes: number | null;
  /** The report's ownCgroupMemoryPeakBytes. */
  cgroupPeakBytes: number | null;
  /** Key half hits per needle while asleep; null when RAM was not dumped this cycle. */
  keyHits: number[] | null;
  /** Kernel log lines of I/O errors first seen after this cycle. */
  ioErrors: string[];
  /** The loads' progress when the cycle ended (ACKs per writer, walks per reader). */
  loads: Record<string, number>;
  /** What went wrong on the host side (a timeout), if anything. */
  error?: string;
  /** A failed cycle's console from its command on, the loads' lines cut, its middle too when long. */
  tail?: string;
  /** CPUs online after the cycle (/sys/devices/system/cpu/online), when fewer than at boot: the kernel lost one. */
  cpusLost?: string;
}

function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** The report's part of a row: phase times, the freeze, the memory facts. */
export function reportFields(
  report: TimelineJSON | null,
): Pick<
  CycleRow,
  | "reportOk"
  | "reportStartedAt"
  | "freezeMs"
  | "phases"
  | "peakRssBytes"
  | "ramHeldBytes"
  | "pinnedBytes"
  | "cgroupPeakBytes"
> {
  const phases: Record<string, number> = {};
  for (const p of report?.phases ?? []) phases[p.name] = (phases[p.name] ?? 0) + p.durationMs;
  const facts = report?.facts ?? {};
  const rss = num(facts.peakRssKiB);
  return {
    reportOk: report ? report.ok : null,
    reportStartedAt: report?.startedAt ?? null,
    freezeMs: "freeze" in phases ? phases.freeze : null,
    phases,
    peakRssBytes: rss === null ? null : rss * 1024,
    ramHeldBytes: num(facts.ramHeldBytes),
    pinnedBytes: num(facts.pinnedBytes),
    cgroupPeakBytes: num(facts.ownCgroupMemoryPeakBytes),
  };
}

/** How many of a failed cycle's first and last console lines its row keeps (the kernel's stacks fill the end). */
export const HEAD_LINES = 60;
export const TAIL_LINES = 200;

/**
 * The first {@linkcode HEAD_LINES} and last {@linkcode TAIL_LINES} lines of `text`, without the loads' lines or
 * carriage returns.
 */
export function consoleTail(text: string): string {
  const lines = stripLoadLines(text.replaceAll("\r", "")).split("\n");
  const cut = lines.length - HEAD_LINES - TAIL_LINES;
  const kept = cut > 0 ? [...lines.slice(0, HEAD_LINES), `… ${cut} lines …`, ...lines.slice(-TAIL_LINES)] : lines;
  return kept.join("\n").trim();
}

/** A cycle failed: no exit code, a non-zero one, or no S3. */
export function cycleFailed(row: CycleRow): boolean {
  return row.exitCode !== 0 || !row.s3 || row.cpusLost !== undefined;
}

/** The record check at the end, per writer. */
export interface RecordCheck {
  writer: string;
  /** Records ACKed on the console. */
  acked: number;
  /** What the file holds; null when it is missing. */
  file: RecordFile | null;
  /** ACKed records not in the file (the first 50). */
  lost: number[];
  /** How many ACKed records are not in the file. */
  lostCount: number;
}

/** What the soak saw besides the cycles. */
export interface EndChecks {
  /** Per writer; null when the check could not run (the guest hung). */
  records: RecordCheck[] | null;
  /** Every kernel log line of an I/O error seen during the soak. */
  ioErrors: string[];
  /** `ERR` lines of the loads. */
  loadErrors: string[];
  /** Loads that made no progress after the last cycle (or did not stop when asked). */
  loadsStalled: string[];
  /** Walks of each reader. */
  walks: Record<string, number>;
  /** Hits per key half in a dump before the first cycle, volumes open: each must be found, or 0 means nothing. */
  controlHits: number[] | null;
}

/** A memory measure at the first and the last cycle that reported it. */
export interface Growth {
  first: number;
  last: number;
  firstCycle: number;
  lastCycle: number;
}

/** The soak in a few numbers, and why it failed. */
export interface SoakSummary {
  /** Cycles asked for. */
  cyclesAsked: number;
  /** Cycles run (fewer when one hung). */
  cycles: number;
  s3Reached: number;
  /** Cycles with a non-zero or no exit code, or no S3. */
  failures: number[];
  maxFreezeMs: number | null;
  maxFreezeCycle: number | null;
  acked: number;
  /** ACKed and missing from the files; null: not checked. */
  recordsLost: number | null;
  badLines: number;
  dupRecords: number;
  /** Sum of every hit of every key half over the dumps. */
  keyHits: number;
  /** Cycles whose RAM was dumped. */
  dumps: number[];
  peakRss: Growth | null;
  ramHeld: Growth | null;
  pinned: Growth | null;
  cgroupPeak: Growth | null;
  ioErrors: number;
  loadErrors: number;
  loadsStalled: string[];
  walks: Record<string, number>;
  /** Hits per key half with the volumes open, before the first cycle. */
  controlHits: number[] | null;
  /** Empty: passed. */
  reasons: string[];
  /** What each failed cycle's console showed ({@linkcode CycleRow.tail}). */
  tails: { cycle: number; text: string }[];
}

function growth(rows: CycleRow[], pick: (r: CycleRow) => number | null): Growth | null {
  const have = rows.filter((r) => pick(r) !== null);
  if (!have.length) return null;
  const [a, b] = [have[0], have[have.length - 1]];
  return { first: pick(a)!, last: pick(b)!, firstCycle: a.cycle, lastCycle: b.cycle };
}

/** Sums the rows and the end checks up; `reasons` says what makes the soak fail. */
export function summarize(rows: CycleRow[], cyclesAsked: number, end: EndChecks): SoakSummary {
  const failures = rows.filter(cycleFailed).map((r) => r.cycle);
  let maxFreezeMs: number | null = null;
  let maxFreezeCycle: number | null = null;
  for (const r of rows) {
    if (r.freezeMs !== null && (maxFreezeMs === null || r.freezeMs > maxFreezeMs)) {
      [maxFreezeMs, maxFreezeCycle] = [r.freezeMs, r.cycle];
    }
  }
  const dumped = rows.filter((r) => r.keyHits !== null);
  const keyHits = dumped.reduce((s, r) => s + r.keyHits!.reduce((a, b) => a + b, 0), 0);
  const records = end.records;
  const recordsLost = records === null ? null : records.reduce((s, c) => s + c.lostCount, 0);
  const badLines = (records ?? []).reduce((s, c) => s + (c.file?.bad ?? 0), 0);
  const dupRecords = (records ?? []).reduce((s, c) => s + (c.file?.dups ?? 0), 0);
  const reasons: string[] = [];
  if (rows.length < cyclesAsked) reasons.push(`only ${rows.length} of ${cyclesAsked} cycles ran`);
  if (failures.length) reasons.push(`${failures.length} cycle(s) failed: ${failures.join(", ")}`);
  for (const r of rows) if (r.error) reasons.push(`cycle ${r.cycle}: ${r.error}`);
  if (recordsLost === null) reasons.push("the records could not be checked");
  else if (recordsLost > 0) reasons.push(`${recordsLost} ACKed record(s) lost`);
  const missingFiles = (records ?? []).filter((c) => c.file === null && c.acked > 0).map((c) => c.writer);
  if (missingFiles.length) reasons.push(`record file(s) missing: ${missingFiles.join(", ")}`);
  if (badLines) reasons.push(`${badLines} garbled line(s) in the record files`);
  if (dupRecords) reasons.push(`${dupRecords} record(s) written twice`);
  if (keyHits) reasons.push(`${keyHits} key half hit(s) in RAM while asleep`);
  if (!dumped.length && rows.length) reasons.push("RAM was never dumped");
  if (end.controlHits && end.controlHits.some((h) => h === 0)) {
    reasons.push(`the control found not every key half with the volumes open (${end.controlHits.join("/")})`);
  }
  if (end.ioErrors.length) reasons.push(`${end.ioErrors.length} I/O error line(s) in the kernel log`);
  if (end.loadErrors.length) {
    reasons.push(`${end.loadErrors.length} load error(s): ${end.loadErrors.slice(0, 5).join("; ")}`);
  }
  if (end.loadsStalled.length) reasons.push(`load(s) stalled: ${end.loadsStalled.join(", ")}`);
  return {
    cyclesAsked,
    cycles: rows.length,
    s3Reached: rows.filter((r) => r.s3).length,
    failures,
    maxFreezeMs,
    maxFreezeCycle,
    acked: (records ?? []).reduce((s, c) => s + c.acked, 0),
    recordsLost,
    badLines,
    dupRecords,
    keyHits,
    dumps: dumped.map((r) => r.cycle),
    peakRss: growth(rows, (r) => r.peakRssBytes),
    ramHeld: growth(rows, (r) => r.ramHeldBytes),
    pinned: growth(rows, (r) => r.pinnedBytes),
    cgroupPeak: growth(rows, (r) => r.cgroupPeakBytes),
    ioErrors: end.ioErrors.length,
    loadErrors: end.loadErrors.length,
    loadsStalled: end.loadsStalled,
    walks: end.walks,
    controlHits: end.controlHits,
    reasons,
    tails: rows.filter((r) => r.tail && cycleFailed(r)).map((r) => ({ cycle: r.cycle, text: r.tail! })),
  };
}

function signedBytes(n: number): string {
  return `${n < 0 ? "−" : "+"}${formatBytes(Math.abs(n))}`;
}

function growthCell(g: Growth | null): string {
  if (!g) return "not in the report";
  const d = g.last - g.first;
  const pct = g.first > 0 ? ` (${d < 0 ? "−" : "+"}${(Math.abs(d) / g.first * 100).toFixed(1)}%)` : "";
  return `${formatBytes(g.first)} → ${formatBytes(g.last)}: ${
    signedBytes(d)
  }${pct} (cycle ${g.firstCycle} → ${g.lastCycle})`;
}

function list(xs: number[], max = 12): string {
  return xs.length > max ? `${xs.slice(0, max).join(", ")}, …` : xs.join(", ");
}

/** The Markdown table of the soak, then PASS or FAIL with its reasons. */
export function soakTable(s: SoakSummary, title: string, records: RecordCheck[] | null): string {
  const perWriter = (records ?? []).map((c) => `${c.writer} ${formatInt(c.acked)}`).join(", ");
  const lostDetail = (records ?? []).filter((c) => c.lostCount).map((c) => `${c.writer}: ${list(c.lost)}`);
  const rows: [string, string][] = [
    ["cycles", s.cycles === s.cyclesAsked ? `${s.cycles}` : `${s.cycles} of ${s.cyclesAsked}`],
    ["S3 reached (QMP SUSPEND)", `${s.s3Reached} / ${s.cycles}`],
    [
      "freeze failures (exit ≠ 0 or no S3)",
      s.failures.length ? `${s.failures.length} (cycle ${list(s.failures)})` : "0",
    ],
    [
      "max freeze phase",
      s.maxFreezeMs === null ? "–" : `${formatInt(s.maxFreezeMs)} ms (cycle ${s.maxFreezeCycle})`,
    ],
    [
      "records lost (ACKed after fsync, missing from the file)",
      s.recordsLost === null
        ? "not checked"
        : `${formatInt(s.recordsLost)} of ${formatInt(s.acked)} ACKed (${perWriter})${
          lostDetail.length ? `: ${lostDetail.join("; ")}` : ""
        }`,
    ],
    ["garbled / duplicate record lines", `${s.badLines} / ${s.dupRecords}`],
    [
      "key half hits while asleep",
      s.dumps.length ? `${s.keyHits} in ${s.dumps.length} dump(s) (cycle ${list(s.dumps)})` : "no dump",
    ],
    [
      "control: key half hits with the volumes open",
      s.controlHits ? `${s.controlHits.join(" / ")} (each > 0: the search finds the keys)` : "not run",
    ],
    ["agent peak RSS (VmHWM), first → last", growthCell(s.peakRss)],
    ["RAM held by agent + supervisor, first → last", growthCell(s.ramHeld)],
    ["pinned (mlocked files), first → last", growthCell(s.pinned)],
    ["own cgroup memory.peak, first → last", growthCell(s.cgroupPeak)],
    ["I/O errors in the kernel log", `${s.ioErrors}`],
    [
      "load errors / stalled loads",
      `${s.loadErrors} / ${s.loadsStalled.length ? s.loadsStalled.join(", ") : "none"}`,
    ],
    ["reader walks of the tree", Object.entries(s.walks).map(([k, v]) => `${k} ${formatInt(v)}`).join(", ") || "–"],
  ];
  return [
    `### ${title}`,
    "",
    "| measure | value |",
    "|---|---|",
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
    "",
    s.reasons.length ? `FAIL: ${s.reasons.join("; ")}` : "PASS",
    ...s.tails.flatMap((t) => ["", `cycle ${t.cycle}'s console (the loads' lines cut):`, "```", t.text, "```"]),
  ].join("\n");
}

/** Phase names in the order they first ran over the rows. */
export function rowPhaseNames(rows: CycleRow[]): string[] {
  const names: string[] = [];
  for (const r of rows) for (const n of Object.keys(r.phases)) if (!names.includes(n)) names.push(n);
  return names;
}

/**
 * Small multiples: one row per phase, its ms across the cycles as a line on a scale of its own (0 to its max),
 * min and max beside it; failed cycles marked red under the plots. A cycle without the phase breaks the line.
 */
export function svgPhaseLines(title: string, rows: CycleRow[]): string {
  const names = rowPhaseNames(rows);
  const left = Math.max(90, 8 + 7 * Math.max(0, ...names.map((n) => n.length)));
  const [width, plotH, gap, top] = [480, 26, 8, 40];
  const n = rows.length;
  const x = (i: number) => left + (n <= 1 ? width / 2 : (i / (n - 1)) * width);
  const out: string[] = [];
  let y = top;
  for (const name of names) {
    const values = rows.map((r) => (name in r.phases ? r.phases[name] : null));
    const have = values.filter((v): v is number => v !== null);
    const max = Math.max(1, ...have);
    const min = Math.min(...have);
    const py = (v: number) => y + plotH - (v / max) * plotH;
    out.push(
      `  <text x="${left - 8}" y="${y + plotH / 2 + 4}" text-anchor="end">${escapeXml(name)}</text>`,
      `  <rect x="${left}" y="${y}" width="${width}" height="${plotH}" fill="#f4f6f9"/>`,
    );
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) {
        out.push(`  <polyline fill="none" stroke="#4a7fb5" stroke-width="1.5" points="${run.join(" ")}"/>`);
      }
      // a point of its own, and every point while there are few enough cycles to tell them apart
      if (run.length === 1 || n <= 40) {
        for (const p of run) {
          const [cx, cy] = p.split(",");
          out.push(`  <circle cx="${cx}" cy="${cy}" r="2" fill="#4a7fb5"/>`);
        }
      }
      run = [];
    };
    values.forEach((v, i) => {
      if (v === null) return flush();
      run.push(`${x(i).toFixed(1)},${py(v).toFixed(1)}`);
    });
    flush();
    out.push(
      `  <text x="${left + width + 8}" y="${y + plotH / 2 + 4}">${
        have.length ? `${formatInt(min)}–${formatInt(max)} ms` : "–"
      }</text>`,
    );
    y += plotH + gap;
  }
  // the cycle axis: first and last, failed cycles in red
  out.push(
    `  <text x="${left}" y="${y + 12}" text-anchor="start">cycle ${rows[0]?.cycle ?? "–"}</text>`,
    `  <text x="${left + width}" y="${y + 12}" text-anchor="end">cycle ${rows[n - 1]?.cycle ?? "–"}</text>`,
  );
  rows.forEach((r, i) => {
    if (cycleFailed(r)) {
      out.push(`  <line x1="${x(i).toFixed(1)}" y1="${top}" x2="${x(i).toFixed(1)}" y2="${y}" stroke="#c0392b"/>`);
    }
  });
  y += 20;
  return svgDocument(title, left + width + 130, y + 6, out);
}

/** One soak of a matrix run: what it was, and its summary (null: it could not be set up, with why). */
export interface MatrixCell {
  kernel: string;
  layout: Layout;
  summary: SoakSummary | null;
  error?: string;
}

/** The matrix's table: a line per kernel × layout, what matters of each soak, and its verdict. */
export function matrixTable(cells: MatrixCell[]): string {
  const head = "| kernel | layout | cycles | S3 | failed cycles | records lost / ACKed | key hits | verdict |";
  const lines = cells.map(({ kernel, layout, summary: s, error }) => {
    if (!s) return `| ${kernel} | ${layout} | – | – | – | – | – | FAIL: ${error ?? "not run"} |`;
    const cycles = s.cycles === s.cyclesAsked ? `${s.cycles}` : `${s.cycles} of ${s.cyclesAsked}`;
    const lost = s.recordsLost === null ? "not checked" : `${formatInt(s.recordsLost)} / ${formatInt(s.acked)}`;
    return `| ${kernel} | ${layout} | ${cycles} | ${s.s3Reached} | ${s.failures.length} | ${lost} | ` +
      `${s.keyHits} in ${s.dumps.length} dump(s) | ${s.reasons.length ? `FAIL: ${s.reasons.join("; ")}` : "PASS"} |`;
  });
  const failed = cells.filter((c) => !c.summary || c.summary.reasons.length).length;
  return [
    head,
    "|---|---|--:|--:|--:|--:|--:|---|",
    ...lines,
    "",
    failed ? `FAIL (${failed} of ${cells.length})` : "PASS",
  ]
    .join("\n");
}

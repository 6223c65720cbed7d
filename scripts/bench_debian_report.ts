/**
 * @module
 * The pure half of `deno task bench --guest debian` (scripts/bench_debian.ts drives the guest): what one cycle
 * measured ({@linkcode ToolCycle}), the rows of the comparison (medians per tool — plain, Debian's
 * cryptsetup-suspend in its default mode and with its ramfs kept (`KEEP_INITRAMFS="true"`), cryptsleep — and
 * cryptsleep's ratios to plain, to Debian and to Debian with its ramfs kept), the Markdown table, the sentences on
 * where cryptsleep is behind either Debian mode, the note on the kept mode's first cycle, the plot's rows, and the
 * drop-in that puts Debian's wrapper on the serial console. A saved run from before the kept mode was benched reads
 * the same, its column all "–".
 *
 * ```ts
 * import { comparisonRows, markdownTable } from "./bench_debian_report.ts";
 * console.log(markdownTable(comparisonRows([])));
 * ```
 */

import type { TimelineJSON } from "../cycle/timeline.ts";
import {
  type BarRow,
  beforeSleepMs,
  formatBytes,
  formatInt,
  formatRatio,
  HOLDS_SLEEP,
  median,
  phaseMs,
  phaseNames,
  ratio,
} from "./bench_lib.ts";

/**
 * The four ways the guest suspends: no locking; Debian's cryptsetup-suspend in its default mode (it unpacks the
 * initramfs into a ramfs every cycle and unmounts it after); the same with `KEEP_INITRAMFS="true"` in
 * /etc/cryptsetup/suspend.conf (`debian-keep`: the ramfs stays mounted and later cycles use it instead of unpacking
 * again — the mode a user picks to make Debian's suspend faster); cryptsleep's drop-in; and cryptsleep in its kept
 * mode (`cryptsleep-kept`: `cryptsleep install --kept`, cryptsleep-kept.service running the cycles).
 */
export type Tool = "plain" | "debian" | "debian-keep" | "cryptsleep" | "cryptsleep-kept";
/** The order of every round. */
export const TOOLS: readonly Tool[] = ["plain", "debian", "debian-keep", "cryptsleep", "cryptsleep-kept"];
/** cryptsleep, one-shot or kept: the same report, phases and prompt. */
export const CRYPTSLEEP_TOOLS: readonly Tool[] = ["cryptsleep", "cryptsleep-kept"];
/** Debian's cryptsetup-suspend in either mode: the same wrapper, drop-in, prompt and console lines. */
export const DEBIAN_TOOLS: readonly Tool[] = ["debian", "debian-keep"];
/** The Debian mode cryptsleep's ratios and the sentences weigh it against. */
export type DebianMode = "debian" | "debian-keep";
/** Idle guest, or a writer appending and syncing on /home every 0.2 s. */
export type Load = "idle" | "loaded";
const LOADS: readonly Load[] = ["idle", "loaded"];
/** How the output names each tool. */
export const TOOL_NAMES: Record<Tool, string> = {
  plain: "plain",
  debian: "Debian",
  "debian-keep": "Debian, kept ramfs",
  cryptsleep: "cryptsleep",
  "cryptsleep-kept": "cryptsleep, kept",
};

/** Whether `tool` is cryptsleep, in either mode. */
export function isCryptsleep(tool: Tool): boolean {
  return CRYPTSLEEP_TOOLS.includes(tool);
}

/** Whether `tool` is Debian's cryptsetup-suspend, in either mode. */
export function isDebian(tool: Tool): boolean {
  return DEBIAN_TOOLS.includes(tool);
}

/** The tools that have cycles in `cycles`, in round order (a run saved before the kept mode has three). */
export function toolsIn(cycles: ToolCycle[]): Tool[] {
  return TOOLS.filter((t) => cycles.some((c) => c.tool === t));
}

/** One suspend cycle as the bench saw it: host wall-clock ms unless said; null where not measured. */
export interface ToolCycle {
  tool: Tool;
  load: Load;
  round: number;
  /** `systemctl suspend` typed → QMP SUSPEND. */
  toSuspendMs: number;
  /** The kernel's /sys/power/suspend_stats/success went up by one. */
  s3: boolean;
  /** Debian: request → its "Allocating and mlocking memory" and its "Sleeping..." on the serial console. */
  debianMarks: { allocMs: number; sleepingMs: number } | null;
  /** QMP system_wakeup → the passphrase prompt on the serial console. */
  wakeToPromptMs: number | null;
  /** The passphrase typed (with Enter) → the serial shell answers again. */
  enterToShellMs: number | null;
  /** QMP system_wakeup → the serial shell answers again. */
  wakeToShellMs: number;
  /** memory.peak of systemd-suspend.service's cgroup, read by a system-sleep post hook in that cgroup. */
  serviceMemoryPeakBytes: number | null;
  /** Bytes of the files in the tool's ramfs (Debian: du in a post hook; cryptsleep: its report). */
  ramfsBytes: number | null;
  /**
   * Debian, either mode: its wrapper used a ramfs that was already mounted when the cycle began (kept by an earlier
   * cycle), instead of unpacking the initramfs. Absent in runs saved before the kept mode was benched.
   */
  ramfsKept?: boolean | null;
  /** What the cycle left: after − before it, guest-wide, each sampled once exiting processes settled. */
  between: { usedBytes: number; usedAfterBytes?: number; tmpfsRamfsBytes: number; leftovers: number } | null;
  /** Loaded cycles: the writer's log grew after wake. */
  writerGoesOn: boolean | null;
  /** cryptsleep's report (`cryptsleep status --json`). */
  report: TimelineJSON | null;
  /** The kept mode: memory.current of cryptsleep-kept.service after the cycle, what it holds between cycles. */
  keptServiceBytes?: number | null;
}

/** One line of the comparison: what a cycle gives for it (null: not measured in that cycle). */
interface Measure {
  label: string;
  unit: "ms" | "bytes" | "count";
  /** The tools it applies to; the others show "–". */
  tools: readonly Tool[];
  value: (c: ToolCycle) => number | null;
  /** A yes/no per cycle, shown as yes-count/cycles instead of a median. */
  tally?: boolean;
  /** Only these loads (default both). */
  loads?: readonly Load[];
  /** Ratios make no sense on it (a sub-step of one tool, or a difference around zero). */
  noRatio?: boolean;
  /** The section it starts, if any. */
  section?: string;
}

/** A rendered row. */
export interface ComparisonRow {
  label: string;
  load: Load;
  unit: Measure["unit"];
  medians: Record<Tool, number | null>;
  cells: Record<Tool, string>;
  vsPlain: number | null;
  vsDebian: number | null;
  /** cryptsleep / Debian with its ramfs kept. */
  vsDebianKept: number | null;
  /** cryptsleep in its kept mode / Debian, and / Debian with its ramfs kept (absent: a run without it). */
  keptVsDebian?: number | null;
  keptVsDebianKept?: number | null;
  section?: string;
}

/** The tools that prompt and have a ramfs: all but plain. */
const LOCKING: readonly Tool[] = ["debian", "debian-keep", "cryptsleep", "cryptsleep-kept"];
const num = (v: unknown): number | null => typeof v === "number" ? v : null;
const kib = (v: unknown): number | null => typeof v === "number" ? v * 1024 : null;
const fact = (c: ToolCycle, key: string) => c.report?.facts[key];

/** Labels the sentence and the plot refer to. */
export const LABEL = {
  toSuspend: "request → S3: `systemctl suspend` typed → QMP SUSPEND",
  wakeToPrompt: "wake → prompt: QMP system_wakeup → passphrase prompt",
  enterToShell: "Enter → unlocked: passphrase typed → shell answers",
  wakeToShell: "wake → shell answers (all of the wake, the typing included)",
  ramTotal:
    "RAM during, at the peak: Debian's service memory.peak (+ a kept ramfs it found); cryptsleep's locked files + its own cgroup's memory.peak (before the pin: service + own cgroup peaks)",
  servicePeak: "RAM during: systemd-suspend.service memory.peak",
  ramfs: "RAM during: ramfs contents",
  usedAfter: "RAM between: in use 10 s after the cycle, guest-wide",
  ramfsKept: "Debian: its ramfs was kept from an earlier cycle (used, not unpacked again)",
} as const;

function measures(phases: string[]): Measure[] {
  const all = TOOLS;
  const debianOnly = DEBIAN_TOOLS;
  const csOnly = CRYPTSLEEP_TOOLS;
  const sleepAt = phases.indexOf("sleep");
  return [
    { section: "Times (ms, host clock)", label: LABEL.toSuspend, unit: "ms", tools: all, value: (c) => c.toSuspendMs },
    {
      label: "… Debian: its ramfs, pre hooks, cgroup freeze (→ “Allocating…”)",
      unit: "ms",
      tools: debianOnly,
      noRatio: true,
      value: (c) => c.debianMarks?.allocMs ?? null,
    },
    {
      label: "… Debian: mlock, luksSuspend of both (→ “Sleeping...”)",
      unit: "ms",
      tools: debianOnly,
      noRatio: true,
      value: (c) => c.debianMarks ? c.debianMarks.sleepingMs - c.debianMarks.allocMs : null,
    },
    {
      label: "… Debian: the kernel's way into S3 (→ SUSPEND)",
      unit: "ms",
      tools: debianOnly,
      noRatio: true,
      value: (c) => c.debianMarks ? c.toSuspendMs - c.debianMarks.sleepingMs : null,
    },
    {
      label: "… cryptsleep: outside its phases (systemd's dispatch, deno start-ups, hand-offs)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => c.report ? c.toSuspendMs - beforeSleepMs(c.report) : null,
    },
    {
      label: "… cryptsleep: of it the program's load and libcryptsetup's; kept: the client's request → the cycle " +
        "(report: facts.startMs)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => {
        const start = c.report?.facts.startMs as { runtime?: number; libcryptsetup?: number; request?: number };
        if (start?.request !== undefined) return start.request;
        return start?.runtime === undefined ? null : start.runtime + (start.libcryptsetup ?? 0);
      },
    },
    {
      label: "… cryptsleep: of it deno's own start, before the program runs, its wrapper's shell included " +
        "(report: facts.startMs.exec)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => (c.report?.facts.startMs as { exec?: number | null } | undefined)?.exec ?? null,
    },
    {
      label: "… cryptsleep: CPU used to the sleep by cryptsleep suspend (kept: in this cycle) (report: facts.cpuMs)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => cpuToSleep(c.report)?.self ?? null,
    },
    {
      label:
        "… cryptsleep: CPU used to the sleep by its supervisor, its start included (kept: started ahead, in this " +
        "cycle) (report: facts.cpuMs)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => cpuToSleep(c.report)?.supervisor ?? null,
    },
    { label: LABEL.wakeToPrompt, unit: "ms", tools: LOCKING, value: (c) => c.wakeToPromptMs },
    {
      label: "… cryptsleep: its own work from the wake to the prompt (report: sleep's return → first prompt)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => markSpan(c.report, "woke", "prompted"),
    },
    { label: LABEL.enterToShell, unit: "ms", tools: LOCKING, value: (c) => c.enterToShellMs },
    {
      label: "… cryptsleep: Enter → thawed (report: the last Enter → userspace thawed)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => markSpan(c.report, "entered", "thawed"),
    },
    {
      label: "… cryptsleep: of it the KDF (report: the tries after that Enter, less the dry runs inside them)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => kdfAfterEnter(c.report),
    },
    {
      label: "… cryptsleep: firmware dry runs inside those tries (tasks frozen; counted beyond the KDF, at most)",
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => refreshesInKdf(c.report),
    },
    {
      label: "… cryptsleep: Enter → thawed beyond the KDF, % of the KDF (target ≤ 5 %)",
      unit: "count",
      tools: csOnly,
      noRatio: true,
      value: (c) => beyondKdfPercent(c.report),
    },
    { label: LABEL.wakeToShell, unit: "ms", tools: all, value: (c) => c.wakeToShellMs },
    ...phases.map((name, i): Measure => ({
      section: i === 0 ? "cryptsleep's phases (ms, guest clock, from its report)" : undefined,
      label: `phase ${name}${i < sleepAt && !HOLDS_SLEEP.includes(name) ? " (before S3)" : ""}`,
      unit: "ms",
      tools: csOnly,
      noRatio: true,
      value: (c) => c.report ? phaseMs([c.report], name)[0] ?? null : null,
    })),
    {
      section: "RAM during the cycle",
      label: LABEL.servicePeak,
      unit: "bytes",
      tools: all,
      value: (c) => c.serviceMemoryPeakBytes,
    },
    {
      label: "RAM during: cryptsleep's own cgroup memory.peak (charged after joining it)",
      unit: "bytes",
      tools: csOnly,
      noRatio: true,
      value: (c) => num(fact(c, "ownCgroupMemoryPeakBytes")),
    },
    {
      label: LABEL.ramTotal,
      unit: "bytes",
      tools: all,
      value: (c) => {
        // a ramfs kept from an earlier cycle was charged to that cycle's unit, not this one's: it is added here
        if (!isCryptsleep(c.tool)) {
          if (!c.ramfsKept) return c.serviceMemoryPeakBytes;
          return c.serviceMemoryPeakBytes === null || c.ramfsBytes === null
            ? null
            : c.serviceMemoryPeakBytes + c.ramfsBytes;
        }
        // at its peak, as Debian's is: the files its pin locked (resident all through the cycle) plus its own
        // cgroup's memory.peak — both processes' anonymous memory, the KDF's included. A file page first read in
        // that cgroup counts twice, so this leans against cryptsleep. Its hooks run in its own cgroup, so the
        // service's peak is not read for it
        const own = num(fact(c, "ownCgroupMemoryPeakBytes"));
        const pinned = num(fact(c, "pinnedBytes"));
        if (pinned !== null) return own === null ? null : pinned + own;
        // a report from before the pin (a --replay): its ramfs was charged to the service, its processes to its own
        return own === null || c.serviceMemoryPeakBytes === null ? null : c.serviceMemoryPeakBytes + own;
      },
    },
    {
      // what the earlier tables called RAM during: below the peak by the KDF's memory, freed by then
      label: "RAM during: cryptsleep's files + anonymous memory after the unlock (report: ramHeldBytes)",
      unit: "bytes",
      tools: csOnly,
      noRatio: true,
      value: (c) => num(fact(c, "ramHeldBytes")),
    },
    { label: LABEL.ramfs, unit: "bytes", tools: LOCKING, value: (c) => c.ramfsBytes },
    {
      label: "RAM during: cryptsleep's file mappings locked by the pin",
      unit: "bytes",
      tools: csOnly,
      noRatio: true,
      value: (c) => num(fact(c, "pinnedBytes")),
    },
    {
      label: "RAM during: cryptsleep suspend's peak RSS (VmHWM)",
      unit: "bytes",
      tools: csOnly,
      noRatio: true,
      value: (c) => kib(fact(c, "peakRssKiB")),
    },
    {
      section: "RAM between cycles",
      label: LABEL.usedAfter,
      unit: "bytes",
      tools: all,
      value: (c) => c.between?.usedAfterBytes ?? null,
    },
    {
      label: "RAM between: in use, after − before the cycle",
      unit: "bytes",
      tools: all,
      noRatio: true,
      value: (c) => c.between?.usedBytes ?? null,
    },
    {
      label: "RAM between: tmpfs + ramfs in use, after − before",
      unit: "bytes",
      tools: all,
      noRatio: true,
      value: (c) => c.between?.tmpfsRamfsBytes ?? null,
    },
    {
      label:
        "RAM between: kept on purpose (Debian: its kept ramfs; cryptsleep: cryptsleep-kept.service memory.current)",
      unit: "bytes",
      tools: ["debian-keep", "cryptsleep-kept"],
      noRatio: true,
      value: (c) => c.tool === "debian-keep" ? c.ramfsBytes : c.keptServiceBytes ?? null,
    },
    {
      label: "RAM between: the tool's mounts + processes left (the kept service's own not counted)",
      unit: "count",
      tools: all,
      // a count, read as it is: 0 against the kept mode's 1 mount is no "0.00×"
      noRatio: true,
      value: (c) => c.between?.leftovers ?? null,
    },
    {
      label: LABEL.ramfsKept,
      unit: "count",
      tools: DEBIAN_TOOLS,
      tally: true,
      value: (c) => c.ramfsKept === undefined || c.ramfsKept === null ? null : Number(c.ramfsKept),
    },
    {
      section: "S3",
      label: "S3 reached (suspend_stats/success + 1)",
      unit: "count",
      tools: all,
      tally: true,
      value: (c) => Number(c.s3),
    },
    {
      label: "the writer on /home writes on after wake",
      unit: "count",
      tools: all,
      tally: true,
      loads: ["loaded"],
      value: (c) => c.writerGoesOn === null ? null : Number(c.writerGoesOn),
    },
  ];
}

/** Milliseconds between two of the report's marks (cycle/timeline.ts), or null when either is missing. */
export function markSpan(report: TimelineJSON | null, from: string, to: string): number | null {
  const marks = report?.facts.marks as Record<string, number> | undefined;
  return marks?.[from] === undefined || marks[to] === undefined ? null : marks[to] - marks[from];
}

/** The CPU milliseconds the report counts to the sleep (cycle/phases.ts, sleep): its own and its supervisor's. */
export function cpuToSleep(
  report: TimelineJSON | null,
): { self?: number | null; supervisor?: number | null } | undefined {
  return (report?.facts.cpuMs as { toSleep?: { self?: number | null; supervisor?: number | null } } | undefined)
    ?.toSleep;
}

/** Enter → thawed beyond the KDF runs that Enter waited for, in % of them; null where the report lacks either. */
export function beyondKdfPercent(report: TimelineJSON | null): number | null {
  const span = markSpan(report, "entered", "thawed");
  const kdf = kdfAfterEnter(report);
  return span === null || !kdf ? null : Math.round((span - kdf) / kdf * 100);
}

/** The unlock's tries that began after the last Enter (the KDF runs that Enter waited for), as [start, end]. */
function triesAfterEnter(report: TimelineJSON | null): [number, number][] | null {
  const entered = (report?.facts.marks as Record<string, number> | undefined)?.entered;
  const tries = report?.facts.tries as { at?: number; ms: number }[] | undefined;
  if (entered === undefined || !tries) return null;
  return tries.filter((t) => (t.at ?? -1) >= entered).map((t) => [t.at!, t.at! + t.ms]);
}

/**
 * Of those tries, the ms the firmware's dry runs took inside them (report: `firmwareRefreshes`, the last ones): the
 * KDF's thread is frozen for part of each, and short of the CPU for the rest on one CPU, so that time is
 * cryptsleep's own, not the KDF's. An upper bound of what they cost the KDF.
 */
export function refreshesInKdf(report: TimelineJSON | null): number | null {
  const tries = triesAfterEnter(report);
  if (!tries) return null;
  const runs = (report?.facts.firmwareRefreshes ?? []) as { at: number; ms: number }[];
  let overlap = 0;
  for (const [from, to] of tries) {
    for (const r of runs) overlap += Math.max(0, Math.min(to, r.at + r.ms) - Math.max(from, r.at));
  }
  return overlap;
}

/** The KDF runs that Enter waited for: the tries after it, less the dry runs inside them ({@linkcode refreshesInKdf}). */
export function kdfAfterEnter(report: TimelineJSON | null): number | null {
  const tries = triesAfterEnter(report);
  if (!tries) return null;
  return tries.reduce((sum, [from, to]) => sum + to - from, 0) - (refreshesInKdf(report) ?? 0);
}

function formatValue(v: number, unit: Measure["unit"]): string {
  return unit === "bytes" ? formatBytes(v) : formatInt(v);
}

/**
 * The comparison's rows: per measure an idle and a loaded row, medians per tool and cryptsleep's three ratios. A
 * tool with no cycles at all (Debian with its ramfs kept, in a run saved before it was benched) shows "–" on
 * every row and gets no ratio.
 */
export function comparisonRows(cycles: ToolCycle[]): ComparisonRow[] {
  const phases = phaseNames(cycles.flatMap((c) => c.report ? [c.report] : []));
  const ran = toolsIn(cycles);
  const rows: ComparisonRow[] = [];
  for (const m of measures(phases)) {
    let section = m.section;
    for (const load of m.loads ?? LOADS) {
      const medians = Object.fromEntries(TOOLS.map((t) => [t, null])) as Record<Tool, number | null>;
      const cells = Object.fromEntries(TOOLS.map((t) => [t, "–"])) as Record<Tool, string>;
      for (const tool of m.tools.filter((t) => ran.includes(t))) {
        const mine = cycles.filter((c) => c.tool === tool && c.load === load);
        const xs = mine.map(m.value).filter((v): v is number => v !== null);
        if (m.tally) {
          cells[tool] = mine.length === 0
            ? "no cycles"
            : xs.length === 0
            ? "not measured"
            : `${xs.filter((x) => x > 0).length}/${xs.length}`;
          continue;
        }
        medians[tool] = median(xs);
        cells[tool] = medians[tool] === null ? "not measured" : formatValue(medians[tool]!, m.unit);
      }
      const cs = medians.cryptsleep;
      const noRatio = m.noRatio || m.tally;
      rows.push({
        label: m.label,
        load,
        unit: m.unit,
        medians,
        cells,
        vsPlain: noRatio ? null : ratio(cs, medians.plain),
        vsDebian: noRatio ? null : ratio(cs, medians.debian),
        vsDebianKept: noRatio ? null : ratio(cs, medians["debian-keep"]),
        ...(ran.includes("cryptsleep-kept")
          ? {
            keptVsDebian: noRatio ? null : ratio(medians["cryptsleep-kept"], medians.debian),
            keptVsDebianKept: noRatio ? null : ratio(medians["cryptsleep-kept"], medians["debian-keep"]),
          }
          : {}),
        section,
      });
      section = undefined;
    }
  }
  return rows;
}

/** One Markdown table: a line per measure and load, the medians per tool (round order), cryptsleep's three ratios. */
export function markdownTable(rows: ComparisonRow[]): string {
  const ratios = ["plain", "debian", "debian-keep"] as const;
  // a run with the kept mode: its two ratios to Debian too; one without: no column for it
  const kept = rows.some((r) => "keptVsDebian" in r);
  const tools = kept ? TOOLS : TOOLS.filter((t) => t !== "cryptsleep-kept");
  const header = [
    "measure",
    "load",
    ...tools.map((t) => TOOL_NAMES[t]),
    ...ratios.map((t) => `cryptsleep / ${TOOL_NAMES[t]}`),
    ...(kept ? ["debian", "debian-keep"].map((t) => `cryptsleep, kept / ${TOOL_NAMES[t as Tool]}`) : []),
  ];
  const lines = [`| ${header.join(" | ")} |`, `|---|---|${"--:|".repeat(header.length - 2)}`];
  for (const r of rows) {
    if (r.section) lines.push(`| **${r.section}** |${" |".repeat(header.length - 1)}`);
    const vs = [r.vsPlain, r.vsDebian, r.vsDebianKept, ...(kept ? [r.keptVsDebian, r.keptVsDebianKept] : [])]
      .map((x) => formatRatio(x ?? null));
    lines.push(`| ${[r.label, r.load, ...tools.map((t) => r.cells[t]), ...vs].join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The measures the sentence weighs, each with the phases of cryptsleep's report that make it up. */
const PARTS: Partial<Record<string, (rows: ComparisonRow[]) => string[]>> = {
  [LABEL.toSuspend]: (rows) => rows.flatMap((r) => /^phase (\S+) \(before S3\)$/.exec(r.label)?.[1] ?? []),
  [LABEL.wakeToPrompt]: () => ["sleep", "restore"],
  [LABEL.enterToShell]: () => ["unlock", "thaw"],
  [LABEL.ramTotal]: () => [],
  [LABEL.ramfs]: () => ["ramfs"],
};

/** A median with its unit, or "not measured". */
function show(r: ComparisonRow | undefined, tool: Tool): string {
  const v = r?.medians[tool];
  if (r === undefined || v === null || v === undefined) return "not measured";
  return r.unit === "bytes" ? formatBytes(v) : r.unit === "ms" ? `${formatInt(v)} ms` : formatInt(v);
}

/** How the sentences name each Debian mode. */
const MODE_NAMES: Record<DebianMode, string> = { debian: "Debian", "debian-keep": "Debian (kept ramfs)" };

function vs(r: ComparisonRow, ref: DebianMode): number | null {
  return ref === "debian" ? r.vsDebian : r.vsDebianKept;
}

function difference(r: ComparisonRow, ref: DebianMode): string {
  const d = { ...r, medians: { ...r.medians, cryptsleep: r.medians.cryptsleep! - r.medians[ref]! } };
  return `${r.label} (${r.load}): ${show(r, "cryptsleep")} against ${show(r, ref)}, ` +
    `${show(d, "cryptsleep")} more (${formatRatio(vs(r, ref))})`;
}

/** cryptsleep's median of each named phase, largest first. */
function phaseLine(rows: ComparisonRow[], load: Load, names: string[]): string {
  return names.flatMap((n) => {
    const row = rows.find((r) => r.load === load && (r.label === `phase ${n}` || r.label === `phase ${n} (before S3)`));
    const ms = row?.medians.cryptsleep;
    return ms === null || ms === undefined ? [] : [{ n, ms }];
  }).sort((a, b) => b.ms - a.ms).map((p) => `${p.n} ${formatInt(p.ms)} ms`).join(", ");
}

function breakdown(rows: ComparisonRow[], r: ComparisonRow, ref: DebianMode): string {
  const mine = rows.filter((x) => x.load === r.load);
  const find = (prefix: string) => mine.find((x) => x.label.startsWith(prefix));
  const [steps, theirRamfs] = ref === "debian"
    ? ["Debian's steps", "Debian's ramfs"]
    : ["Debian's steps with its ramfs kept", "Debian's kept ramfs"];
  if (r.label === LABEL.toSuspend) {
    const [ramfs, lock, kernel] = ["… Debian: its ramfs", "… Debian: mlock", "… Debian: the kernel"].map(find);
    return `cryptsleep's phases before S3 (median, guest clock): ${phaseLine(rows, r.load, PARTS[r.label]!(mine))}, ` +
      `and ${show(find("… cryptsleep: outside"), "cryptsleep")} outside them; ${steps} (host clock): ` +
      `${show(ramfs, ref)} to its ramfs + pre hooks + freeze, ${show(lock, ref)} to lock, ` +
      `${show(kernel, ref)} in the kernel`;
  }
  if (r.label === LABEL.ramTotal) {
    const ramfs = find(LABEL.ramfs);
    const pinned = find("RAM during: cryptsleep's file mappings locked");
    if (pinned?.medians.cryptsleep != null) {
      return `of it ${
        show(pinned, "cryptsleep")
      } of files its pin locked (the runtime and its libraries; ${theirRamfs} ` +
        `${show(ramfs, ref)}), the rest its own cgroup's peak (its two processes' anonymous memory, the KDF's ` +
        "included)";
    }
    return `of it ${show(find(LABEL.servicePeak), "cryptsleep")} in systemd-suspend.service (its ramfs ` +
      `${show(ramfs, "cryptsleep")}, ${theirRamfs} ${show(ramfs, ref)}) and ` +
      `${show(find("RAM during: cryptsleep's own"), "cryptsleep")} in its own cgroup`;
  }
  const names = PARTS[r.label]?.(mine) ?? [];
  return names.length ? `cryptsleep's phases there: ${phaseLine(rows, r.load, names)}` : "";
}

/** Where cryptsleep is behind one Debian mode, by how much, and in which of its phases. */
function behind(rows: ComparisonRow[], ref: DebianMode): string {
  const name = MODE_NAMES[ref];
  const lost = rows.filter((r) =>
    r.label in PARTS && r.medians.cryptsleep !== null && r.medians[ref] !== null &&
    r.medians.cryptsleep > r.medians[ref]!
  );
  if (lost.length === 0) {
    return `cryptsleep is behind ${name} on none of: request → S3, wake → prompt, Enter → unlocked, RAM during, ramfs.`;
  }
  return [
    `cryptsleep is behind ${name} on:`,
    ...lost.map((r) => {
      const more = breakdown(rows, r, ref);
      return `- ${difference(r, ref)}${more ? `; ${more}` : ""}.`;
    }),
  ].join("\n");
}

/**
 * The sentences naming where cryptsleep is behind Debian — in its default mode, then with its ramfs kept — by how
 * much, and in which of its phases. The kept mode's are left out when the run has no medians for it (a run saved
 * before it was benched).
 */
export function behindDebian(rows: ComparisonRow[]): string {
  const kept = rows.some((r) => r.medians["debian-keep"] !== null);
  return [behind(rows, "debian"), ...(kept ? [behind(rows, "debian-keep")] : [])].join("\n\n");
}

/**
 * What the kept mode's medians are made of: the cycle(s) that unpacked the initramfs (its first) with their
 * request → S3, and the median request → S3 of those that found the ramfs kept, per load. Also says so if a cycle of
 * Debian's default mode found a ramfs mounted (the bench is to keep it from them). "" without kept-mode cycles.
 */
export function keptNote(cycles: ToolCycle[]): string {
  const mine = cycles.filter((c) => c.tool === "debian-keep");
  if (mine.length === 0) return "";
  const unpacked = mine.filter((c) => c.ramfsKept === false);
  const kept = mine.filter((c) => c.ramfsKept === true);
  const s3 = (c: ToolCycle) => `${c.load} round ${c.round}: ${formatInt(c.toSuspendMs)} ms`;
  const keptMedians = LOADS.flatMap((load) => {
    const m = median(kept.filter((c) => c.load === load).map((c) => c.toSuspendMs));
    return m === null ? [] : [`${load} ${formatInt(m)} ms`];
  });
  const parts = [
    `${TOOL_NAMES["debian-keep"]}: ${kept.length} of its ${mine.length} cycles used the ramfs kept by the one ` +
    `before, ${unpacked.length} unpacked it` +
    (unpacked.length ? ` (request → S3: ${unpacked.map(s3).join("; ")})` : "") +
    (mine.length - kept.length - unpacked.length ? `, ${mine.length - kept.length - unpacked.length} not known` : "") +
    `. Its medians are over all of them, so mostly over cycles that reuse the ramfs` +
    (keptMedians.length ? ` (request → S3, those alone: ${keptMedians.join(", ")})` : "") + ".",
  ];
  const leaked = cycles.filter((c) => c.tool === "debian" && c.ramfsKept === true).length;
  if (leaked) {
    parts.push(
      `${leaked} cycle(s) of Debian's default mode found a ramfs mounted and used it: their times are not the ` +
        "default mode's.",
    );
  }
  return parts.join(" ");
}

/** The measures in the plot, with their short names there. */
const PLOTTED: Record<string, string> = {
  [LABEL.toSuspend]: "request → S3",
  [LABEL.wakeToPrompt]: "wake → prompt",
  [LABEL.enterToShell]: "Enter → unlocked",
  [LABEL.wakeToShell]: "wake → shell answers",
  [LABEL.servicePeak]: "RAM: unit's memory.peak",
  [LABEL.ramTotal]: "RAM: peak",
  [LABEL.ramfs]: "RAM: ramfs",
};

/** The plot's rows: the measures the tools share, a row per load, a value per tool of `tools` (default: all four). */
export function plotRows(rows: ComparisonRow[], tools: readonly Tool[] = TOOLS): BarRow[] {
  return rows.filter((r) => r.label in PLOTTED).map((r) => ({
    label: `${PLOTTED[r.label]} (${r.load})`,
    unit: r.unit === "bytes" ? "bytes" : "ms",
    values: tools.map((t) => r.medians[t]),
  }));
}

/** Parses the KEY=VALUE lines the probes print. */
export function parseProbe(out: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) values[m[1]] = m[2];
  }
  return values;
}

/**
 * Debian's drop-in with its wrapper's terminal moved from VT8 (`openvt -ws -c8`) to `tty`, the rest kept. The
 * bed reads only the serial console after S3 resume; cryptsleep gets the same tty with --console.
 */
export function serialDropin(shipped: string, tty = "/dev/ttyS0"): string {
  // systemd joins a line ending in a backslash with the next
  const lines = shipped.replace(/\\\n\s*/g, " ").split("\n");
  let found = false;
  const out = lines.map((line) => {
    const m = /^ExecStart=\s*\S*openvt\s+(?:-\S+\s+)*(?:--\s+)?(\S.*)$/.exec(line.trim());
    if (!m) return line;
    found = true;
    return `ExecStart=/bin/sh -c 'exec ${m[1].trim()} <${tty} >${tty} 2>&1'`;
  });
  // systemd ignores settings outside a section: a mangled header would leave an empty override
  if (!found || !lines.some((l) => l.trim() === "[Service]")) {
    throw new Error(`no [Service] with ExecStart=…openvt… in Debian's drop-in:\n${shipped}`);
  }
  return [`# bench: Debian's drop-in, its wrapper's terminal on ${tty} instead of a VT`, ...out].join("\n");
}

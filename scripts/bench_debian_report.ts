/**
 * @module
 * The pure half of `deno task bench --guest debian` (scripts/bench_debian.ts drives the guest): what one cycle
 * measured ({@linkcode ToolCycle}), the rows of the comparison (medians per tool, ratios to plain and to Debian),
 * the Markdown table, the sentence on where cryptsleep is behind Debian, the plot's rows, and the drop-in that
 * puts Debian's wrapper on the serial console.
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
  median,
  phaseMs,
  phaseNames,
  ratio,
} from "./bench_lib.ts";

/** The three ways the guest suspends: no locking, Debian's cryptsetup-suspend, cryptsleep's drop-in. */
export type Tool = "plain" | "debian" | "cryptsleep";
/** The order of every round. */
export const TOOLS: readonly Tool[] = ["plain", "debian", "cryptsleep"];
/** Idle guest, or a writer appending and syncing on /home every 0.2 s. */
export type Load = "idle" | "loaded";
const LOADS: readonly Load[] = ["idle", "loaded"];
/** How the output names each tool. */
export const TOOL_NAMES: Record<Tool, string> = { plain: "plain", debian: "Debian", cryptsleep: "cryptsleep" };

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
  /** What the cycle left: after − before it, guest-wide, each sampled once exiting processes settled. */
  between: { usedBytes: number; usedAfterBytes?: number; tmpfsRamfsBytes: number; leftovers: number } | null;
  /** Loaded cycles: the writer's log grew after wake. */
  writerGoesOn: boolean | null;
  /** cryptsleep's report (`cryptsleep status --json`). */
  report: TimelineJSON | null;
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
  section?: string;
}

const BOTH: readonly Tool[] = ["debian", "cryptsleep"];
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
    "RAM during: Debian's service peak; cryptsleep's resident files + anonymous memory (before the pin: service + own cgroup peaks)",
  servicePeak: "RAM during: systemd-suspend.service memory.peak",
  ramfs: "RAM during: ramfs contents",
  usedAfter: "RAM between: in use 10 s after the cycle, guest-wide",
} as const;

function measures(phases: string[]): Measure[] {
  const all = TOOLS;
  const debianOnly: readonly Tool[] = ["debian"];
  const csOnly: readonly Tool[] = ["cryptsleep"];
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
    { label: LABEL.wakeToPrompt, unit: "ms", tools: BOTH, value: (c) => c.wakeToPromptMs },
    { label: LABEL.enterToShell, unit: "ms", tools: BOTH, value: (c) => c.enterToShellMs },
    { label: LABEL.wakeToShell, unit: "ms", tools: all, value: (c) => c.wakeToShellMs },
    ...phases.map((name, i): Measure => ({
      section: i === 0 ? "cryptsleep's phases (ms, guest clock, from its report)" : undefined,
      label: `phase ${name}${i < sleepAt ? " (before S3)" : ""}`,
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
        if (c.tool !== "cryptsleep") return c.serviceMemoryPeakBytes;
        // its two processes' footprint at the end of the cycle (host/maps.ts footprint): the files they map
        // (locked by the pin) counted once, plus each one's anonymous memory. Its hooks run in its own cgroup,
        // so the service's peak is not read for it
        const held = num(fact(c, "ramHeldBytes"));
        if (held !== null) return held;
        // a report from before the pin (a --replay): its ramfs was charged to the service, its processes to its own
        const own = num(fact(c, "ownCgroupMemoryPeakBytes"));
        return own === null || c.serviceMemoryPeakBytes === null ? null : c.serviceMemoryPeakBytes + own;
      },
    },
    { label: LABEL.ramfs, unit: "bytes", tools: BOTH, value: (c) => c.ramfsBytes },
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
      label: "RAM between: the tool's mounts + processes left",
      unit: "count",
      tools: all,
      value: (c) => c.between?.leftovers ?? null,
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

function formatValue(v: number, unit: Measure["unit"]): string {
  return unit === "bytes" ? formatBytes(v) : formatInt(v);
}

/** The comparison's rows: per measure an idle and a loaded row, medians per tool and the two ratios. */
export function comparisonRows(cycles: ToolCycle[]): ComparisonRow[] {
  const phases = phaseNames(cycles.flatMap((c) => c.report ? [c.report] : []));
  const rows: ComparisonRow[] = [];
  for (const m of measures(phases)) {
    let section = m.section;
    for (const load of m.loads ?? LOADS) {
      const medians = { plain: null, debian: null, cryptsleep: null } as Record<Tool, number | null>;
      const cells = { plain: "–", debian: "–", cryptsleep: "–" } as Record<Tool, string>;
      for (const tool of m.tools) {
        const mine = cycles.filter((c) => c.tool === tool && c.load === load);
        const xs = mine.map(m.value).filter((v): v is number => v !== null);
        if (m.tally) {
          cells[tool] = mine.length ? `${xs.filter((x) => x > 0).length}/${mine.length}` : "no cycles";
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
        section,
      });
      section = undefined;
    }
  }
  return rows;
}

/** One Markdown table: a line per measure and load, the medians per tool, cryptsleep's two ratios. */
export function markdownTable(rows: ComparisonRow[]): string {
  const lines = [
    "| measure | load | plain | Debian | cryptsleep | cryptsleep / plain | cryptsleep / Debian |",
    "|---|---|--:|--:|--:|--:|--:|",
  ];
  for (const r of rows) {
    if (r.section) lines.push(`| **${r.section}** | | | | | | |`);
    lines.push(
      `| ${r.label} | ${r.load} | ${r.cells.plain} | ${r.cells.debian} | ${r.cells.cryptsleep} | ` +
        `${formatRatio(r.vsPlain)} | ${formatRatio(r.vsDebian)} |`,
    );
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

function difference(r: ComparisonRow): string {
  const d = { ...r, medians: { ...r.medians, cryptsleep: r.medians.cryptsleep! - r.medians.debian! } };
  return `${r.label} (${r.load}): ${show(r, "cryptsleep")} against ${show(r, "debian")}, ` +
    `${show(d, "cryptsleep")} more (${formatRatio(r.vsDebian)})`;
}

/** cryptsleep's median of each named phase, largest first. */
function phaseLine(rows: ComparisonRow[], load: Load, names: string[]): string {
  return names.flatMap((n) => {
    const row = rows.find((r) => r.load === load && (r.label === `phase ${n}` || r.label === `phase ${n} (before S3)`));
    const ms = row?.medians.cryptsleep;
    return ms === null || ms === undefined ? [] : [{ n, ms }];
  }).sort((a, b) => b.ms - a.ms).map((p) => `${p.n} ${formatInt(p.ms)} ms`).join(", ");
}

function breakdown(rows: ComparisonRow[], r: ComparisonRow): string {
  const mine = rows.filter((x) => x.load === r.load);
  const find = (prefix: string) => mine.find((x) => x.label.startsWith(prefix));
  if (r.label === LABEL.toSuspend) {
    const [ramfs, lock, kernel] = ["… Debian: its ramfs", "… Debian: mlock", "… Debian: the kernel"].map(find);
    return `cryptsleep's phases before S3 (median, guest clock): ${phaseLine(rows, r.load, PARTS[r.label]!(mine))}, ` +
      `and ${show(find("… cryptsleep: outside"), "cryptsleep")} outside them; Debian's steps (host clock): ` +
      `${show(ramfs, "debian")} to its ramfs + pre hooks + freeze, ${show(lock, "debian")} to lock, ` +
      `${show(kernel, "debian")} in the kernel`;
  }
  if (r.label === LABEL.ramTotal) {
    const ramfs = find(LABEL.ramfs);
    const pinned = find("RAM during: cryptsleep's file mappings locked");
    if (pinned?.medians.cryptsleep != null) {
      return `of it ${show(pinned, "cryptsleep")} of files its pin locked (the runtime and its libraries; Debian's ` +
        `ramfs ${show(ramfs, "debian")}), the rest its two processes' anonymous memory`;
    }
    return `of it ${show(find(LABEL.servicePeak), "cryptsleep")} in systemd-suspend.service (its ramfs ` +
      `${show(ramfs, "cryptsleep")}, Debian's ${show(ramfs, "debian")}) and ` +
      `${show(find("RAM during: cryptsleep's own"), "cryptsleep")} in its own cgroup`;
  }
  const names = PARTS[r.label]?.(mine) ?? [];
  return names.length ? `cryptsleep's phases there: ${phaseLine(rows, r.load, names)}` : "";
}

/** The sentence(s) naming where cryptsleep is behind Debian, by how much, and in which of its phases. */
export function behindDebian(rows: ComparisonRow[]): string {
  const behind = rows.filter((r) =>
    r.label in PARTS && r.medians.cryptsleep !== null && r.medians.debian !== null &&
    r.medians.cryptsleep > r.medians.debian
  );
  if (behind.length === 0) {
    return "cryptsleep is behind Debian on none of: request → S3, wake → prompt, Enter → unlocked, RAM during, ramfs.";
  }
  return [
    "cryptsleep is behind Debian on:",
    ...behind.map((r) => {
      const more = breakdown(rows, r);
      return `- ${difference(r)}${more ? `; ${more}` : ""}.`;
    }),
  ].join("\n");
}

/** The measures in the plot, with their short names there. */
const PLOTTED: Record<string, string> = {
  [LABEL.toSuspend]: "request → S3",
  [LABEL.wakeToPrompt]: "wake → prompt",
  [LABEL.enterToShell]: "Enter → unlocked",
  [LABEL.wakeToShell]: "wake → shell answers",
  [LABEL.servicePeak]: "RAM: unit's memory.peak",
  [LABEL.ramTotal]: "RAM: unit + own cgroup peaks",
  [LABEL.ramfs]: "RAM: ramfs",
};

/** The plot's rows: the measures all three (or both tools) share, a row per load. */
export function plotRows(rows: ComparisonRow[]): BarRow[] {
  return rows.filter((r) => r.label in PLOTTED).map((r) => ({
    label: `${PLOTTED[r.label]} (${r.load})`,
    unit: r.unit === "bytes" ? "bytes" : "ms",
    values: TOOLS.map((t) => r.medians[t]),
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

/**
 * @module
 * The pure parts both benches share (scripts/bench.ts for the busybox guest, scripts/bench_debian.ts for the
 * Debian guest): median, ratio, number formats and a horizontal bar chart in SVG.
 *
 * ```ts
 * import { formatRatio, median, ratio, svgBars } from "./bench_lib.ts";
 * console.log(median([300, 100, 200]), formatRatio(ratio(300, 200))); // 200 "1.50×"
 * const svg = svgBars("title", [{ name: "median", color: "#4a7fb5" }], [{ label: "lock", unit: "ms", values: [543] }]);
 * console.log(svg.length > 0);
 * ```
 */

import type { TimelineJSON } from "../cycle/timeline.ts";

/** The middle value (mean of the two middle ones, rounded, for an even count); null for no values. */
export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : Math.round((s[h - 1] + s[h]) / 2);
}

/** a / b; null when either is missing, a < 0 or b ≤ 0: no ratio to a zero, none of differences that went down. */
export function ratio(a: number | null, b: number | null): number | null {
  if (a === null || b === null || a < 0 || b <= 0) return null;
  return a / b;
}

/** "1.38×", or "–" for no ratio. */
export function formatRatio(r: number | null): string {
  return r === null ? "–" : `${r.toFixed(2)}×`;
}

/** A count with thousands separators: 14,634. */
export function formatInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** Bytes as MiB with one decimal: 176.9 MiB. */
export function formatMiB(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** Phase names in the order they first ran, over all reports. */
export function phaseNames(reports: TimelineJSON[]): string[] {
  const names: string[] = [];
  for (const r of reports) for (const p of r.phases) if (!names.includes(p.name)) names.push(p.name);
  return names;
}

/** Durations of phase `name`, one per report that ran it. */
export function phaseMs(reports: TimelineJSON[], name: string): number[] {
  return reports.flatMap((r) => r.phases.filter((p) => p.name === name).map((p) => p.durationMs));
}

/**
 * Sum of the phases that ran before `sleep`: what of the time to S3 the report accounts for. A phase that holds
 * sleep (`agent` runs the agent's phases inside it) is not counted: its inner phases are.
 */
export function beforeSleepMs(report: TimelineJSON): number {
  const i = report.phases.findIndex((p) => p.name === "sleep");
  return report.phases.slice(0, i < 0 ? report.phases.length : i).filter((p) => !HOLDS_SLEEP.includes(p.name))
    .reduce((sum, p) => sum + p.durationMs, 0);
}

/** Phases that hold the sleep inside them (`agent` runs the agent's phases): never "before S3" as a whole. */
export const HOLDS_SLEEP: readonly string[] = ["agent"];

/** ramfs bytes: the report's fact, else the ramfs phase's detail (the outer process's facts may not reach it). */
export function ramfsBytes(report: TimelineJSON): number | null {
  const fact = report.facts.ramfsBytes;
  if (typeof fact === "number") return fact;
  const detail = report.phases.find((p) => p.name === "ramfs")?.detail?.bytes;
  return typeof detail === "number" ? detail : null;
}

/** Bytes as MiB, or as KiB below one MiB (where a tenth of a MiB hides the difference): 4 KiB, 176.9 MiB. */
export function formatBytes(bytes: number): string {
  return Math.abs(bytes) < 1048576 ? `${formatInt(bytes / 1024)} KiB` : formatMiB(bytes);
}

/** Escapes text for SVG. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** One series of bars (one tool, or the one median of the busybox bench). */
export interface Series {
  name: string;
  color: string;
}

/** One row of the chart: a value per series (null: none); bars share a scale with the rows of the same unit. */
export interface BarRow {
  label: string;
  /** "ms" or "bytes" (drawn as MiB). */
  unit: "ms" | "bytes";
  values: (number | null)[];
}

function valueText(v: number, unit: BarRow["unit"]): string {
  return unit === "bytes" ? formatBytes(v) : `${formatInt(v)} ms`;
}

/** Horizontal bars, a group per row with one bar per series; a legend when there is more than one series. */
export function svgBars(title: string, series: Series[], rows: BarRow[]): string {
  const max = new Map<string, number>();
  for (const r of rows) {
    for (const v of r.values) if (v !== null) max.set(r.unit, Math.max(max.get(r.unit) ?? 1, v));
  }
  const left = Math.max(90, 8 + 7 * Math.max(0, ...rows.map((r) => r.label.length)));
  const [width, barH, gap, top] = [420, 16, 10, series.length > 1 ? 58 : 40];
  const out: string[] = [];
  let y = top;
  for (const r of rows) {
    const h = series.length * barH;
    out.push(`  <text x="${left - 8}" y="${y + h / 2 + 4}" text-anchor="end">${escapeXml(r.label)}</text>`);
    r.values.forEach((v, i) => {
      const by = y + i * barH;
      if (v === null) {
        out.push(`  <text x="${left + 4}" y="${by + 12}" fill="#888">${escapeXml(series[i].name)}: –</text>`);
        return;
      }
      const w = Math.max(1, Math.round((v / (max.get(r.unit) ?? 1)) * width));
      out.push(
        `  <rect x="${left}" y="${by + 2}" width="${w}" height="${barH - 3}" fill="${series[i].color}"/>`,
        `  <text x="${left + w + 6}" y="${by + 12}">${escapeXml(valueText(v, r.unit))}</text>`,
      );
    });
    y += h + gap;
  }
  // each entry at least 130 px wide, a long name (~7 px a character) pushing the next one right
  let x = 8;
  const legend = series.length > 1
    ? series.map((s) => {
      const entry = `  <rect x="${x}" y="30" width="12" height="12" fill="${s.color}"/>` +
        `<text x="${x + 16}" y="40">${escapeXml(s.name)}</text>`;
      x += Math.max(130, 30 + 7 * s.name.length);
      return entry;
    })
    : [];
  return svgDocument(title, Math.max(left + width + 110, x), y + 6, [...legend, ...out]);
}

/** A whole SVG file: white, `title` at the top left, then `body`'s elements (one per line). */
export function svgDocument(title: string, width: number, height: number, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="sans-serif" font-size="12">`,
    `  <rect width="100%" height="100%" fill="white"/>`,
    `  <text x="8" y="20" font-size="13" font-weight="bold">${escapeXml(title)}</text>`,
    ...body,
    "</svg>",
    "",
  ].join("\n");
}

/**
 * @module
 * The report, written after the undos: the timeline goes to the kernel log (`/dev/kmsg`: it shows in dmesg and the journal
 * afterwards, and nothing is written to a locked filesystem) and to `last.json` in RAM, which
 * `cryptsleep status` prints.
 *
 * @example
 * ```ts
 * import { formatTimeline, LAST_REPORT } from "./report.ts";
 * console.log(formatTimeline(JSON.parse(await Deno.readTextFile(LAST_REPORT))));
 * ```
 */
import type { TimelineJSON } from "./timeline.ts";

/** Where the outer process leaves the report after the cycle (tmpfs). */
export const LAST_REPORT = "/run/cryptsleep/last.json";

/** One line to the kernel log; fails silently where /dev/kmsg is absent (it is a log, not the cycle). */
export function kmsg(message: string): void {
  try {
    using f = Deno.openSync("/dev/kmsg", { write: true });
    f.writeSync(new TextEncoder().encode(`<5>cryptsleep: ${message}\n`));
  } catch {
    // no kernel log to write to: the report file still has everything
  }
}

/** Writes the report to `path` and its lines to the kernel log. */
export async function writeReport(report: TimelineJSON, path: string): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(report, null, 2) + "\n");
  for (const line of formatTimeline(report).split("\n")) kmsg(line);
}

/** The human form: one line per phase, then warnings and facts. */
export function formatTimeline(report: TimelineJSON): string {
  const lines = [`cycle ${report.ok ? "ok" : "FAILED"} at ${report.startedAt} (${report.outcome ?? "unfinished"})`];
  for (const p of report.phases) {
    lines.push(`  ${p.name.padEnd(10)} ${String(p.durationMs).padStart(7)} ms  ${p.ok ? "ok" : `FAILED: ${p.error}`}`);
  }
  for (const w of report.warnings) lines.push(`  warning: ${w}`);
  for (const [k, v] of Object.entries(report.facts)) {
    lines.push(`  ${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`);
  }
  return lines.join("\n");
}

/** VmHWM of this process: the RAM the cycle needs, for the report. */
export async function peakRssKiB(): Promise<number | null> {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(await Deno.readTextFile("/proc/self/status"));
  return m ? Number(m[1]) : null;
}

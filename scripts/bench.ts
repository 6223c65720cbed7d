/**
 * @module
 * Bench on the QEMU bed: boots the guest once (LUKS2 root and LUKS2 data disk open), runs N full
 * `cryptsleep suspend` cycles and prints a Markdown table: per phase min/median/max ms (from
 * `cryptsleep status --json` in the guest), ramfs bytes, time to S3 and from wake to the prompt. Writes a bar
 * chart of the median phase times to dist/bench.svg. No assertions on speed.
 *
 * ```sh
 * deno task bench                 # or: deno run -A scripts/bench.ts --cycles 5 [--kernel 6.1]
 * ```
 */

import { join } from "node:path";
import { ensureGuest, REPO_ROOT } from "./guest/build.ts";
import { boot, openDataDisk } from "../tests/vm/harness.ts";
import type { TimelineJSON } from "../cycle/timeline.ts";
import { bundle, type CycleRun, lastReport, option, runCycle, step } from "./demo.ts";

interface Sample {
  run: CycleRun;
  report: TimelineJSON;
}

/** Phases before S3, all inside the time to SUSPEND. */
const BEFORE_SLEEP = ["preflight", "ramfs", "sync", "freeze", "syncfs", "lock"];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : Math.round((s[h - 1] + s[h]) / 2);
}

function row(label: string, xs: number[], unit = "ms"): string {
  if (xs.length === 0) return `| ${label} | – | – | – | | not measured |`;
  const f = (n: number) => n.toLocaleString("en-US");
  return `| ${label} | ${f(Math.min(...xs))} | ${f(median(xs))} | ${f(Math.max(...xs))} | ${unit} | ${
    xs.map(f).join(" / ")
  } |`;
}

/** ramfs bytes: the report's fact, else the ramfs phase's detail (the outer process's facts may not reach it). */
function ramfsBytes(s: Sample): number | undefined {
  const fact = s.report.facts.ramfsBytes;
  if (typeof fact === "number") return fact;
  const detail = s.report.phases.find((p) => p.name === "ramfs")?.detail?.bytes;
  return typeof detail === "number" ? detail : undefined;
}

function phaseNames(samples: Sample[]): string[] {
  const names: string[] = [];
  for (const s of samples) for (const p of s.report.phases) if (!names.includes(p.name)) names.push(p.name);
  return names;
}

function durations(samples: Sample[], name: string): number[] {
  return samples.flatMap((s) => s.report.phases.filter((p) => p.name === name).map((p) => p.durationMs));
}

function table(samples: Sample[], title: string): string {
  const lines = [
    `### ${title}`,
    "",
    "| measure | min | median | max | unit | per cycle |",
    "|---|--:|--:|--:|---|---|",
  ];
  for (const name of phaseNames(samples)) lines.push(row(`phase ${name}`, durations(samples, name)));
  lines.push(row("time to SUSPEND (host: command typed → QMP SUSPEND)", samples.map((s) => s.run.toSuspendMs)));
  lines.push(row(
    "… of it outside the phases (deno start-ups, hand-offs)",
    samples.map((s) => s.run.toSuspendMs - BEFORE_SLEEP.reduce((sum, n) => sum + (durations([s], n)[0] ?? 0), 0)),
  ));
  lines.push(row("wake → passphrase prompt (host)", samples.map((s) => s.run.wakeToPromptMs)));
  const ramfs = samples.map(ramfsBytes).filter((b): b is number => b !== undefined);
  lines.push(row("ramfs size", ramfs, "bytes"));
  // RSS is shown only if the report carries it: the agent and supervisor exit with the cycle
  const rssKeys = [...new Set(samples.flatMap((s) => Object.keys(s.report.facts).filter((k) => /rss|hwm/i.test(k))))];
  for (const k of rssKeys) {
    lines.push(row(k, samples.map((s) => s.report.facts[k]).filter((v): v is number => typeof v === "number"), "?"));
  }
  if (rssKeys.length === 0) {
    lines.push("| agent RSS, supervisor RSS | – | – | – | | not recorded in the report's facts |");
  }
  return lines.join("\n");
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Horizontal bars of the median phase times, one row per phase. */
function svgChart(samples: Sample[], title: string): string {
  const bars = phaseNames(samples).map((name) => ({ name, ms: median(durations(samples, name)) }));
  const max = Math.max(1, ...bars.map((b) => b.ms));
  const [left, width, rowH, top] = [90, 420, 24, 40];
  const height = top + bars.length * rowH + 16;
  const rows = bars.map((b, i) => {
    const y = top + i * rowH;
    const w = Math.max(1, Math.round((b.ms / max) * width));
    return `  <text x="${left - 8}" y="${y + 15}" text-anchor="end">${escapeXml(b.name)}</text>\n` +
      `  <rect x="${left}" y="${y + 3}" width="${w}" height="${rowH - 8}" fill="#4a7fb5"/>\n` +
      `  <text x="${left + w + 6}" y="${y + 15}">${b.ms.toLocaleString("en-US")} ms</text>`;
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${left + width + 100}" height="${height}" ` +
    `font-family="sans-serif" font-size="12">`,
    `  <rect width="100%" height="100%" fill="white"/>`,
    `  <text x="8" y="20" font-size="13" font-weight="bold">${escapeXml(title)}</text>`,
    ...rows,
    "</svg>",
    "",
  ].join("\n");
}

async function bench(): Promise<boolean> {
  const cycles = Number(option("--cycles", "3"));
  if (!Number.isInteger(cycles) || cycles < 1) throw new Error(`--cycles ${option("--cycles", "")}: want a count ≥ 1`);
  const kernel = option("--kernel", Deno.env.get("CRYPTSLEEP_KERNEL") ?? "6.1");
  step("deno bundle → dist/cryptsleep.js");
  await bundle();
  const guest = await ensureGuest({ kernel });
  step(`boot (kernel ${kernel}), open the data disk`);
  await using vm = await boot({ kernel, dataDisk: true });
  await openDataDisk(vm);

  const samples: Sample[] = [];
  for (let i = 1; i <= cycles; i++) {
    step(`cycle ${i}/${cycles}`);
    const run = await runCycle(vm);
    const report = await lastReport(vm);
    samples.push({ run, report });
    step(
      `cycle ${i}: exit ${run.exitCode}, report ${report.ok ? "ok" : "FAILED"}, SUSPEND after ${run.toSuspendMs} ms`,
    );
  }

  const m = guest.manifest;
  const ok = samples.filter((s) => s.run.exitCode === 0 && s.report.ok).length;
  const title = `cryptsleep bench: ${cycles} cycle(s), ${ok} ok — kernel ${m.kernel.version}, QEMU TCG (no KVM): ` +
    `times are ~28× slower than native`;
  console.log(table(samples, title));
  console.log(
    "\nRoot and data volumes open, idle guest, 1 vCPU. Phase times are the guest's monotonic clock (S3 not " +
      "counted); unlock includes the wait for the passphrase typed by the harness; host times are wall clock.",
  );
  const svg = join(REPO_ROOT, "dist", "bench.svg");
  await Deno.writeTextFile(svg, svgChart(samples, `cryptsleep median phase times, ${cycles} cycle(s), QEMU TCG`));
  console.log(`\nChart of the median phase times: ${svg}`);
  return ok === cycles;
}

if (import.meta.main) {
  let allOk = false;
  try {
    allOk = await bench();
  } catch (err) {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
  }
  if (!allOk) Deno.exit(1);
}

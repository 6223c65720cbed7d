/**
 * @module
 * Bench on the QEMU bed: boots the guest once (LUKS2 root and LUKS2 data disk open), runs N full
 * `cryptsleep suspend` cycles and prints a Markdown table: per phase min/median/max ms (from
 * `cryptsleep status --json` in the guest), pinned bytes and RAM held, time to S3 and from wake to
 * the prompt. Writes a bar chart of the median phase times to dist/bench.svg. No assertions on speed.
 *
 * `--guest debian` compares instead, in one boot of the Debian trixie guest with systemd: a plain
 * `systemctl suspend`, Debian's cryptsetup-suspend in its default mode and with its ramfs kept
 * (`KEEP_INITRAMFS="true"`), and cryptsleep through its drop-in, alternating, N idle and N loaded cycles each
 * (default 5): medians, cryptsleep's ratios to plain, to Debian and to Debian with its ramfs kept, its phases, RAM
 * during and between cycles, dist/bench-debian.svg (scripts/bench_debian.ts says what each line measures).
 *
 * ```sh
 * deno task bench                 # or: deno run -A scripts/bench.ts --cycles 5 [--kernel 6.1]
 * deno task bench --guest debian  # or: deno run -A scripts/bench.ts --guest debian --cycles 5
 * deno task bench --guest debian --tools debian-keep,cryptsleep-kept   # some of the five only
 * ```
 */

import { join } from "node:path";
import { ensureGuest, REPO_ROOT } from "./guest/build.ts";
import { boot, openDataDisk } from "../tests/vm/harness.ts";
import type { TimelineJSON } from "../cycle/timeline.ts";
import { bundle, type CycleRun, lastReport, option, runCycle, step } from "./demo.ts";
import { benchDebian } from "./bench_debian.ts";
import { beyondKdfPercent, markSpan, TOOLS } from "./bench_debian_report.ts";
import { beforeSleepMs, formatInt, median, phaseMs, phaseNames, svgBars } from "./bench_lib.ts";

interface Sample {
  run: CycleRun;
  report: TimelineJSON;
}

function row(label: string, xs: number[], unit = "ms"): string {
  if (xs.length === 0) return `| ${label} | – | – | – | | not measured |`;
  const f = formatInt;
  return `| ${label} | ${f(Math.min(...xs))} | ${f(median(xs)!)} | ${f(Math.max(...xs))} | ${unit} | ${
    xs.map(f).join(" / ")
  } |`;
}

function reports(samples: Sample[]): TimelineJSON[] {
  return samples.map((s) => s.report);
}

function table(samples: Sample[], title: string): string {
  const lines = [
    `### ${title}`,
    "",
    "| measure | min | median | max | unit | per cycle |",
    "|---|--:|--:|--:|---|---|",
  ];
  for (const name of phaseNames(reports(samples))) {
    lines.push(row(`phase ${name}`, phaseMs(reports(samples), name)));
    // its CPU beside it: on one vCPU the rest of a phase's time is another process's (the supervisor's) or a wait
    const cpu = reports(samples).flatMap((r) =>
      r.phases.filter((p) => p.name === name && p.cpuMs !== undefined).map((p) => p.cpuMs!)
    );
    if (cpu.length) lines.push(row(`… its CPU (cryptsleep suspend's)`, cpu));
  }
  lines.push(row("time to SUSPEND (host: command typed → QMP SUSPEND)", samples.map((s) => s.run.toSuspendMs)));
  lines.push(row(
    "… of it outside the phases (deno start-ups, hand-offs)",
    samples.map((s) => s.run.toSuspendMs - beforeSleepMs(s.report)),
  ));
  lines.push(row("wake → passphrase prompt (host)", samples.map((s) => s.run.wakeToPromptMs)));
  const numbers = (vs: (number | null)[]) => vs.filter((v): v is number => v !== null);
  lines.push(row(
    "… cryptsleep's own work in it (report: sleep's return → first prompt; target ≤ 100)",
    numbers(samples.map((s) => markSpan(s.report, "woke", "prompted"))),
  ));
  lines.push(row(
    "Enter → thawed beyond the KDF, % of the KDF (report; target ≤ 5)",
    numbers(samples.map((s) => beyondKdfPercent(s.report))),
    "%",
  ));
  const fact = (k: string) => samples.map((s) => s.report.facts[k]).filter((b): b is number => typeof b === "number");
  // a number under the facts' path (`startMs.exec`), where the report has it
  const nested = (path: string) =>
    samples.map((s) => path.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], s.report.facts))
      .filter((v): v is number => typeof v === "number");
  lines.push(row("… deno's own start, its wrapper's shell included (facts.startMs.exec)", nested("startMs.exec")));
  lines.push(row("CPU to the sleep: cryptsleep suspend (facts.cpuMs)", nested("cpuMs.toSleep.self")));
  lines.push(row("CPU to the sleep: its supervisor, its start included", nested("cpuMs.toSleep.supervisor")));
  for (const step of ["mlock", "chroot"]) lines.push(row(`… pin: ${step} (facts.pinMs)`, nested(`pinMs.${step}`)));
  lines.push(row("locked by the pin", fact("pinnedBytes"), "bytes"));
  lines.push(row("RAM held (files once + anonymous)", fact("ramHeldBytes"), "bytes"));
  // RSS and cgroup peaks are shown only if the report carries them: the agent and supervisor exit with the cycle
  const memKeys = (s: Sample) => Object.keys(s.report.facts).filter((k) => /rss|hwm|memorypeak/i.test(k));
  const rssKeys = [...new Set(samples.flatMap(memKeys))];
  for (const k of rssKeys) {
    const unit = k.endsWith("KiB") ? "KiB" : k.endsWith("Bytes") ? "bytes" : "?";
    lines.push(row(k, samples.map((s) => s.report.facts[k]).filter((v): v is number => typeof v === "number"), unit));
  }
  if (rssKeys.length === 0) {
    lines.push("| agent RSS, supervisor RSS | – | – | – | | not recorded in the report's facts |");
  }
  return lines.join("\n");
}

/** Horizontal bars of the median phase times, one row per phase. */
function svgChart(samples: Sample[], title: string): string {
  const rows = phaseNames(reports(samples)).map((name) => ({
    label: name,
    unit: "ms" as const,
    values: [median(phaseMs(reports(samples), name))],
  }));
  return svgBars(title, [{ name: "median", color: "#4a7fb5" }], rows);
}

async function bench(): Promise<boolean> {
  const guestType = option("--guest", "busybox");
  if (guestType !== "busybox" && guestType !== "debian") throw new Error(`--guest ${guestType}: busybox or debian`);
  const cycles = Number(option("--cycles", guestType === "debian" ? "5" : "3"));
  if (!Number.isInteger(cycles) || cycles < 1) throw new Error(`--cycles ${option("--cycles", "")}: want a count ≥ 1`);
  const cpus = Number(option("--cpus", "1"));
  if (!Number.isInteger(cpus) || cpus < 1) throw new Error(`--cpus ${option("--cpus", "")}: want a count ≥ 1`);
  if (guestType === "debian") {
    // a subset, in the bench's order (a quicker look at one comparison; the full table needs all five)
    const asked = option("--tools", TOOLS.join(",")).split(",");
    const unknown = asked.filter((t) => !(TOOLS as readonly string[]).includes(t));
    if (unknown.length) throw new Error(`--tools ${unknown.join(",")}: want some of ${TOOLS.join(",")}`);
    return await benchDebian(cycles, option("--replay", ""), cpus, TOOLS.filter((t) => asked.includes(t)));
  }
  const kernel = option("--kernel", Deno.env.get("CRYPTSLEEP_KERNEL") ?? "6.1");
  step("deno bundle → dist/cryptsleep.js");
  await bundle();
  const guest = await ensureGuest({ kernel });
  step(`boot (kernel ${kernel}), open the data disk`);
  await using vm = await boot({ kernel, dataDisk: true, cpus });
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
    `\nRoot and data volumes open, idle guest, ${cpus} vCPU.` +
      " Phase times are the guest's monotonic clock (S3 not " +
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

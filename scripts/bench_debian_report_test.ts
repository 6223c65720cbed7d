import assert from "node:assert/strict";
import {
  behindDebian,
  type ComparisonRow,
  comparisonRows,
  kdfAfterEnter,
  keptNote,
  LABEL,
  markdownTable,
  markSpan,
  parseProbe,
  plotRows,
  refreshesInKdf,
  serialDropin,
  type ToolCycle,
  toolsIn,
} from "./bench_debian_report.ts";
import { output } from "./bench_debian.ts";
import { beforeSleepMs } from "./bench_lib.ts";

// six real cycles (one idle, one loaded per tool) from `deno task bench --guest debian --cycles 1`, saved before
// the kept mode was benched: no debian-keep cycles, no ramfsKept
const CYCLES: ToolCycle[] = JSON.parse(
  await Deno.readTextFile(new URL("../tests/fixtures/bench/debian-cycles.json", import.meta.url)),
);

const MiB = 2 ** 20;
/**
 * The same run with Debian's kept mode, its cycles made from Debian's: the idle one (round 1, its first) unpacks
 * the initramfs as Debian does and leaves it mounted; the loaded one finds it kept, so 9 s less to “Allocating…”,
 * and its unit's peak lacks the ramfs (charged to the unit that unpacked it). Debian's cycles found none.
 */
const FOUR: ToolCycle[] = CYCLES.flatMap((c): ToolCycle[] => {
  if (c.tool !== "debian") return [c];
  const leftOne = { ...c.between!, leftovers: 1 };
  const kept: ToolCycle = c.load === "idle"
    ? {
      ...c,
      tool: "debian-keep",
      ramfsKept: false,
      between: { ...leftOne, usedBytes: c.between!.usedBytes + c.ramfsBytes! },
    }
    : {
      ...c,
      tool: "debian-keep",
      ramfsKept: true,
      toSuspendMs: c.toSuspendMs - 9000,
      debianMarks: { allocMs: c.debianMarks!.allocMs - 9000, sleepingMs: c.debianMarks!.sleepingMs - 9000 },
      serviceMemoryPeakBytes: 20 * MiB,
      between: leftOne,
    };
  return [{ ...c, ramfsKept: false }, kept];
});

const LEFTOVERS = "RAM between: the tool's mounts + processes left (the kept service's own not counted)";

function row(rows: ComparisonRow[], label: string, load = "idle"): ComparisonRow {
  const r = rows.find((x) => x.label === label && x.load === load);
  assert.ok(r, `no row ${label} (${load})`);
  return r;
}

Deno.test("comparisonRows: medians per tool and load, ratios to plain and to Debian, dashes where none apply", () => {
  const rows = comparisonRows(CYCLES);
  const s3 = row(rows, LABEL.toSuspend);
  assert.deepEqual(s3.medians, {
    plain: 788,
    debian: 11860,
    "debian-keep": null,
    cryptsleep: 16500,
    "cryptsleep-kept": null,
  });
  assert.deepEqual(s3.cells, {
    plain: "788",
    debian: "11,860",
    "debian-keep": "–",
    cryptsleep: "16,500",
    "cryptsleep-kept": "–",
  });
  assert.equal(s3.vsPlain, 16500 / 788);
  assert.equal(s3.vsDebian, 16500 / 11860);
  assert.equal(row(rows, LABEL.toSuspend, "loaded").medians.cryptsleep, 22584);

  const prompt = row(rows, LABEL.wakeToPrompt, "loaded");
  assert.deepEqual(prompt.cells, {
    plain: "–",
    debian: "390",
    "debian-keep": "–",
    cryptsleep: "351",
    "cryptsleep-kept": "–",
  });
  assert.equal(prompt.vsPlain, null, "no prompt in a plain suspend: no ratio");
  assert.equal(prompt.vsDebian, 351 / 390);

  // Debian's steps from its own lines: request → “Allocating…” → “Sleeping...” → SUSPEND
  const steps = rows.filter((r) => r.load === "idle" && r.label.startsWith("… Debian"));
  assert.deepEqual(steps.map((r) => r.medians.debian), [11658, 11791 - 11658, 11860 - 11791]);
  assert.ok(steps.every((r) => r.vsDebian === null && r.cells.cryptsleep === "–"));

  // cryptsleep's phases come from its report, those before S3 marked
  const idleReport = CYCLES.find((c) => c.tool === "cryptsleep" && c.load === "idle")!.report!;
  const ramfs = row(rows, "phase ramfs (before S3)");
  assert.equal(ramfs.medians.cryptsleep, idleReport.phases.find((p) => p.name === "ramfs")!.durationMs);
  assert.ok(rows.some((r) => r.label === "phase unlock"), "after S3: not marked");

  // plain's peak was not in the journal in that run: said, not made up
  const peak = row(rows, LABEL.servicePeak);
  assert.equal(peak.cells.plain, "not measured");
  assert.equal(peak.vsPlain, null);
  assert.equal(peak.cells.debian, "177.1 MiB");
  const total = row(rows, LABEL.ramTotal);
  assert.equal(total.medians.cryptsleep, 173903872 + (idleReport.facts.ownCgroupMemoryPeakBytes as number));

  // tallies: yes-count/cycles; the writer only on loaded rounds
  assert.deepEqual(row(rows, "S3 reached (suspend_stats/success + 1)").cells, {
    plain: "1/1",
    debian: "1/1",
    "debian-keep": "–",
    cryptsleep: "1/1",
    "cryptsleep-kept": "–",
  });
  // differences around zero: no ratio; the absolute RAM in use was not sampled by that run's bench
  const between = rows.filter((r) => r.label.startsWith("RAM between") && r.label.includes("after − before"));
  assert.equal(between.length, 4);
  assert.ok(between.every((r) => r.vsPlain === null && r.vsDebian === null));
  assert.equal(row(rows, LABEL.usedAfter).cells.cryptsleep, "not measured");
  const writer = rows.filter((r) => r.label.startsWith("the writer"));
  assert.deepEqual(writer.map((r) => r.load), ["loaded"]);
});

Deno.test("markdownTable: one header, a bold line per section, a line per measure and load", () => {
  const rows = comparisonRows(FOUR);
  const table = markdownTable(rows).split("\n");
  assert.equal(
    table[0],
    "| measure | load | plain | Debian | Debian, kept ramfs | cryptsleep | cryptsleep / plain | cryptsleep / Debian " +
      "| cryptsleep / Debian, kept ramfs |",
  );
  assert.equal(table.length, 2 + rows.length + rows.filter((r) => r.section).length);
  assert.ok(
    table.includes(`| ${LABEL.toSuspend} | loaded | 1,028 | 16,241 | 7,241 | 22,584 | 21.97× | 1.39× | 3.12× |`),
    table.join("\n"),
  );
  assert.ok(table.includes("| **RAM between cycles** | | | | | | | | |"));
  assert.ok(table.every((l) => l.split("|").length === 11), "9 columns on every line");
});

Deno.test("the kept mode: its column, cryptsleep / Debian, kept ramfs, its ramfs in its RAM during, who reused one", () => {
  const rows = comparisonRows(FOUR);
  const s3 = row(rows, LABEL.toSuspend, "loaded");
  assert.deepEqual(s3.medians, {
    plain: 1028,
    debian: 16241,
    "debian-keep": 7241,
    cryptsleep: 22584,
    "cryptsleep-kept": null,
  });
  assert.equal(s3.vsDebian, 22584 / 16241, "÷ Debian stays Debian's default mode");
  assert.equal(s3.vsDebianKept, 22584 / 7241);
  assert.equal(row(rows, LABEL.toSuspend).vsDebianKept, 16500 / 11860, "its first cycle unpacked: as Debian");

  // Debian's steps and its prompt are measured for both modes
  const alloc = row(rows, "… Debian: its ramfs, pre hooks, cgroup freeze (→ “Allocating…”)", "loaded");
  assert.deepEqual([alloc.medians.debian, alloc.medians["debian-keep"]], [16086, 7086]);
  assert.equal(alloc.vsDebianKept, null, "a step of Debian's own: no ratio");
  assert.equal(row(rows, LABEL.wakeToPrompt, "loaded").cells["debian-keep"], "390");
  assert.equal(row(rows, LABEL.ramfs).cells["debian-keep"], "66.3 MiB");

  // a ramfs kept from an earlier cycle is not in this unit's peak: RAM during adds it back
  assert.equal(row(rows, LABEL.servicePeak, "loaded").medians["debian-keep"], 20 * MiB);
  assert.equal(row(rows, LABEL.ramTotal, "loaded").medians["debian-keep"], 20 * MiB + 69504911);
  assert.equal(row(rows, LABEL.ramTotal).medians["debian-keep"], 185679872, "unpacked in the cycle: in the peak");

  // who used a ramfs mounted before the cycle: never Debian's default mode; a tally, no ratio
  const kept = [row(rows, LABEL.ramfsKept), row(rows, LABEL.ramfsKept, "loaded")];
  assert.deepEqual(kept.map((r) => [r.cells.debian, r.cells["debian-keep"], r.cells.cryptsleep]), [
    ["0/1", "0/1", "–"],
    ["0/1", "1/1", "–"],
  ]);
  assert.ok(kept.every((r) => r.vsDebianKept === null));
  assert.equal(row(rows, LEFTOVERS).cells["debian-keep"], "1");

  // the plot: a bar per tool, in round order
  const plot = plotRows(rows, toolsIn(FOUR));
  assert.deepEqual(plot.find((r) => r.label === "request → S3 (loaded)")?.values, [1028, 16241, 7241, 22584]);
  assert.deepEqual(toolsIn(FOUR), ["plain", "debian", "debian-keep", "cryptsleep"]);
});

Deno.test("behindDebian: where cryptsleep is behind the kept mode too, with that mode's own steps", () => {
  const text = behindDebian(comparisonRows(FOUR));
  const [debian, kept] = text.split("\n\n");
  assert.match(debian, /^cryptsleep is behind Debian on:\n/);
  assert.match(kept, /^cryptsleep is behind Debian \(kept ramfs\) on:\n/);
  assert.ok(
    kept.includes(`${LABEL.toSuspend} (loaded): 22,584 ms against 7,241 ms, 15,343 ms more (3.12×)`),
    kept,
  );
  assert.match(kept, /Debian's steps with its ramfs kept \(host clock\): 7,086 ms to its ramfs/);
  // its RAM during holds the kept ramfs: 20 MiB + 66.3 MiB against cryptsleep's 173.9 MiB + its own cgroup
  assert.match(kept, /RAM during[^\n]*\(loaded\): [\d.]+ MiB against 86\.3 MiB/);
  assert.match(kept, /its ramfs 110\.2 MiB, Debian's kept ramfs 66\.3 MiB/);

  // ahead of both: each says so
  const ahead = FOUR.map((c) => c.tool === "cryptsleep" ? { ...c, toSuspendMs: 1, report: null, ramfsBytes: 1 } : c)
    .map((c) =>
      c.tool === "cryptsleep" ? { ...c, serviceMemoryPeakBytes: 1, wakeToPromptMs: 1, enterToShellMs: 1 } : c
    );
  assert.deepEqual(behindDebian(comparisonRows(ahead)).split("\n\n").map((p) => p.split(" on ")[0]), [
    "cryptsleep is behind Debian",
    "cryptsleep is behind Debian (kept ramfs)",
  ]);
  assert.match(behindDebian(comparisonRows(ahead)), /\(kept ramfs\) on none of/);
});

Deno.test("keptNote: the kept mode's first cycle apart, what its medians are over; a default cycle that reused one", () => {
  assert.equal(
    keptNote(FOUR),
    "Debian, kept ramfs: 1 of its 2 cycles used the ramfs kept by the one before, 1 unpacked it (request → S3: " +
      "idle round 1: 11,860 ms). Its medians are over all of them, so mostly over cycles that reuse the ramfs " +
      "(request → S3, those alone: loaded 7,241 ms).",
  );
  assert.equal(keptNote(CYCLES), "", "no kept-mode cycles: nothing to say");
  const leaked = FOUR.map((c) => c.tool === "debian" && c.load === "loaded" ? { ...c, ramfsKept: true } : c);
  assert.match(keptNote(leaked), /1 cycle\(s\) of Debian's default mode found a ramfs mounted and used it/);
});

Deno.test("a replay of a run saved before the kept mode: its column and ratio “–”, no sentence on it, no bars", () => {
  const rows = comparisonRows(CYCLES);
  assert.ok(rows.every((r) => r.cells["debian-keep"] === "–" && r.medians["debian-keep"] === null));
  assert.ok(rows.every((r) => r.vsDebianKept === null));
  assert.ok(
    markdownTable(rows).includes(`| ${LABEL.toSuspend} | idle | 788 | 11,860 | – | 16,500 | 20.94× | 1.39× | – |`),
  );
  assert.doesNotMatch(behindDebian(rows), /Debian \(kept ramfs\)|Debian's kept ramfs/);
  assert.equal(row(rows, LABEL.ramfsKept).cells.debian, "not measured", "ramfsKept absent: not made up");
  assert.deepEqual(toolsIn(CYCLES), ["plain", "debian", "cryptsleep"]);
  assert.ok(plotRows(rows, toolsIn(CYCLES)).every((r) => r.values.length === 3));

  const text = output(CYCLES, 1, "6.12.0", "2:2.7.5-1", 1);
  assert.match(text, /rounds plain → Debian → cryptsleep, idle and loaded/);
  assert.match(text, /No cycles of Debian with its ramfs kept in this run: its column is "–"\./);
  assert.doesNotMatch(text, /^Debian, kept ramfs: \d/m, "no note on cycles it does not have");
  const four = output(FOUR, 1, "6.12.0", "2:2.7.5-1", 1);
  assert.match(four, /rounds plain → Debian → Debian, kept ramfs → cryptsleep, idle/);
  assert.match(four, /^Debian, kept ramfs: 1 of its 2 cycles/m);
  assert.match(four, /^cryptsleep is behind Debian \(kept ramfs\) on:$/m);
});

Deno.test("behindDebian: names each measure cryptsleep loses, by how much, and its phases there", () => {
  const text = behindDebian(comparisonRows(CYCLES));
  assert.match(text, /^cryptsleep is behind Debian on:\n/);
  assert.ok(text.includes(`${LABEL.toSuspend} (idle): 16,500 ms against 11,860 ms, 4,640 ms more (1.39×)`), text);
  // the phases before S3, largest first, then what is outside them, then Debian's steps
  assert.match(text, /phases before S3 \(median, guest clock\): ramfs 2,994 ms, preflight 1,382 ms, syncfs/);
  assert.match(text, /and 10,010 ms outside them; Debian's steps \(host clock\): 11,658 ms to its ramfs/);
  assert.ok(text.includes(`${LABEL.ramfs} (idle): 110.2 MiB against 66.3 MiB, 43.9 MiB more (1.66×)`), text);
  assert.doesNotMatch(text, /wake → prompt/, "cryptsleep prompted sooner in both loads");
  assert.doesNotMatch(text, /Enter → unlocked/);

  // a slower prompt is named with the phases between S3 and the prompt
  const slow = CYCLES.map((c) => c.tool === "cryptsleep" ? { ...c, wakeToPromptMs: 900 } : c);
  assert.match(
    behindDebian(comparisonRows(slow)),
    /wake → prompt[^\n]*\(loaded\): 900 ms against 390 ms, 510 ms more \(2\.31×\); cryptsleep's phases there: sleep 712 ms, restore 49 ms/,
  );

  const ahead = CYCLES.filter((c) => c.tool !== "cryptsleep").concat(
    CYCLES.filter((c) => c.tool === "debian").map((c) => ({ ...c, tool: "cryptsleep" as const, report: null })),
  );
  assert.match(behindDebian(comparisonRows(ahead)), /^cryptsleep is behind Debian on none of/);
});

Deno.test("plotRows: the shared measures, a row per load, values in the order of the tools run", () => {
  const plot = plotRows(comparisonRows(CYCLES), toolsIn(CYCLES));
  assert.deepEqual(plot[0], { label: "request → S3 (idle)", unit: "ms", values: [788, 11860, 16500] });
  assert.ok(plot.every((r) => r.values.length === 3));
  assert.deepEqual(plot.map((r) => r.label).filter((l) => l.endsWith("(loaded)")), [
    "request → S3 (loaded)",
    "wake → prompt (loaded)",
    "Enter → unlocked (loaded)",
    "wake → shell answers (loaded)",
    "RAM: unit's memory.peak (loaded)",
    "RAM: peak (loaded)",
    "RAM: ramfs (loaded)",
  ]);
  assert.deepEqual(plot.find((r) => r.label === "RAM: ramfs (idle)")?.values, [null, 69504911, 115570875]);
  assert.ok(!plot.some((r) => r.label.startsWith("phase")), "phases are cryptsleep's only: not in the plot");
});

Deno.test("serialDropin: the wrapper's terminal moves from openvt's VT to the tty, the rest stays", () => {
  // the shape of Debian's drop-in: settings, a reset, then openvt with the wrapper on a continued line
  const shipped = "[Service]\nOOMScoreAdjust=-1000\nNice=-10\nExecStart=\n" +
    "ExecStart=/bin/openvt -ws -c8 \\\n    /lib/cryptsetup/scripts/suspend/cryptsetup-suspend-wrapper\n";
  const out = serialDropin(shipped);
  assert.match(out, /^OOMScoreAdjust=-1000$/m);
  assert.match(out, /^Nice=-10$/m);
  assert.match(out, /^ExecStart=$/m, "the reset stays: only one ExecStart runs");
  assert.match(
    out,
    /^ExecStart=\/bin\/sh -c 'exec \/lib\/cryptsetup\/scripts\/suspend\/cryptsetup-suspend-wrapper <\/dev\/ttyS0 >\/dev\/ttyS0 2>&1'$/m,
  );
  assert.doesNotMatch(out, /openvt/);
  assert.match(serialDropin(shipped, "/dev/ttyS1"), /<\/dev\/ttyS1 >\/dev\/ttyS1 /);
  assert.throws(() => serialDropin("[Service]\nExecStart=/usr/lib/systemd/systemd-sleep suspend\n"), /openvt/);
  // terminal codes glued onto the header (as once read back from the guest): systemd would drop the section
  assert.throws(() => serialDropin(`\x1b[0G\x1b[2K\x1b[J${shipped}`), /no \[Service\]/);
});

Deno.test("parseProbe: KEY=VALUE lines, empty values kept, the rest ignored", () => {
  const out = "RESULT=success\nS3=7\nCURSOR=s=f25;i=2f5;b=54f\nPEAK=\n-- No entries --\nUSED=31150080\n";
  assert.deepEqual(parseProbe(out), {
    RESULT: "success",
    S3: "7",
    CURSOR: "s=f25;i=2f5;b=54f",
    PEAK: "",
    USED: "31150080",
  });
});

Deno.test("RAM during, for a cycle that pins instead of copying: locked files + its own cgroup's peak, the service's not needed", () => {
  // as a pinned cycle reports it: its hooks ran in its own cgroup, so the service's peak is not read
  const pinned = CYCLES.map((c) =>
    c.tool !== "cryptsleep" ? c : {
      ...c,
      serviceMemoryPeakBytes: null,
      report: { ...c.report!, facts: { ...c.report!.facts, ramHeldBytes: 160 * 2 ** 20, pinnedBytes: 104 * 2 ** 20 } },
    }
  );
  const rows = comparisonRows(pinned);
  const total = row(rows, LABEL.ramTotal);
  const idle = CYCLES.find((c) => c.tool === "cryptsleep" && c.load === "idle")!;
  const own = idle.report!.facts.ownCgroupMemoryPeakBytes as number;
  // the peak, KDF included: not the footprint after the unlock, which is a line of its own
  assert.equal(total.medians.cryptsleep, 104 * 2 ** 20 + own);
  assert.equal(
    row(rows, "RAM during: cryptsleep's files + anonymous memory after the unlock (report: ramHeldBytes)").medians
      .cryptsleep,
    160 * 2 ** 20,
  );
  assert.match(behindDebian(rows), /of it 104\.0 MiB of files its pin locked/);
});

/** A wake's report: its marks and tries (one before the last Enter, two after it), with `more` facts. */
function wakeReport(more: Record<string, unknown> = {}): Parameters<typeof markSpan>[0] {
  return {
    version: 1,
    startedAt: "",
    ok: true,
    phases: [],
    warnings: [],
    facts: {
      marks: { woke: 1000, prompted: 1040, entered: 1500, thawed: 4700 },
      tries: [
        { volume: "root", at: 1200, ms: 2000, outcome: "no" }, // a try before the last Enter: not waited for
        { volume: "root", at: 1510, ms: 2100, outcome: "unlocked" },
        { volume: "data", at: 3620, ms: 1000, outcome: "unlocked" },
      ],
      ...more,
    },
  } as unknown as Parameters<typeof markSpan>[0];
}

Deno.test("markSpan and kdfAfterEnter read the report's marks and tries", () => {
  const r = wakeReport();
  assert.equal(markSpan(r, "woke", "prompted"), 40);
  assert.equal(markSpan(r, "entered", "thawed"), 3200);
  assert.equal(markSpan(r, "entered", "missing"), null);
  assert.equal(markSpan(null, "woke", "prompted"), null);
  assert.equal(kdfAfterEnter(r), 3100);
  assert.equal(kdfAfterEnter(null), null);
  assert.equal(refreshesInKdf(r), 0, "a report without dry runs");
});

Deno.test("refreshesInKdf: a firmware dry run inside a try the last Enter waited for is not the KDF's time", () => {
  const r = wakeReport({
    firmwareRefreshes: [
      { at: 1300, ms: 60, ok: true }, // inside the try before that Enter only: not counted
      { at: 3000, ms: 60, ok: true }, // inside root's
      { at: 4600, ms: 60, ok: true }, // 20 ms inside data's, 40 after it
    ],
  });
  assert.equal(refreshesInKdf(r), 80);
  assert.equal(kdfAfterEnter(r), 3100 - 80);
});

Deno.test("cryptsleep's kept mode: a column and two ratios of its own, what it keeps beside Debian's kept ramfs", () => {
  // its cycles made from cryptsleep's: 6 s less to S3, the client's request → the cycle in place of the load
  const FIVE: ToolCycle[] = FOUR.flatMap((c): ToolCycle[] => {
    if (c.tool !== "cryptsleep") return [c];
    const facts = { ...c.report!.facts, kept: true, startMs: { request: 40 } };
    return [c, {
      ...c,
      tool: "cryptsleep-kept",
      toSuspendMs: c.toSuspendMs - 6000,
      report: { ...c.report!, facts },
      keptServiceBytes: 60 * MiB,
    }];
  });
  const rows = comparisonRows(FIVE);
  const s3 = row(rows, LABEL.toSuspend, "loaded");
  assert.equal(s3.medians["cryptsleep-kept"], 22584 - 6000);
  assert.equal(s3.vsDebian, 22584 / 16241, "cryptsleep's own ratios stay the one-shot's");
  assert.equal(s3.keptVsDebian, 16584 / 16241);
  assert.equal(s3.keptVsDebianKept, 16584 / 7241);
  const start = row(rows, rows.find((r) => r.label.startsWith("… cryptsleep: of it the program's load"))!.label);
  assert.equal(start.medians["cryptsleep-kept"], 40);
  const kept = row(
    rows,
    "RAM between: kept on purpose (Debian: its kept ramfs; cryptsleep: " +
      "cryptsleep-kept.service memory.current)",
    "loaded",
  );
  assert.deepEqual([kept.cells["debian-keep"], kept.cells["cryptsleep-kept"], kept.cells.cryptsleep], [
    "66.3 MiB",
    "60.0 MiB",
    "–",
  ]);
  const table = markdownTable(rows);
  assert.match(
    table.split("\n")[0],
    /\| cryptsleep, kept \| cryptsleep \/ plain .* \| cryptsleep, kept \/ Debian, kept ramfs \|$/,
  );
  assert.match(table, /request → S3[^\n]*\| loaded \|[^\n]*\| 2\.29× \|$/m);
  // a run without it: no column
  assert.doesNotMatch(markdownTable(comparisonRows(FOUR)), /cryptsleep, kept/);
  assert.deepEqual(toolsIn(FIVE), ["plain", "debian", "debian-keep", "cryptsleep", "cryptsleep-kept"]);
});

Deno.test("a phase that holds the sleep is not before S3; deno's start and the CPU to the sleep get rows", () => {
  // the idle cycle's report as the cycle writes it now: the agent phase holding the sleep, the start and CPU facts
  const withAgent: ToolCycle[] = CYCLES.map((c) => {
    if (c.tool !== "cryptsleep" || c.load !== "idle") return c;
    const phases = [...c.report!.phases];
    const sleepAt = phases.findIndex((p) => p.name === "sleep");
    phases.splice(sleepAt, 0, { name: "agent", startMs: 0, durationMs: 30_000, ok: true });
    const facts = {
      ...c.report!.facts,
      startMs: { exec: 1200, runtime: 300, libcryptsetup: 500 },
      cpuMs: { start: 0, toSleep: { self: 4100, supervisor: 2900 }, cycle: 6000 },
    };
    return { ...c, report: { ...c.report!, phases, facts } };
  });
  const rows = comparisonRows(withAgent);
  assert.ok(rows.some((r) => r.label === "phase agent"), "agent: not marked before S3");
  assert.ok(!rows.some((r) => r.label === "phase agent (before S3)"));
  const cell = (prefix: string) => row(rows, rows.find((r) => r.label.startsWith(prefix))!.label).medians.cryptsleep;
  assert.equal(cell("… cryptsleep: of it deno's own start"), 1200);
  assert.equal(cell("… cryptsleep: CPU used to the sleep by cryptsleep suspend"), 4100);
  assert.equal(cell("… cryptsleep: CPU used to the sleep by its supervisor"), 2900);
  // the agent's 30 s are not counted among the phases before S3
  const outside = row(rows, "… cryptsleep: outside its phases (systemd's dispatch, deno start-ups, hand-offs)");
  const before = CYCLES.find((c) => c.tool === "cryptsleep" && c.load === "idle")!;
  assert.equal(outside.medians.cryptsleep, before.toSuspendMs - beforeSleepMs(before.report!));
});

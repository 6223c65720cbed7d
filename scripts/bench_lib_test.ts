import assert from "node:assert/strict";
import type { TimelineJSON } from "../cycle/timeline.ts";
import {
  beforeSleepMs,
  formatMiB,
  formatRatio,
  median,
  phaseMs,
  phaseNames,
  ramfsBytes,
  ratio,
  svgBars,
} from "./bench_lib.ts";

// a real report: `cryptsleep status --json` after a systemd-triggered cycle in the Debian guest
const REPORT: TimelineJSON = JSON.parse(
  await Deno.readTextFile(new URL("../tests/fixtures/bench/cryptsleep-report-debian.json", import.meta.url)),
);

Deno.test("median: the middle value, the rounded mean of the two middle ones, null for none", () => {
  assert.equal(median([20183, 9410, 14634]), 14634);
  assert.equal(median([4118, 6671]), 5395); // 5394.5 rounds up
  assert.equal(median([7]), 7);
  assert.equal(median([]), null);
  const xs = [3, 1, 2];
  median(xs);
  assert.deepEqual(xs, [3, 1, 2], "the input is not sorted in place");
});

Deno.test("ratio: none to a zero, to a missing value, or of a difference that went down", () => {
  assert.equal(ratio(20183, 9410)?.toFixed(3), "2.145");
  assert.equal(ratio(0, 5), 0);
  assert.equal(ratio(5, 0), null);
  assert.equal(ratio(null, 5), null);
  assert.equal(ratio(5, null), null);
  assert.equal(ratio(-4096, 8192), null);
  assert.equal(ratio(4096, -8192), null);
  assert.equal(formatRatio(ratio(20183, 9410)), "2.14×");
  assert.equal(formatRatio(null), "–");
  assert.equal(formatMiB(185454592), "176.9 MiB");
});

Deno.test("report helpers on a real report: phases in order, the time before sleep, the ramfs bytes", () => {
  assert.deepEqual(phaseNames([REPORT]), [
    "preflight",
    "claim",
    "hooks",
    "ramfs",
    "sync",
    "freeze",
    "syncfs",
    "lock",
    "sleep",
    "restore",
    "unlock",
    "thaw",
  ]);
  assert.deepEqual(phaseMs([REPORT, REPORT], "lock"), [543, 543]);
  assert.deepEqual(phaseMs([REPORT], "nothing"), []);
  // preflight + claim + hooks + ramfs + sync + freeze + syncfs + lock, not sleep and after
  assert.equal(beforeSleepMs(REPORT), 1470 + 49 + 19 + 4141 + 104 + 435 + 1321 + 543);
  assert.equal(ramfsBytes(REPORT), 115570629);
  const noFact = { ...REPORT, facts: {} };
  assert.equal(ramfsBytes(noFact), 115570629, "from the ramfs phase's detail");
  assert.equal(ramfsBytes({ ...noFact, phases: [] }), null);
});

Deno.test("svgBars: one scale per unit, a bar per series, a dash for a missing value, a legend for several", () => {
  const svg = svgBars("t <&>", [{ name: "plain", color: "#111" }, { name: "cryptsleep", color: "#222" }], [
    { label: "request → S3", unit: "ms", values: [5000, 20000] },
    { label: "RAM during", unit: "bytes", values: [null, 185454592] },
  ]);
  assert.match(svg, /^<svg /);
  assert.match(svg, /t &lt;&amp;&gt;/);
  const widths = [...svg.matchAll(/<rect x="\d+" y="\d+" width="(\d+)" height="13" fill="#(\d+)"/g)]
    .map((m) => [Number(m[1]), m[2]]);
  // the longest bar of each unit spans the full width; 5000 of 20000 ms a quarter of it
  assert.deepEqual(widths, [[105, "111"], [420, "222"], [420, "222"]]);
  assert.match(svg, />plain: –</);
  assert.match(svg, />176\.9 MiB</);
  assert.match(svg, />20,000 ms</);
  assert.match(svg, />cryptsleep<\/text>/, "legend");
  const single = svgBars("one", [{ name: "median", color: "#4a7fb5" }], [{ label: "lock", unit: "ms", values: [1] }]);
  assert.doesNotMatch(single, />median<\/text>/, "no legend for one series");
});

Deno.test("svgBars: a long name in the legend pushes the next entry right instead of running into it", () => {
  const names = ["plain", "Debian", "Debian, kept ramfs", "cryptsleep"];
  const svg = svgBars("t", names.map((name) => ({ name, color: "#111" })), [
    { label: "x", unit: "ms", values: [1, 2, 3, 4] },
  ]);
  const xs = [...svg.matchAll(/<rect x="(\d+)" y="30"/g)].map((m) => Number(m[1]));
  assert.deepEqual(xs, [8, 138, 268, 424], "130 px each, the long name 30 + 7 × 18");
  assert.ok(Number(/^<svg [^>]*width="(\d+)"/.exec(svg)![1]) >= 424 + 130, "the last entry fits");
});

Deno.test("beforeSleepMs: the agent phase, which holds sleep, is not counted beside its own phases", () => {
  const phase = (name: string, startMs: number, durationMs: number) => ({ name, startMs, durationMs, ok: true });
  const report = {
    version: 1 as const,
    startedAt: "",
    ok: true,
    phases: [phase("pin", 0, 300), phase("agent", 300, 9000), phase("freeze", 300, 100), phase("sleep", 400, 8000)],
    warnings: [],
    facts: {},
  };
  assert.equal(beforeSleepMs(report), 400);
});

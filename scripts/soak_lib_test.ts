import assert from "node:assert/strict";
import { join } from "node:path";
import type { TimelineJSON } from "../cycle/timeline.ts";
import {
  consoleTail,
  cpuCount,
  cycleFailed,
  type CycleRow,
  type EndChecks,
  HEAD_LINES,
  ioErrorLines,
  isDumpCycle,
  LAYOUTS,
  LOAD_SH,
  LoadLog,
  matrixTable,
  missingRecords,
  MMAP_JS,
  parseRecords,
  parseSoakRuns,
  PAYLOAD,
  rangeCount,
  recordsScript,
  reportFields,
  soakTable,
  stripLoadLines,
  summarize,
  svgPhaseLines,
  TAIL_LINES,
} from "./soak_lib.ts";

Deno.test("parseSoakRuns: defaults, the -- deno task passes on, --name=value, and what it refuses", () => {
  assert.deepEqual(parseSoakRuns(["--", "--cycles", "20", "--kernel", "6.1"], { out: "/x/dist/soak" }), [{
    cycles: 20,
    kernel: "6.1",
    layout: "root+data",
    dumpEvery: 10,
    cpus: 1,
    out: "/x/dist/soak",
  }]);
  assert.deepEqual(parseSoakRuns(["--cycles=3", "--layout=root", "--dump-every", "1", "--cpus", "2", "--out", "o"]), [{
    cycles: 3,
    kernel: "6.1",
    layout: "root",
    dumpEvery: 1,
    cpus: 2,
    out: "o",
  }]);
  assert.throws(() => parseSoakRuns(["--cycles", "2", "--cpus", "0"]), /--cpus 0: want a count ≥ 1/);
  assert.equal(parseSoakRuns(["--cycles", "2"], { kernel: "7.3" })[0].kernel, "7.3");
  assert.throws(() => parseSoakRuns([]), /--cycles is required/);
  assert.throws(() => parseSoakRuns(["--cycles", "0"]), /want a count ≥ 1/);
  assert.throws(() => parseSoakRuns(["--cycles", "2x"]), /want a count/);
  assert.throws(() => parseSoakRuns(["--cycles", "2", "--dump-every", "-1"]), /wants a value|want a count/);
  assert.throws(() => parseSoakRuns(["--cycles", "2", "--layout", "data"]), /--layout data: one of root, root\+data/);
  assert.throws(() => parseSoakRuns(["--cycles"]), /--cycles wants a value/);
  assert.throws(() => parseSoakRuns(["--cycles", "--kernel"]), /--cycles wants a value/);
  assert.throws(() => parseSoakRuns(["--cycles", "2", "--fast"]), /unknown argument --fast/);
});

Deno.test("parseSoakRuns: the matrix, one soak per kernel × layout, each with a folder of its own", () => {
  const kernels = ["6.1", "6.12", "6.18", "7.3"];
  const runs = parseSoakRuns(["--cycles", "3", "--kernel", "6.1,7.3", "--layout", "luks1,btrfs", "--out", "m"], {
    kernels,
  });
  assert.deepEqual(runs.map((r) => `${r.kernel} ${r.layout} ${r.out}`), [
    "6.1 luks1 m/6.1-luks1",
    "6.1 btrfs m/6.1-btrfs",
    "7.3 luks1 m/7.3-luks1",
    "7.3 btrfs m/7.3-btrfs",
  ]);
  const all = parseSoakRuns(["--cycles", "1", "--kernel", "all", "--layout", "all"], { kernels });
  assert.equal(all.length, kernels.length * LAYOUTS.length);
  assert.ok(all.every((r) => r.cycles === 1 && r.out === `dist/soak/${r.kernel}-${r.layout}`));
  assert.throws(() => parseSoakRuns(["--cycles", "1", "--kernel", "6.1,5.10"], { kernels }), /--kernel 5\.10: one of/);
});

Deno.test("matrixTable: a line per soak, a soak that could not be set up fails it", () => {
  const ok = summarize([], 0, {
    records: [],
    ioErrors: [],
    loadErrors: [],
    loadsStalled: [],
    walks: {},
    controlHits: null,
  });
  const table = matrixTable([
    { kernel: "6.1", layout: "luks1", summary: ok },
    { kernel: "6.1", layout: "btrfs", summary: null, error: "setting up layout btrfs failed" },
  ]);
  assert.match(table, /^\| 6\.1 \| luks1 \| 0 \| 0 \| 0 \| 0 \/ 0 \| 0 in 0 dump\(s\) \| PASS \|$/m);
  assert.match(table, /^\| 6\.1 \| btrfs \| .*FAIL: setting up layout btrfs failed \|$/m);
  assert.match(table, /FAIL \(1 of 2\)$/);
});

Deno.test("isDumpCycle: the first, the last and every k-th", () => {
  const dumped = (n: number, k: number) =>
    Array.from({ length: n }, (_, i) => i + 1).filter((i) => isDumpCycle(i, n, k));
  assert.deepEqual(dumped(25, 10), [1, 10, 20, 25]);
  assert.deepEqual(dumped(20, 10), [1, 10, 20]);
  assert.deepEqual(dumped(3, 10), [1, 3]);
  assert.deepEqual(dumped(3, 1), [1, 2, 3]);
  assert.deepEqual(dumped(1, 10), [1]);
});

Deno.test("LoadLog: complete lines only, kernel lines cut out of a load's line, ERR/WALK/END", () => {
  const log = new LoadLog();
  const a = "ACK root 1\nACK data 1\nWALK reader 1\nACK root 2\nACK ro";
  const took = log.feed(a);
  assert.equal(took, a.lastIndexOf("\n") + 1);
  assert.deepEqual(log.acked("root"), [1, 2]);
  // the rest of the line comes in the next piece; a kernel line in the middle of it
  const b = a.slice(took) + "[   12.345678] EXT4-fs (dm-0): something\not 3\nERR data 2\nEND reader 4\n";
  assert.equal(log.feed(b), b.length);
  assert.deepEqual(log.acked("root"), [1, 2, 3]);
  assert.deepEqual(log.acked("data"), [1]);
  assert.deepEqual(log.errors, ["ERR data 2"]);
  assert.equal(log.walks("reader"), 1);
  assert.ok(log.ended("reader"));
  assert.ok(!log.ended("root"));
  assert.deepEqual(log.progress(), { root: 3, data: 1, reader: 1 });
  // out of order and repeated numbers keep the list ascending and unique
  log.feed("ACK root 7\nACK root 5\nACK root 5\n");
  assert.deepEqual(log.acked("root"), [1, 2, 3, 5, 7]);
  // a line garbled otherwise is not counted (the check can miss it, never count it lost)
  log.feed("ACK root 8 x\nxx ACK root 9\n");
  assert.deepEqual(log.acked("root"), [1, 2, 3, 5, 7, 9]);
  // an ERR line says why
  log.feed("ERR data 3 dd: error writing 'x': No space left on device\nERR mmap 4 msync errno 5\n");
  assert.deepEqual(log.errors.slice(1), [
    "ERR data 3 dd: error writing 'x': No space left on device",
    "ERR mmap 4 msync errno 5",
  ]);
});

Deno.test("stripLoadLines: JSON read over the console the loads share parses again", () => {
  const json = '{\n  "a": 1,\nACK root 12\n  "b": "x"ACK data 3\n\n}\n';
  assert.deepEqual(JSON.parse(stripLoadLines(json)), { a: 1, b: "x" });
});

Deno.test("missingRecords and rangeCount: ACKed numbers outside every run", () => {
  assert.deepEqual(missingRecords([1, 2, 3, 4, 5], [[1, 5]]), []);
  assert.deepEqual(missingRecords([1, 2, 3, 4, 5, 9], [[1, 2], [4, 4], [6, 8]]), [3, 5, 9]);
  assert.deepEqual(missingRecords([1, 2], []), [1, 2]);
  assert.deepEqual(missingRecords([], [[1, 3]]), []);
  // a block writer's file of 4 slots after records 1-10: slots hold 9, 10, 7, 8
  assert.deepEqual(missingRecords([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [[7, 10]], 4), [], "overwritten, not lost");
  // records 9 and 10 never reached their slots, which still hold 5 and 6: lost; 1 and 2 were overwritten by those
  assert.deepEqual(missingRecords([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [[5, 8]], 4), [9, 10]);
  assert.equal(rangeCount([[1, 2], [4, 4], [6, 8]]), 6);
});

Deno.test("parseRecords: the summary lines of recordsScript, a missing file, garbage", () => {
  const out = "REC root lines=     12 bad=1\nDUP root 1\nRANGES root 1-5,7-11\n";
  assert.deepEqual(parseRecords(out, "root"), { lines: 12, bad: 1, dups: 1, ranges: [[1, 5], [7, 11]] });
  assert.deepEqual(parseRecords("REC data lines=0 bad=0\nDUP data 0\nRANGES data \n", "data")?.ranges, []);
  assert.equal(parseRecords("REC data missing\n", "data"), null);
  assert.throws(() => parseRecords("nothing", "root"), /no record summary of root/);
});

async function sh(script: string, args: string[] = []): Promise<string> {
  const r = await new Deno.Command("sh", { args: ["-c", script, "sh", ...args], stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder();
  assert.ok(r.success, `sh failed: ${text.decode(r.stderr)}`);
  return text.decode(r.stdout);
}

Deno.test({
  name: "LOAD_SH and recordsScript on the host's sh: ACKed records are in the file; a lost one is found",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "soak-lib-" });
    try {
      const [state, console, file] = [join(dir, "state"), join(dir, "console"), join(dir, "w", "root.log")];
      const direct = join(dir, "w", "direct.bin");
      const mapped = join(dir, "w", "mmap.bin");
      await Deno.mkdir(state);
      await Deno.writeTextFile(join(state, "load.sh"), LOAD_SH);
      await Deno.writeTextFile(join(state, "mmap.js"), MMAP_JS);
      await Deno.writeTextFile(join(dir, "tree.txt"), "a file to read\n");
      const loads = [
        ["writer", "root", file],
        // dd cannot write a directory: every record an ERR that says why
        ["writer", "bad", dir],
        ["direct", "direct", direct],
        ["mmap", "mmap", mapped],
        ["reader", "reader", dir],
      ].map((a) =>
        new Deno.Command("sh", {
          args: [join(state, "load.sh"), state, console, ...a],
          env: { DENO: Deno.execPath() },
          stdout: "null",
        }).spawn()
      );
      const log = new LoadLog();
      for (
        let i = 0;
        i < 300 && (log.acked("root").length < 5 || log.acked("direct").length < 3 || log.acked("mmap").length < 3 ||
          !log.walks("reader"));
        i++
      ) {
        await new Promise((r) => setTimeout(r, 100));
        log.feed(await Deno.readTextFile(console).catch(() => ""));
      }
      await Deno.writeTextFile(join(state, "stop"), "");
      for (const l of loads) assert.ok((await l.status).success);
      const end = new LoadLog();
      end.feed(await Deno.readTextFile(console));
      assert.ok(end.ended("root") && end.ended("direct") && end.ended("mmap") && end.ended("reader"));
      assert.ok(end.ended("bad") && end.errors.length >= 1, "the bad writer ERRs");
      for (const e of end.errors) assert.match(e, /^ERR bad \d+ dd: .*directory/i);
      const acked = end.acked("root");
      assert.ok(acked.length >= 5, `the writer ACKed ${acked.length} records`);
      assert.ok(end.walks("reader") >= 1);

      const summary = () => sh(recordsScript("root", file, join(state, "nums")));
      const whole = parseRecords(await summary(), "root")!;
      assert.equal(whole.lines, acked.length);
      assert.deepEqual([whole.bad, whole.dups], [0, 0]);
      assert.deepEqual(missingRecords(acked, whole.ranges), []);

      // the O_DIRECT writer: a record per 4096-byte block, read back without the NULs
      const blocks = parseRecords(await sh(recordsScript("direct", direct, join(state, "dnums"), true)), "direct")!;
      const dAcked = end.acked("direct");
      assert.ok(dAcked.length >= 3, `the direct writer ACKed ${dAcked.length} records`);
      assert.equal((await Deno.stat(direct)).size, 4096 * (dAcked.length + 1));
      assert.deepEqual([blocks.lines, blocks.bad, blocks.dups], [dAcked.length, 0, 0]);
      assert.deepEqual(missingRecords(dAcked, blocks.ranges), []);

      // the mmap writer: a record per page of its sparse file, read back the same way
      const paged = parseRecords(await sh(recordsScript("mmap", mapped, join(state, "mnums"), true)), "mmap")!;
      const mAcked = end.acked("mmap");
      assert.ok(mAcked.length >= 3, `the mmap writer ACKed ${mAcked.length} records`);
      assert.equal((await Deno.stat(mapped)).size, 4096 * (Math.max(...mAcked) + 1), "grown a page at a time");
      assert.deepEqual([paged.lines, paged.bad, paged.dups], [mAcked.length, 0, 0]);
      assert.deepEqual(missingRecords(mAcked, paged.ranges), []);

      // lose record 3, garble record 4, write record 2 twice
      const lines = (await Deno.readTextFile(file)).split("\n");
      assert.equal(lines[0], `root 1 ${PAYLOAD}`);
      lines.splice(2, 2, `root 4 ${PAYLOAD.slice(0, 10)}`, lines[1]);
      await Deno.writeTextFile(file, lines.join("\n"));
      const hurt = parseRecords(await summary(), "root")!;
      assert.deepEqual([hurt.bad, hurt.dups], [1, 1]);
      assert.deepEqual(missingRecords(acked, hurt.ranges), [3, 4]);
      assert.equal(
        parseRecords(await sh(recordsScript("data", join(dir, "none.log"), join(state, "n"))), "data"),
        null,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("ioErrorLines: I/O and filesystem errors, not other kernel lines", () => {
  const dmesg = [
    "[    1.000000] EXT4-fs (dm-0): mounted filesystem with ordered data mode",
    "[   50.000000] blk_update_request: I/O error, dev vda, sector 2048 op 0x1:(WRITE)",
    "[   51.000000] Buffer I/O error on dev dm-0, logical block 12, lost async page write",
    "[   52.000000] EXT4-fs error (device dm-1): ext4_find_entry:1455: inode #2: comm find: reading directory",
    "[   53.000000] PM: suspend entry (deep)",
    "ACK root 5",
    "[   54.000000] Aborting journal on device dm-0-8.",
    "",
  ].join("\n");
  assert.deepEqual(ioErrorLines(dmesg).map((l) => l.slice(0, 14)), [
    "[   50.000000]",
    "[   51.000000]",
    "[   52.000000]",
    "[   54.000000]",
  ]);
});

const REPORT: TimelineJSON = {
  version: 1,
  startedAt: "2026-11-29T23:03:22.872Z",
  ok: true,
  outcome: "ok",
  phases: [
    { name: "claim", startMs: 184, durationMs: 234, ok: true },
    { name: "freeze", startMs: 7113, durationMs: 206, ok: true },
    { name: "unlock", startMs: 8894, durationMs: 6024, ok: true },
    { name: "unlock", startMs: 15000, durationMs: 10, ok: true },
  ],
  warnings: [],
  facts: {
    pinnedBytes: 106184704,
    ramHeldBytes: 148946944,
    ramHeld: { fileBytes: 106180608, anonBytes: 42766336 },
    peakRssKiB: 189044,
    ownCgroupMemoryPeakBytes: 158285824,
  },
};

function row(cycle: number, over: Partial<CycleRow> = {}): CycleRow {
  return {
    cycle,
    s3: true,
    exitCode: 0,
    toSuspendMs: 9000,
    cycleMs: 20000,
    prompts: 1,
    keyHits: null,
    ioErrors: [],
    loads: { root: cycle * 10 },
    ...reportFields(REPORT),
    ...over,
  };
}

const CLEAN: EndChecks = {
  records: [{
    writer: "root",
    acked: 30,
    file: { lines: 30, bad: 0, dups: 0, ranges: [[1, 30]] },
    lost: [],
    lostCount: 0,
  }],
  ioErrors: [],
  loadErrors: [],
  loadsStalled: [],
  walks: { reader: 12 },
  controlHits: [2, 1],
};

Deno.test("reportFields: phases summed by name, the freeze, memory facts in bytes; nothing without a report", () => {
  const f = reportFields(REPORT);
  assert.deepEqual(f.phases, { claim: 234, freeze: 206, unlock: 6034 });
  assert.equal(f.freezeMs, 206);
  assert.equal(f.peakRssBytes, 189044 * 1024);
  assert.equal(f.ramHeldBytes, 148946944);
  assert.equal(f.pinnedBytes, 106184704);
  assert.equal(f.cgroupPeakBytes, 158285824);
  assert.equal(f.reportOk, true);
  assert.equal(f.reportStartedAt, REPORT.startedAt);
  const none = reportFields(null);
  assert.deepEqual(none.phases, {});
  assert.equal(none.freezeMs, null);
  assert.equal(none.reportOk, null);
});

Deno.test("summarize + soakTable: a clean soak passes with its numbers", () => {
  const rows = [
    row(1, { keyHits: [0, 0] }),
    row(2, { freezeMs: 900 }),
    row(3, { keyHits: [0, 0], ramHeldBytes: 148946944 + 1048576 }),
  ];
  const s = summarize(rows, 3, CLEAN);
  assert.deepEqual(s.reasons, []);
  assert.deepEqual([s.cycles, s.s3Reached, s.failures, s.maxFreezeMs, s.maxFreezeCycle], [3, 3, [], 900, 2]);
  assert.deepEqual([s.recordsLost, s.acked, s.keyHits, s.dumps], [0, 30, 0, [1, 3]]);
  assert.deepEqual(s.ramHeld, { first: 148946944, last: 148946944 + 1048576, firstCycle: 1, lastCycle: 3 });
  const t = soakTable(s, "soak <t>", CLEAN.records);
  assert.match(t, /^### soak <t>/);
  assert.match(t, /\| S3 reached \(QMP SUSPEND\) \| 3 \/ 3 \|/);
  assert.match(t, /\| max freeze phase \| 900 ms \(cycle 2\) \|/);
  assert.match(t, /\| records lost \(ACKed after fsync, missing from the file\) \| 0 of 30 ACKed \(root 30\) \|/);
  assert.match(t, /\| key half hits while asleep \| 0 in 2 dump\(s\) \(cycle 1, 3\) \|/);
  assert.match(t, /\| control: key half hits with the volumes open \| 2 \/ 1 \(each > 0/);
  assert.match(t, /142\.0 MiB → 143\.0 MiB: \+1\.0 MiB \(\+0\.7%\)/);
  assert.match(t, /\nPASS$/);
});

Deno.test("summarize: every way a soak fails is a reason", () => {
  const rows = [
    row(1, { keyHits: [0, 2] }),
    row(2, { s3: false, exitCode: 1 }),
    row(3, {
      exitCode: null,
      error: "no exit code after 600 s",
      tail: "cryptsleep: freeze\nsysrq: Show Blocked State",
    }),
  ];
  assert.ok(!cycleFailed(rows[0]) && cycleFailed(rows[1]) && cycleFailed(rows[2]));
  assert.ok(cycleFailed(row(4, { cpusLost: "CPUs online 0, at boot 0-1" })), "a CPU the wake did not bring back");
  const s = summarize(rows, 5, {
    records: [{
      writer: "root",
      acked: 30,
      file: { lines: 29, bad: 1, dups: 2, ranges: [[1, 28]] },
      lost: [29, 30],
      lostCount: 2,
    }],
    ioErrors: ["[ 1.0] Buffer I/O error on dev dm-0"],
    loadErrors: ["ERR data 7"],
    loadsStalled: ["reader"],
    walks: {},
    controlHits: [1, 0],
  });
  assert.deepEqual(s.reasons, [
    "only 3 of 5 cycles ran",
    "2 cycle(s) failed: 2, 3",
    "cycle 3: no exit code after 600 s",
    "2 ACKed record(s) lost",
    "1 garbled line(s) in the record files",
    "2 record(s) written twice",
    "2 key half hit(s) in RAM while asleep",
    "the control found not every key half with the volumes open (1/0)",
    "1 I/O error line(s) in the kernel log",
    "1 load error(s): ERR data 7",
    "load(s) stalled: reader",
  ]);
  const t = soakTable(s, "t", null);
  assert.match(t, /\| freeze failures \(exit ≠ 0 or no S3\) \| 2 \(cycle 2, 3\) \|/);
  assert.match(t, /\nFAIL: only 3 of 5/);
  assert.match(
    t,
    /\ncycle 3's console \(the loads' lines cut\):\n```\ncryptsleep: freeze\nsysrq: Show Blocked State\n```$/,
  );
  // a passed cycle's tail is not shown
  assert.deepEqual(summarize([row(1, { keyHits: [0, 0], tail: "x" })], 1, CLEAN).tails, []);
  const unchecked = summarize([row(1)], 1, { ...CLEAN, records: null });
  assert.deepEqual(unchecked.reasons, ["the records could not be checked", "RAM was never dumped"]);
});

Deno.test("svgPhaseLines: a line per phase on its own scale, a gap where a phase did not run, failed cycles red", () => {
  const rows = [row(1), row(2, { phases: { claim: 100 }, s3: false, exitCode: 1 }), row(3)];
  const svg = svgPhaseLines("phases <&>", rows);
  assert.match(svg, /^<svg /);
  assert.match(svg, /phases &lt;&amp;&gt;/);
  // claim ran in all three: one line (with its three points); freeze and unlock only in 1 and 3: two points each
  assert.equal([...svg.matchAll(/<polyline /g)].length, 1);
  assert.equal([...svg.matchAll(/<circle /g)].length, 3 + 4);
  // beyond 40 cycles the points of a line are left out
  const many = svgPhaseLines("many", Array.from({ length: 41 }, (_, i) => row(i + 1)));
  assert.equal([...many.matchAll(/<polyline /g)].length, 3);
  assert.equal([...many.matchAll(/<circle /g)].length, 0);
  assert.match(svg, />100–234 ms</);
  assert.equal([...svg.matchAll(/stroke="#c0392b"/g)].length, 1);
  assert.match(svg, />cycle 1</);
  assert.match(svg, />cycle 3</);
});

Deno.test("consoleTail: the loads' lines and carriage returns cut, the first and last lines kept", () => {
  assert.equal(
    consoleTail("ACK root 5\n# cryptsleep suspend\r\nERR data 3 EIO\nfroze\r\n"),
    "# cryptsleep suspend\nfroze",
  );
  const n = HEAD_LINES + TAIL_LINES + 10;
  const kept = consoleTail(Array.from({ length: n }, (_, i) => `line ${i}`).join("\n")).split("\n");
  assert.equal(kept.length, HEAD_LINES + 1 + TAIL_LINES);
  assert.deepEqual(
    [kept[0], kept[HEAD_LINES - 1], kept[HEAD_LINES], kept[HEAD_LINES + 1], kept.at(-1)],
    ["line 0", `line ${HEAD_LINES - 1}`, "… 10 lines …", `line ${HEAD_LINES + 10}`, `line ${n - 1}`],
  );
  const short = Array.from({ length: HEAD_LINES + TAIL_LINES }, (_, i) => `l${i}`).join("\n");
  assert.equal(consoleTail(short), short);
});

Deno.test("cpuCount: a kernel CPU list", () => {
  assert.deepEqual(["0", "0-1", "0-3,6", "0,2,4-5\n"].map(cpuCount), [1, 2, 5, 4]);
  assert.ok(["", "1-0", "a", "0-"].map(cpuCount).every(Number.isNaN));
});

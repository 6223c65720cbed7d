/**
 * @module
 * Soak on the QEMU bed (issue #10): boots one busybox guest, sets up its layout (the LUKS root alone, or with a data
 * volume on /mnt/data: LUKS2, LVM on LUKS with a swap LV, LUKS on LVM, LUKS1, a detached header, btrfs; see
 * scripts/soak_layouts.ts), starts loads that run for the whole soak — an appender on the LUKS root and one on the
 * data volume, an O_DIRECT writer (a 4096-byte block per record, on the data volume when there is one) and an mmap
 * writer (a page per record, msync'ed, on the root), that print `ACK <writer> <n>` on the serial console only after
 * the record's fsync returned, and a reader walking the tree — then runs N full `cryptsleep suspend` cycles (S3,
 * wake, passphrase, exit code, `cryptsleep status --json`). Every k cycles (and the first and last) guest RAM is
 * dumped while asleep and searched for the volume key halves. At the end the loads stop, the page cache is dropped
 * and every ACKed record is looked for in its file, and the kernel log is searched for I/O errors. Prints a table
 * (cycles, S3 reached, freeze failures, max freeze ms, records lost, key hits, memory first → last) and writes
 * soak.json (one row per cycle), soak.svg (each phase's ms across the cycles) and soak.md into --out (default
 * dist/soak/). Several kernels or layouts (lists, or `all`) make a matrix: one soak each, in a folder of its own,
 * then a table of all (matrix.md). SIGTERM or SIGINT sent to its process stops after the cycle under way, with the
 * end checks and the report on the cycles done (the verdict then says how many of those asked ran); Ctrl-C in its
 * terminal also reaches QEMU (its process group), which ends at once. Exits 1 when a cycle failed, a
 * record was lost, a key half was found, an I/O error was logged or a load failed or stalled; 2 on bad arguments.
 *
 * The core, {@linkcode soak}, is what tests/vm/soak_test.ts runs for 3 cycles; the pure parts are in
 * scripts/soak_lib.ts.
 *
 * ```sh
 * deno task soak -- --cycles 20 --kernel 6.1 --layout root+data [--dump-every 10] [--out dist/soak]
 * deno task soak -- --cycles 3 --kernel all --layout all    # the kernels × layouts matrix
 * ```
 */

import { join, resolve } from "node:path";
import { ensureGuest, KERNELS, REPO_ROOT } from "./guest/build.ts";
import { boot, keyHalves, type VM, volumeKey } from "../tests/vm/harness.ts";
import { layoutSetup } from "./soak_layouts.ts";
import { startSuspend } from "../tests/vm/cycle_helpers.ts";
import type { TimelineJSON } from "../cycle/timeline.ts";
import { bundle, step } from "./demo.ts";
import {
  consoleTail,
  cpuCount,
  type CycleRow,
  type EndChecks,
  ioErrorLines,
  isDumpCycle,
  LOAD_SH,
  LoadLog,
  type MatrixCell,
  matrixTable,
  missingRecords,
  MMAP_JS,
  parseRecords,
  parseSoakRuns,
  type RecordCheck,
  recordsScript,
  reportFields,
  SLOTS,
  type SoakOptions,
  type SoakSummary,
  soakTable,
  stripLoadLines,
  summarize,
  svgPhaseLines,
  USAGE,
} from "./soak_lib.ts";

/** Where the loads keep their script, pids and stop flag in the guest (tmpfs: never on a locked volume). */
const STATE = "/run/soak";
/** The console the loads print on: the serial console the harness reads. */
const CONSOLE = "/dev/ttyS0";
/** A cycle that has not ended after this long is given up (and the soak with it: the guest is in no known state). */
const CYCLE_TIMEOUT_MS = 600_000;
/** What the guest's dmesg is narrowed to before the host applies IO_ERROR. */
const DMESG_PREFILTER = "error|abort|read-only|critical|fail";

/** Everything the soak saw. */
export interface SoakResult {
  options: SoakOptions;
  /** The guest kernel's version. */
  kernelVersion: string;
  rows: CycleRow[];
  records: RecordCheck[] | null;
  end: EndChecks;
  summary: SoakSummary;
  /** The Markdown table and verdict. */
  table: string;
  /** Files written into `options.out`. */
  files: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The loads of a layout: the writers (name, record file, kind) and the reader's trees. Kind "writer": an fsync'ed
 * append through the page cache; "direct": a block of its own per record, O_DIRECT and fsync'ed, on the data volume
 * when there is one; "mmap": a page of its own per record in a shared mapping, msync'ed (the guest's deno), on the
 * root.
 */
function loadsOf(options: SoakOptions) {
  const data = options.layout !== "root";
  const writers = [{ name: "root", file: "/root/soak/root.log", kind: "writer" }];
  if (data) writers.push({ name: "data", file: "/mnt/data/soak/data.log", kind: "writer" });
  writers.push({ name: "direct", file: `${data ? "/mnt/data" : "/root"}/soak/direct.bin`, kind: "direct" });
  writers.push({ name: "mmap", file: "/root/soak/mmap.bin", kind: "mmap" });
  return { writers, reader: { name: "reader", trees: data ? ["/", "/mnt/data"] : ["/"] } };
}

/**
 * One cycle: types the command, waits for S3 or the exit code (a cycle that fails before S3 exits without one),
 * dumps RAM when `needles` are given, wakes the guest (again, should it sleep again), answers each prompt, reads
 * the exit code. Never throws on the cycle's own failure: a cycle that does not end is a row without exit code.
 */
async function runCycle(vm: VM, cycle: number, needles: Uint8Array[] | null): Promise<CycleRow> {
  const t0 = Date.now();
  const row: CycleRow = {
    cycle,
    s3: false,
    exitCode: null,
    toSuspendMs: null,
    cycleMs: null,
    prompts: 0,
    keyHits: null,
    ioErrors: [],
    loads: {},
    ...reportFields(null),
  };
  const from = vm.console.length;
  await startSuspend(vm);
  let pos = vm.cursor;
  let woken = 0;
  const prompt = /Passphrase to unlock \S+[^\n]*?: |CS-EXIT-(\d+)\r?\n/;
  try {
    while (true) {
      if (Date.now() - t0 > CYCLE_TIMEOUT_MS) throw new Error(`no exit code after ${CYCLE_TIMEOUT_MS / 1000} s`);
      if (!vm.running) throw new Error("QEMU exited");
      const suspends = vm.eventsSinceClear("SUSPEND");
      if (suspends.length > woken) {
        if (!row.s3) {
          row.s3 = true;
          row.toSuspendMs = suspends[0].at - t0;
          if (needles) row.keyHits = await vm.searchRam(needles);
        }
        woken = suspends.length;
        await vm.wake();
        continue;
      }
      const m = prompt.exec(vm.console.slice(pos));
      if (m) {
        pos += m.index + m[0].length;
        if (m[1] !== undefined) {
          row.exitCode = Number(m[1]);
          row.cycleMs = Date.now() - t0;
          break;
        }
        if (++row.prompts > 4) throw new Error("the passphrase was asked more than 4 times");
        await vm.answerPrompt(pos, vm.guest.passphrase + "\n");
        continue;
      }
      await sleep(200);
    }
  } catch (err) {
    row.error = err instanceof Error ? err.message : String(err);
    // a cycle that does not end: QEMU's state goes in the error; the kernel's answer is on the console the tail keeps
    if (vm.running) row.error += `; QEMU: ${(await vm.whyStuck()).qemu}`;
  }
  if (row.error || row.exitCode !== 0 || !row.s3) row.tail = consoleTail(vm.console.slice(from));
  vm.cursor = Math.max(vm.cursor, pos);
  return row;
}

/** The last cycle's report from `cryptsleep status --json`; null when it printed none. */
async function readReport(vm: VM): Promise<TimelineJSON | null> {
  const r = await vm.sh("cryptsleep status --json 2>/dev/null", { timeoutMs: 180_000 });
  const out = stripLoadLines(r.out);
  try {
    return JSON.parse(out.slice(out.indexOf("{"), out.lastIndexOf("}") + 1)) as TimelineJSON;
  } catch {
    return null;
  }
}

/** The kernel log's I/O error lines so far (dmesg prints the whole ring each time: the caller keeps the new ones). */
async function kernelIoErrors(vm: VM): Promise<string[]> {
  const r = await vm.sh(`dmesg | grep -iE '${DMESG_PREFILTER}'; true`, { timeoutMs: 120_000 });
  // raw: the harness's out drops every "[ time] …" line, which is all dmesg prints
  return ioErrorLines(r.raw);
}

/**
 * Runs the soak: boots the guest, starts the loads, runs `options.cycles` cycles, stops the loads, checks the
 * records and the kernel log; writes soak.json, soak.svg and soak.md into `options.out` unless it is null. Throws
 * only when the guest cannot be set up; a cycle or check that fails is in the result (`summary.reasons`).
 */
export async function soak(
  options: SoakOptions,
  log: (message: string) => void = step,
  stop?: AbortSignal,
): Promise<SoakResult> {
  const started = new Date();
  const guest = await ensureGuest({ kernel: options.kernel });
  const { cpus } = options;
  const vcpus = `${cpus} vCPU${cpus === 1 ? "" : "s"}`;
  log(`boot (kernel ${options.kernel}, layout ${options.layout}, ${vcpus})`);
  await using vm = await boot({ kernel: options.kernel, dataDisk: options.layout !== "root", cpus });
  // the kernel takes the others offline at each S3 and must bring each back: checked after every cycle
  // (the loads print on the same console: the answer is picked out of their lines)
  const online = async () =>
    /CPUS=(\S*)/.exec(stripLoadLines((await vm.sh("echo CPUS=$(cat /sys/devices/system/cpu/online)")).out))?.[1] ??
      "unreadable";
  const allOnline = await online();
  if (cpuCount(allOnline) !== cpus) throw new Error(`the guest has CPUs ${allOnline} online, not ${cpus}`);
  const data = layoutSetup(options.layout, vm.guest.passphrase);
  if (data) {
    log(`set up the data volume (${options.layout}) on /mnt/data`);
    const r = await vm.sh(data.shell, { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`setting up layout ${options.layout} failed (${r.code}): ${r.out}`);
  }
  log("read the volume keys (RAM is searched for their halves while asleep)");
  const needles = [...keyHalves(await volumeKey(vm, "/dev/vda"))];
  if (data) needles.push(...keyHalves(await volumeKey(vm, data.keyDevice)));

  log("control: RAM dump with the volumes open (every key half must be found)");
  const controlHits = await vm.searchRam(needles);

  const { writers, reader } = loadsOf(options);
  const loadLog = new LoadLog();
  let fed = vm.console.length;
  const pump = () => (fed += loadLog.feed(vm.console.slice(fed)));
  const ship = await vm.sh(
    `rm -rf ${STATE} ${writers.map((w) => w.file).join(" ")} && mkdir -p ${STATE} && ` +
      `cat > ${STATE}/load.sh <<'EOF'\n${LOAD_SH}EOF\ncat > ${STATE}/mmap.js <<'EOF'\n${MMAP_JS}EOF\necho shipped`,
  );
  if (ship.code !== 0) throw new Error(`shipping the load script failed: ${ship.out}`);
  const loads = [
    ...writers.map((w) => ({ name: w.name, args: `${w.kind} ${w.name} ${w.file}` })),
    { name: reader.name, args: `reader ${reader.name} ${reader.trees.join(" ")}` },
  ];
  for (const l of loads) {
    // each its own command: a trailing & would put a whole && chain in the background
    const r = await vm.sh(
      `sh ${STATE}/load.sh ${STATE} ${CONSOLE} ${l.args} >/dev/null 2>&1 & echo $! > ${STATE}/${l.name}.pid`,
    );
    if (r.code !== 0) throw new Error(`starting load ${l.name} failed: ${r.out}`);
  }
  log(`loads started: ${loads.map((l) => l.name).join(", ")}; waiting for their first line`);
  const firstBy = Date.now() + 120_000;
  while (loads.some((l) => !(l.name in loadLog.progress()))) {
    if (Date.now() > firstBy) {
      throw new Error(`the loads printed nothing in 120 s: ${JSON.stringify(loadLog.progress())}`);
    }
    await sleep(500);
    pump();
  }

  const rows: CycleRow[] = [];
  const ioErrors = new Set<string>();
  const collectIoErrors = async (row?: CycleRow) => {
    for (const line of await kernelIoErrors(vm)) {
      if (ioErrors.has(line)) continue;
      ioErrors.add(line);
      row?.ioErrors.push(line);
    }
  };
  for (let i = 1; i <= options.cycles; i++) {
    if (stop?.aborted) {
      log(`stopped by request before cycle ${i}: the end checks run on the ${i - 1} cycle(s) done`);
      break;
    }
    const dump = isDumpCycle(i, options.cycles, options.dumpEvery);
    const row = await runCycle(vm, i, dump ? needles : null);
    pump();
    row.loads = loadLog.progress();
    rows.push(row);
    if (row.exitCode === null) {
      log(`cycle ${i}/${options.cycles}: ${row.s3 ? "S3, " : "no S3, "}no exit code: ${row.error}; the soak stops`);
      break;
    }
    try {
      const report = await readReport(vm);
      // a cycle refused before it wrote a report leaves the last one in place: not this cycle's
      const previous = rows.length > 1 ? rows[rows.length - 2].reportStartedAt : null;
      Object.assign(row, reportFields(report && report.startedAt !== previous ? report : null));
      await collectIoErrors(row);
      const now = await online();
      if (now !== allOnline) row.cpusLost = `CPUs online ${now}, at boot ${allOnline}`;
    } catch (err) {
      row.error = `after the cycle: ${err instanceof Error ? err.message : err}`;
    }
    pump();
    log(
      `cycle ${i}/${options.cycles}: ${row.s3 ? "S3" : "NO S3"}, exit ${row.exitCode}, ` +
        `freeze ${row.freezeMs ?? "–"} ms, ${((row.cycleMs ?? 0) / 1000).toFixed(1)} s` +
        (row.keyHits ? `, key hits ${row.keyHits.join("/")}` : "") +
        (row.ioErrors.length ? `, ${row.ioErrors.length} I/O error line(s)` : "") +
        (row.cpusLost ? `, ${row.cpusLost}` : "") +
        `; loads ${JSON.stringify(row.loads)}` + (row.error ? `; ${row.error}` : ""),
    );
  }

  log("stop the loads, drop the page cache, look for every ACKed record in its file");
  const end: EndChecks = { records: null, ioErrors: [], loadErrors: [], loadsStalled: [], walks: {}, controlHits };
  const lastRow = rows[rows.length - 1];
  try {
    if (!lastRow || lastRow.exitCode === null) throw new Error("the last cycle did not end");
    const stop = await vm.sh(
      `touch ${STATE}/stop; for i in $(seq 600); do alive=; for f in ${STATE}/*.pid; do ` +
        `kill -0 $(cat $f) 2>/dev/null && alive="$alive $(basename $f .pid)"; done; [ -z "$alive" ] && break; ` +
        `sleep 0.2; done; echo "ALIVE:$alive"; for f in ${STATE}/*.pid; do kill -9 $(cat $f) 2>/dev/null; done; true`,
      { timeoutMs: 240_000 },
    );
    const alive = /ALIVE:(.*)/.exec(stripLoadLines(stop.out))?.[1].trim().split(/\s+/).filter(Boolean) ?? [];
    await sleep(1000);
    pump();
    const progress = loadLog.progress();
    end.loadsStalled = loads.map((l) => l.name).filter((n) =>
      alive.includes(n) || !loadLog.ended(n) || (progress[n] ?? 0) <= (lastRow.loads[n] ?? 0)
    );
    const drop = await vm.sh("sync && echo 3 > /proc/sys/vm/drop_caches", { timeoutMs: 120_000 });
    if (drop.code !== 0) throw new Error(`sync + drop_caches failed: ${drop.out}`);
    end.records = [];
    for (const w of writers) {
      const script = recordsScript(w.name, w.file, `${STATE}/${w.name}.nums`, w.kind !== "writer");
      const r = await vm.sh(script, { timeoutMs: 300_000 });
      const file = parseRecords(stripLoadLines(r.out), w.name);
      const acked = loadLog.acked(w.name);
      const lost = missingRecords(acked, file?.ranges ?? [], w.kind === "writer" ? undefined : SLOTS);
      end.records.push({ writer: w.name, acked: acked.length, file, lost: lost.slice(0, 50), lostCount: lost.length });
    }
    await collectIoErrors();
  } catch (err) {
    log(`the end checks failed: ${err instanceof Error ? err.message : err}`);
    try {
      await collectIoErrors();
    } catch { /* the guest does not answer */ }
  }
  pump();
  end.ioErrors = [...ioErrors];
  end.loadErrors = loadLog.errors;
  end.walks = { [reader.name]: loadLog.walks(reader.name) };

  const summary = summarize(rows, options.cycles, end);
  const kernelVersion = guest.manifest.kernel.version;
  const title = `cryptsleep soak: ${options.cycles} cycle(s), kernel ${kernelVersion}, layout ${options.layout}, ` +
    `${vcpus}, ` +
    `loads: ${
      writers.map((w) =>
        w.kind === "writer"
          ? `fsync appender on ${w.name}`
          : `${w.kind === "mmap" ? "mmap" : "O_DIRECT"} writer (${w.file})`
      )
        .join(", ")
    }, reader — QEMU TCG`;
  const table = soakTable(summary, title, end.records);
  const files: string[] = [];
  if (options.out) {
    await Deno.mkdir(options.out, { recursive: true });
    const json = join(options.out, "soak.json");
    await Deno.writeTextFile(
      json,
      JSON.stringify(
        {
          options,
          kernelVersion,
          startedAt: started.toISOString(),
          finishedAt: new Date().toISOString(),
          summary,
          records: end.records,
          ioErrors: end.ioErrors,
          loadErrors: end.loadErrors,
          rows,
        },
        null,
        2,
      ) + "\n",
    );
    const svg = join(options.out, "soak.svg");
    await Deno.writeTextFile(
      svg,
      svgPhaseLines(`cryptsleep soak, kernel ${kernelVersion}, ${options.layout}: phase ms per cycle`, rows),
    );
    const md = join(options.out, "soak.md");
    await Deno.writeTextFile(md, table + "\n");
    files.push(json, svg, md);
  }
  return { options, kernelVersion, rows, records: end.records, end, summary, table, files };
}

if (import.meta.main) {
  let runs: SoakOptions[];
  try {
    runs = parseSoakRuns(Deno.args, {
      kernel: Deno.env.get("CRYPTSLEEP_KERNEL") ?? "6.1",
      kernels: Object.keys(KERNELS),
      out: join(REPO_ROOT, "dist", "soak"),
    });
    for (const r of runs) if (r.out) r.out = resolve(r.out);
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    console.error(USAGE);
    Deno.exit(2);
  }
  // SIGINT or SIGTERM ends a long soak after the cycle under way, with its end checks and report, and starts no
  // other soak of a matrix (a second one kills it as usual)
  const stop = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    const listener = () => {
      step(`${signal}: stopping after this cycle (again to stop at once)`);
      stop.abort();
      Deno.removeSignalListener(signal, listener);
    };
    Deno.addSignalListener(signal, listener);
  }
  const cells: MatrixCell[] = [];
  try {
    step("deno bundle → dist/cryptsleep.js");
    await bundle();
  } catch (err) {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    console.log("FAIL");
    Deno.exit(1);
  }
  for (const options of runs) {
    if (stop.signal.aborted) break;
    try {
      const result = await soak(options, step, stop.signal);
      console.log(result.table);
      if (result.files.length) console.log(`\n${result.files.join("\n")}`);
      cells.push({ kernel: options.kernel, layout: options.layout, summary: result.summary });
    } catch (err) {
      console.error(err instanceof Error ? err.stack ?? err.message : err);
      cells.push({ kernel: options.kernel, layout: options.layout, summary: null, error: String(err).split("\n")[0] });
    }
  }
  const pass = cells.length === runs.length && cells.every((c) => c.summary && !c.summary.reasons.length);
  if (runs.length > 1) {
    const table = matrixTable(cells);
    console.log(`\n${table}`);
    const out = runs[0].out ? join(runs[0].out, "..") : null;
    if (out) {
      await Deno.writeTextFile(join(out, "matrix.md"), table + "\n");
      console.log(join(out, "matrix.md"));
    }
  } else if (!pass) console.log("FAIL");
  if (!pass) Deno.exit(1);
}

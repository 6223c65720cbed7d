/**
 * @module
 * The suspend cycle, top to bottom. Each phase is a module with its undo; this file only puts them in order.
 *
 * | #  | phase     | runs in          | undo                                               |
 * |----|-----------|------------------|----------------------------------------------------|
 * | 1  | preflight | outer process    | none: it refuses with nothing touched              |
 * | 2  | ramfs     | outer process    | unmount (after the supervisor exits)               |
 * | 3  | agent     | supervisor+agent | the supervisor unlocks and thaws if the agent dies |
 * | 4  | sync      | agent            | none                                               |
 * | 5  | freeze    | agent            | 10 thaw                                            |
 * | 6  | syncfs    | agent            | none                                               |
 * | 7  | lock      | agent            | 9 unlock (prompt), bottom-up                       |
 * | 8  | sleep     | agent            | sysfs knobs restored                               |
 * | 9  | unlock    | agent            | (undo of 7); re-opens a volume a keyring pins      |
 * | 10 | thaw      | agent            | (undo of 5)                                        |
 * | 11 | report    | agent            | none                                               |
 *
 * Three processes: the outer `cryptsleep suspend` (on the real root, frozen with everything else during the
 * cycle), the supervisor and the agent (both run from the ramfs copy, chrooted into it, in the tool's own
 * cgroup that is never frozen). The undo of every phase sits on one AsyncDisposableStack, so any failure —
 * a process that won't freeze, a lock that fails, a kernel that refuses to sleep — unwinds in reverse:
 * unlock, then thaw. If the agent itself dies, the supervisor finds what is still locked or frozen and
 * undoes it: the machine is never left frozen without a prompt.
 *
 * @example
 * ```ts ignore
 * Deno.exit(await suspend(defaultOptions(), { dryRun: true }));
 * ```
 */
import { join } from "node:path";
import { ExitCode } from "../cli/exit_codes.ts";
import { info as dmInfo } from "../ffi/devmapper.ts";
import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import { Console } from "../ffi/tty.ts";
import { setpriority } from "../ffi/libc.ts";
import { buildRamfs } from "../chroot/ramfs.ts";
import { spawnChrooted } from "../chroot/enter.ts";
import type { AgentContext } from "./context.ts";
import { messages, RefusedError } from "./errors.ts";
import { freezeUserspace, joinOwnCgroup, thawLeftovers } from "./freeze.ts";
import { type Job, JOB_PATH, readJob, REPORT_PATH, type SuspendOptions } from "./job.ts";
import { lockVolumes } from "./lock.ts";
import { isHeld } from "./hold.ts";
import { preflight } from "./preflight.ts";
import { kmsg, LAST_REPORT, writeReport } from "./report.ts";
import { Secrets } from "./secrets.ts";
import { enterSleep } from "./sleep.ts";
import { syncAll, syncVolumeFilesystems } from "./sync.ts";
import { restoreKnobs } from "./sysfs.ts";
import { Timeline, type TimelineJSON } from "./timeline.ts";
import { NoPassphraseFitted, unlockVolume } from "./unlock.ts";
import { describeCycle } from "./dry_run.ts";

/** Where the ramfs is mounted. */
export const RAMFS_DIR = "/run/cryptsleep/root";
/** The tool's own cgroup: supervisor and agent, never frozen. */
export const OWN_CGROUP = "cryptsleep";

/** Phases 1–3, in the outer process. Returns the exit code. */
export async function suspend(options: SuspendOptions, opts: { dryRun: boolean }): Promise<number> {
  const timeline = new Timeline();
  // loading libcryptsetup now maps every library the agent will need, so the ramfs can copy them
  const lib = Libcryptsetup.open();
  let job: Job;
  let script: string | null;
  try {
    script = bundlePath();
    job = await timeline.phase("preflight", () => preflight(options, lib.info, RAMFS_DIR));
  } catch (err) {
    if (!(err instanceof RefusedError)) throw err;
    for (const reason of err.reasons) console.error(`cryptsleep: refused: ${reason}`);
    return ExitCode.REFUSED;
  }
  if (opts.dryRun) {
    console.log(await describeCycle(job, script));
    return ExitCode.OK;
  }

  await using ramfs = await timeline.phase("ramfs", () => buildRamfs({ dir: RAMFS_DIR, script }), (r) => ({
    bytes: r.bytes,
    files: r.files.length,
  }));
  timeline.facts.ramfsBytes = ramfs.bytes;
  timeline.facts.volumes = job.plan.lock.map((v) => v.dmName);
  await Deno.writeTextFile(join(ramfs.root, JOB_PATH), JSON.stringify({ ...job, earlier: timeline.toJSON() }));

  const supervisor = spawnChrooted(ramfs, ["supervise"], { stdin: "inherit", stdout: "inherit", stderr: "inherit" });
  const { code } = await supervisor.status;
  try {
    await Deno.mkdir("/run/cryptsleep", { recursive: true });
    await Deno.copyFile(join(ramfs.root, REPORT_PATH), LAST_REPORT);
  } catch (err) {
    console.error(`cryptsleep: no report from the agent (${err instanceof Error ? err.message : err})`);
  }
  return code;
}

/** Phase 3, the supervisor: runs the agent, then makes sure nothing stays locked or frozen. */
export async function supervise(): Promise<number> {
  const job = await readJob();
  const own = await joinOwnCgroup({ name: OWN_CGROUP, pids: [Deno.pid] });
  try {
    setpriority(0, -10);
    // opened before anything is frozen, and kept: its saved termios is what a recovery restores, and the
    // agent prompts on the same terminal
    using console = openConsole(job);
    const agent = new Deno.Command(Deno.execPath(), {
      args: agentArgs(),
      env: { [CONSOLE_ENV]: console.path },
      stdin: "inherit",
      stdout: "inherit",
    }).spawn();
    const status = await agent.status;
    const left = await leftovers(job);
    if (left.length === 0) {
      await addFact(REPORT_PATH, "supervisorPeakRssKiB", await peakRssKiB());
      return status.code === 0 ? ExitCode.OK : ExitCode.FAILED;
    }

    // the agent died (or gave up) with volumes locked or cgroups frozen: unlock, thaw, say so
    kmsg(`agent exited (${status.signal ?? status.code}); supervisor recovers: ${left.join(", ")}`);
    console.write(
      `\ncryptsleep: the agent exited (${status.signal ?? `code ${status.code}`}); the supervisor unlocks\n`,
    );
    const timeline = new Timeline();
    timeline.warn(`agent exited with ${status.signal ?? `code ${status.code}`}; the supervisor unlocked and thawed`);
    await recover(job, console, timeline);
    await writeReport(timeline.toJSON(ExitCode.FAILED), REPORT_PATH);
    return ExitCode.FAILED;
  } finally {
    // a process left in our cgroup (not ours to kill) keeps it from being removed: worth a log line, no more
    await own.leave().catch((err) => kmsg(`leaving cgroup ${own.path}: ${messages(err).join("; ")}`));
  }
}

/** VmHWM of this process: the RAM the cycle needs, for the report. */
async function peakRssKiB(): Promise<number | null> {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(await Deno.readTextFile("/proc/self/status"));
  return m ? Number(m[1]) : null;
}

/** Adds one fact to a written report; a missing report stays missing. */
async function addFact(path: string, key: string, value: unknown): Promise<void> {
  try {
    const report = JSON.parse(await Deno.readTextFile(path)) as TimelineJSON;
    report.facts[key] = value;
    await Deno.writeTextFile(path, JSON.stringify(report, null, 2) + "\n");
  } catch (err) {
    kmsg(`report: cannot add ${key}: ${messages(err).join("; ")}`);
  }
}

/** Tries per volume for a recovery unlock that fails for another reason than the passphrase. */
const RECOVER_TRIES = 5;

/** The supervisor tells the agent which terminal it opened (a VT it allocated, or --console). */
const CONSOLE_ENV = "CRYPTSLEEP_CONSOLE";

function agentArgs(): string[] {
  return Deno.mainModule.endsWith(".js") ? ["run", "-A", new URL(Deno.mainModule).pathname, "agent"] : ["agent"];
}

/** What is still locked or frozen, by looking, not by trusting the agent's account. */
async function leftovers(job: Job): Promise<string[]> {
  const left: string[] = [];
  for (const v of job.plan.lock) {
    for (const name of [v.dmName, ...v.above]) if (dmInfo(name).suspended) left.push(`${name} locked`);
    if (isHeld(v)) left.push(`${v.dmName} locked (table swapped)`);
  }
  for (const cgroup of await thawLeftovers({ own: OWN_CGROUP, dryRun: true })) left.push(`${cgroup} frozen`);
  return left;
}

async function recover(job: Job, console: Console, timeline: Timeline): Promise<void> {
  const lib = Libcryptsetup.open();
  using secrets = new Secrets(console);
  const ctx: AgentContext = { job, lib, console, secrets, timeline, log: (m) => kmsg(m) };
  await timeline.phase("restore", async () => {
    const errors = await restoreKnobs(job.knobs);
    if (errors.length) throw new Error(errors.join("; "));
  }).catch(() => {});
  // unlock keeps prompting: a frozen machine without a prompt is the one outcome not allowed. Any other error
  // is retried a few times, then that volume is left locked and named, and the rest is unlocked and thawed.
  const failed: string[] = [];
  await timeline.phase("unlock", async () => {
    for (const volume of job.plan.unlock) {
      for (let errors = 0;;) {
        try {
          await unlockVolume(ctx, volume);
          break;
        } catch (err) {
          console.write(`cryptsleep: ${messages(err).join("; ")}\n`);
          if (err instanceof NoPassphraseFitted) continue;
          if (++errors >= RECOVER_TRIES) {
            failed.push(`${volume.dmName}: ${messages(err).join("; ")}`);
            break;
          }
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
    }
  });
  for (const f of failed) timeline.warn(`the supervisor could not unlock ${f}`);
  await timeline.phase("thaw", () => thawLeftovers({ own: OWN_CGROUP, dryRun: false }));
}

/** Phases 4–11, the agent. Returns the exit code. */
export async function agent(): Promise<number> {
  const job = await readJob();
  const earlier = (job as Job & { earlier?: TimelineJSON }).earlier;
  const timeline = new Timeline(earlier);
  setpriority(0, -10);
  const lib = Libcryptsetup.open();
  lib.setLogger((level, msg) => level === "error" && kmsg(`libcryptsetup: ${msg.trim()}`));
  // the console is opened before anything is frozen: opening a tty later could touch the locked disk
  const path = Deno.env.get(CONSOLE_ENV);
  using console = path ? Console.open(path) : openConsole(job);
  let code: number = ExitCode.OK;
  try {
    await agentCycle(job, lib, console, timeline);
  } catch (err) {
    code = ExitCode.FAILED;
    const why = messages(err);
    for (const m of why) console.write(`cryptsleep: ${m}\n`);
    timeline.facts.error = why.join("; ");
  }
  timeline.facts.agentPeakRssKiB = await peakRssKiB();
  // phase 11; not timed as a phase: the report cannot contain its own end
  await writeReport(timeline.toJSON(code), REPORT_PATH).catch((err) => kmsg(`report: ${messages(err).join("; ")}`));
  return code;
}

async function agentCycle(job: Job, lib: Libcryptsetup, console: Console, timeline: Timeline): Promise<void> {
  const log = (m: string) => kmsg(m);
  await using undo = new AsyncDisposableStack();

  // 4. sync: everything still runs, so nothing can block it on a frozen writer
  await timeline.phase("sync", () => syncAll());

  // 5. freeze — undo: 10. thaw
  const frozen = await timeline.phase(
    "freeze",
    () => freezeUserspace({ own: OWN_CGROUP, timeoutMs: job.options.freezeTimeoutMs }),
    (f) => ({ cgroups: f.cgroups, moved: f.movedPids.length }),
  );
  undo.defer(() => timeline.phase("thaw", () => frozen.thaw()));

  // 6. syncfs: only the filesystems on volumes to lock (a global sync could hang on a frozen FUSE daemon)
  await timeline.phase("syncfs", () => syncVolumeFilesystems(job));

  // 7. lock, top-down — undo: 9. unlock, bottom-up; passphrases are zeroed right after the unlock
  const secrets = undo.use(new Secrets(console));
  const ctx: AgentContext = { job, lib, console, secrets, timeline, log };
  const locked = await timeline.phase("lock", () => lockVolumes(ctx), (l) => ({ volumes: l.results }));
  undo.defer(() => timeline.phase("unlock", () => locked.disposeAsync()));

  // 8. sleep: returns after wake, or throws the kernel's refusal — either way the stack unlocks and thaws
  await timeline.phase("sleep", () => enterSleep(job.options.state), (s) => ({ ...s }));
}

function openConsole(job: Job): Console {
  return job.options.console ? Console.open(job.options.console) : Console.allocateVt();
}

/** The file the ramfs runs: this bundle, or null for a `deno compile` binary (it embeds the script). */
export function bundlePath(): string | null {
  const here = new URL(import.meta.url);
  if (here.pathname.includes("/deno-compile-")) return null;
  if (here.pathname.endsWith(".js")) return here.pathname;
  throw new RefusedError([
    "suspend must run from the bundle or a compiled binary (the agent is one file in a ramfs): " +
    "deno task bundle, then deno run -A dist/cryptsleep.js suspend",
  ]);
}

/**
 * @module
 * The suspend cycle as one list. The outer phases run in `cryptsleep suspend`, the agent phases in the agent; the runner
 * (runner.ts) does them in order and then their undos in reverse — after sleep returns, or at the first failure.
 * If the agent dies, the supervisor runs the same undos, each going by what it sees. `cryptsleep suspend
 * --dry-run` and the README's table are made from this list ({@linkcode describeCycle}, {@linkcode phaseTable}).
 *
 * @example
 * ```ts
 * import { AGENT_PHASES, OUTER_PHASES } from "./phases.ts";
 * console.log([...OUTER_PHASES, ...AGENT_PHASES].map((p) => p.name).join(" → "));
 * // preflight → claim → hooks → ramfs → watchdog → agent → sync → freeze → syncfs → lock → sleep
 * ```
 */
import { buildRamfs, planRamfs, type Ramfs } from "../chroot/ramfs.ts";
import { freezeUserspace, type Frozen, listFreezable, thawLeftovers } from "../cgroup/mod.ts";
import { type Claim, claim, findLeftovers, LOCK_PATH } from "./claim.ts";
import type { AgentContext, OuterContext } from "./context.ts";
import type { Job } from "./job.ts";
import { type LockResult, lockVolumes } from "./lock.ts";
import { isSwapped, pinnedKeys, placeholderName, readSwapRecord } from "./pinned/mod.ts";
import { preflight, sleepConfOptions } from "./preflight.ts";
import type { Phase, Undo } from "./runner.ts";
import { enterSleep, restoreSleepKnobs, SLEEP_KNOBS, type SleepResult } from "./sleep.ts";
import { RAMFS_DIR, startSupervisor } from "./start.ts";
import { OWN_NAME as OWN_CGROUP } from "../cgroup/cgroup2.ts";
import { syncAll, syncVolumeFilesystems } from "./sync.ts";
import { KNOBS, readKnob } from "../host/sysfs.ts";
import { type HookResult, listSleepHooks, runSleepHooks } from "../systemd/hooks.ts";
import {
  type HandedOver,
  handOver,
  readRecord,
  rearm,
  runtimeWatchdogUSec,
  watchdogDevices,
} from "../systemd/watchdog.ts";
import { unlockAll } from "./unlock.ts";
import * as dm from "../ffi/devmapper.ts";

/** What a dry run is told besides the job. */
export interface DescribeEnv {
  /** The file the ramfs would run, or null for a compiled binary. */
  script: string | null;
}

/** A phase of the cycle: what the runner needs, and how it reads in the dry run and the README. */
export interface CyclePhase<C, T = unknown> extends Phase<C, T> {
  /** Which process runs it (the README table). */
  where: string;
  /** It changes nothing: a dry run runs it (preflight). */
  changesNothing?: true;
  /** For the table, when the phase's undo is done by someone else than the runner. */
  undoneBy?: string;
  /** What the dry run prints for it: what it would do, with this job. */
  describe(job: Job, env: DescribeEnv): Promise<string[]>;
  /** Its undo, with a few words for the README table and the dry run's lines. */
  undo?: Undo<C, T> & { summary: string; describe?(job: Job): Promise<string[]> };
}

const lines = (...l: string[]) => Promise.resolve(l);

// ---------------------------------------------------------------------------------------------------------
// the outer process

const preflightPhase: CyclePhase<OuterContext, Job> = {
  name: "preflight",
  where: "outer process",
  changesNothing: true,
  run: async (ctx) => {
    // as systemd-sleep would: sleep.conf picks the state and the mem_sleep mode
    if (ctx.options.fromSystemd) ctx.options = await sleepConfOptions(ctx.options);
    return ctx.job = await preflight(ctx.options, ctx.lib.info, RAMFS_DIR);
  },
  describe: (job) =>
    lines(
      `ok: ${job.plan.lock.length} volume(s) to lock, ${job.plan.notLockable.length} not lockable`,
      ...job.plan.warnings.map((w) => `warning: ${w}`),
    ),
};

const claimPhase: CyclePhase<OuterContext, Claim> = {
  name: "claim",
  where: "outer process",
  run: async (ctx) => {
    // when this process started: the request a cycle ending later already answered
    const held = await claim({ ramfsDir: RAMFS_DIR, requestedAt: performance.timeOrigin });
    for (const c of held.cleaned) ctx.timeline.warn(`cleaned what a crashed run left: ${c}`);
    for (const k of held.kept) ctx.timeline.warn(k);
    return held;
  },
  detail: (held) => ({ cleaned: held.cleaned, kept: held.kept }),
  describe: async (job) => {
    const leftovers = await findLeftovers({ ramfsDir: job.ramfsRoot });
    return [
      `would take ${LOCK_PATH} for the whole cycle (a second cryptsleep suspend is refused)`,
      ...leftovers.map((l) =>
        l.refuse ? `would refuse: ${l.what}: ${l.refuse}` : l.clean ? `would clean: ${l.what}` : `found: ${l.what}`
      ),
    ];
  },
  undo: {
    name: "release",
    summary: "release the lock (last)",
    run: (_ctx, held) => Promise.resolve(held?.[Symbol.dispose]()),
  },
};

const hooksPhase: CyclePhase<OuterContext, HookResult[]> = {
  name: "hooks",
  where: "outer process",
  // what systemd-sleep runs around a suspend, and cryptsleep stands in for it; failures are logged, not fatal
  run: () => runSleepHooks("pre"),
  detail: (r) => ({ ran: r.map((h) => h.name), failed: r.filter((h) => !h.ok).map((h) => h.name) }),
  describe: async () => {
    const hooks = (await listSleepHooks()).map((h) => h.path);
    return [hooks.length ? `would run ${hooks.join(", ")} with "pre suspend"` : "no system-sleep hook to run"];
  },
  undo: {
    name: "post-hooks",
    summary: 'the hooks with "post suspend", after the thaw',
    run: async () => void await runSleepHooks("post"),
  },
};

const ramfsPhase: CyclePhase<OuterContext, Ramfs> = {
  name: "ramfs",
  where: "outer process",
  run: async (ctx) => {
    ctx.ramfs = await buildRamfs({ dir: RAMFS_DIR, script: ctx.script });
    ctx.timeline.facts.ramfsBytes = ctx.ramfs.bytes;
    ctx.timeline.facts.volumes = ctx.job?.plan.lock.map((v) => v.dmName);
    return ctx.ramfs;
  },
  detail: (r) => ({ bytes: r.bytes, files: r.files.length }),
  describe: (job, { script }) => {
    const ramfs = planRamfs({ dir: job.ramfsRoot, script });
    return lines(
      `would mount a ramfs (mode 0700) at ${job.ramfsRoot} and copy ${ramfs.files.length} files, ${
        (ramfs.bytes / 1048576).toFixed(1)
      } MiB: the runtime, ${script ?? "the compiled binary"}, the mapped shared objects`,
    );
  },
  undo: {
    name: "unmount",
    summary: "unmount (after the supervisor exits)",
    // a ramfs cut short was unmounted by buildRamfs itself
    run: async (_ctx, ramfs) => await ramfs?.dispose(),
  },
};

const watchdogPhase: CyclePhase<OuterContext, HandedOver | null> = {
  name: "watchdog",
  where: "outer process",
  // PID 1 is frozen from the freeze to the thaw and cannot ping a hardware watchdog: systemd lets go of it
  run: () => handOver(),
  detail: (held) => held ? { previousUSec: held.previousUSec, devices: held.devices } : { handedOver: false },
  describe: async () => {
    const usec = await runtimeWatchdogUSec().catch(() => null);
    const active = (await watchdogDevices()).filter((d) => d.active).map((d) => d.name);
    return [
      usec && usec !== "0"
        ? `would set PID 1's RuntimeWatchdogUSec ${usec} -> 0 (systemd stops ${active.join(", ") || "its device"})`
        : `nothing to hand over (${usec === null ? "PID 1 is not systemd" : "RuntimeWatchdogSec= is off"}` +
          `${active.length ? `; running: ${active.join(", ")}` : ""})`,
    ];
  },
  undo: {
    name: "re-arm",
    summary: "systemd's watchdog set back",
    // cut short (the hand-over half done), it goes by the record the hand-over wrote first
    run: async (_ctx, held) => {
      const previousUSec = held?.previousUSec ?? await readRecord();
      if (previousUSec !== null) await rearm({ previousUSec, devices: held?.devices ?? [] });
    },
  },
};

const agentPhase: CyclePhase<OuterContext, boolean> = {
  name: "agent",
  where: "outer → supervisor + agent",
  undoneBy: "the supervisor runs the undos of the agent's phases if it dies",
  run: async (ctx) => ctx.ok = await startSupervisor(ctx),
  describe: (job) =>
    lines(
      "would start the supervisor and the agent chrooted in the ramfs, in cgroup cryptsleep " +
        "(memory.swap.max=0, oom_score_adj -1000), prompting on " + (job.options.console ?? "a newly allocated VT"),
      "if the agent dies, the supervisor runs the undos of its phases by what it sees",
    ),
};

/** The outer process's phases. */
export const OUTER_PHASES: readonly CyclePhase<OuterContext>[] = [
  preflightPhase,
  claimPhase,
  hooksPhase,
  ramfsPhase,
  watchdogPhase,
  agentPhase,
];

// ---------------------------------------------------------------------------------------------------------
// the agent (and their undos, in reverse, also the supervisor's recovery)

const syncPhase: CyclePhase<AgentContext, void> = {
  name: "sync",
  where: "agent",
  // everything still runs, so nothing can block it on a frozen writer
  run: () => syncAll(),
  describe: () => lines("would call sync()"),
};

const freezePhase: CyclePhase<AgentContext, Frozen> = {
  name: "freeze",
  where: "agent",
  run: (ctx) => freezeUserspace({ own: OWN_CGROUP, timeoutMs: ctx.job.options.freezeTimeoutMs }),
  detail: (f) => ({ cgroups: f.cgroups, moved: f.movedPids.length }),
  describe: async (job) => {
    const freezable = await listFreezable({ own: OWN_CGROUP });
    return [
      `would freeze ${freezable.cgroups.length ? freezable.cgroups.join(", ") : "no cgroup"}` +
      (freezable.rootPids.length
        ? `, and ${freezable.rootPids.length} processes of the root cgroup moved into cryptsleep-frozen`
        : "") +
      `; gives up after ${job.options.freezeTimeoutMs} ms`,
    ];
  },
  undo: {
    name: "thaw",
    summary: "thaw",
    // exactly what this freeze froze; by looking, every cgroup left frozen (a thawed machine is the lesser harm)
    run: async (_ctx, frozen) => {
      if (frozen) await frozen.thaw();
      else await thawLeftovers({ own: OWN_CGROUP, dryRun: false });
    },
    left: async () => (await thawLeftovers({ own: OWN_CGROUP, dryRun: true })).map((c) => `${c} frozen`),
    describe: () => lines("would thaw every cgroup it froze and move root-cgroup processes back"),
  },
};

const syncfsPhase: CyclePhase<AgentContext, string[]> = {
  name: "syncfs",
  where: "agent",
  // only the filesystems on volumes to lock: a global sync could hang on a frozen FUSE daemon
  run: (ctx) => syncVolumeFilesystems(ctx.job),
  describe: (job) => {
    const mounts = [...new Set(job.plan.lock.flatMap((v) => v.mounts.map((m) => m.mountpoint)))];
    return lines(mounts.length ? `would syncfs ${mounts.join(", ")}` : "no filesystem on the volumes");
  },
};

const lockPhase: CyclePhase<AgentContext, LockResult[]> = {
  name: "lock",
  where: "agent",
  run: (ctx) => lockVolumes(ctx),
  detail: (results) => ({ volumes: results }),
  describe: async (job) => {
    const out: string[] = [];
    for (const v of job.plan.lock) {
      const pinned = (await pinnedKeys(v.uuid)).length > 0;
      const atLock = pinned && job.options.releaseAt === "lock";
      out.push(
        `${v.above.length ? `suspend ${v.above.join(", ")} (lockfs), then ` : ""}${
          atLock ? "freeze its filesystem, suspend and wipe" : "crypt_suspend"
        } ${v.dmName} (${v.type} ${v.uuid})` +
          (!pinned
            ? ""
            : atLock
            ? ` — its key is pinned in a kernel keyring: the table would be swapped onto ${
              placeholderName(v.dmName)
            } to release it`
            : ` — its key is pinned in a kernel keyring: it would stay in RAM this time, re-opened at unlock`),
      );
    }
    return out.length ? out : ["nothing to lock"];
  },
  undo: {
    name: "unlock",
    summary: "unlock (prompt), bottom-up",
    // by what it sees, whether the lock finished or not: the passphrase goes wherever a volume is locked
    run: (ctx) => unlockAll(ctx),
    left: async (ctx) => {
      const left: string[] = [];
      for (const v of ctx.job.plan.lock) {
        for (const name of [v.dmName, ...v.above]) if (dm.info(name).suspended) left.push(`${name} locked`);
        if (isSwapped(v)) left.push(`${v.dmName} locked (table swapped)`);
        // the record lives from the FIFREEZE to the thaw: while it does, the filesystem may still be frozen
        else if (await readSwapRecord(v.dmName)) left.push(`${v.dmName}: its filesystem frozen for a table swap`);
      }
      return left;
    },
    describe: (job) =>
      lines(
        job.plan.unlock.length
          ? `would prompt, then resume ${job.plan.unlock.map((v) => v.dmName).join(", ")}` +
            " without the kernel keyring, and read one block from each"
          : "nothing to unlock",
      ),
  },
};

const sleepPhase: CyclePhase<AgentContext, SleepResult> = {
  name: "sleep",
  where: "agent",
  // returns after wake, or throws the kernel's refusal: either way the runner unlocks and thaws
  run: (ctx) => enterSleep(ctx.job.options.state, ctx.job.options.memSleep),
  detail: (s) => ({ ...s }),
  describe: async (job) => {
    const knobs: string[] = [];
    for (const path of [KNOBS.syncOnSuspend, KNOBS.freezeFilesystems]) {
      const now = await readKnob(path);
      if (now !== null) knobs.push(`would set ${path} ${now} -> 0`);
    }
    const memSleep = (await readKnob(KNOBS.memSleep)) ?? "n/a";
    const mode = job.options.memSleep ? `would write ${job.options.memSleep} to ${KNOBS.memSleep} (sleep.conf)` : [];
    return [
      ...knobs,
      ...[mode].flat(),
      `would write ${job.options.state} to /sys/power/state (mem_sleep: ${memSleep})`,
    ];
  },
  undo: {
    name: "restore",
    summary: "sysfs knobs restored",
    run: (ctx) => restoreSleepKnobs(ctx.job.knobs),
    describe: (job) =>
      lines(
        `would put back ${
          SLEEP_KNOBS.filter((p) => p in job.knobs).map((p) => `${p}=${job.knobs[p]}`).join(", ") || "nothing"
        }`,
      ),
  },
};

/** The agent's phases; their undos are the supervisor's recovery too. */
export const AGENT_PHASES: readonly CyclePhase<AgentContext>[] = [
  syncPhase,
  freezePhase,
  syncfsPhase,
  lockPhase,
  sleepPhase,
];

/** After the undos: not a phase, since the report cannot contain its own end. */
export const REPORT_STEP = {
  name: "report",
  where: "agent",
  describe: () => lines("would write the timeline to /dev/kmsg and /run/cryptsleep/last.json"),
};

// ---------------------------------------------------------------------------------------------------------
// the list, read out

/** One row of the cycle as it runs: the phases, then their undos in reverse, then the report. */
export interface Step {
  /** Its place in the cycle, from 1. */
  number: number;
  /** The phase's (or undo's) name in the timeline. */
  name: string;
  /** Which process runs it. */
  where: string;
  /** For a phase: what undoes it ("10 unlock (prompt), bottom-up"); for an undo: which phase it undoes. */
  undo: string;
  /** What the dry run prints for it. */
  describe(job: Job, env: DescribeEnv): Promise<string[]>;
}

/** The cycle in the order it runs, numbered. */
export function steps(): Step[] {
  const phases: CyclePhase<never>[] = [...OUTER_PHASES, ...AGENT_PHASES];
  const undos = phases.filter((p) => p.undo && p.where === "agent").reverse();
  const undoNumber = (p: CyclePhase<never>) => phases.length + 1 + undos.indexOf(p);
  const out: Step[] = phases.map((p, i) => ({
    number: i + 1,
    name: p.name,
    where: p.where,
    undo: !p.undo ? p.undoneBy ?? "none" : p.where === "agent" ? `${undoNumber(p)} ${p.undo.summary}` : p.undo.summary,
    describe: p.describe,
  }));
  for (const p of undos) {
    out.push({
      number: undoNumber(p),
      name: p.undo!.name,
      where: "agent; supervisor if the agent died",
      undo: `(undoes ${phases.indexOf(p) + 1})`,
      describe: (job) => p.undo?.describe?.(job) ?? lines(),
    });
  }
  out.push({ number: out.length + 1, ...REPORT_STEP, undo: "none" });
  return out;
}

/** What `cryptsleep suspend --dry-run` prints after preflight: each step and what it would do. */
export async function describeCycle(job: Job, env: DescribeEnv): Promise<string> {
  const out: string[] = [];
  for (const step of steps()) {
    out.push(`${step.number} ${step.name}:`, ...(await step.describe(job, env)).map((l) => `  ${l}`));
  }
  return out.join("\n");
}

/** The README's table of the cycle (a unit test keeps the README equal to it). */
export function phaseTable(): string {
  const rows = steps().map((s) => [String(s.number), s.name, s.where, s.undo]);
  const head = ["#", "phase", "runs in", "undo"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  // laid out as `deno fmt` lays out a markdown table, so the README stays formatted
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

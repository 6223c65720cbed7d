/**
 * @module
 * The suspend cycle as one list, run by one process, `cryptsleep suspend`: the outer phases prepare (the last of them,
 * `pin`, locks the process's code in RAM and chroots it into an empty root), then the `agent` phase runs the agent's
 * phases. The runner (runner.ts) does them in order and then their undos in reverse — after sleep returns, or at the
 * first failure. If the process dies mid-cycle, the supervisor runs the agent's undos, each going by what it sees.
 * `cryptsleep suspend --dry-run` and the README's table are made from this list ({@linkcode describeCycle},
 * {@linkcode phaseTable}).
 *
 * @example
 * ```ts
 * import { AGENT_PHASES, OUTER_PHASES } from "./phases.ts";
 * console.log([...OUTER_PHASES, ...AGENT_PHASES].map((p) => p.name).join(" → "));
 * // claim → nice → own → spawn → preflight → root → supervisor → hooks → watchdog → sync → pin → agent → freeze →
 * // syncfs → guard → modprobe → firmware → lock → sleep
 * ```
 */
import { mountRoot, type Root } from "../chroot/root.ts";
import { enterRoot, type Inside } from "../chroot/enter.ts";
import { pinMappings, type Pinned, planPin } from "../chroot/pin.ts";
import { loadTokenSupport } from "./tokens.ts";
import { type KeyslotMemory, loadKeyDeviceDrivers, readKeyslotMemory, recallKeyslots } from "./keyfile.ts";
import { joinOwnCgroup, type OwnCgroup } from "../cgroup/own.ts";
import { memoryPeakBytes } from "../cgroup/cgroup2.ts";
import {
  dropControllingTerminal,
  keepWorker,
  releaseWorker,
  setNotDumpable,
  setpriorityAllThreads,
} from "../ffi/libc.ts";
import { footprint } from "../host/maps.ts";
import { niceOfSelf } from "../host/proc.ts";
import { messages } from "./errors.ts";
import { kmsg, peakRssKiB } from "./report.ts";
import { DIE_AT_ENV, dieHereIfAsked, leftOf, runPhases, settle, undoPhases } from "./runner.ts";
import { Secrets } from "./secrets.ts";
import { freezeUserspace, type Frozen, listFreezable, thawLeftovers } from "../cgroup/mod.ts";
import { type Claim, claim, findLeftovers, LOCK_PATH } from "./claim.ts";
import { type AgentContext, type OuterContext, say, warnUser } from "./context.ts";
import type { Job } from "./job.ts";
import { type LockResult, lockVolumes } from "./lock.ts";
import { isLive, isSwapped, pinnedKeys, placeholderName, readSwapRecord } from "./pinned/mod.ts";
import { preflight, sleepConfOptions, timeStep } from "./preflight.ts";
import type { Phase, Undo } from "./runner.ts";
import { enterSleep, restoreSleepKnobs, SLEEP_KNOBS, type SleepResult } from "./sleep.ts";
import { openConsole, RAMFS_DIR, spawnSupervisor, type Supervisor } from "./start.ts";
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
import { holdModprobe, modprobeLeft, releaseModprobe } from "./modprobe.ts";
import {
  cannotPrime,
  FirmwareCache,
  firmwareLeft,
  oneAtATime,
  type Primed,
  primeFirmwareCache,
  REFRESH_AFTER_MS,
  restoreFirmwareKnobs,
} from "./firmware.ts";
import * as dm from "../ffi/devmapper.ts";

/** What a dry run is told besides the job. */
export interface DescribeEnv {
  /** The file the supervisor would run, or null for a compiled binary. */
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

/** Who runs a phase (the README table): one process, before the pin and after. */
const OUTER = "cryptsleep suspend";
const AGENT = "cryptsleep suspend, pinned";

// ---------------------------------------------------------------------------------------------------------
// the outer process

const spawnPhase: CyclePhase<OuterContext, Supervisor> = {
  name: "spawn",
  where: OUTER,
  // in the own cgroup from its first page, before preflight: its runtime starts while this process runs
  // preflight; the supervisor phase hands it the job
  run: async (ctx) => {
    // kept mode: started ahead, between cycles (in a cgroup without swap); it joins this cycle's cgroup now
    const spare = ctx.kept?.takeSupervisor() ?? null;
    if (spare) {
      try {
        await ctx.own?.add(spare.pid);
      } catch (err) {
        await spare.dismiss();
        throw err;
      }
      ctx.cpu.supervisedBy(spare.pid, true);
      return ctx.supervisor = spare;
    }
    ctx.supervisor = spawnSupervisor(ctx.script);
    ctx.cpu.supervisedBy(ctx.supervisor.pid, false);
    return ctx.supervisor;
  },
  detail: (s) => ({ pid: s.pid }),
  describe: () => lines("would start the supervisor (the same program) with no job yet, to start while preflight runs"),
  undo: {
    name: "reap",
    summary: "cancel it if it never got the job; wait for it",
    // after a hand-over the dismiss undo already let it go, and this only reports
    run: async (ctx, supervisor) => {
      if (supervisor && !await supervisor.dismiss()) ctx.timeline.warn("the supervisor exited with an error");
    },
  },
};

const preflightPhase: CyclePhase<OuterContext, Job> = {
  name: "preflight",
  where: OUTER,
  changesNothing: true,
  run: async (ctx) => {
    // as systemd-sleep would: sleep.conf picks the state and the mem_sleep mode
    const took: Record<string, number> = {};
    try {
      if (ctx.options.fromSystemd) {
        ctx.options = await timeStep(took, "sleep.conf", () => sleepConfOptions(ctx.options));
      }
      ctx.job = await preflight(ctx.options, ctx.lib.info, RAMFS_DIR, undefined, took);
      // read at the claim (a dry run has none), carried on in this cycle's report with what its wake learns
      recallKeyslots(ctx.job.plan, (ctx.timeline.facts.keyFileSlots ??= await readKeyslotMemory()) as KeyslotMemory);
      return ctx.job;
    } finally {
      ctx.timeline.facts.preflightMs = took;
    }
  },
  describe: (job) =>
    lines(
      `ok: ${job.plan.lock.length} volume(s) to lock, ${job.plan.notLockable.length} not lockable`,
      ...job.plan.warnings.map((w) => `warning: ${w}`),
    ),
};

const claimPhase: CyclePhase<OuterContext, Claim> = {
  name: "claim",
  where: OUTER,
  run: async (ctx) => {
    // when this process started: the request a cycle ending later already answered
    const held = await claim({ ramfsDir: RAMFS_DIR, requestedAt: ctx.kept?.requestedAt ?? performance.timeOrigin });
    // carried on in this cycle's report, whatever becomes of it (refused, failed before preflight)
    ctx.timeline.facts.keyFileSlots = await readKeyslotMemory();
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

const nicePhase: CyclePhase<OuterContext, number> = {
  name: "nice",
  where: OUTER,
  // from here the cycle competes with the load it is about to freeze (under writers preflight took 8 s, not 1):
  // every thread at -10, and what it starts on the way to sleep (the supervisor, the pre hooks) inherits it
  run: (ctx) => {
    const before = niceOfSelf();
    ctx.niceFound = before;
    try {
      // never lower: a caller already above it keeps its own
      setpriorityAllThreads(Math.min(before, -10));
    } catch (err) {
      // failed part way: the undo would not know what to go back to
      setpriorityAllThreads(before);
      throw err;
    }
    return Promise.resolve(before);
  },
  detail: (before) => ({ before }),
  describe: () =>
    lines(
      "would set the nice of its threads to -10; the supervisor and the pre hooks it starts inherit it, the post " +
        "hooks start at the nice it found",
    ),
  undo: {
    name: "nice-back",
    summary: "its threads' nice as it was",
    run: (_ctx, before) => Promise.resolve(setpriorityAllThreads(before ?? 0)),
  },
};

const hooksPhase: CyclePhase<OuterContext, HookResult[]> = {
  name: "hooks",
  where: OUTER,
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
    // the user's programs run again: these, and what they leave running, at the nice systemd-sleep would give them
    run: async (ctx) => void await runSleepHooks("post", { nice: ctx.niceFound }),
  },
};

const watchdogPhase: CyclePhase<OuterContext, HandedOver | null> = {
  name: "watchdog",
  where: OUTER,
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

const ownPhase: CyclePhase<OuterContext, OwnCgroup> = {
  name: "own",
  where: OUTER,
  // early: what this process allocates from here on, and all the supervisor does (started after, in it), is
  // charged to a cgroup whose memory never goes to swap (a swap on a volume to lock could not give it back)
  run: async (ctx) => ctx.own = await joinOwnCgroup({ pids: [Deno.pid] }),
  detail: (own) => ({ path: own.path, swapDisabled: own.swapDisabled, warnings: own.warnings }),
  describe: () =>
    lines(
      "would move itself into cgroup cryptsleep (never frozen; memory.swap.max=0, oom_score_adj -1000), where " +
        "the supervisor is then started",
    ),
  undo: {
    name: "leave",
    summary: "out of the cgroup, which is removed",
    run: async (_ctx, own) => await own?.leave(),
  },
};

const rootPhase: CyclePhase<OuterContext, Root> = {
  name: "root",
  where: OUTER,
  run: async (ctx) => ctx.root = await mountRoot({ dir: ctx.job!.ramfsRoot }),
  detail: (r) => ({ mounts: r.mounts }),
  describe: (job) =>
    lines(`would mount an empty ramfs at ${job.ramfsRoot} with /dev, /sys, /proc and /run/cryptsetup inside`),
  undo: {
    name: "unmount",
    summary: "unmount",
    // a root cut short was unmounted by mountRoot itself
    run: async (_ctx, root) => await root?.dispose(),
  },
};

const supervisorPhase: CyclePhase<OuterContext, Supervisor> = {
  name: "supervisor",
  where: OUTER,
  // it started with the spawn phase and gets ready while the cycle goes on; the guard phase waits for it
  run: async (ctx) => {
    // the console first: the supervisor opens the same one, and the phases before it is ready may write to it
    const console = ctx.console = openConsole(ctx.job!);
    try {
      await ctx.supervisor!.handOver(ctx.job!, console.refs);
      return ctx.supervisor!;
    } catch (err) {
      console[Symbol.dispose]();
      ctx.console = undefined;
      throw err;
    }
  },
  detail: (s) => ({ pid: s.pid }),
  describe: (job) =>
    lines(
      `would open ${job.options.console ?? "a newly allocated VT and the kernel's serial consoles"} and hand the ` +
        "supervisor the job: it opens the same consoles, pins itself in RAM, chroots into the root and waits; if cryptsleep suspend dies it unlocks " +
        "and thaws",
    ),
  undo: {
    name: "dismiss",
    summary: "tell the supervisor the cycle ended; wait for it",
    // its outcome is said once, by the reap undo
    run: async (ctx, supervisor) => {
      await supervisor?.dismiss();
      ctx.console?.[Symbol.dispose]();
    },
  },
};

const syncPhase: CyclePhase<OuterContext, number> = {
  name: "sync",
  where: OUTER,
  // everything still runs, so nothing can block it on a frozen writer; a filesystem that cannot write back would
  // block it forever, so it is watched for progress
  run: (ctx) => syncAll({ stallMs: ctx.job!.options.syncTimeoutS * 1000 }),
  describe: (job) =>
    lines(`would run sync(1); gives up after ${job.options.syncTimeoutS} s without writeback progress`),
};

/** What the pin phase holds until its undo. */
interface Held {
  pinned: Pinned;
  inside: Inside;
}

const pinPhase: CyclePhase<OuterContext, Held> = {
  name: "pin",
  where: OUTER,
  run: async (ctx) => {
    // where the phase's time goes (the report's pinMs)
    const took: Record<string, number> = {};
    ctx.timeline.facts.pinMs = took;
    const timed = <T>(step: string, fn: () => T) => timeStep(took, step, async () => await fn());
    // before the pin (and the lock): a USB stick's filesystem drivers, so mounting it after wake loads nothing
    await timed("drivers", () => loadKeyDeviceDrivers(ctx.job!, (m) => ctx.timeline.appendFact("keyDevice", m)));
    // each step undone here if a later one fails: the undo below only sees a finished pin
    using stack = new DisposableStack();
    // no core dump from here: it would hold the passphrases, and a pipe core_pattern execs from the locked root
    setNotDumpable();
    // from here on the terminal it was started from must not stop it (a background read of the prompt) nor
    // interrupt it: it lets go of it, as the supervisor did with setsid
    if (dropControllingTerminal()) ctx.timeline.facts.droppedTerminal = true;
    // a token's plugin and what it loads later live on the disks to lock: loaded now, so the pin holds them
    const tokens = await timed(
      "tokens",
      () => loadTokenSupport(ctx.lib, ctx.job!, (m) => ctx.timeline.appendFact("tokens", m)),
    );
    for (const p of tokens.problems) ctx.timeline.warn(`token: ${p}; its volume's passphrase is asked for instead`);
    // one worker thread for the blocking calls from here to the unpin (syncfs, the write that sleeps, the reads
    // after wake), instead of a new one per call: each start cost ~0.4 s of CPU under the bed's emulation. The kept
    // mode keeps it for its next cycles too (an isolate, a few MiB)
    keepWorker(); // not timed: the worker starts on a thread of its own
    if (!ctx.kept) stack.defer(releaseWorker);
    const pinned = stack.use(await timed("mlock", pinMappings));
    const inside = stack.use(await timed("chroot", () => enterRoot(ctx.job!.ramfsRoot)));
    stack.move();
    ctx.timeline.facts.pinnedBytes = pinned.bytes;
    return { pinned, inside };
  },
  detail: (h) => ({ bytes: h.pinned.bytes, files: h.pinned.files.length }),
  describe: (job) =>
    lines(
      "would mlock every file it maps (the runtime and its libraries, " +
        `${(planPin().bytes / 1048576).toFixed(1)} MiB now) and chroot into ${job.ramfsRoot}`,
    ),
  undo: {
    name: "unpin",
    summary: "back on the real root, unlocked from RAM",
    run: async (ctx, held) => {
      if (!held) return;
      // what the cycle held, read while it still holds it
      const fp = footprint(ctx.supervisor ? [Deno.pid, ctx.supervisor.pid] : [Deno.pid]);
      ctx.timeline.facts.ramHeldBytes = fp.fileBytes + fp.anonBytes;
      ctx.timeline.facts.ramHeld = fp;
      ctx.timeline.facts.peakRssKiB = await peakRssKiB();
      if (ctx.own) ctx.timeline.facts.ownCgroupMemoryPeakBytes = memoryPeakBytes(ctx.own.path);
      // the release whatever the leave did
      using stack = new DisposableStack();
      stack.defer(() => held.pinned.release());
      if (!ctx.kept) stack.defer(releaseWorker);
      held.inside.leave();
    },
  },
};

const agentPhase: CyclePhase<OuterContext, boolean> = {
  name: "agent",
  where: OUTER,
  undoneBy: "by its phases' undos",
  run: async (ctx) => {
    using secrets = new Secrets(ctx.console!);
    const agent: AgentContext = {
      job: ctx.job!,
      lib: ctx.lib,
      console: ctx.console!,
      secrets,
      timeline: ctx.timeline,
      log: kmsg,
      recovery: false,
      supervisorReady: () => ctx.supervisor!.ready(),
      cpu: ctx.cpu,
    };
    try {
      await runPhases(AGENT_PHASES, agent, ctx.timeline);
      return ctx.ok = true;
    } catch (err) {
      // said where the user looks; the outer undos still run, and the outcome fails
      const why = messages(err);
      for (const m of why) say(agent, `cryptsleep: ${m}\n`);
      ctx.timeline.facts.error = why.join("; ");
      // a volume still locked (tries used up) or a cgroup still frozen: the undos again as the supervisor does
      // them — the outer undos after this one leave the chroot and the pin
      const left = await leftOf(AGENT_PHASES, agent);
      if (left.length) {
        ctx.timeline.warn(`after the undos: ${left.join(", ")}; undone again, prompting until unlocked`);
        await recover({ ...agent, recovery: true });
      }
      return ctx.ok = false;
    }
  },
  describe: () => lines("runs the phases below, then their undos in reverse"),
};

/** The outer phases, run by `cryptsleep suspend`; the last one runs the agent's phases. */
export const OUTER_PHASES: readonly CyclePhase<OuterContext>[] = [
  claimPhase,
  nicePhase,
  ownPhase,
  spawnPhase,
  preflightPhase,
  rootPhase,
  supervisorPhase,
  hooksPhase,
  watchdogPhase,
  syncPhase,
  pinPhase,
  agentPhase,
];

// ---------------------------------------------------------------------------------------------------------
// the agent (and their undos, in reverse, also the supervisor's recovery)

const freezePhase: CyclePhase<AgentContext, Frozen> = {
  name: "freeze",
  where: AGENT,
  run: (ctx) => {
    // from here to the thaw a key like Alt+F7 must not take the prompt's VT away to a frozen display server's,
    // whose raw keyboard could not switch back; hooks before and after may switch VTs freely
    ctx.console.holdSwitch();
    return freezeUserspace({
      own: OWN_CGROUP,
      timeoutMs: ctx.job.options.freezeTimeoutMs,
      betweenWaves: () => dieHereIfAsked("freeze:wave"),
      // the bed's death test needs the waves at once, not only when a FUSE request happens to hold the freeze up
      ...(Deno.env.get(DIE_AT_ENV) === "freeze:wave" ? { fuseOrder: "waves" as const } : {}),
    });
  },
  detail: (f) => ({
    cgroups: f.cgroups,
    moved: f.movedPids.length,
    ...(f.fuse ? { fuse: f.fuse } : {}),
  }),
  describe: async (job) => {
    const freezable = await listFreezable({ own: OWN_CGROUP });
    return [
      `would freeze ${freezable.cgroups.length ? freezable.cgroups.join(", ") : "no cgroup"}` +
      (freezable.rootPids.length
        ? `, and ${freezable.rootPids.length} processes of the root cgroup moved into cryptsleep-frozen`
        : "") +
      "; if a FUSE request holds that up, everything again, FUSE servers last" +
      `; gives up after ${job.options.freezeTimeoutMs} ms`,
    ];
  },
  undo: {
    name: "thaw",
    summary: "thaw",
    // exactly what this freeze froze; by looking, every cgroup left frozen. Never while a volume is locked: a
    // thawed task would block on it in D state, and the unlock could no longer freeze it back
    run: async (ctx, frozen) => {
      const locked = await lockPhase.undo!.left!(ctx);
      if (locked.length) throw new Error(`not thawed: ${locked.join(", ")}; it stays frozen until the unlock`);
      // let go while still frozen: once userspace runs, a screen locker may take VT switching for itself
      ctx.console.releaseSwitch();
      if (frozen) await frozen.thaw();
      else await thawLeftovers({ own: OWN_CGROUP, dryRun: false });
      ctx.timeline.mark("thawed");
    },
    left: async () => (await thawLeftovers({ own: OWN_CGROUP, dryRun: true })).map((c) => `${c} frozen`),
    describe: () => lines("would thaw every cgroup it froze and move root-cgroup processes back"),
  },
};

const syncfsPhase: CyclePhase<AgentContext, string[]> = {
  name: "syncfs",
  where: AGENT,
  // only the filesystems on volumes to lock: a global sync could hang on a frozen FUSE daemon
  run: (ctx) => syncVolumeFilesystems(ctx.job),
  describe: (job) => {
    const mounts = [...new Set(job.plan.lock.flatMap((v) => v.mounts.map((m) => m.mountpoint)))];
    return lines(mounts.length ? `would syncfs ${mounts.join(", ")}` : "no filesystem on the volumes");
  },
};

const guardPhase: CyclePhase<AgentContext, void> = {
  name: "guard",
  where: AGENT,
  // it started while this process pinned itself, synced and froze: nothing is locked before it can take over
  run: async (ctx) => void await ctx.supervisorReady?.(),
  describe: () => lines("would wait until the supervisor is pinned and chrooted (started by the supervisor phase)"),
};

const modprobePhase: CyclePhase<AgentContext, boolean> = {
  name: "modprobe",
  where: AGENT,
  // from the lock to the unlock, a module the kernel asks for must fail at once, not exec modprobe from the locked root
  run: (ctx) => settle(() => holdModprobe(ctx.job.knobs)),
  describe: (job) => {
    const now = job.knobs[KNOBS.modprobe];
    return lines(now === undefined ? "nothing to do (no kernel.modprobe)" : `would set kernel.modprobe ${now} -> ""`);
  },
  undo: {
    name: "modprobe-back",
    summary: "kernel.modprobe back, after the unlock",
    // never while a volume is locked (an unlock that failed): the recovery's prompts still need the hold
    run: async (ctx) => {
      const locked = await lockPhase.undo!.left!(ctx);
      if (locked.length) throw new Error(`kernel.modprobe not put back yet: ${locked.join(", ")}`);
      releaseModprobe(ctx.job.knobs);
    },
    left: (ctx) => settle(() => modprobeLeft(ctx.job.knobs)),
  },
};

const firmwarePhase: CyclePhase<AgentContext, Primed> = {
  name: "firmware",
  where: AGENT,
  // the kernel caches firmware at suspend, reading what drivers released from the root: done now, while it is
  // unlocked, the suspend right after the lock finds it all cached (cycle/firmware.ts)
  run: async (ctx) => {
    const why = cannotPrime();
    if (why) {
      warnUser(
        ctx,
        `firmware cache not primed: ${why}; a firmware file the kernel caches at suspend may be read from the ` +
          "locked root (a kernel with CONFIG_PM_DEBUG lets cryptsleep prime it)",
      );
      return { ok: false, why };
    }
    // a dry run the kernel refuses (a wakeup event, a task that would not freeze): once more, then the cycle stops
    // here, unlocked; the real suspend would most likely be refused the same way
    let primed = await oneAtATime(() => primeFirmwareCache(ctx.job.options.state, ctx.job.knobs));
    if (!primed.ok) primed = await oneAtATime(() => primeFirmwareCache(ctx.job.options.state, ctx.job.knobs));
    if (!primed.ok) {
      throw new Error(
        `the kernel refused a dry run of the suspend (${primed.why}): it would refuse the suspend too, so nothing ` +
          "was locked; dmesg tells which task or device refused",
      );
    }
    ctx.firmware = new FirmwareCache(ctx.job.options.state, ctx.job.knobs, primed.endedAt, {
      onRefresh: (startedAt, p) => {
        // on the timeline's clock: a KDF it overlapped was frozen or short of CPU meanwhile (the bench does not
        // count it as the KDF's). The last few only, and how many: a prompt left all night makes one every few s
        const ms = Math.round(performance.now() - startedAt);
        const runs = (ctx.timeline.facts.firmwareRefreshes ?? []) as unknown[];
        ctx.timeline.facts.firmwareRefreshes = [...runs.slice(-15), { at: ctx.timeline.elapsed() - ms, ms, ok: p.ok }];
        ctx.timeline.facts.firmwareRefreshCount = ((ctx.timeline.facts.firmwareRefreshCount as number) ?? 0) + 1;
      },
      needed: () => firmwareLocked(ctx.job),
    });
    return primed;
  },
  detail: (p) => (p.ok ? { ok: true, ms: p.ms } : { ...p }),
  describe: (job) => {
    const why = cannotPrime();
    return lines(
      why
        ? `would not prime the firmware cache: ${why}`
        : `would set ${KNOBS.syncOnSuspend}, ${KNOBS.freezeFilesystems} (where it exists) and ${KNOBS.pmTestDelay} ` +
          `to 0, ${KNOBS.pmTest} to freezer, write ${job.options.state} to /sys/power/state (the kernel stops after ` +
          `freezing the tasks and thaws them), put back ${KNOBS.pmTest} and its delay; again every ` +
          `${REFRESH_AFTER_MS / 1000} s while ${firmwareVolumes(job) || "a volume"} is locked`,
    );
  },
  undo: {
    name: "firmware-back",
    summary: "pm_test and the dry run's knobs put back",
    run: (ctx) => settle(() => restoreFirmwareKnobs(ctx.job.knobs)),
    left: (ctx) => settle(() => firmwareLeft(ctx.job.knobs)),
  },
};

/** A volume the firmware loader reads; one whose field a plan lacks counts (it may be the root's). */
const holdsFirmware = (v: Job["plan"]["lock"][number]) => v.holdsFirmware !== false;
/** Whether one of them is locked, or an LV on it still suspended (a read through it would wait too); unknown is yes. */
function firmwareLocked(job: Job): boolean {
  try {
    return job.plan.lock.some((v) => holdsFirmware(v) && (!isLive(v) || v.above.some((a) => dm.info(a).suspended)));
  } catch {
    return true;
  }
}
const firmwareVolumes = (job: Job) => job.plan.lock.filter(holdsFirmware).map((v) => v.dmName).join(" or ");

const lockPhase: CyclePhase<AgentContext, LockResult[]> = {
  name: "lock",
  where: AGENT,
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
    left: (ctx) =>
      settle(() => {
        const left: string[] = [];
        for (const v of ctx.job.plan.lock) {
          for (const name of [v.dmName, ...v.above]) if (dm.info(name).suspended) left.push(`${name} locked`);
          if (isSwapped(v)) left.push(`${v.dmName} locked (table swapped)`);
          // the record lives from the FIFREEZE to the thaw: while it does, the filesystem may still be frozen
          else if (readSwapRecord(v.dmName)) left.push(`${v.dmName}: its filesystem frozen for a table swap`);
        }
        return left;
      }),
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
  where: AGENT,
  // returns after wake, or throws the kernel's refusal: either way the runner unlocks and thaws
  run: async (ctx) => {
    // fresh for the suspend right after; once it may be gone (a lock that took too long) there is no suspend: the
    // runner unlocks and thaws
    await ctx.firmware?.keep(2_000);
    // on one CPU the time to sleep is these two processes' CPU time more than their phases' (they run side by side)
    ctx.cpu?.atSleep();
    const slept = await oneAtATime(() => enterSleep(ctx.job.options.state, ctx.job.options.memSleep));
    // the kernel keeps what it cached for 10 s from the wake
    ctx.firmware?.renewed();
    ctx.timeline.mark("woke");
    return slept;
  },
  detail: (s) => ({ ...s }),
  describe: (job) => {
    const knobs: string[] = [];
    for (const path of [KNOBS.syncOnSuspend, KNOBS.freezeFilesystems]) {
      const now = readKnob(path);
      if (now !== null) knobs.push(`would set ${path} ${now} -> 0`);
    }
    const memSleep = readKnob(KNOBS.memSleep) ?? "n/a";
    const mode = job.options.memSleep ? `would write ${job.options.memSleep} to ${KNOBS.memSleep} (sleep.conf)` : [];
    return lines(
      ...knobs,
      ...[mode].flat(),
      `would write ${job.options.state} to /sys/power/state (mem_sleep: ${memSleep})`,
    );
  },
  undo: {
    name: "restore",
    summary: "sysfs knobs restored",
    run: (ctx) => settle(() => restoreSleepKnobs(ctx.job.knobs)),
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
  freezePhase,
  syncfsPhase,
  guardPhase,
  modprobePhase,
  firmwarePhase,
  lockPhase,
  sleepPhase,
];

/**
 * The agent's undos, by what they see, again and again until nothing is left locked or frozen (a frozen, locked
 * machine without a prompt is the one outcome not allowed): the recovery of the supervisor, and of the agent when
 * its own undos left something. Each failure is said on the console; returns them all.
 */
export async function recover(ctx: AgentContext): Promise<string[]> {
  const errors: string[] = [];
  for (let round = 0; (await leftOf(AGENT_PHASES, ctx)).length; round++) {
    // a round that leaves something for a reason no prompt fixes must not spin
    if (round > 0) await new Promise((r) => setTimeout(r, Math.min(1000 * round, 10_000)));
    await undoPhases(AGENT_PHASES, ctx, ctx.timeline).catch((err) => {
      for (const m of messages(err)) {
        if (errors.length < 100) errors.push(m);
        say(ctx, `cryptsleep: ${m}\n`);
      }
    });
  }
  return errors;
}

/** After the undos: not a phase, since the report cannot contain its own end. */
export const REPORT_STEP = {
  name: "report",
  where: OUTER,
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
  const undos = phases.filter((p) => p.undo).reverse();
  const undoNumber = (p: CyclePhase<never>) => phases.length + 1 + undos.indexOf(p);
  const out: Step[] = phases.map((p, i) => ({
    number: i + 1,
    name: p.name,
    where: p.where,
    undo: p.undo ? `${undoNumber(p)} ${p.undo.summary}` : p.undoneBy ?? "none",
    describe: p.describe,
  }));
  for (const p of undos) {
    out.push({
      number: undoNumber(p),
      name: p.undo!.name,
      where: p.where === AGENT ? `${AGENT}; the supervisor if it died` : p.where,
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

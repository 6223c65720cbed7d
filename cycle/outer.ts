/**
 * @module
 * `cryptsleep suspend`: runs the list (cycle/phases.ts) from preflight to the agent's phases and back, then writes
 * the report. One process does the whole cycle; the supervisor it starts only watches.
 *
 * @example
 * ```ts
 * import { suspend } from "./outer.ts";
 * import { defaultOptions } from "./job.ts";
 * const outcome = await suspend(defaultOptions(), { dryRun: true });
 * if (outcome.kind === "ok") console.log(outcome.dryRun);
 * ```
 */
import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import { runtimeStartMs } from "../host/proc.ts";
import { ignoreJobControlSignals } from "../ffi/libc.ts";
import type { OuterContext } from "./context.ts";
import { InterruptedError, messages, RefusedError } from "./errors.ts";
import { ignoreStopSignals } from "./signals.ts";
import type { SuspendOptions } from "./job.ts";
import { failed, OK, type Outcome, refused } from "./outcome.ts";
import { describeCycle, OUTER_PHASES } from "./phases.ts";
import { kmsg, LAST_REPORT, writeReport } from "./report.ts";
import { runPhases } from "./runner.ts";
import { bundlePath } from "./start.ts";
import { CycleCpu, Timeline } from "./timeline.ts";
import type { Kept } from "./kept.ts";
import { KEYSLOT_MEMORY, type KeyslotMemory, saveKeyslotMemory } from "./keyfile.ts";

/** The whole cycle, from this process's side; `dryRun` runs only what changes nothing and describes the rest. */
export async function suspend(options: SuspendOptions, opts: { dryRun: boolean }, kept?: Kept): Promise<Outcome> {
  // from the runtime's time origin to here: the program's load (the report says where the time before the first
  // phase went; the runtime's own start before its time origin and systemd's dispatch are not in it)
  const runtimeMs = Math.round(performance.now());
  // loaded first: it maps every library the agent's phases will need, so the pin locks them (kept: loaded once)
  const lib = kept?.lib ?? Libcryptsetup.open();
  const ctx: OuterContext = { options, lib, timeline: new Timeline(), script: null, kept, cpu: new CycleCpu(!!kept) };
  ctx.timeline.facts.startMs = kept
    // kept: from the client's request to here (its shell's start and the FIFO)
    ? { request: Math.max(0, Math.round(Date.now() - kept.requestedAt)) }
    // exec: the runtime's own start before its time origin (from the fork: a wrapper's shell included)
    : { exec: runtimeStartMs(), runtime: runtimeMs, libcryptsetup: Math.round(performance.now()) - runtimeMs };
  if (kept) ctx.timeline.facts.kept = true;
  ctx.timeline.facts.cpuMs = ctx.cpu;
  // the report tells a cycle systemd started (lid, menu, idle) from one typed by hand
  if (options.fromSystemd) ctx.timeline.facts.trigger = "systemd-suspend.service";
  // Ctrl-C (or SIGTERM) before the agent starts stops the list and undoes what ran; once the agent runs it is
  // the agent's cycle, and the signal is only said
  // started in the background of the terminal it prompts on, it must not be stopped by job control mid-cycle
  ignoreJobControlSignals();
  let caught: Deno.Signal | null = null;
  using _signals = ignoreStopSignals((signal) => {
    caught ??= signal;
    ctx.timeline.warn(
      `${signal} received${ctx.ok === undefined ? "" : " after the cycle"}; ignored once the agent ran`,
    );
  });
  const checkpoint = (next: string) => {
    if (caught) throw new InterruptedError(`${caught} before ${next}: stopped, and what ran was undone`);
  };
  try {
    ctx.script = bundlePath();
    if (opts.dryRun) {
      await runPhases(OUTER_PHASES.filter((p) => p.changesNothing), ctx, ctx.timeline);
      return { kind: "ok", dryRun: await describeCycle(ctx.job!, { script: ctx.script }) };
    }
    try {
      await runPhases(OUTER_PHASES, ctx, ctx.timeline, { checkpoint });
    } finally {
      // a cycle that began (the lock taken) is reported, however it ended; not timed: it cannot contain its own end
      if (ctx.timeline.phases.some((p) => p.name === "claim" && p.ok)) await report(ctx);
    }
  } catch (err) {
    if (err instanceof RefusedError) return refused(err.reasons);
    if (err instanceof InterruptedError) return failed(messages(err));
    throw err;
  }
  return ctx.ok ? OK : failed([`the cycle failed: ${ctx.timeline.facts.error ?? "cryptsleep status shows where"}`]);
}

async function report(ctx: OuterContext): Promise<void> {
  const ok = ctx.ok && ctx.timeline.phases.every((p) => p.ok);
  ctx.cpu.atEnd();
  try {
    await Deno.mkdir("/run/cryptsleep", { recursive: true });
    await writeReport(ctx.timeline.toJSON(ok ? "ok" : "failed"), LAST_REPORT);
  } catch (err) {
    kmsg(`report: ${messages(err).join("; ")}`);
  }
  // every volume unlocked: the disk takes the keyslots learned, for the first wake after the next boot. After the
  // report (in /run), which a slow /var must not hold up
  if (ok) {
    await saveKeyslotMemory(ctx.timeline.facts.keyFileSlots as KeyslotMemory ?? {}).catch((err) =>
      kmsg(`the keyslots learned were not kept in ${KEYSLOT_MEMORY}: ${messages(err).join("; ")}`)
    );
  }
}

/**
 * @module
 * The outer process, `cryptsleep suspend`: runs the outer phases of the list (preflight, claim, hooks, ramfs, agent) on the real
 * root. It is frozen with everything else while the agent works; when the supervisor exits, the ramfs goes.
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
import type { OuterContext } from "./context.ts";
import { InterruptedError, messages, RefusedError } from "./errors.ts";
import { ignoreStopSignals } from "./signals.ts";
import type { SuspendOptions } from "./job.ts";
import { failed, OK, type Outcome, refused } from "./outcome.ts";
import { describeCycle, OUTER_PHASES } from "./phases.ts";
import { runPhases } from "./runner.ts";
import { bundlePath } from "./start.ts";
import { Timeline } from "./timeline.ts";

/** The whole cycle, from this process's side; `dryRun` runs only what changes nothing and describes the rest. */
export async function suspend(options: SuspendOptions, opts: { dryRun: boolean }): Promise<Outcome> {
  // loaded first: it maps every library the agent will need, so the ramfs can copy them
  const ctx: OuterContext = { options, lib: Libcryptsetup.open(), timeline: new Timeline(), script: null };
  // the report tells a cycle systemd started (lid, menu, idle) from one typed by hand
  if (options.fromSystemd) ctx.timeline.facts.trigger = "systemd-suspend.service";
  // Ctrl-C (or SIGTERM) before the agent starts stops the list and undoes what ran; once the agent runs it is
  // the agent's cycle, and the signal is only said
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
    await runPhases(OUTER_PHASES, ctx, ctx.timeline, { checkpoint });
  } catch (err) {
    if (err instanceof RefusedError) return refused(err.reasons);
    if (err instanceof InterruptedError) return failed(messages(err));
    throw err;
  }
  return ctx.ok ? OK : failed(["the cycle failed: cryptsleep status shows where"]);
}

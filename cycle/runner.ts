/**
 * @module
 * The one runner of the cycle. It does a list of phases in order and then undoes them in reverse — after the
 * last phase, or at the first failure. A phase that fails half-way is undone too, from what it left. A failing
 * undo does not stop the others; every error is kept, oldest first (see {@linkcode messages}).
 *
 * An undo takes what its phase returned, or `undefined` when it has nothing to go by: the phase was cut short,
 * or another process undoes it (the supervisor after the agent died). Then it goes by what it sees on the
 * machine. So the supervisor's recovery is {@linkcode undoPhases} over the same list, not a second unwinder.
 *
 * @example
 * ```ts
 * import { type Phase, runPhases } from "./runner.ts";
 * import { Timeline } from "./timeline.ts";
 *
 * const done: string[] = [];
 * const phases: Phase<string[]>[] = [
 *   { name: "open", run: (log) => Promise.resolve(log.push("open")), undo: { name: "close", run: (log) => Promise.resolve(void log.push("close")) } },
 *   { name: "work", run: (log) => Promise.resolve(log.push("work")) },
 * ];
 * const timeline = new Timeline();
 * await runPhases(phases, done, timeline);
 * console.log(done); // ["open", "work", "close"]
 * console.log(timeline.phases.map((p) => p.name)); // ["open", "work", "close"]
 * ```
 */
import type { Timeline } from "./timeline.ts";

/** How a phase is undone, by the process that ran it or by another one. */
export interface Undo<C, T = unknown> {
  /** Its name in the timeline ("thaw" undoes "freeze"). */
  name: string;
  /** Undoes the phase: `done` is what the phase returned, or undefined when the undo must go by what it sees. */
  run(ctx: C, done: T | undefined): Promise<void>;
  /** What of the phase is still in force, found by looking (for the supervisor); empty when nothing is. */
  left?(ctx: C): Promise<string[]>;
}

/** One step of the cycle. */
export interface Phase<C, T = unknown> {
  /** Its name in the timeline and the report. */
  name: string;
  /** Does the phase; what it returns is handed to its undo. */
  run(ctx: C): Promise<T>;
  /** What the timeline records of the result. */
  detail?(value: T): Record<string, unknown>;
  /** Absent for a phase that changes nothing that needs undoing. */
  undo?: Undo<C, T>;
}

/**
 * Runs `phases` in order, then undoes each phase that ran (or began) in reverse. Throws the first failure, with
 * any failed undos attached (SuppressedError); returns when everything ran and was undone.
 */
export async function runPhases<C>(
  phases: readonly Phase<C>[],
  ctx: C,
  timeline: Timeline,
  opts: { checkpoint?: (next: string) => void } = {},
): Promise<void> {
  await using stack = new AsyncDisposableStack();
  for (const phase of phases) {
    // throwing here stops the list before `phase`, and unwinds what ran (a signal, for the outer process)
    opts.checkpoint?.(phase.name);
    dieHereIfAsked(phase.name);
    let done: unknown;
    try {
      done = await timeline.phase(phase.name, () => phase.run(ctx), phase.detail);
    } finally {
      // registered whether the phase finished or not: `done` stays undefined for one cut short
      const undo = phase.undo;
      if (undo) stack.defer(() => (dieHereIfAsked(undo.name), timeline.phase(undo.name, () => undo.run(ctx, done))));
    }
  }
}

/** The environment variable of {@linkcode dieHereIfAsked}. */
export const DIE_AT_ENV = "CRYPTSLEEP_TEST_DIE_AT";

/**
 * For the bed's death tests only: when `$CRYPTSLEEP_TEST_DIE_AT` names `point` (a phase or an undo, or a step of
 * the supervisor), this process kills itself with SIGKILL there, as a crash or the OOM killer would.
 */
export function dieHereIfAsked(point: string): void {
  if (Deno.env.get(DIE_AT_ENV) === point) Deno.kill(Deno.pid, "SIGKILL");
}

/**
 * Undoes every phase of `phases` in reverse by what it sees, as a process that did not run them must (the
 * supervisor). Every undo runs even when one fails; the failures are thrown together at the end.
 */
export async function undoPhases<C>(phases: readonly Phase<C>[], ctx: C, timeline: Timeline): Promise<void> {
  await using stack = new AsyncDisposableStack();
  for (const { undo } of phases) {
    if (undo) {
      stack.defer(() => (dieHereIfAsked(undo.name), timeline.phase(undo.name, () => undo.run(ctx, undefined))));
    }
  }
}

/** A synchronous step where a phase wants a promise: what it returns, or its throw as the rejection. */
export function settle<T>(fn: () => T): Promise<T> {
  return new Promise<T>((resolve) => resolve(fn()));
}

/** What of `phases` is still in force (a volume locked, a cgroup frozen), by looking. */
export async function leftOf<C>(phases: readonly Phase<C>[], ctx: C): Promise<string[]> {
  const left: string[] = [];
  for (const { undo } of phases) if (undo?.left) left.push(...await undo.left(ctx));
  return left;
}

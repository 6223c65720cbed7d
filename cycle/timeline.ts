/**
 * @module
 * The cycle's timeline: each phase with its duration and outcome, plus facts gathered on the way (pinned
 * bytes, devices, key checks). It is what `report` writes to `/dev/kmsg` and `last.json`, and what
 * `cryptsleep status` prints.
 *
 * @example
 * ```ts
 * import { Timeline } from "./timeline.ts";
 * const t = new Timeline();
 * await t.phase("sync", async () => {});
 * console.log(t.toJSON().phases[0].name); // "sync"
 * ```
 */
import { cpuMsOf } from "../host/proc.ts";
import type { Outcome } from "./outcome.ts";

/**
 * The report's `cpuMs` fact: CPU ms (user + system, every thread; /proc) used in the cycle by this process
 * (`toSleep.self`, then `cycle` in all) and its supervisor (`toSleep.supervisor`). What either used before the
 * cycle is not counted: `start` and `supervisorStart` are those readings (kept mode; a supervisor started ahead).
 * On one CPU the time to sleep is close to the two processes' CPU to the sleep.
 */
export class CycleCpu {
  /** This process's CPU ms when the cycle began: 0 for a process started for it. */
  readonly start: number;
  /** The supervisor's when it was taken, if it started ahead of the cycle. */
  supervisorStart?: number;
  /** From the start to the sleep; null where /proc could not tell. */
  toSleep?: { self: number | null; supervisor?: number | null };
  /** This process's, from the start to the report. */
  cycle?: number | null;
  #supervisor?: number;

  /** `ranBefore`: this process ran before the cycle (kept mode), and that is not the cycle's. */
  constructor(ranBefore: boolean) {
    this.start = ranBefore ? cpuMsOf(Deno.pid) ?? 0 : 0;
  }

  /** Counts supervisor `pid`'s; `ahead`: it started before the cycle, and that is not the cycle's. */
  supervisedBy(pid: number, ahead: boolean): void {
    this.#supervisor = pid;
    if (ahead) this.supervisorStart = cpuMsOf(pid) ?? 0;
  }

  /** Read at the sleep. */
  atSleep(): void {
    this.toSleep = {
      self: since(cpuMsOf(Deno.pid), this.start),
      ...(this.#supervisor ? { supervisor: since(cpuMsOf(this.#supervisor), this.supervisorStart ?? 0) } : {}),
    };
  }

  /** Read at the report. */
  atEnd(): void {
    this.cycle = since(cpuMsOf(Deno.pid), this.start);
  }
}

function since(now: number | null, start: number): number | null {
  return now === null ? null : now - start;
}

/** How a cycle ended, in the report. */
export type OutcomeKind = Outcome["kind"];

/** One phase as it ran. */
export interface PhaseRecord {
  /** The phase's (or undo's) name. */
  name: string;
  /** When it started, from the timeline's start. */
  startMs: number;
  /** How long it ran. */
  durationMs: number;
  /** This process's CPU time in it (all its threads; USER_HZ steps of 10 ms); absent where /proc was not readable. */
  cpuMs?: number;
  /** It finished without throwing. */
  ok: boolean;
  /** Its error's message, when it threw. */
  error?: string;
  /** What the phase reported of its result. */
  detail?: Record<string, unknown>;
}

/** What `last.json` holds. */
export interface TimelineJSON {
  /** The format's version. */
  version: 1;
  /** ISO time the cycle started (in the outer process). */
  startedAt: string;
  /** ISO time the report was written; absent while the cycle runs. */
  finishedAt?: string;
  /** Every phase ran without error and the outcome is ok. */
  ok: boolean;
  /** How the cycle ended; absent while it runs. */
  outcome?: OutcomeKind;
  /** Each phase and undo, in the order they ran. */
  phases: PhaseRecord[];
  /** What the user must know (a key left in RAM, a volume not unlocked). */
  warnings: string[];
  /** Facts gathered on the way (pinned bytes, released keys, RAM held). */
  facts: Record<string, unknown>;
}

/** The timeline of one cycle, carried from process to process. */
export class Timeline {
  /** When this cycle started. */
  readonly startedAt = new Date();
  readonly #t0 = performance.now();
  /** Records of phases still running: left out of {@linkcode Timeline.toJSON}, they have no outcome yet. */
  readonly #running = new Set<PhaseRecord>();
  /** Each phase as it ran. */
  readonly phases: PhaseRecord[];
  /** What the user must know. */
  readonly warnings: string[];
  /** Facts gathered on the way. */
  readonly facts: Record<string, unknown>;

  /** `earlier`: what another process already recorded (the outer process hands preflight and ramfs on). */
  constructor(earlier?: Pick<TimelineJSON, "phases" | "warnings" | "facts">) {
    this.phases = [...(earlier?.phases ?? [])];
    this.warnings = [...(earlier?.warnings ?? [])];
    this.facts = { ...(earlier?.facts ?? {}) };
  }

  /** Runs `fn` as phase `name`, recording time and outcome; rethrows its error. */
  async phase<T>(name: string, fn: () => Promise<T>, detail?: (value: T) => Record<string, unknown>): Promise<T> {
    const start = performance.now();
    const cpuStart = cpuMsOf(Deno.pid);
    const record: PhaseRecord = { name, startMs: Math.round(start - this.#t0), durationMs: 0, ok: false };
    this.phases.push(record);
    this.#running.add(record);
    try {
      const value = await fn();
      record.ok = true;
      if (detail) record.detail = detail(value);
      return value;
    } catch (err) {
      record.error = err instanceof Error ? err.message : String(err);
      throw err;
    } finally {
      this.#running.delete(record);
      record.durationMs = Math.round(performance.now() - start);
      const cpuEnd = cpuMsOf(Deno.pid);
      if (cpuStart !== null && cpuEnd !== null) record.cpuMs = cpuEnd - cpuStart;
    }
  }

  /** Appends `value` to the list fact `key` (one entry per volume, say). */
  appendFact(key: string, value: unknown): void {
    this.facts[key] = [...((this.facts[key] ?? []) as unknown[]), value];
  }

  /**
   * Marks a moment (ms from the timeline's start) under `facts.marks[name]`, the latest one kept: `woke`,
   * `prompted`, `entered`, `thawed` say where the wake's time goes besides the phases.
   */
  mark(name: string): void {
    const marks = (this.facts.marks ??= {}) as Record<string, number>;
    marks[name] = this.elapsed();
  }

  /** Milliseconds since the timeline's start, as the phases' `startMs`. */
  elapsed(): number {
    return Math.round(performance.now() - this.#t0);
  }

  /** A moment marked by {@linkcode Timeline.mark}, or undefined. */
  marked(name: string): number | undefined {
    return (this.facts.marks as Record<string, number> | undefined)?.[name];
  }

  /** Adds a warning the report shows. */
  warn(message: string): void {
    this.warnings.push(message);
  }

  /** The report; `outcome` once the cycle has ended. */
  toJSON(outcome?: OutcomeKind): TimelineJSON {
    return {
      version: 1,
      startedAt: this.startedAt.toISOString(),
      finishedAt: outcome === undefined ? undefined : new Date().toISOString(),
      ok: this.phases.every((p) => p.ok) && (outcome ?? "ok") === "ok",
      outcome,
      // a phase still running (the outer process's "agent" while it hands on) has no outcome to report
      phases: this.phases.filter((p) => !this.#running.has(p)),
      warnings: this.warnings,
      facts: this.facts,
    };
  }
}

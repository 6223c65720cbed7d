/**
 * @module
 * What the phases are handed. `cryptsleep suspend` runs the outer phases with an {@linkcode OuterContext}; its
 * `agent` phase runs the rest, pinned and chrooted, with an {@linkcode AgentContext}; the supervisor undoes those
 * with one of its own if `cryptsleep suspend` dies.
 *
 * @example
 * ```ts
 * import { type AgentContext, warnUser } from "./context.ts";
 *
 * export function sayPinned(ctx: AgentContext, dmName: string): void {
 *   warnUser(ctx, `${dmName}: its volume key stays in RAM during this suspend`);
 * }
 * ```
 */
import type { Kept } from "./kept.ts";
import type { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import type { Consoles } from "./consoles.ts";
import type { Root } from "../chroot/root.ts";
import type { OwnCgroup } from "../cgroup/own.ts";
import type { Supervisor } from "./start.ts";
import type { Job, SuspendOptions } from "./job.ts";
import type { Secrets } from "./secrets.ts";
import type { CycleCpu, Timeline } from "./timeline.ts";
import type { FirmwareCache } from "./firmware.ts";
import { messages } from "./errors.ts";

/** The agent's phases (sync … sleep) and their undos. */
export interface AgentContext {
  /** The plan and options, computed by preflight before anything was frozen. */
  job: Job;
  /** libcryptsetup, loaded (and pinned) before the freeze. */
  lib: Libcryptsetup;
  /** Where prompts and warnings go (every console at once); opened before the freeze. */
  console: Consoles;
  /** Passphrases typed during this unlock; forgotten (zeroed) when the unlock ends. */
  secrets: Secrets;
  /** Phases, warnings and facts of this cycle. */
  timeline: Timeline;
  /** Progress lines (to the kernel log). Never a secret. */
  log: (message: string) => void;
  /**
   * The supervisor undoing after the agent died: the unlock keeps prompting and retries other errors a few
   * times, since nobody would be left to prompt after it.
   */
  recovery: boolean;
  /** Waits until the supervisor is ready to take over; absent in the supervisor itself. */
  supervisorReady?: () => Promise<unknown>;
  /** What the report counts of this process's and its supervisor's CPU time; absent in the supervisor. */
  cpu?: CycleCpu;
  /** The kernel's firmware cache, primed by the firmware phase and kept so until nothing is locked. */
  firmware?: FirmwareCache;
}

/** The outer phases: preflight … agent. Each fills in what the next one needs. */
export interface OuterContext {
  /** As given to `cryptsleep suspend`. */
  options: SuspendOptions;
  /** Loaded first: mapping it maps every library the agent's phases will need, so the pin locks them. */
  lib: Libcryptsetup;
  /** Every phase and undo goes in here, the agent's too. */
  timeline: Timeline;
  /** The file the supervisor runs: the bundle, or null for a compiled binary that embeds it. */
  script: string | null;
  /** Set by preflight. */
  job?: Job;
  /** Set by the nice phase: the nice the cycle found, which the post hooks start at. */
  niceFound?: number;
  /** Set by the own phase: the tool's cgroup, never frozen, never swapped. */
  own?: OwnCgroup;
  /** Set by the root phase. */
  root?: Root;
  /** Set by the spawn phase; handed the job by the supervisor phase. */
  supervisor?: Supervisor;
  /** Set by the supervisor phase: where the prompts go; the supervisor opens the same one. */
  console?: Consoles;
  /** Set by the agent phase: whether its phases and their undos all went well. */
  ok?: boolean;
  /** In the kept mode (cycle/kept.ts): what `cryptsleep serve` has ready for this cycle. */
  kept?: Kept;
  /** What the report counts of this process's and its supervisor's CPU time (`facts.cpuMs`). */
  cpu: CycleCpu;
}

/** A warning the user must see: in the report, on the console (before sleeping, where they look) and the log. */
export function warnUser(ctx: AgentContext, warning: string): void {
  ctx.timeline.warn(warning);
  say(ctx, `cryptsleep: warning: ${warning}\n`);
  ctx.log(`warning: ${warning}`);
}

/** Writes on the console; one that went away (a hung-up serial line) must not end an unlock or a recovery. */
export function say(ctx: AgentContext, text: string): void {
  try {
    ctx.console.write(text);
  } catch (err) {
    ctx.log(`console: ${messages(err).join("; ")}: ${text.trim()}`);
  }
}

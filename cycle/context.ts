/**
 * @module
 * What every phase of the agent's cycle is handed: the job (plan + options), the loaded libcryptsetup, the
 * console for prompts, the passphrases typed so far, and the timeline.
 *
 * @example
 * ```ts ignore
 * const ctx: AgentContext = { job, lib, console, secrets, timeline, log: (m) => console.write(m) };
 * ```
 */
import type { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import type { Console } from "../ffi/tty.ts";
import type { Job } from "./job.ts";
import type { Secrets } from "./secrets.ts";
import type { Timeline } from "./timeline.ts";

export interface AgentContext {
  job: Job;
  lib: Libcryptsetup;
  console: Console;
  secrets: Secrets;
  timeline: Timeline;
  /** Progress lines (to the kernel log and the console). Never a secret. */
  log: (message: string) => void;
}

/** A warning the user must see: in the report, on the console (before sleeping, where they look) and the log. */
export function warnUser(ctx: AgentContext, warning: string): void {
  ctx.timeline.warn(warning);
  ctx.console.write(`cryptsleep: warning: ${warning}\n`);
  ctx.log(`warning: ${warning}`);
}

/**
 * @module
 * The agent, in the ramfs, in the tool's own cgroup: runs the agent phases of the list (sync, freeze, syncfs, lock,
 * sleep) and their undos in reverse (restore, unlock, thaw), then writes the report. Its console was opened by
 * the supervisor before anything was frozen: opening a tty later could touch the locked disk.
 *
 * @example
 * ```ts
 * import { agent } from "./agent.ts";
 * if (import.meta.main) console.log((await agent()).kind); // in the ramfs, as root
 * ```
 */
import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import { setpriority } from "../ffi/libc.ts";
import { Console } from "../ffi/tty.ts";
import type { AgentContext } from "./context.ts";
import { messages } from "./errors.ts";
import { type Job, readJob, REPORT_PATH } from "./job.ts";
import { failed, OK, type Outcome } from "./outcome.ts";
import { AGENT_PHASES } from "./phases.ts";
import { kmsg, peakRssKiB, writeReport } from "./report.ts";
import { runPhases } from "./runner.ts";
import { Secrets } from "./secrets.ts";
import { CONSOLE_ENV, openConsole } from "./start.ts";
import { ignoreStopSignals } from "./signals.ts";
import { Timeline, type TimelineJSON } from "./timeline.ts";

/** Runs the agent's phases and their undos; the report is written whatever happened. */
export async function agent(): Promise<Outcome> {
  // a Ctrl-C on the console must not kill the one process that can unlock
  using _signals = ignoreStopSignals((signal) => kmsg(`agent: ${signal} ignored: the cycle goes on`));
  const job = await readJob();
  const earlier = (job as Job & { earlier?: TimelineJSON }).earlier;
  const timeline = new Timeline(earlier);
  setpriority(0, -10);
  const lib = Libcryptsetup.open();
  lib.setLogger((level, msg) => level === "error" && kmsg(`libcryptsetup: ${msg.trim()}`));
  const path = Deno.env.get(CONSOLE_ENV);
  using console = path ? Console.open(path) : openConsole(job);
  using secrets = new Secrets(console);
  const ctx: AgentContext = { job, lib, console, secrets, timeline, log: kmsg, recovery: false };
  let outcome = OK;
  try {
    await runPhases(AGENT_PHASES, ctx, timeline);
  } catch (err) {
    const why = messages(err);
    for (const m of why) console.write(`cryptsleep: ${m}\n`);
    timeline.facts.error = why.join("; ");
    outcome = failed(why);
  }
  timeline.facts.agentPeakRssKiB = await peakRssKiB();
  // not timed as a phase: the report cannot contain its own end
  await writeReport(timeline.toJSON(outcome.kind), REPORT_PATH).catch((err) =>
    kmsg(`report: ${messages(err).join("; ")}`)
  );
  return outcome;
}

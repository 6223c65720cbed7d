/**
 * @module
 * The supervisor, in the ramfs: joins the tool's own cgroup (never frozen), opens the console, starts the agent
 * and waits for it. If the agent ends with anything still locked or frozen — it died, or gave up — the
 * supervisor runs the undos of the agent's phases (the same list, each undo going by what it sees): it prompts
 * until the volumes are unlocked, then thaws. The machine is never left frozen without a prompt.
 *
 * @example
 * ```ts
 * import { supervise } from "./supervisor.ts";
 * if (import.meta.main) console.log((await supervise()).kind); // in the ramfs, as root
 * ```
 */
import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import { setpriority, setsid } from "../ffi/libc.ts";
import type { AgentContext } from "./context.ts";
import { messages } from "./errors.ts";
import { joinOwnCgroup } from "../cgroup/own.ts";
import { memoryPeakBytes } from "../cgroup/cgroup2.ts";
import { readJob, REPORT_PATH } from "./job.ts";
import { failed, OK, type Outcome } from "./outcome.ts";
import { AGENT_PHASES } from "./phases.ts";
import { addFact, kmsg, peakRssKiB, writeReport } from "./report.ts";
import { leftOf, undoPhases } from "./runner.ts";
import { Secrets } from "./secrets.ts";
import { agentArgs, CONSOLE_ENV, openConsole } from "./start.ts";
import { ignoreStopSignals } from "./signals.ts";
import { Timeline } from "./timeline.ts";

/** Runs the agent, then makes sure nothing stays locked or frozen. */
export async function supervise(): Promise<Outcome> {
  // a Ctrl-C on the console must not kill the one process that can unlock: a session of its own takes the
  // supervisor and the agent out of the terminal's reach (its signals, and job control stopping a background
  // read of the prompt); the listeners catch what is sent to them by hand
  using _signals = ignoreStopSignals((signal) => kmsg(`supervisor: ${signal} ignored: the cycle goes on`));
  try {
    setsid();
  } catch (err) {
    kmsg(`supervisor: ${messages(err).join("; ")}: stays in the caller's session`);
  }
  const job = await readJob();
  const own = await joinOwnCgroup({ pids: [Deno.pid] });
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
    const how = status.signal ?? `code ${status.code}`;

    using secrets = new Secrets(console);
    let lib: Libcryptsetup | undefined;
    const ctx: AgentContext = {
      job,
      // loaded only when an undo needs it: the supervisor's peak RSS stays that of a watcher
      get lib() {
        return lib ??= Libcryptsetup.open();
      },
      console,
      secrets,
      timeline: new Timeline(),
      log: kmsg,
      recovery: true,
    };
    const left = await leftOf(AGENT_PHASES, ctx);
    if (left.length === 0) {
      await addFact(REPORT_PATH, "supervisorPeakRssKiB", await peakRssKiB());
      // read before leave() removes the cgroup: the RAM the supervisor and the agent charged to it
      await addFact(REPORT_PATH, "ownCgroupMemoryPeakBytes", await memoryPeakBytes(own.path));
      return status.success ? OK : failed([`the agent exited with ${how}`]);
    }
    // the agent died (or gave up) with volumes locked or cgroups frozen: the undos, by what they see
    kmsg(`agent exited (${how}); supervisor recovers: ${left.join(", ")}`);
    console.write(`\ncryptsleep: the agent exited (${how}); the supervisor unlocks\n`);
    ctx.timeline.warn(`agent exited with ${how}; the supervisor unlocked and thawed`);
    const errors: string[] = [];
    await undoPhases(AGENT_PHASES, ctx, ctx.timeline).catch((err) => errors.push(...messages(err)));
    for (const e of errors) ctx.timeline.warn(`the supervisor could not undo: ${e}`);
    await writeReport(ctx.timeline.toJSON("failed"), REPORT_PATH);
    return failed(errors);
  } finally {
    // a process left in our cgroup (not ours to kill) keeps it from being removed: worth a log line, no more
    await own.leave().catch((err) => kmsg(`leaving cgroup ${own.path}: ${messages(err).join("; ")}`));
  }
}

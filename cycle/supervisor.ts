/**
 * @module
 * The supervisor: a second process that can finish the cycle if `cryptsleep suspend` dies while it holds the
 * machine frozen and locked. Started on the real root first, before preflight (cycle/start.ts), it loads
 * libcryptsetup, reads the job from its stdin (or `cancel`: it exits), opens the console, pins itself in RAM and
 * chroots into the cycle's root, says ready — and then only watches its stdin. `done` ends it. If the pipe ends without `done`, it runs the undos of the
 * agent's phases (the same list, each going by what it sees): it prompts until the volumes are unlocked, then
 * thaws. The machine is never left frozen without a prompt.
 *
 * @example
 * ```ts
 * import { supervise } from "./supervisor.ts";
 * if (import.meta.main) console.log((await supervise()).kind); // as root, started by cryptsleep suspend
 * ```
 */
import { enterRoot } from "../chroot/enter.ts";
import { detachRoot } from "../chroot/root.ts";
import { pinMappings } from "../chroot/pin.ts";
import { wipeArenas } from "../ffi/secret_arena.ts";
import { loadTokenSupport } from "./tokens.ts";
import { readKeyslotMemory } from "./keyfile.ts";
import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import { setNotDumpable, setpriorityAllThreads, setsid } from "../ffi/libc.ts";
import type { AgentContext } from "./context.ts";
import { messages } from "./errors.ts";
import type { Job } from "./job.ts";
import { failed, OK, type Outcome } from "./outcome.ts";
import { AGENT_PHASES, recover } from "./phases.ts";
import { kmsg, LAST_REPORT, writeReport } from "./report.ts";
import { dieHereIfAsked, leftOf } from "./runner.ts";
import { Secrets } from "./secrets.ts";
import { CANCEL, DONE, lineReader, READY } from "./start.ts";
import { type ConsoleRef, Consoles } from "./consoles.ts";
import { ignoreStopSignals } from "./signals.ts";
import { Timeline } from "./timeline.ts";
import { readRecord, rearm } from "../systemd/watchdog.ts";

/** Gets ready, then waits for `done` or the end of its stdin; see the module doc. */
export async function supervise(): Promise<Outcome> {
  // a Ctrl-C on the console must not kill the one process that can unlock: a session of its own takes it out of
  // the terminal's reach (its signals, and job control stopping a background read of the prompt); the listeners
  // catch what is sent to it by hand
  using _signals = ignoreStopSignals((signal) => kmsg(`supervisor: ${signal} ignored: the cycle goes on`));
  try {
    setsid();
  } catch (err) {
    kmsg(`supervisor: ${messages(err).join("; ")}: stays in the caller's session`);
  }
  setpriorityAllThreads(-10);
  // no core dump (the passphrases it may read; a pipe core_pattern would exec from the locked root)
  setNotDumpable();
  // loaded first, while cryptsleep suspend runs preflight: after the pin nothing more is mapped, and inside the
  // root there is nothing to load from
  const lib = Libcryptsetup.open();
  const readLine = lineReader(Deno.stdin.readable);
  const first = await readLine();
  // the cycle stopped before it had a job (refused): nothing to do
  if (first === CANCEL) return OK;
  if (first === null) {
    return failed(["supervise: no job on stdin: cryptsleep suspend starts it, and ended before it handed one over"]);
  }
  const job = JSON.parse(first) as Job;
  const consoleLine = await readLine();
  if (consoleLine === null) return failed(["supervise: no consoles on stdin"]);
  dieHereIfAsked("supervise:job");
  // opened before anything is frozen, and kept: their saved termios is what a recovery restores
  using console = Consoles.open(JSON.parse(consoleLine) as ConsoleRef[]);
  // the same token plugins and libraries as the cycle's process, so its unlock can use them too
  loadTokenSupport(lib, job, kmsg);
  // read on the real root: a report it writes after a recovery keeps what key files taught earlier wakes
  const keyFileSlots = await readKeyslotMemory();
  using pinned = pinMappings();
  const inside = enterRoot(job.ramfsRoot);
  // the cycle's process may have died meanwhile (the pipe is broken): the watch below sees it and recovers
  await Deno.stdout.write(new TextEncoder().encode(`${READY}\n`)).catch(() => {});
  dieHereIfAsked("supervise:ready");

  const word = await readLine().catch(() => null);
  using secrets = new Secrets(console);
  const ctx: AgentContext = { job, lib, console, secrets, timeline: new Timeline(), log: kmsg, recovery: true };
  ctx.timeline.facts.keyFileSlots = keyFileSlots;
  // it died (no `done`): a key it held is still in its arena's pages, whatever it left: zeroed before anything can
  // sleep again
  if (word !== DONE) {
    try {
      const wiped = wipeArenas("/", Deno.pid);
      if (wiped.length) kmsg(`supervisor: zeroed the secret arena(s) ${wiped.join(", ")} of the cycle's process`);
    } catch (err) {
      ctx.timeline.warn(`the supervisor could not zero the dead process's secrets: ${messages(err).join("; ")}`);
    }
  }
  // by looking, even after `done`: nothing may stay locked or frozen when the supervisor goes
  const left = await leftOf(AGENT_PHASES, ctx);
  if (left.length === 0) {
    inside.leave();
    return word === DONE
      ? OK
      : failed(["cryptsleep suspend ended without saying done; nothing was left locked or frozen"]);
  }
  // it died (or let go) with volumes locked or cgroups frozen: the undos, by what they see
  kmsg(`cryptsleep suspend ${word === DONE ? "let go" : "died"}; supervisor recovers: ${left.join(", ")}`);
  console.write(`\ncryptsleep: the cycle's process died; the supervisor unlocks\n`);
  ctx.timeline.warn(`cryptsleep suspend died mid-cycle; the supervisor unlocked and thawed (${pinned.bytes} B pinned)`);
  const errors = await recover(ctx);
  for (const e of errors) ctx.timeline.warn(`the supervisor could not undo at first: ${e}`);
  // unlocked: back on the real root for what the dead process's undos would have done there
  inside.leave();
  await detachRoot(job.ramfsRoot).catch((err) => ctx.timeline.warn(`unmounting ${job.ramfsRoot}: ${messages(err)}`));
  const usec = await readRecord().catch(() => null);
  if (usec !== null) {
    await rearm({ previousUSec: usec, devices: [] }).catch((err) =>
      ctx.timeline.warn(`re-arming systemd's watchdog: ${messages(err).join("; ")}`)
    );
  }
  await writeReport(ctx.timeline.toJSON("failed"), LAST_REPORT).catch((err) =>
    kmsg(`report: ${messages(err).join("; ")}`)
  );
  return failed(["cryptsleep suspend died mid-cycle; the supervisor unlocked and thawed"]);
}

/**
 * @module
 * The unlock's prompts, and the sleep again they lead to: Esc, or nothing typed for `--idle-suspend` seconds, or
 * `--max-tries` wrong passphrases with `--after-tries suspend`, suspend the machine again with every volume locked
 * again and every passphrase forgotten; after the wake the unlock starts over ({@linkcode SleptAgain}). A prompt
 * may watch for something meanwhile (a key device coming, the volume's disk going) and leave when it comes.
 *
 * @example
 * ```ts
 * import type { AgentContext } from "./context.ts";
 * import { askWatching } from "./ask.ts";
 *
 * export async function ask(ctx: AgentContext, gone: () => Promise<boolean>) {
 *   const answer = await askWatching(ctx, "Passphrase to unlock data: ", { "disk gone": gone });
 *   if (answer === "disk gone") return null; // left the prompt: nothing typed is kept
 *   return answer; // a Secret, in crypt_safe_alloc memory
 * }
 * ```
 */
import { powerOff } from "../ffi/libc.ts";
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import { PromptLeft } from "../ffi/tty.ts";
import { SysError } from "../ffi/errors.ts";
import type { Volume } from "../discovery/mod.ts";
import { enterSleep, restoreSleepKnobs } from "./sleep.ts";
import { type AgentContext, say } from "./context.ts";
import type { Secret } from "./secrets.ts";
import { isLive } from "./pinned/mod.ts";
import { messages } from "./errors.ts";
import { lockVolume } from "./lock.ts";
import { isRetired } from "./gone.ts";
import { readsUnderWay } from "./wake_checks.ts";
import { settleReadsAhead } from "./read_ahead.ts";
import { cannotPrime, oneAtATime } from "./firmware.ts";
import { settle } from "./runner.ts";

/**
 * Prompts, and meanwhile looks at each watch once a second: the name of the first that came true, which leaves the
 * prompt (nothing typed is kept).
 */
export async function askWatching<W extends string>(
  ctx: AgentContext,
  prompt: string,
  watches: Record<W, () => Promise<boolean>>,
): Promise<Secret | W> {
  const stop = new AbortController();
  let came: W | null = null;
  const watcher = (async () => {
    // the first look after the prompt's write (queued now): a look that reads sysfs must not hold the prompt back
    await new Promise((r) => setTimeout(r, 0));
    while (!stop.signal.aborted) {
      for (const [name, seen] of Object.entries(watches) as [W, () => Promise<boolean>][]) {
        if (await seen().catch(() => false)) {
          if (stop.signal.aborted) return; // the prompt returned meanwhile: what was typed wins
          came = name;
          return stop.abort();
        }
        if (stop.signal.aborted) return;
      }
      // cut short when the prompt returns: the unlock must not wait for the next look
      await new Promise<void>((r) => {
        if (stop.signal.aborted) return r();
        const done = () => (clearTimeout(t), stop.signal.removeEventListener("abort", done), r());
        const t = setTimeout(done, 1000);
        stop.signal.addEventListener("abort", done, { once: true });
      });
    }
  })();
  try {
    return await askOrSleep(ctx, prompt, stop.signal);
  } catch (err) {
    if (came !== null && !(err instanceof SleptAgain)) return came;
    throw err;
  } finally {
    stop.abort();
    await watcher;
  }
}

/** Prompts; Esc or an idle prompt suspends again, still locked, and prompts after the wake. */
export function askOrSleep(ctx: AgentContext, prompt: string, signal?: AbortSignal): Promise<Secret> {
  return promptOrSleep(ctx, async (idleMs) => {
    // the first prompt after each wake, and each Enter: where the wake's time goes (the report's marks)
    const t = ctx.timeline;
    if ((t.marked("prompted") ?? -1) < (t.marked("woke") ?? 0)) t.mark("prompted");
    const secret = await ctx.secrets.ask(prompt, idleMs, signal);
    t.mark("entered");
    return secret;
  });
}

/** Reads a line only to go on (nothing of it is kept); Esc or an idle prompt suspends again first. */
export function waitForEnter(ctx: AgentContext, prompt: string): Promise<void> {
  return promptOrSleep(ctx, async (idleMs) => {
    using line = SafeBuffer.alloc(64);
    await ctx.console.readSecret(line, { prompt, idleMs }).catch((err) => {
      if (!(err instanceof RangeError)) throw err; // a long line is an Enter too
    });
  });
}

/**
 * Runs `read` until it gets a line; each time it is left (Esc, idle) the machine suspends again, still locked; while
 * every console is hung up it waits for one to come back.
 */
async function promptOrSleep<T>(ctx: AgentContext, read: (idleMs: number | undefined) => Promise<T>): Promise<T> {
  const idle = ctx.job.options.idleSuspendS;
  for (;;) {
    try {
      return await read(idle ? idle * 1000 : undefined);
    } catch (err) {
      if (err instanceof SysError && ctx.console.awaitingReturn) {
        // every console hung up (a USB adapter re-enumerated at resume, or pulled out): still locked, the next read
        // opens it again once it is back (cycle/consoles.ts)
        ctx.log(`console: ${messages(err).join("; ")}`);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (!(err instanceof PromptLeft)) throw err;
      await sleepAgain(ctx, err.why === "escape" ? "Esc" : `nothing typed for ${idle} s`, err.why);
    }
  }
}

/** After `maxTries` wrong ones in a row: as `--after-tries` says, suspend again, power off, or ask again. */
export async function afterTriesUsedUp(ctx: AgentContext, volume: Volume): Promise<void> {
  const { maxTries, afterTries } = ctx.job.options;
  const why = `${maxTries} wrong passphrase${maxTries === 1 ? "" : "s"} for ${volume.dmName}`;
  if (afterTries === "suspend") return await sleepAgain(ctx, why, "tries");
  if (afterTries === "poweroff") {
    say(ctx, `cryptsleep: ${why}: powering off, still locked (everything was synced before the lock).\n`);
    ctx.log(`${why}: powering off, still locked`);
    try {
      powerOff();
    } catch (err) {
      say(ctx, `cryptsleep: ${messages(err).join("; ")}; asking again.\n`);
    }
    return;
  }
  say(ctx, `cryptsleep: ${why}: it stays locked and the machine frozen; asking again.\n`);
}

/** The unlock slept again after locking again what it had unlocked: it starts over after the wake. */
export class SleptAgain extends Error {
  /** `volumes`: what it locked again (the unlock asks for them again after the wake). */
  constructor(readonly volumes: string[]) {
    super(`locked again for a sleep: ${volumes.join(", ")}`);
    this.name = "SleptAgain";
  }
}

/**
 * Suspends again, back after the next wake, as the sleep phase does, with everything frozen and locked: volumes this
 * unlock already opened are locked again and the passphrases typed so far forgotten, so neither a key nor a
 * passphrase sleeps in RAM. Then it throws {@linkcode SleptAgain}: the unlock starts over from the bottom. A kernel that refuses to sleep is said on the console; the prompt comes
 * again either way.
 */
async function sleepAgain(ctx: AgentContext, said: string, why: string): Promise<void> {
  // no header read ahead may run under the relock, nor a new probe start after this look
  await settleReadsAhead();
  // a disk's read still under way (a disk that does not answer) would hold the kernel's suspend for ever, with the
  // prompt gone: the kernel freezes each disk's queue first, and that waits for the read
  const busy = readsUnderWay();
  if (busy.length) {
    const error = `a read of ${busy.join(", ")} is still under way (the suspend would wait for it)`;
    say(ctx, `cryptsleep: ${said}: not suspending again: ${error}; asking again.\n`);
    ctx.timeline.appendFact("sleptAgain", { why: "refused", error });
    return;
  }
  // the firmware cache must still be primed: nothing can prime it again while the root is locked
  if (!(await firmwareFresh(ctx, said))) return;
  ctx.secrets.forget();
  const relocked: string[] = [];
  const open: string[] = [];
  // (no key file is dropped from the page cache here: its volume may be locked, and reading its path could wait
  // forever; each was dropped after it was read)
  for (const v of ctx.job.plan.lock.filter((v) => isLive(v) && !isRetired(v.dmName))) {
    // as before the first lock: a long relock (of /home, say, the keeper idle with the root unlocked) must not
    // outlast the cache; a stale one is refused after the relock below
    await ctx.firmware?.keep(1_000).catch(() => {});
    try {
      // one whose disk went meanwhile is retired, not locked: it is in neither list
      if (!(await lockVolume(ctx, v)).gone) relocked.push(v.dmName);
    } catch (err) {
      // sleeping all the same is kinder than staying awake in a bag: said, and in the report
      open.push(v.dmName);
      say(ctx, `cryptsleep: ${v.dmName} could not be locked again: ${messages(err).join("; ")}\n`);
    }
  }
  const locked = open.length
    ? `locked but for ${open.join(", ")} (its key stays in RAM)`
    : relocked.length
    ? "all locked again"
    : "still locked";
  const fact: Record<string, unknown> = { why, relocked, keptOpen: open };
  try {
    // (the relock took long: no sleep, the unlock starts over and asks for what it locked again)
    if (!(await firmwareFresh(ctx, said))) {
      fact.refused = true;
      throw new SleptAgain(relocked);
    }
    say(ctx, `cryptsleep: ${said}: suspending again, ${locked}.\n`);
    ctx.log(`${said}: suspending again, ${locked}`);
    const slept = await oneAtATime(() => enterSleep(ctx.job.options.state, ctx.job.options.memSleep));
    ctx.firmware?.renewed();
    ctx.timeline.mark("woke");
    fact.sleptMs = slept.sleptMs;
  } catch (err) {
    if (err instanceof SleptAgain) throw err;
    say(ctx, `cryptsleep: ${messages(err).join("; ")}\n`);
    fact.error = messages(err).join("; ");
  } finally {
    ctx.timeline.appendFact("sleptAgain", fact);
    // one at a time with the keeper's dry runs, which set sync_on_suspend to 0 first: put back between that and
    // their write, the kernel's sync would run on the locked root
    await oneAtATime(() => settle(() => restoreSleepKnobs(ctx.job.knobs))).catch((err) =>
      ctx.timeline.warn(messages(err).join("; "))
    );
  }
  // the unlock starts over from the bottom, by what it sees: what was locked again, or half locked by a lock that
  // failed part way, is unlocked in turn
  throw new SleptAgain(relocked);
}

/**
 * Whether a sleep again may go: the firmware cache still primed (a dry run refreshes it), or a kernel on which it
 * cannot be primed at all (the cycle warned). The supervisor's recovery knows nothing of it: no sleep. Says why not.
 */
async function firmwareFresh(ctx: AgentContext, said: string): Promise<boolean> {
  try {
    if (ctx.firmware) await ctx.firmware.keep(1_000);
    else if (cannotPrime() === null) throw new Error("the firmware cache is not known to be primed");
    return true;
  } catch (err) {
    say(ctx, `cryptsleep: ${said}: not suspending again: ${messages(err).join("; ")}; asking again.\n`);
    ctx.timeline.appendFact("sleptAgain", { why: "refused", error: messages(err).join("; ") });
    return false;
  }
}

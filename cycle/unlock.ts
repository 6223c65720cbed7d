/**
 * @module
 * Unlock, the undo of lock: bottom-up, prompt on the console, `crypt_resume_by_passphrase` (non-blocking: Argon2
 * takes seconds and the event loop keeps running), then resume the dm devices stacked above, then read one block
 * through the mapping with O_DIRECT to prove I/O flows again. The passphrases are forgotten (zeroed) when it ends.
 *
 * The key is resumed without the kernel keyring: it goes to dm-crypt alone, so no keyring of ours can hold a
 * copy. A key still pinned by an earlier opener is released right after, while userspace is still frozen, by
 * re-opening the volume (pinned/at_unlock.ts): the next suspend is clean. That step is best effort: if it fails
 * the volume stays unlocked and working, and the report says why.
 *
 * It goes by what it sees, so the same code serves the agent and the supervisor after the agent died; the
 * supervisor (`ctx.recovery`) keeps prompting, since nobody would be left to prompt after it.
 *
 * @example
 * ```ts
 * import type { AgentContext } from "./context.ts";
 * import { unlockAll } from "./unlock.ts";
 *
 * export async function afterWake(ctx: AgentContext): Promise<void> {
 *   await unlockAll(ctx); // throws naming each volume it could not unlock
 * }
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import { CryptDevice } from "../ffi/libcryptsetup.ts";
import { readBlockDirect } from "../ffi/libc.ts";
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import { SysError } from "../ffi/errors.ts";
import type { LuksToken, Volume } from "../discovery/mod.ts";
import { usableTokens } from "./tokens.ts";
import { tokenType } from "../discovery/token_types.ts";
import { type AgentContext, say, warnUser } from "./context.ts";
import { MAX_PASSPHRASE, type Secret } from "./secrets.ts";
import {
  finishInterruptedReopen,
  isSwapped,
  NotThisVolume,
  releaseAtUnlock,
  removeStrayPlaceholder,
  thawAfterFailedSwap,
  unlockSwapped,
} from "./pinned/mod.ts";
import { messages } from "./errors.ts";
import { afterTriesUsedUp, askOrSleep, askWatching, SleptAgain, waitForEnter } from "./ask.ts";
import { findKeyDevice, type KeyslotMemory, readKeyFile } from "./keyfile.ts";
import { headerReadable, retiredHolders } from "./lock.ts";
import { goneOf, HeaderGone, isRetired, lostDisk, retire } from "./gone.ts";
import { settle } from "./runner.ts";
import { holdsRoot, retireIfGone, retireIfSilent, suspendedBelow } from "./wake_checks.ts";
import { openDevice, ReadAhead } from "./read_ahead.ts";

/** What the prompt says of a line that does not fit (read to its end and zeroed): a wrong try. */
const TOO_LONG = `longer than ${MAX_PASSPHRASE - 1} bytes`;

/** Tries per volume, in recovery, for an unlock that fails for another reason than the passphrase. */
const RECOVERY_TRIES = 5;

/**
 * Unlocks every volume of the plan, bottom-up, then forgets the passphrases. One that cannot be unlocked does not
 * stop the others; the failures are thrown together at the end.
 */
export async function unlockAll(ctx: AgentContext): Promise<void> {
  let failed: Error[] = [];
  // no echo from the first prompt to the last: what is typed while a passphrase is tried is not shown (and the
  // next prompt drops it, zeroed)
  try {
    ctx.console.keepQuiet(true);
  } catch (err) {
    ctx.log(`console: ${messages(err).join("; ")}`);
  }
  // from the wake until nothing the firmware loader reads is locked: a sleep again from a prompt needs it
  // (cycle/firmware.ts)
  const stopKeeping = ctx.firmware?.keepPrimed();
  try {
    for (let pass = true; pass;) {
      pass = false;
      failed = [];
      // the headers after the first, read while the first prompt is up; dropped if it sleeps again
      using ahead = new ReadAhead(ctx, ctx.job.plan.unlock.slice(1));
      for (const volume of ctx.job.plan.unlock) {
        try {
          const how = await (ctx.recovery ? unlockPersistently(ctx, volume) : unlockVolume(ctx, volume, ahead));
          if (how === "gone") failed.push(new DiskGone(volume));
        } catch (err) {
          if (!(err instanceof SleptAgain)) {
            failed.push(err as Error);
            continue;
          }
          pass = true; // slept again with everything locked again: start over from the bottom
          break;
        }
      }
    }
  } finally {
    await stopKeeping?.();
    ctx.secrets.forget();
    try {
      ctx.console.keepQuiet(false);
    } catch { /* the terminal went away */ }
  }
  if (failed.length) throw new AggregateError(failed, `could not unlock ${failed.length} volume(s)`);
}

/**
 * Recovery: a frozen machine without a prompt is the one outcome not allowed, so an unlock that fails for another
 * reason than the passphrase is tried a few times, then waits for Enter on the console to try again; it never
 * gives up while the volume is locked (the machine stays frozen meanwhile: the thaw waits for the unlock).
 */
async function unlockPersistently(ctx: AgentContext, volume: Volume): Promise<Unlocked> {
  for (let errors = 0;;) {
    try {
      return await unlockVolume(ctx, volume);
    } catch (err) {
      if (err instanceof SleptAgain) throw err;
      say(ctx, `cryptsleep: ${messages(err).join("; ")}\n`);
      if (++errors < RECOVERY_TRIES) {
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      errors = 0;
      await waitForEnter(
        ctx,
        `cryptsleep: ${volume.dmName} stays locked and the machine frozen. Press Enter to try again: `,
      ).catch((err) => {
        if (err instanceof SleptAgain) throw err; // the unlock starts over
        // no console to wait on: the pause is the only bound left
        ctx.log(`console: ${messages(err).join("; ")}`);
        return new Promise((r) => setTimeout(r, 10_000));
      });
    }
  }
}

/** How {@linkcode unlockVolume} left a volume: unlocked (or found so), or given the error target, its disk gone. */
export type Unlocked = "unlocked" | "gone";

/**
 * Unlocks one volume by what it sees: resumed, rebuilt after a table swap, or left alone when not locked. A volume
 * whose disk went away (before its prompt, while it waits, or during a try) is retired instead (gone.ts).
 */
export async function unlockVolume(ctx: AgentContext, volume: Volume, ahead?: ReadAhead): Promise<Unlocked> {
  let sleptAgain = false;
  try {
    finishInterruptedReopen(volume, ctx.log);
    if (isRetired(volume.dmName)) {
      // retired at the lock, or by a try cut short: what it left (a placeholder, a frozen filesystem) goes too
      await retire(volume);
      return "gone";
    }
    const early = promptsAtOnce(ctx, volume);
    // its header read while the first prompt was up (read_ahead.ts); its disk is checked again all the same: it may
    // have stopped answering since
    using readAhead = early ? null : await ahead?.take(volume) ?? null;
    if (readAhead) ctx.timeline.appendFact("readAhead", volume.dmName);
    if (!early && (await retireIfGone(ctx, volume) || await retireIfSilent(ctx, volume))) return "gone";
    if (isSwapped(volume)) {
      // locked by the table swap: no crypt table to resume, the passphrase rebuilds it from the header, read
      // straight by its path (never while what holds it is locked)
      headerReadable(ctx.job, volume);
      await untilPassphraseFits(ctx, volume, (secret) => unlockSwapped(ctx, volume, secret));
    } else {
      removeStrayPlaceholder(volume);
      // only a locked volume needs its header: a live one is never judged by where its header lives
      if (dm.info(volume.dmName).suspended) {
        // early: its disk's probe and its header's read go on while its prompt is up
        const left = new AbortController();
        const ready = early
          ? afterTick(() => checkedDevice(ctx, volume, left.signal))
          : Promise.resolve(readAhead ?? openDevice(ctx, volume));
        try {
          const device = async () => (await ready) ?? Promise.reject(new Retired(volume));
          await untilPassphraseFits(
            ctx,
            volume,
            async (secret) => tryResume(await device(), volume, secret),
            async (token, pin) => tryTokenResume(ctx, await device(), volume, token, pin),
            early ? ready : undefined,
          );
        } finally {
          // checks still going on (the prompt was left before its disk answered) stop; the header is closed
          left.abort();
          ready.then((d) => d?.[Symbol.dispose]()).catch(() => {});
        }
      }
      await thawAfterFailedSwap(volume);
    }
  } catch (err) {
    if (err instanceof Retired) return "gone"; // by the checks, which said why
    sleptAgain = err instanceof SleptAgain;
    // its disk answered the probe, but no LUKS header is where this volume's was: exchanged for another disk (a
    // blank one, say) — libcryptsetup cannot load one, so every try would fail for ever
    const exchanged = err instanceof NotThisVolume
      ? err
      : headerless(err, volume) && !goneOf(volume).length
      ? new NotThisVolume(volume, volume.header.path, undefined)
      : null;
    // the root filesystem's volume is never given up (as for a silent disk): it stays locked, and says why
    if (err instanceof HeaderGone && !holdsRoot(volume)) {
      await retire(volume);
      say(ctx, `\ncryptsleep: ${err.message}.\n`);
      ctx.log(err.message);
      ctx.timeline.appendFact("diskGone", { volume: volume.dmName, devices: "header's volume gone", at: "unlock" });
      return "gone";
    }
    if (exchanged) {
      // its own header is not there any more: it can never be unlocked, so it must not hold the machine frozen
      await retire(volume);
      say(ctx, `\ncryptsleep: ${exchanged.message}\n`);
      ctx.timeline.appendFact("diskGone", { volume: volume.dmName, devices: "exchanged", at: "unlock" });
      return "gone";
    }
    // a try that failed because the disk went away meanwhile (its header unreadable)
    if (!sleptAgain && await retireIfGone(ctx, volume)) return "gone";
    throw err;
  } finally {
    // the devices stacked above come back once nothing under them is locked (see resumeAbove); after a sleep
    // that locked all again, the unlock starts over and resumes them in turn
    if (!sleptAgain) resumeAbove(volume);
  }
  await readBlockDirect(volume.device, 0, 4096);
  ctx.log(`unlocked ${volume.dmName}`);
  await releasePinned(ctx, volume);
  return "unlocked";
}

/**
 * Whether the volume's prompt comes before its disk's checks and its header's read (they go on while it is up):
 * the wake's first prompt, for the root filesystem's volume, which those checks can only wait for and never retire
 * (a disk gone still ends the prompt, as for any volume). Any other volume is asked for only after its checks (its
 * disk answered a read and, where that can be told, still holds its header), and none whose key file, token or
 * earlier passphrase is tried first; nor in the recovery, whose retries would show the prompt again and again.
 */
function promptsAtOnce(ctx: AgentContext, volume: Volume): boolean {
  return holdsRoot(volume) && !isSwapped(volume) && !ctx.recovery && !volume.keyFile &&
    ctx.secrets.entered.length === 0 && usableTokens(volume, ctx.job.options.tokenWithoutPin).length === 0;
}

/** `fn` after what is queued now (the prompt's write, unless a console must be opened again first). */
function afterTick<T>(fn: () => Promise<T>): Promise<T> {
  return new Promise<void>((r) => setTimeout(r, 0)).then(fn);
}

/**
 * {@linkcode openDevice} once its disk answered; null when the checks retired the volume (and said so). A disk gone
 * is not read (a dead virtio disk never answers): it ends the prompt, and unlockVolume's catch retires it, once.
 */
async function checkedDevice(ctx: AgentContext, volume: Volume, signal: AbortSignal): Promise<CryptDevice | null> {
  const gone = goneOf(volume);
  if (gone.length) throw new Error(`${volume.dmName}: ${lostDisk(gone)}`);
  signal.throwIfAborted();
  if (await retireIfSilent(ctx, volume, signal)) return null;
  signal.throwIfAborted();
  return openDevice(ctx, volume);
}

/** The volume was retired by the checks that ran while its prompt was up; they said why. */
class Retired extends Error {
  constructor(volume: Volume) {
    super(`${volume.dmName}: retired while its prompt was up`);
    this.name = "Retired";
  }
}

/** A volume that cannot come back: its disk, or the one of its detached header, went away while it was locked. */
class DiskGone extends Error {
  constructor(volume: Volume) {
    const mounts = [...new Set(volume.mounts.map((m) => m.mountpoint))];
    const holders = retiredHolders(volume);
    super(
      `${volume.dmName}: ${
        holders.length ? `the disk of its detached header (on ${holders.join(", ")}) is gone` : "its disk is gone"
      }; every read and write on it now fails. ` +
        (mounts.length ? `Unmount what was on it (umount ${mounts.join(" ")}), then close ` : "Close ") +
        (volume.above.length ? `what is stacked on it (dmsetup remove ${volume.above.join(" ")}) and ` : "") +
        `the volume (cryptsetup close ${volume.dmName}); plug the disk in again and open it to use it`,
    );
    this.name = "DiskGone";
  }
}

/**
 * Whether `err` is libcryptsetup finding no LUKS header on the device this volume's was read from at discovery
 * (`crypt_init_by_name`: EINVAL), for a volume that may be given up: not the root filesystem's, not a detached header.
 */
function headerless(err: unknown, volume: Volume): boolean {
  return err instanceof SysError && err.call === "crypt_init_by_name" && err.code === "EINVAL" &&
    !volume.header.detached && volume.headerUuid !== undefined && !holdsRoot(volume);
}

/**
 * Resumes the dm devices stacked above `volume` (its LVs) whose every device below is live. One with a suspended
 * device under it (this volume still locked, or another one a spanning LV also sits on) stays suspended, as the
 * machine stays frozen meanwhile: resuming it thaws its filesystem, whose superblock write then waits forever on the
 * locked device below. Seen on the bed (LVM on LUKS, an unlock that failed): ext4_unfreeze → ext4_commit_super in D
 * state inside the dm resume, the cycle's process stuck, no prompt.
 */
function resumeAbove(volume: Volume): void {
  for (const above of [...volume.above].reverse()) {
    const info = dm.info(above);
    if (info.suspended && !suspendedBelow(`dm-${info.minor}`)) dm.resume(above);
  }
}

async function releasePinned(ctx: AgentContext, volume: Volume): Promise<void> {
  const start = performance.now();
  try {
    if (!await releaseAtUnlock(ctx, volume)) return;
    await readBlockDirect(volume.device, 0, 4096);
    ctx.timeline.appendFact("releasedAtUnlock", { volume: volume.dmName, ms: Math.round(performance.now() - start) });
    say(ctx, `cryptsleep: ${volume.dmName} re-opened: its key is out of the keyring; next suspend is clean\n`);
  } catch (err) {
    warnUser(ctx, `${volume.dmName}: the pinned keyring key could not be released: ${messages(err).join("; ")}`);
  }
}

/**
 * Tries the volume's key file, then the passphrases typed so far, then prompts until one fits. It never gives up
 * while the volume is locked: after `maxTries` wrong ones in a row it does `afterTries` (ask again, suspend again,
 * power off); Esc or no line within `idleSuspendS` suspends again. Whichever, the volume stays locked and the
 * machine frozen. A key file on a device of its own that is not there yet is watched for while the prompt waits.
 */
async function untilPassphraseFits(
  ctx: AgentContext,
  volume: Volume,
  fits: (secret: Secret) => Promise<boolean>,
  byToken?: (token: LuksToken, pin: TokenPin) => Promise<boolean>,
  ready?: Promise<unknown>,
): Promise<void> {
  // the volume's checks, when they go on while the prompt is up: ended without a device, they end the prompt
  let [notReady, settled] = [false, false];
  ready?.then((d) => notReady = d === null, () => notReady = true).finally(() => settled = true);
  let watch = false;
  // a key file on the volume itself (the initramfs' one) cannot be read while it is locked
  if (volume.keyFile && !volume.keyFile.on.includes(volume.dmName)) {
    const read = await keyFileFits(ctx, volume, fits);
    if (read === true) return;
    watch = read === "absent"; // its device may come while the prompt waits
  }
  if (byToken && await tokenFits(ctx, volume, byToken)) return;
  for (const secret of ctx.secrets.tryOrder()) {
    if (await trying(ctx, volume, () => fits(secret))) return;
  }
  const { maxTries } = ctx.job.options;
  const prompt = `Passphrase to unlock ${volume.dmName} (${volume.uuid})`;
  for (let wrong = 0;;) {
    let secret: Secret | "key device" | "disk gone" | "not ready" | "too long";
    try {
      // while it waits: the key file's device coming, the volume's own disk going (then nobody need answer)
      const gone = () => settle(() => goneOf(volume).length > 0);
      secret = watch
        ? await askWatching(ctx, `${prompt}, or insert ${volume.keyFile!.device}: `, {
          "key device": async () => Boolean(await findKeyDevice(volume.keyFile!.device!)),
          "disk gone": gone,
        })
        : await askWatching(ctx, `${prompt}: `, { "disk gone": gone, "not ready": () => Promise.resolve(notReady) });
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      secret = "too long"; // read to its end and zeroed: a wrong try, not an error
    }
    // the caller retires it
    if (secret === "disk gone") throw new Error(`${volume.dmName}: its disk went away while the prompt waited`);
    // the checks' error, or the retired volume (the caller returns "gone")
    if (secret === "not ready") throw await ready!.then(() => new Retired(volume), (err) => err);
    if (secret === "key device") {
      watch = false; // one try: a device that does not fit would end every later prompt at once
      if (await keyFileFits(ctx, volume, fits) === true) return;
      continue;
    }
    if (secret !== "too long") {
      const typed = secret;
      // typed before the checks ended: the try waits for them; kept for the volumes after this one if they end it
      if (ready && !settled) say(ctx, `cryptsleep: ${volume.dmName}: waiting for its disk before the try\n`);
      if (ready && await ready.then((d) => d === null, () => true)) {
        ctx.secrets.keep(typed);
        throw await ready.then(() => new Retired(volume), (err) => err);
      }
      const opened = await trying(ctx, volume, () => fits(typed)).catch((err) => {
        typed.buffer[Symbol.dispose]();
        throw err;
      });
      // kept either way: one that did not open this volume may be another's (the root's, typed at the first prompt)
      ctx.secrets.keep(typed);
      if (opened) return;
    }
    wrong = wrong % maxTries + 1;
    const why = secret === "too long" ? TOO_LONG : "No key available with this passphrase";
    say(ctx, `${why} (${wrong}/${maxTries}).\n`);
    if (wrong === maxTries) await afterTriesUsedUp(ctx, volume);
  }
}

/**
 * Asks for the PIN of each PIN token of the volume (a TPM2 token enrolled with `--tpm2-with-pin`) and tries it;
 * Enter alone, or `maxTries` PINs that do not open it, go on to the passphrase (a recovery key is one). The PIN is
 * zeroed after each try; an empty one is never handed to a plugin.
 */
async function tokenFits(
  ctx: AgentContext,
  volume: Volume,
  byToken: (token: LuksToken, pin: TokenPin) => Promise<boolean>,
): Promise<boolean> {
  const { maxTries, tokenWithoutPin } = ctx.job.options;
  for (const token of usableTokens(volume, tokenWithoutPin)) {
    const label = tokenType(token.type)?.label ?? token.type;
    if (!token.pin) {
      // asked for with --token-without-pin: nobody types anything
      const none: TokenPin = { buffer: null, length: 0 };
      if (await trying(ctx, volume, () => byToken(token, none), ` with its ${label} token (no PIN)`)) return true;
      continue;
    }
    for (let wrong = 0; wrong < maxTries;) {
      let pin: Secret;
      try {
        pin = await askOrSleep(ctx, `${label} PIN to unlock ${volume.dmName} (Enter alone: its passphrase): `);
      } catch (err) {
        if (!(err instanceof RangeError)) throw err;
        say(ctx, `${TOO_LONG} (${++wrong}/${maxTries}).\n`);
        continue;
      }
      using _zeroed = pin.buffer;
      if (pin.length === 0) return false;
      if (await trying(ctx, volume, () => byToken(token, pin), ` with its ${label} token`)) return true;
      say(ctx, `The ${label} token did not open it with this PIN (${++wrong}/${maxTries}).\n`);
    }
    say(ctx, `cryptsleep: ${maxTries} PINs did not open ${volume.dmName}; asking for its passphrase.\n`);
  }
  return false;
}

/**
 * Reads and tries the key file; says why not when it cannot be read or does not fit. Never throws: whatever goes
 * wrong with a key file, the passphrase prompt comes next. Its bytes are zeroed. "absent": its device is not there.
 */
async function keyFileFits(
  ctx: AgentContext,
  volume: Volume,
  fits: (secret: Secret) => Promise<boolean>,
): Promise<boolean | "absent"> {
  const key = await readKeyFile(ctx, volume);
  const where = `${volume.dmName}: key file ${volume.keyFile!.path}`;
  if ("why" in key) {
    say(ctx, `${where}: ${key.why}.\n`);
    ctx.log(`${where}: ${key.why}`);
    return key.absent ? "absent" : false;
  }
  using _zeroed = key.buffer;
  try {
    const learned = volume.keyFile!.keyslot === undefined && key.keyslot !== undefined;
    let opened = await trying(ctx, volume, () => fits(key), " with its key file", key.keyslot).catch((err) => {
      if (!learned) throw err;
      return false; // that keyslot is gone (ENOENT)
    });
    const memory = (ctx.timeline.facts.keyFileSlots ??= {}) as KeyslotMemory;
    if (!opened && learned) {
      // the keyslot it opened at an earlier wake no longer takes it: forgotten, and every slot tried
      delete memory[volume.uuid];
      delete key.keyslot;
      opened = await trying(ctx, volume, () => fits(key), " with its key file");
    }
    if (opened) {
      // the next wake tries that slot first (a slot number is no secret; the report keeps it)
      if (key.opened !== undefined) memory[volume.uuid] = { path: volume.keyFile!.path, keyslot: key.opened };
      return true;
    }
    say(ctx, `${where} does not open it.\n`);
  } catch (err) {
    // a stale keyslot= (ENOENT, EINVAL), say: the passphrase is the way left
    say(ctx, `${where}: ${messages(err).join("; ")}\n`);
  }
  return false;
}

/**
 * Says on the console that the passphrase is being tried, with a dot a second while the key derivation runs
 * (seconds, by design), and how it ended.
 */
async function trying(
  ctx: AgentContext,
  volume: Volume,
  fits: () => Promise<boolean>,
  how = "",
  keyslot?: number,
): Promise<boolean> {
  say(ctx, `Unlocking ${volume.dmName}${how} `);
  const dots = setInterval(() => say(ctx, "."), 1000);
  const start = performance.now();
  const at = ctx.timeline.elapsed();
  let outcome = "failed";
  try {
    const ok = await (ctx.firmware ? ctx.firmware.during(fits) : fits());
    outcome = ok ? "unlocked" : "no";
    say(ctx, ok ? " unlocked.\n" : " no.\n");
    return ok;
  } catch (err) {
    say(ctx, " failed.\n");
    throw err;
  } finally {
    clearInterval(dots);
    // the report: each try's time, most of it the KDF (what the unlock costs beyond it is the rest of the phase)
    const ms = Math.round(performance.now() - start);
    const fact = { volume: volume.dmName, how: how.trim() || "passphrase", keyslot: keyslot ?? "any", at, ms, outcome };
    ctx.timeline.appendFact("tries", fact);
  }
}

/** A token's PIN as typed, or none for a token without one. */
type TokenPin = { buffer: SafeBuffer; length: number } | { buffer: null; length: 0 };

/** luksResume by the token with this PIN: false (and why, in the log) when it does not open the volume. */
async function tryTokenResume(
  ctx: AgentContext,
  device: CryptDevice,
  volume: Volume,
  token: LuksToken,
  pin: TokenPin,
): Promise<boolean> {
  try {
    await device.resumeByTokenPin(volume.dmName, token.type, token.id, pin.buffer, pin.length);
    return true;
  } catch (err) {
    // a wrong PIN (the TPM's authorization failed), a locked-out TPM, a missing device: the PIN prompt says which
    ctx.log(`${volume.dmName}: token ${token.id}: ${messages(err).join("; ")}`);
    if (!(err instanceof SysError) || err.code !== "EPERM") say(ctx, ` (${messages(err).join("; ")})`);
    return false;
  }
}

async function tryResume(device: CryptDevice, volume: Volume, secret: Secret): Promise<boolean> {
  try {
    secret.opened = await device.resumeByPassphrase(volume.dmName, secret.keyslot ?? -1, secret.buffer, secret.length);
    return true;
  } catch (err) {
    // EPERM: no keyslot opens with it; anything else is a real failure
    if (err instanceof SysError && err.code === "EPERM") return false;
    throw err;
  }
}

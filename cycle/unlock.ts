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
import { readBlockDirect, readDirectBytes } from "../ffi/libc.ts";
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
import { detachedHeader, headerReadable, retiredHolders } from "./lock.ts";
import { goneOf, HeaderGone, isRetired, lostDisk, onlyVirtioBelow, retire, slavesOf } from "./gone.ts";
import { LUKS2_SECONDARY_OFFSETS, luks2SecondaryUuidOf, luksUuidOf } from "../discovery/luks_header.ts";
import { devPathOf } from "../host/paths.ts";

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
  // from the wake until nothing is locked: a sleep again from the prompt needs it (cycle/firmware.ts)
  const stopKeeping = ctx.firmware?.keepPrimed();
  try {
    for (let pass = true; pass;) {
      pass = false;
      failed = [];
      for (const volume of ctx.job.plan.unlock) {
        try {
          const how = await (ctx.recovery ? unlockPersistently(ctx, volume) : unlockVolume(ctx, volume));
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
export async function unlockVolume(ctx: AgentContext, volume: Volume): Promise<Unlocked> {
  let sleptAgain = false;
  try {
    finishInterruptedReopen(volume, ctx.log);
    if (isRetired(volume.dmName)) {
      // retired at the lock, or by a try cut short: what it left (a placeholder, a frozen filesystem) goes too
      await retire(volume);
      return "gone";
    }
    if (await retireIfGone(ctx, volume) || await retireIfSilent(ctx, volume)) return "gone";
    if (isSwapped(volume)) {
      // locked by the table swap: no crypt table to resume, the passphrase rebuilds it from the header, read
      // straight by its path (never while what holds it is locked)
      headerReadable(ctx.job, volume);
      await untilPassphraseFits(ctx, volume, (secret) => unlockSwapped(ctx, volume, secret));
    } else {
      removeStrayPlaceholder(volume);
      // only a locked volume needs its header: a live one is never judged by where its header lives
      if (dm.info(volume.dmName).suspended) {
        using device = CryptDevice.initByName(ctx.lib, volume.dmName, detachedHeader(ctx.job, volume));
        device.setKeyring(false);
        await untilPassphraseFits(
          ctx,
          volume,
          (secret) => tryResume(device, volume, secret),
          (token, pin) => tryTokenResume(ctx, device, volume, token, pin),
        );
      }
      await thawAfterFailedSwap(volume);
    }
  } catch (err) {
    sleptAgain = err instanceof SleptAgain;
    // its disk answered the probe, but no LUKS header is where this volume's was: exchanged for another disk (a
    // blank one, say) — libcryptsetup cannot load one, so every try would fail for ever
    const exchanged = err instanceof NotThisVolume
      ? err
      : headerless(err, volume) && !(await goneOf(volume)).length
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
 * When a disk under the locked volume is gone, retires the volume (gone.ts) and says so. True when it did.
 */
async function retireIfGone(ctx: AgentContext, volume: Volume): Promise<boolean> {
  const gone = await goneOf(volume);
  if (gone.length === 0) return false;
  await retire(volume);
  say(
    ctx,
    `\ncryptsleep: ${volume.dmName}: ${lostDisk(gone)}: it cannot be unlocked; its reads and writes now fail.\n`,
  );
  ctx.log(`${volume.dmName}: ${lostDisk(gone)}; given the error target`);
  ctx.timeline.appendFact("diskGone", { volume: volume.dmName, devices: gone.join(", "), at: "unlock" });
  return true;
}

/**
 * How long the disks under a locked volume have to answer a read at wake before the volume is retired: virtio disks
 * have no timeout in the kernel (a request not answered never is); other drivers end in an error by themselves
 * (SCSI's 30 s command timeout, resets and retries), so they are given longer.
 */
const ANSWER_MS = { virtio: 30_000, other: 180_000 };
/** After this long without an answer the console says what the unlock waits for. */
const ANSWER_SAY_MS = 2_000;

/**
 * Before anything reads the disks under a locked volume on this thread (libcryptsetup's header read, which would
 * wait forever on a disk that stopped answering, before any prompt), one block of each is read on a worker thread.
 * - Silent: after {@linkcode ANSWER_SAY_MS} the console says what the unlock waits for; after {@linkcode ANSWER_MS}
 *   the volume is retired and the others go on (that read stays blocked in the kernel: the process cannot end
 *   before it returns). The root filesystem's volume is never given up: without it nothing could go on.
 * - Exchanged: the block read from the device its header was read from at discovery holds another volume's LUKS
 *   header, or none ({@linkcode NotThisVolume}, retired by the caller): a disk taken away while the machine slept and
 *   another plugged into its slot comes back under the old name (seen on the bed); the kernel cannot tell. Read past
 *   the page cache, which still holds the old header: libcryptsetup then found it there, asked for the passphrase
 *   and would have resumed the old key onto the other disk (seen on the bed with a blank one).
 * True when the volume was retired.
 */
async function retireIfSilent(ctx: AgentContext, volume: Volume): Promise<boolean> {
  const info = dm.info(volume.dmName);
  // only a locked volume waits on its disk; a device under it still suspended (a lower volume not unlocked) is
  // no silent disk: its read would wait for that unlock
  if (!info.exists || !info.suspended || isSwapped(volume) || suspendedBelow(volume.kname)) return false;
  const under = slavesOf(volume.kname);
  const root = holdsRoot(volume);
  const firsts = new Map<string, Uint8Array>();
  const timers: ReturnType<typeof setTimeout>[] = [];
  const after = (ms: number) => new Promise<"late">((r) => timers.push(setTimeout(() => r("late"), ms)));
  const reads = Promise.allSettled(under.map(async (kname) => {
    firsts.set(kname, await readDirectBytes(`/dev/${kname}`, 0, 4096).catch(() => new Uint8Array()));
  }));
  try {
    if (await Promise.race([reads, after(ANSWER_SAY_MS)]) === "late") {
      const waiting = () => under.filter((k) => !firsts.has(k)).join(", ");
      const budget = onlyVirtioBelow(volume.kname) ? ANSWER_MS.virtio : ANSWER_MS.other;
      say(
        ctx,
        `\ncryptsleep: waiting for the disk of ${volume.dmName} (${waiting()}) to answer` +
          (root ? " (it holds the root filesystem: as long as it takes)\n" : ` (up to ${budget / 1000} s)\n`),
      );
      if (root) await reads;
      else if (await Promise.race([reads, after(budget - ANSWER_SAY_MS)]) === "late") {
        const silent = waiting();
        await retire(volume);
        say(
          ctx,
          `\ncryptsleep: ${volume.dmName}: ${lostDisk([`${silent}: no answer to a read in ${budget / 1000} s`])}: ` +
            `it cannot be unlocked; its reads and writes now fail. (cryptsleep cannot end before that read returns.)\n`,
        );
        ctx.log(`${volume.dmName}: its disk (${silent}) does not answer; given the error target`);
        ctx.timeline.appendFact("diskGone", { volume: volume.dmName, devices: silent, at: "unlock" });
        return true;
      }
    }
  } finally {
    for (const t of timers) clearTimeout(t);
  }
  const [data] = under;
  // only where discovery read this volume's header (not a detached one, not through dm-integrity's helper device),
  // and never for the root filesystem's volume: without it nothing could go on (its unlock fails, and says why)
  if (
    under.length === 1 && !volume.header.detached && volume.headerUuid && volume.header.path === devPathOf(data) &&
    !root
  ) {
    // a read that failed says nothing; a block without the header discovery read there minutes ago (before the
    // lock) is another disk — libcryptsetup, whose reads may come from the page cache, would still find the old one
    const first = firsts.get(data);
    let found = first?.length ? luksUuidOf(first) : volume.headerUuid;
    // a LUKS2 primary damaged (while asleep) is no other disk while its secondary copy is this volume's:
    // libcryptsetup unlocks from that copy
    if (found === null && volume.type === "LUKS2") found = await secondaryUuid(`/dev/${data}`);
    if (found !== volume.headerUuid) throw new NotThisVolume(volume, `/dev/${data}`, found ?? undefined);
  }
  return false;
}

/** The UUID of the first LUKS2 secondary header found on `device` (read past the page cache), or null. */
async function secondaryUuid(device: string): Promise<string | null> {
  for (const offset of LUKS2_SECONDARY_OFFSETS) {
    const block = await readDirectBytes(device, offset, 4096).catch(() => null);
    const uuid = block && luks2SecondaryUuidOf(block);
    if (uuid) return uuid;
  }
  return null;
}

/** Whether the root filesystem is on `volume` or on what is stacked above it: it is never given up. */
function holdsRoot(volume: Volume): boolean {
  return volume.mounts.some((m) => m.mountpoint === "/");
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

/** Whether any device under `kname` (sysfs `slaves/`, all the way down) is a suspended dm device. */
export function suspendedBelow(kname: string, sysBlock = "/sys/block"): boolean {
  return slavesOf(kname, sysBlock).some((s) => {
    try {
      if (Deno.readTextFileSync(`${sysBlock}/${s}/dm/suspended`).trim() === "1") return true;
    } catch { /* not a dm device */ }
    return suspendedBelow(s, sysBlock);
  });
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
): Promise<void> {
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
    let secret: Secret | "key device" | "disk gone" | "too long";
    try {
      // while it waits: the key file's device coming, the volume's own disk going (then nobody need answer)
      const gone = async () => (await goneOf(volume)).length > 0;
      secret = watch
        ? await askWatching(ctx, `${prompt}, or insert ${volume.keyFile!.device}: `, {
          "key device": async () => Boolean(await findKeyDevice(volume.keyFile!.device!)),
          "disk gone": gone,
        })
        : await askWatching(ctx, `${prompt}: `, { "disk gone": gone });
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      secret = "too long"; // read to its end and zeroed: a wrong try, not an error
    }
    // the caller retires it
    if (secret === "disk gone") throw new Error(`${volume.dmName}: its disk went away while the prompt waited`);
    if (secret === "key device") {
      watch = false; // one try: a device that does not fit would end every later prompt at once
      if (await keyFileFits(ctx, volume, fits) === true) return;
      continue;
    }
    if (secret !== "too long") {
      const typed = secret;
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
    const ok = await fits();
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

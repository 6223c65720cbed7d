/**
 * @module
 * The kernel reads firmware from the root by itself at suspend: at PM_SUSPEND_PREPARE the firmware loader caches,
 * for resume, every firmware a bound driver loaded since boot (`fw_pm_notify` → `device_cache_fw_images`), and one
 * the driver released after loading (iwlwifi's, i915's GuC/HuC, Bluetooth's) is read again from /lib/firmware of
 * PID 1's root — not ours — inside the write to /sys/power/state, which waits for it with no timeout. After the lock
 * that read waits forever on the locked root unless the file happens to be in the page cache: frozen, locked, no
 * prompt, and the machine never sleeps.
 *
 * So the cycle primes that cache just before the lock, with the root still unlocked: a dry run of the suspend
 * (`pm_test` = `freezer`, `pm_test_delay` = 0) goes through PM_SUSPEND_PREPARE, caches every firmware, freezes and
 * thaws the tasks and stops there. The kernel keeps what it cached for 10 s after such a run, and a suspend within
 * them finds every name cached and reads nothing; another dry run within them keeps it 10 s more
 * ({@linkcode FirmwareCache}: before each volume's lock, before the sleep, every 4 s at the prompt while the root is
 * locked, 6 s while a KDF runs, for a sleep again from it). `pm_test` and its delay are put back right after each
 * run (a `pm_test` left set would make the real suspend a test); `sync_on_suspend` and `freeze_filesystems` stay 0 until the phase's undo puts all four back from
 * what preflight saved (the supervisor's too, for a process that died in between). Needs `CONFIG_PM_DEBUG` (Debian's
 * kernels have it); without it the cycle goes on unprimed and says so. A dry run the kernel refuses fails the cycle
 * before the lock: the suspend itself would most likely be refused the same way.
 *
 * @example
 * ```ts
 * import { primeFirmwareCache } from "./firmware.ts";
 * import { saveKnobs } from "../host/sysfs.ts";
 * const primed = await primeFirmwareCache("mem", saveKnobs()); // needs root; freezes and thaws all tasks
 * console.log(primed.ok ? `primed in ${primed.ms} ms` : primed.why);
 * ```
 */
import { writeFile } from "../ffi/libc.ts";
import { SysError } from "../ffi/errors.ts";
import type { Knobs, SuspendOptions } from "./job.ts";
import { KNOBS, knobValue, readKnob, restoreKnobs, setKnob } from "../host/sysfs.ts";

/** How long after a dry run (or a suspend) the kernel keeps the firmware it cached (10 s), less a margin. */
export const PRIMED_FOR_MS = 8_000;
/** Age at which {@linkcode FirmwareCache.keep} runs another dry run, well inside {@linkcode PRIMED_FOR_MS}. */
export const REFRESH_AFTER_MS = 4_000;
/**
 * The same while a KDF runs ({@linkcode FirmwareCache.during}): each dry run freezes its thread for part of it, so
 * fewer of them, later, with the keeper's half-second tick and the run itself still well inside the 8 s.
 */
export const BUSY_REFRESH_AFTER_MS = 6_000;
/** How often {@linkcode FirmwareCache.keepPrimed} looks at the age. */
const TICK_MS = 500;

/** The knobs the dry run sets; the phase's undo puts them back. */
export const FIRMWARE_KNOBS: readonly string[] = [
  KNOBS.pmTest,
  KNOBS.pmTestDelay,
  KNOBS.syncOnSuspend,
  KNOBS.freezeFilesystems,
];

/** What priming did: done (with its time and when it ended, `performance.now()`), or why not. */
export type Primed = { ok: true; ms: number; endedAt: number } | { ok: false; why: string };

/** Why the dry run cannot be made on this kernel, or null when it can. */
export function cannotPrime(): string | null {
  if (readKnob(KNOBS.pmTest) === null) return `no ${KNOBS.pmTest} (a kernel without CONFIG_PM_DEBUG)`;
  // without it each dry run waits 5 s inside the kernel
  if (readKnob(KNOBS.pmTestDelay) === null) return `no ${KNOBS.pmTestDelay} on this kernel`;
  return null;
}

/**
 * The dry run: the kernel's own sync and filesystem freeze off (as for the real sleep: a sync could wait on a frozen
 * FUSE daemon), `pm_test` = `freezer`, `state` written, then `pm_test` and the delay back to what `saved` holds.
 */
export async function primeFirmwareCache(state: SuspendOptions["state"], saved: Knobs): Promise<Primed> {
  const why = cannotPrime();
  if (why) return { ok: false, why };
  setKnob(KNOBS.syncOnSuspend, "0");
  if (readKnob(KNOBS.freezeFilesystems) !== null) setKnob(KNOBS.freezeFilesystems, "0");
  setKnob(KNOBS.pmTestDelay, "0");
  const start = performance.now();
  try {
    setKnob(KNOBS.pmTest, "freezer");
    await writeFile("/sys/power/state", state);
  } catch (err) {
    if (!(err instanceof SysError)) throw err;
    // the kernel refused the dry run (a task that would not freeze, a wakeup event): the real one may still go
    return { ok: false, why: `write ${state} to /sys/power/state with pm_test=freezer: ${err.code}` };
  } finally {
    putBack(saved, [KNOBS.pmTest, KNOBS.pmTestDelay]);
  }
  const endedAt = performance.now();
  return { ok: true, ms: Math.round(endedAt - start), endedAt };
}

/** The kernel may have dropped the firmware it cached: a suspend now could read firmware from a locked root. */
export class FirmwareStale extends Error {
  /** `ms`: since the cache was last primed. */
  constructor(readonly ms: number) {
    const limit = PRIMED_FOR_MS / 1000;
    super(
      `the kernel's firmware cache was primed ${(ms / 1000).toFixed(1)} s ago, more than the ${limit} s cryptsleep ` +
        "counts on of the 10 s the kernel keeps it: a suspend now could read a firmware file from the locked root " +
        "and never return",
    );
    this.name = "FirmwareStale";
  }
}

let turn: Promise<unknown> = Promise.resolve();
/** Runs `fn` once no other dry run or sleep of this process writes /sys/power/state (the kernel takes one). */
export function oneAtATime<T>(fn: () => Promise<T>): Promise<T> {
  const run = turn.then(fn, fn);
  turn = run.catch(() => {});
  return run;
}

/**
 * The firmware cache kept primed from the lock until nothing the firmware loader reads is locked: a dry run made
 * while the kernel still holds what it cached reads nothing (every name is cached) and keeps it 10 s more, so one
 * every {@linkcode REFRESH_AFTER_MS} keeps it as long as needed — through a long lock, at the prompt after wake, for a
 * sleep again from it. Once it may be gone, nothing can prime it while such a volume is locked:
 * {@linkcode keep} throws {@linkcode FirmwareStale} and the caller does not suspend. Once none is (the root is
 * unlocked, a volume like /home's is still asked for), no dry run is needed to keep it, and one made for a sleep
 * again reads the firmware from the unlocked root, as the one before the lock did.
 */
export class FirmwareCache {
  #at: number;
  #busy = 0;
  readonly #onRefresh?: (startedAt: number, primed: Primed) => void;
  readonly #needed: () => boolean;
  readonly #prime: typeof primeFirmwareCache;
  /**
   * `state`: what the dry runs write; `saved`: the knobs preflight saved; `primedAt`: when the last one ended.
   * Options: `onRefresh`, told of each dry run after it (its start, `performance.now()`, and its end) — the tasks
   * are frozen for part of it, the unlock's KDF thread too, so the report says when; `needed`, whether a volume the
   * firmware loader reads (`Volume.holdsFirmware`) is locked now (default: always); `prime`, the dry run (a test's
   * stand-in: the real one suspends the machine's tasks).
   */
  constructor(
    readonly state: SuspendOptions["state"],
    readonly saved: Knobs,
    primedAt: number,
    options: {
      onRefresh?: (startedAt: number, primed: Primed) => void;
      needed?: () => boolean;
      prime?: typeof primeFirmwareCache;
    } = {},
  ) {
    this.#at = primedAt;
    this.#onRefresh = options.onRefresh;
    this.#needed = options.needed ?? (() => true);
    this.#prime = options.prime ?? primeFirmwareCache;
  }
  /** A suspend (or a dry run) just ended: the kernel keeps the cache 10 s from now. */
  renewed(at = performance.now()): void {
    this.#at = at;
  }
  /** Ms since it was last primed. */
  get age(): number {
    return performance.now() - this.#at;
  }
  /**
   * Primes it again when older than `refreshAfter` ms; throws {@linkcode FirmwareStale} when it may be gone while
   * a volume the loader reads is locked.
   */
  async keep(refreshAfter = REFRESH_AFTER_MS): Promise<void> {
    await oneAtATime(async () => {
      const needed = this.#needed();
      if (needed && this.age > PRIMED_FOR_MS) throw new FirmwareStale(this.age);
      if (this.age <= refreshAfter) return;
      const startedAt = performance.now();
      const primed = await this.#prime(this.state, this.saved);
      this.#onRefresh?.(startedAt, primed);
      // a refused dry run may or may not have cached: only a done one counts, and one refused late leaves it stale
      if (primed.ok) this.renewed(primed.endedAt);
      else if (needed && this.age > PRIMED_FOR_MS) throw new FirmwareStale(this.age);
    });
  }
  /** `fn` (a KDF) with the dry runs spaced out to {@linkcode BUSY_REFRESH_AFTER_MS} while it runs. */
  async during<T>(fn: () => Promise<T>): Promise<T> {
    this.#busy++;
    try {
      return await fn();
    } finally {
      this.#busy--;
    }
  }
  /**
   * Keeps it primed, while a volume the loader reads is locked, until the returned stop is called (and awaited); a
   * refresh that fails is left for the next tick, or for the {@linkcode keep} before a sleep to refuse.
   */
  keepPrimed(): () => Promise<void> {
    let stopped = false;
    let running = false;
    let last: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      const after = this.#busy ? BUSY_REFRESH_AFTER_MS : REFRESH_AFTER_MS;
      if (stopped || running || this.age <= after || !this.#needed()) return;
      running = true;
      last = this.keep(after).catch(() => {}).finally(() => running = false);
    }, TICK_MS);
    return async () => {
      stopped = true;
      clearInterval(timer);
      await last;
    };
  }
}

/** The undo: every knob the dry run sets back to the value saved before the cycle. */
export function restoreFirmwareKnobs(saved: Knobs): void {
  putBack(saved, FIRMWARE_KNOBS);
}

/** What of the dry run is still in force: `pm_test` not what was saved (the real suspend would be a test). */
export function firmwareLeft(saved: Knobs): string[] {
  const value = saved[KNOBS.pmTest];
  if (value === undefined) return [];
  const selected = knobValue(KNOBS.pmTest);
  return selected === null || selected === value ? [] : [`${KNOBS.pmTest} is ${selected}, not ${value}`];
}

function putBack(saved: Knobs, paths: readonly string[]): void {
  const errors = restoreKnobs(Object.fromEntries(Object.entries(saved).filter(([p]) => paths.includes(p))));
  if (errors.length) throw new Error(errors.join("; "));
}

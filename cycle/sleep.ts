/**
 * @module
 * Sleep: `sync_on_suspend` is set to 0 (the kernel's own sync would block forever on the locked volume) and
 * `freeze_filesystems` to 0 where it exists (freezing a filesystem on a suspended device hangs too); then the
 * state is written to /sys/power/state. The write returns after wake, or fails at once when the kernel refuses
 * (EBUSY: a task would not freeze or a wakeup event came; EIO: a device failed to suspend): that error is the
 * kernel's answer and is thrown, so the cycle unlocks and reports it. The undo, {@linkcode restoreSleepKnobs},
 * puts back the values preflight saved, whatever happened.
 *
 * @example
 * ```ts
 * import { enterSleep } from "./sleep.ts";
 * const { sleptMs, memSleep } = await enterSleep("mem"); // needs root, and locks nothing by itself
 * console.log(`slept ${sleptMs} ms (mem_sleep: ${memSleep})`);
 * ```
 */
import { writeFile } from "../ffi/libc.ts";
import { SysError } from "../ffi/errors.ts";
import type { Knobs, SuspendOptions } from "./job.ts";
import { KNOBS, readKnob, restoreKnobs, setKnob } from "../host/sysfs.ts";

/** What sleep reports. */
export interface SleepResult {
  /** What was written to /sys/power/state. */
  state: string;
  /** /sys/power/mem_sleep at the time (which "mem" it was), or null. */
  memSleep: string | null;
  /** Wall time inside the write: from entering the state to the kernel's return after wake. */
  sleptMs: number;
}

/** The knobs sleep sets (where they exist); the undo puts them back. */
export const SLEEP_KNOBS: readonly string[] = [KNOBS.syncOnSuspend, KNOBS.freezeFilesystems, KNOBS.memSleep];

/**
 * Sets the knobs and writes `state` (after `memSleep` to /sys/power/mem_sleep, when sleep.conf names one); returns
 * after wake. The knobs are left for the undo to restore.
 */
export async function enterSleep(state: SuspendOptions["state"], mode: string | null = null): Promise<SleepResult> {
  setKnob(KNOBS.syncOnSuspend, "0");
  if (readKnob(KNOBS.freezeFilesystems) !== null) setKnob(KNOBS.freezeFilesystems, "0");
  if (mode !== null) setKnob(KNOBS.memSleep, mode);
  const memSleep = readKnob(KNOBS.memSleep);
  const start = performance.now();
  try {
    await writeFile("/sys/power/state", state);
  } catch (err) {
    if (err instanceof SysError) {
      throw new Error(
        `the kernel refused to suspend (write ${state} to /sys/power/state: ${err.code}); ` +
          `dmesg tells which task or device refused`,
        { cause: err },
      );
    }
    throw err;
  }
  return { state, memSleep, sleptMs: Math.round(performance.now() - start) };
}

/** The undo of sleep: each knob it sets back to the value saved before the cycle (by the agent or the supervisor). */
export function restoreSleepKnobs(saved: Knobs): void {
  // only its own: kernel.modprobe, say, stays empty until the unlock is done (cycle/modprobe.ts)
  const errors = restoreKnobs(Object.fromEntries(Object.entries(saved).filter(([p]) => SLEEP_KNOBS.includes(p))));
  if (errors.length) throw new Error(errors.join("; "));
}

/**
 * @module
 * The kernel runs a program of the root by itself: `request_module` execs kernel.modprobe (`/sbin/modprobe`) as a
 * usermode helper, and the task that asked waits for it. After the lock that exec waits forever on the locked root.
 * Seen on the bed: the unlock opened a disk that had gone while asleep (opening a block device that is gone makes the
 * kernel ask for its major's module), and a modprobe the kernel started hung in D state (its hung-task report) —
 * frozen, locked, no prompt. From the lock until nothing is locked, kernel.modprobe is empty and the kernel fails such
 * a request at once instead. The cycle's own needs do not go through it: its volumes are open (their dm and cipher
 * modules loaded), and a key device's filesystem drivers are loaded before the pin. A module nobody loaded before
 * (a USB disk's driver, which udev would load, and udev is frozen) is not there until the thaw.
 *
 * @example
 * ```ts
 * import { holdModprobe, releaseModprobe } from "./modprobe.ts";
 * import { saveKnobs } from "../host/sysfs.ts";
 * const saved = saveKnobs(); // as preflight does
 * holdModprobe(saved); // needs root
 * releaseModprobe(saved);
 * ```
 */
import type { Knobs } from "./job.ts";
import { KNOBS, readKnob, restoreKnobs } from "../host/sysfs.ts";
import { hostPath } from "../chroot/enter.ts";

/** The value to put back, kept where a later run finds it if both processes die first (claim's leftovers). */
export const MODPROBE_RECORD = "/run/cryptsleep/modprobe";

/**
 * Empties kernel.modprobe (where modules exist); {@linkcode releaseModprobe} puts back what preflight saved. /proc
 * and /run are memory: written synchronously, as the wake's path wants.
 */
export function holdModprobe(saved: Knobs): boolean {
  const value = saved[KNOBS.modprobe];
  if (value === undefined || value === "" || readKnob(KNOBS.modprobe) === null) return false;
  // /run is a tmpfs of the real root, reached from the chroot through the root it kept
  Deno.writeTextFileSync(hostPath(MODPROBE_RECORD), value);
  // proc_dostring takes the line up to its newline: an empty write would change nothing
  Deno.writeTextFileSync(KNOBS.modprobe, "\n");
  return true;
}

/** kernel.modprobe back to the value saved before the cycle (by the agent or the supervisor); the record goes. */
export function releaseModprobe(saved: Knobs): void {
  const value = saved[KNOBS.modprobe];
  if (value !== undefined) {
    const errors = restoreKnobs({ [KNOBS.modprobe]: value });
    if (errors.length) throw new Error(errors.join("; "));
  }
  try {
    Deno.removeSync(hostPath(MODPROBE_RECORD));
  } catch { /* not there: nothing to forget */ }
}

/** What of the hold is still in force: kernel.modprobe not what was saved. */
export function modprobeLeft(saved: Knobs): string[] {
  const value = saved[KNOBS.modprobe];
  if (value === undefined) return [];
  const now = readKnob(KNOBS.modprobe);
  return now === null || now === value ? [] : [`kernel.modprobe is "${now}", not ${value}`];
}

/** The value a crashed run left to put back, or null. */
export async function readModprobeRecord(): Promise<string | null> {
  const text = (await Deno.readTextFile(MODPROBE_RECORD).catch(() => "")).trim();
  return text.startsWith("/") ? text : null;
}

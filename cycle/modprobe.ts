/**
 * @module
 * The kernel runs a program of the root by itself: `request_module` execs kernel.modprobe (`/sbin/modprobe`) as a
 * usermode helper, and the task that asked waits for it. After the lock that exec waits forever on the locked root.
 * Seen on the bed: the unlock opened a disk that had gone while asleep (opening a block device that is gone makes the
 * kernel ask for its major's module), and a modprobe the kernel started hung in D state (its hung-task report) —
 * frozen, locked, no prompt. From the lock to the unlock kernel.modprobe is empty, and the kernel fails such a
 * request at once (ENOENT); every module the cycle needs was loaded before (the volumes are open, key-device drivers
 * are loaded by the pin phase).
 *
 * @example
 * ```ts
 * import { holdModprobe, releaseModprobe } from "./modprobe.ts";
 * import { saveKnobs } from "../host/sysfs.ts";
 * const saved = await saveKnobs(); // as preflight does
 * await holdModprobe(); // needs root
 * await releaseModprobe(saved);
 * ```
 */
import type { Knobs } from "./job.ts";
import { KNOBS, readKnob, restoreKnobs } from "../host/sysfs.ts";

/** Empties kernel.modprobe (where modules exist); {@linkcode releaseModprobe} puts back what preflight saved. */
export async function holdModprobe(): Promise<boolean> {
  if ((await readKnob(KNOBS.modprobe)) === null) return false; // a kernel without modules runs no helper
  // proc_dostring takes the line up to its newline: an empty write would change nothing
  await Deno.writeTextFile(KNOBS.modprobe, "\n");
  return true;
}

/** kernel.modprobe back to the value saved before the cycle (by the agent or the supervisor). */
export async function releaseModprobe(saved: Knobs): Promise<void> {
  const value = saved[KNOBS.modprobe];
  if (value === undefined) return;
  const errors = await restoreKnobs({ [KNOBS.modprobe]: value });
  if (errors.length) throw new Error(errors.join("; "));
}

/** What of the hold is still in force: kernel.modprobe not what was saved. */
export async function modprobeLeft(saved: Knobs): Promise<string[]> {
  const value = saved[KNOBS.modprobe];
  if (value === undefined) return [];
  const now = await readKnob(KNOBS.modprobe);
  return now === null || now === value ? [] : [`kernel.modprobe is "${now}", not ${value}`];
}

/**
 * @module
 * Small, honest sysfs/procfs access for the cycle: read a knob, set a knob and get its undo, read the
 * power-management capabilities and the memory available. Every path takes a `root` so tests can use a
 * recorded tree. Knobs are read and written synchronously: they are kernel memory, never a wait on a disk, and an
 * async call costs several times more (and yields to whatever runs) on the wake's path.
 *
 * @example
 * ```ts
 * import { KNOBS, memAvailableKiB, readKnob, saveKnobs } from "./sysfs.ts";
 * console.log(readKnob("/sys/power/state")); // e.g. "freeze mem disk"
 * console.log(readKnob(KNOBS.syncOnSuspend), saveKnobs(), await memAvailableKiB());
 * ```
 */
import { join } from "./path.ts";
import { readMeminfo } from "./proc.ts";

/** The trimmed content of a sysfs file, or null when it does not exist. */
export function readKnob(path: string, root = "/"): string | null {
  try {
    return Deno.readTextFileSync(join(root, path)).trim();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** The kernel knobs the cycle saves, sets and restores. */
export const KNOBS = {
  syncOnSuspend: "/sys/power/sync_on_suspend",
  freezeFilesystems: "/sys/power/freeze_filesystems",
  pmFreezeTimeout: "/sys/power/pm_freeze_timeout",
  /** A choice file ("s2idle [deep]"): its value is the bracketed one. */
  memSleep: "/sys/power/mem_sleep",
  /** The usermode helper request_module execs (cycle/modprobe.ts). */
  modprobe: "/proc/sys/kernel/modprobe",
  /** A choice file: a suspend that stops at a test level (cycle/firmware.ts). CONFIG_PM_DEBUG. */
  pmTest: "/sys/power/pm_test",
  /** Seconds such a test waits at its level. */
  pmTestDelay: "/sys/module/suspend/parameters/pm_test_delay",
} as const;

/** A knob's value as it is written: the selected word of a choice file ("s2idle [deep]" → "deep"), else as read. */
export function knobValue(path: string, root = "/"): string | null {
  const raw = readKnob(path, root);
  return raw === null ? null : /\[(\S+)\]/.exec(raw)?.[1] ?? raw;
}

/** Current values of the knobs that exist (path → value). */
export function saveKnobs(root = "/"): Record<string, string> {
  const saved: Record<string, string> = {};
  for (const path of Object.values(KNOBS)) {
    const value = knobValue(path, root);
    if (value !== null) saved[path] = value;
  }
  return saved;
}

/** Writes each saved value back; returns the errors instead of stopping at the first. */
export function restoreKnobs(saved: Record<string, string>, root = "/"): string[] {
  const errors: string[] = [];
  for (const [path, value] of Object.entries(saved)) {
    try {
      if (knobValue(path, root) !== value) Deno.writeTextFileSync(join(root, path), value);
    } catch (err) {
      errors.push(`restore ${path}=${value}: ${err instanceof Error ? err.message : err}`);
    }
  }
  return errors;
}

/** Sets `path` to `value`; the old value is put back by {@linkcode restoreKnobs} from what was saved before. */
export function setKnob(path: string, value: string, root = "/"): void {
  if (readKnob(path, root) === null) throw new Error(`${path} does not exist: this kernel lacks it`);
  Deno.writeTextFileSync(join(root, path), value);
}

/** `MemAvailable` from /proc/meminfo, in KiB (excludes swap, as the unlock must not rely on it). */
export async function memAvailableKiB(root = "/"): Promise<number> {
  const kib = (await readMeminfo(root)).MemAvailable;
  if (kib === undefined) throw new Error("no MemAvailable in /proc/meminfo");
  return kib;
}

/**
 * @module
 * Small, honest sysfs/procfs access for the cycle: read a knob, set a knob and get its undo, read the
 * power-management capabilities and the memory available. Every path takes a `root` so tests can use a
 * recorded tree.
 *
 * @example
 * ```ts
 * import { KNOBS, memAvailableKiB, readKnob, saveKnobs } from "./sysfs.ts";
 * console.log(await readKnob("/sys/power/state")); // e.g. "freeze mem disk"
 * console.log(await readKnob(KNOBS.syncOnSuspend), await saveKnobs(), await memAvailableKiB());
 * ```
 */
import { join } from "./path.ts";
import { readMeminfo } from "./proc.ts";

/** The trimmed content of a sysfs file, or null when it does not exist. */
export async function readKnob(path: string, root = "/"): Promise<string | null> {
  try {
    return (await Deno.readTextFile(join(root, path))).trim();
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
export async function knobValue(path: string, root = "/"): Promise<string | null> {
  const raw = await readKnob(path, root);
  return raw === null ? null : /\[(\S+)\]/.exec(raw)?.[1] ?? raw;
}

/** Current values of the knobs that exist (path → value). */
export async function saveKnobs(root = "/"): Promise<Record<string, string>> {
  const saved: Record<string, string> = {};
  for (const path of Object.values(KNOBS)) {
    const value = await knobValue(path, root);
    if (value !== null) saved[path] = value;
  }
  return saved;
}

/** Writes each saved value back; returns the errors instead of stopping at the first. */
export async function restoreKnobs(saved: Record<string, string>, root = "/"): Promise<string[]> {
  const errors: string[] = [];
  for (const [path, value] of Object.entries(saved)) {
    try {
      if ((await knobValue(path, root)) !== value) await Deno.writeTextFile(join(root, path), value);
    } catch (err) {
      errors.push(`restore ${path}=${value}: ${err instanceof Error ? err.message : err}`);
    }
  }
  return errors;
}

/** Sets `path` to `value`; the old value is put back by {@linkcode restoreKnobs} from what was saved before. */
export async function setKnob(path: string, value: string, root = "/"): Promise<void> {
  if ((await readKnob(path, root)) === null) throw new Error(`${path} does not exist: this kernel lacks it`);
  await Deno.writeTextFile(join(root, path), value);
}

/** `MemAvailable` from /proc/meminfo, in KiB (excludes swap, as the unlock must not rely on it). */
export async function memAvailableKiB(root = "/"): Promise<number> {
  const kib = (await readMeminfo(root)).MemAvailable;
  if (kib === undefined) throw new Error("no MemAvailable in /proc/meminfo");
  return kib;
}

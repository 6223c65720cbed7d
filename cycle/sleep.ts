/**
 * @module
 * Phase 8, sleep: `sync_on_suspend` is set to 0 (the kernel's own sync would block forever on the locked
 * volume) and `freeze_filesystems` to 0 where it exists (freezing a filesystem on a suspended device hangs
 * too); then the state is written to /sys/power/state. The write returns after wake, or fails at once when
 * the kernel refuses (EBUSY: a task would not freeze or a wakeup event came; EIO: a device failed to
 * suspend): that error is the kernel's answer and is thrown, so the cycle unlocks and reports it. The knobs
 * are restored on the way out, whatever happened.
 *
 * @example
 * ```ts ignore
 * const { sleptMs } = await enterSleep("mem");
 * ```
 */
import { writeFile } from "../ffi/libc.ts";
import { SysError } from "../ffi/errors.ts";
import { KNOBS, readKnob, setKnob } from "./sysfs.ts";

export interface SleepResult {
  state: string;
  memSleep: string | null;
  /** Wall time inside the write: from entering the state to the kernel's return after wake. */
  sleptMs: number;
}

export async function enterSleep(state: "mem" | "freeze"): Promise<SleepResult> {
  await using knobs = new AsyncDisposableStack();
  knobs.use(await setKnob(KNOBS.syncOnSuspend, "0"));
  if ((await readKnob(KNOBS.freezeFilesystems)) !== null) knobs.use(await setKnob(KNOBS.freezeFilesystems, "0"));
  const memSleep = await readKnob("/sys/power/mem_sleep");
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

/**
 * @module
 * The terminal's signals during a cycle. Ctrl-C, Ctrl-\ or Ctrl-Z typed on the terminal that started
 * `cryptsleep suspend` (often the very console the prompt is on) go to its whole process group. Killed or stopped
 * mid-cycle, it would leave the machine frozen and locked. So `cryptsleep suspend` turns one (or a SIGTERM) into a
 * clean stop before its agent phase — the phases that ran are undone — and ignores it from then on; the supervisor,
 * in a session of its own, ignores them for its whole life.
 *
 * @example
 * ```ts
 * import { ignoreStopSignals } from "./signals.ts";
 * using _held = ignoreStopSignals(() => console.error("ignored: the cycle goes on"));
 * ```
 */

// Not SIGTTIN/SIGTTOU: caught rather than ignored, the kernel would send them again on every retry of a
// background read or write (a livelock). The supervisor is out of their reach by setsid; `cryptsleep suspend` sets
// them to SIG_IGN (ffi/libc.ts ignoreJobControlSignals): a background read then fails with EIO instead.
/** What a terminal sends its foreground process group (Ctrl-C, Ctrl-\\, Ctrl-Z, hangup), and a polite kill. */
export const STOP_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGQUIT", "SIGTSTP", "SIGHUP", "SIGTERM"];

/**
 * Until disposed, the {@linkcode STOP_SIGNALS} neither kill nor stop this process: each calls `onSignal`
 * (a listener replaces the default action; a stop signal's too).
 */
export function ignoreStopSignals(onSignal: (signal: Deno.Signal) => void = () => {}): Disposable {
  const listeners = STOP_SIGNALS.map((signal) => {
    const listener = () => onSignal(signal);
    Deno.addSignalListener(signal, listener);
    return { signal, listener };
  });
  return {
    [Symbol.dispose]() {
      for (const { signal, listener } of listeners) Deno.removeSignalListener(signal, listener);
    },
  };
}

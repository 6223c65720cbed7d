/**
 * @module
 * The job: what `cryptsleep suspend` computed before anything is frozen, and hands to its supervisor as one JSON
 * line: the plan, so neither process has to read the locked disk to know what to do.
 *
 * @example
 * ```ts
 * import { defaultOptions } from "./job.ts";
 * console.log(defaultOptions().freezeTimeoutMs); // 10000
 * ```
 */
import type { Plan } from "../discovery/mod.ts";

/** `cryptsleep suspend` options. */
export interface SuspendOptions {
  /** What to write to /sys/power/state: "mem" (honours /sys/power/mem_sleep), "freeze", or "standby". */
  state: "mem" | "freeze" | "standby";
  /** What to write to /sys/power/mem_sleep first (sleep.conf's MemorySleepMode=), or null to leave it. */
  memSleep: string | null;
  /** Where to prompt: a tty path, or null to allocate a free VT. */
  console: string | null;
  /** How long userspace may take to freeze before the cycle gives up, thawed and unlocked. */
  freezeTimeoutMs: number;
  /** How long sync() may go without writeback progress before the cycle gives up (a hung filesystem). */
  syncTimeoutS: number;
  /** Refuse (nothing touched) when a volume key would stay in RAM through the suspend. */
  refuseLeak: boolean;
  /**
   * When a key pinned in a kernel keyring is released: "lock" swaps the table away while locked (the filesystem on
   * the volume is frozen meanwhile; this suspend is clean), "unlock" re-opens the volume after (the next one is).
   */
  releaseAt: "lock" | "unlock";
  /** Suspend without locking when nothing is lockable. */
  allowPlain: boolean;
  /** Wrong passphrases in a row, per volume, before `afterTries` is done. */
  maxTries: number;
  /**
   * What `maxTries` wrong passphrases lead to; the volume stays locked and the machine frozen whichever it is:
   * "ask" again, "suspend" again, or "poweroff".
   */
  afterTries: "ask" | "suspend" | "poweroff";
  /** Seconds at the prompt with no line typed before it suspends again, still locked (0: never). */
  idleSuspendS: number;
  /** Run as systemd-suspend.service's ExecStart (`--from-systemd`): logind and systemd already asked to sleep. */
  fromSystemd: boolean;
  /**
   * Use LUKS2 tokens that need no PIN (a TPM2 token enrolled without one) after wake: the volume opens with nobody
   * typing anything, so whoever opens the lid gets it. Off unless asked for.
   */
  tokenWithoutPin?: boolean;
}

/** The options `cryptsleep suspend` takes when none is given. */
export function defaultOptions(): SuspendOptions {
  return {
    state: "mem",
    memSleep: null,
    console: null,
    freezeTimeoutMs: 10_000,
    syncTimeoutS: 30,
    refuseLeak: false,
    releaseAt: "lock",
    allowPlain: false,
    maxTries: 5,
    afterTries: "ask",
    idleSuspendS: 300,
    fromSystemd: false,
  };
}

/** The passphrase prompt's options: `cryptsleep install` passes them on to the cycles systemd starts. */
export type PromptOptions = Pick<SuspendOptions, "maxTries" | "afterTries" | "idleSuspendS">;

/** What `afterTries` may be. */
export const AFTER_TRIES: readonly SuspendOptions["afterTries"][] = ["ask", "suspend", "poweroff"];

/**
 * What is wrong with a value of one of the prompt's options, as what to give instead, or null when it is allowed:
 * the one check behind `--max-tries`, `--after-tries` and `--idle-suspend` of `cryptsleep suspend` and
 * `cryptsleep install`, and behind the values install writes into systemd's drop-in.
 */
export function promptOptionProblem(key: keyof PromptOptions, value: unknown): string | null {
  switch (key) {
    case "maxTries":
      return Number.isSafeInteger(value) && (value as number) > 0 ? null : "give a whole number of tries, 1 or more";
    case "afterTries":
      return (AFTER_TRIES as readonly unknown[]).includes(value) ? null : `give one of ${AFTER_TRIES.join(", ")}`;
    case "idleSuspendS":
      return Number.isSafeInteger(value) && (value as number) >= 0
        ? null
        : "give a whole number of seconds, 0 (never) or more";
  }
}

/** sysfs knob values read before the cycle, so any process (agent or supervisor) can restore them. */
export type Knobs = Record<string, string>;

/** What preflight computed: the agent's phases go by it, and the supervisor gets it on its stdin. */
export interface Job {
  /** What to lock and unlock, in which order. */
  plan: Plan;
  /** As given to `cryptsleep suspend`. */
  options: SuspendOptions;
  /** Knob values before the cycle (path → value). */
  knobs: Knobs;
  /** Volumes whose key preflight found pinned in a kernel keyring (dm names). */
  pinned: string[];
  /** Where the cycle's root (chroot/root.ts) is mounted, which both processes chroot into. */
  ramfsRoot: string;
}

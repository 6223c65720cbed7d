/**
 * @module
 * What systemd-sleep would do for `suspend`, from `sleep.conf` and its drop-ins ({@linkcode resolveSleep}).
 * cryptsleep replaces systemd-sleep as systemd-suspend.service's ExecStart, so it must honour the same settings.
 *
 * Follows systemd v256–v257 (src/sleep/sleep-config.c, src/sleep/sleep.c; Debian 13 ships 257):
 * - `[Sleep] AllowSuspend=` is a tristate: the last valid assignment counts, empty resets it; only "no"
 *   forbids suspend (systemd-sleep then refuses with EACCES).
 * - `SuspendState=` is a list that ACCUMULATES across assignments and files (config_parse_strv appends); an
 *   empty assignment clears it. Unset: "mem standby freeze". "disk" is dropped with a warning, as systemd does.
 *   systemd-sleep writes each in turn to /sys/power/state until the kernel takes one: the first one the kernel
 *   offers wins; none offered means it fails.
 * - `MemorySleepMode=` is a list that REPLACES the previous one (config_parse_sleep_mode); empty or unset: the
 *   kernel's choice stays. It is written to /sys/power/mem_sleep (the first mode the kernel offers) only when the
 *   SuspendState list contains "mem"; a list of which the kernel offers none makes systemd-sleep fail.
 *
 * @example
 * ```ts
 * import { resolveSleep } from "./sleep_conf.ts";
 * const sleep = await resolveSleep("/");
 * if (sleep.ok) console.log(`write ${sleep.state}`, sleep.memSleep ? `after mem_sleep=${sleep.memSleep}` : "");
 * else console.log(`${sleep.reason} -> ${sleep.fix}`);
 * ```
 */
import { parseBoolean, readConfig } from "./conf.ts";
import { readTrimmed } from "../host/paths.ts";

/** The sleep states a suspend may write to /sys/power/state. */
export type SuspendState = "mem" | "standby" | "freeze";

/** systemd's default SuspendState=. */
export const DEFAULT_SUSPEND_STATES: readonly SuspendState[] = ["mem", "standby", "freeze"];

/** The `[Sleep]` settings that matter to a suspend, as systemd would use them. */
export interface SleepConfig {
  /** AllowSuspend= (default yes). */
  allowSuspend: boolean;
  /** SuspendState=, in order, defaults applied and "disk" dropped. */
  suspendStates: string[];
  /** MemorySleepMode=, in order; empty: leave the kernel's choice. */
  memorySleepModes: string[];
  /** The files read, in order (host paths). */
  files: string[];
  /** What systemd would warn about (an invalid value, "disk" in SuspendState=). */
  warnings: string[];
}

/** What the cycle should do, or why systemd-sleep would refuse. */
export type SleepDecision =
  | {
    ok: true;
    /** What to write to /sys/power/state. */
    state: SuspendState;
    /** What to write to /sys/power/mem_sleep first, or null to leave it. */
    memSleep: string | null;
    /** The settings it came from. */
    config: SleepConfig;
  }
  | {
    ok: false;
    /** Why systemd-sleep would not suspend. */
    reason: string;
    /** What to do. */
    fix: string;
    /** The settings it came from. */
    config: SleepConfig;
  };

/** Words of a list value, quotes removed (systemd's EXTRACT_UNQUOTE). */
function words(value: string): string[] {
  return [...value.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]);
}

/** Reads `[Sleep]` from sleep.conf and its drop-ins under `root`. */
export async function readSleepConfig(root = "/"): Promise<SleepConfig> {
  const { entries, files } = await readConfig(root, "systemd/sleep.conf", "Sleep");
  const warnings: string[] = [];
  let allow: boolean | undefined;
  let states: string[] | undefined;
  let modes: string[] | undefined;
  for (const e of entries) {
    const where = `${e.file}:${e.line}`;
    if (e.key === "AllowSuspend") {
      if (e.value === "") allow = undefined;
      else {
        const b = parseBoolean(e.value);
        if (b === undefined) warnings.push(`${where}: AllowSuspend=${e.value} is not a boolean; ignored`);
        else allow = b;
      }
    } else if (e.key === "SuspendState") {
      states = e.value === "" ? undefined : [...(states ?? []), ...words(e.value)];
    } else if (e.key === "MemorySleepMode") {
      modes = words(e.value);
    }
  }
  let suspendStates = states ?? [...DEFAULT_SUSPEND_STATES];
  if (suspendStates.includes("disk")) {
    warnings.push("SuspendState= contains disk (hibernation): ignored, as systemd-sleep does");
    suspendStates = suspendStates.filter((s) => s !== "disk");
  }
  return { allowSuspend: allow !== false, suspendStates, memorySleepModes: modes ?? [], files, warnings };
}

/** The words of a sysfs list ("[s2idle] deep" → ["s2idle", "deep"]). */
function offered(text: string | undefined): string[] {
  return (text ?? "").split(/\s+/).filter(Boolean).map((w) => w.replace(/^\[(.*)\]$/, "$1"));
}

/** Decides from `config` and what the kernel offers under `root` (/sys/power/state, /sys/power/mem_sleep). */
export async function decideSleep(config: SleepConfig, root = "/"): Promise<SleepDecision> {
  const from = config.files.length ? config.files.join(", ") : "systemd's defaults (no sleep.conf)";
  if (!config.allowSuspend) {
    return {
      ok: false,
      reason: `AllowSuspend=no in ${from}: systemd-sleep refuses to suspend`,
      fix: "set AllowSuspend=yes (or remove the line) in /etc/systemd/sleep.conf.d/",
      config,
    };
  }
  const kernelStates = offered(await readTrimmed(root, "/sys/power/state"));
  const state = config.suspendStates.find((s) => kernelStates.includes(s));
  if (!state || !(DEFAULT_SUSPEND_STATES as readonly string[]).includes(state)) {
    return {
      ok: false,
      reason: `none of SuspendState=${config.suspendStates.join(" ") || "(empty)"} (${from}) is offered by the ` +
        `kernel (/sys/power/state: ${kernelStates.join(" ") || "absent"})`,
      fix: `set SuspendState= in /etc/systemd/sleep.conf.d/ to one of: ${kernelStates.join(" ") || "none offered"}`,
      config,
    };
  }
  let memSleep: string | null = null;
  if (config.suspendStates.includes("mem") && config.memorySleepModes.length) {
    const kernelModes = offered(await readTrimmed(root, "/sys/power/mem_sleep"));
    memSleep = config.memorySleepModes.find((m) => kernelModes.includes(m)) ?? null;
    if (memSleep === null) {
      return {
        ok: false,
        reason: `none of MemorySleepMode=${config.memorySleepModes.join(" ")} (${from}) is offered by the kernel ` +
          `(/sys/power/mem_sleep: ${kernelModes.join(" ") || "absent"}): systemd-sleep fails to write it`,
        fix: `set MemorySleepMode= to one of: ${kernelModes.join(" ") || "none offered"}, or remove it`,
        config,
      };
    }
  }
  return { ok: true, state: state as SuspendState, memSleep, config };
}

/** What systemd-sleep would do for `suspend` on the machine under `root`: the state, the mem_sleep mode. */
export async function resolveSleep(root = "/"): Promise<SleepDecision> {
  return await decideSleep(await readSleepConfig(root), root);
}

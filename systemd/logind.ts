/**
 * @module
 * Which of logind's automatic triggers (lid, suspend key, idle) go through systemd-suspend.service — the path
 * cryptsleep protects once installed — and which take hibernate, hybrid-sleep or suspend-then-hibernate: those
 * need the keys to write and read the image, so cryptsleep lets them pass untouched and they are NOT protected.
 *
 * Reads `[Login]` of logind.conf and its drop-ins (same rules as sleep.conf, see conf.ts) with logind's
 * defaults (logind.conf(5), systemd v256–v257): HandleLidSwitch=suspend, HandleLidSwitchExternalPower= unset
 * (then it follows HandleLidSwitch), HandleLidSwitchDocked=ignore, HandleSuspendKey=suspend, IdleAction=ignore. The last valid assignment counts; an invalid one is ignored
 * with a warning. `sleep` (v256+) takes the first entry of SleepOperation= (default "suspend-then-hibernate
 * suspend") that the machine can do; hibernation is judged possible when /sys/power/state offers "disk".
 *
 * @example
 * ```ts
 * import { readLogind, unprotected } from "./logind.ts";
 * const logind = await readLogind("/");
 * for (const t of unprotected(logind)) console.log(`${t.setting}=${t.value}: ${t.why}`);
 * ```
 */
import { lastValue, readConfig } from "./conf.ts";
import { readTrimmed } from "../host/paths.ts";

/** logind's actions (HandleAction). */
export const ACTIONS = [
  "ignore",
  "poweroff",
  "reboot",
  "halt",
  "kexec",
  "suspend",
  "hibernate",
  "hybrid-sleep",
  "suspend-then-hibernate",
  "sleep",
  "lock",
  "factory-reset",
  "secure-attention-key",
] as const;
/** One of {@linkcode ACTIONS}. */
export type Action = typeof ACTIONS[number];

/** The actions that keep the keys in RAM while the machine sleeps, which cryptsleep does not take over. */
export const UNPROTECTED_ACTIONS: readonly Action[] = ["hibernate", "hybrid-sleep", "suspend-then-hibernate"];

/** The triggers doctor looks at, with logind's defaults (null: follows HandleLidSwitch). */
export const TRIGGER_DEFAULTS = {
  HandleLidSwitch: "suspend",
  HandleLidSwitchExternalPower: null,
  HandleLidSwitchDocked: "ignore",
  HandleSuspendKey: "suspend",
  IdleAction: "ignore",
} as const satisfies Record<string, Action | null>;
/** A key of {@linkcode TRIGGER_DEFAULTS}. */
export type TriggerSetting = keyof typeof TRIGGER_DEFAULTS;

/** logind's default SleepOperation= (what `sleep` tries, in order). */
export const DEFAULT_SLEEP_OPERATION: readonly Action[] = ["suspend-then-hibernate", "suspend"];

/** Where a trigger leads. */
export type Path = "protected" | "unprotected" | "no-sleep";

/** One trigger, its value and where it leads. */
export interface Trigger {
  /** The setting, e.g. "HandleLidSwitch". */
  setting: TriggerSetting;
  /** Its value as logind uses it. */
  value: Action;
  /** Where the value came from: a file:line, or "default". */
  from: string;
  /** The action it ends in (`sleep` resolved through SleepOperation=). */
  action: Action;
  /** suspend: protected (systemd-suspend.service); hibernate & co: unprotected; the rest does not sleep. */
  path: Path;
  /** One line for doctor. */
  why: string;
}

/** What {@linkcode readLogind} found. */
export interface LogindConfig {
  /** Each trigger, in {@linkcode TRIGGER_DEFAULTS} order. */
  triggers: Trigger[];
  /** SleepOperation=, as `sleep` uses it. */
  sleepOperation: Action[];
  /** The files read (host paths), in order. */
  files: string[];
  /** Invalid values, ignored as logind does. */
  warnings: string[];
}

const isAction = (v: string): v is Action => (ACTIONS as readonly string[]).includes(v);

function pathOf(action: Action): Path {
  if (action === "suspend") return "protected";
  return UNPROTECTED_ACTIONS.includes(action) ? "unprotected" : "no-sleep";
}

/** Reads logind's triggers under `root`; `canHibernate` defaults to whether /sys/power/state offers "disk". */
export async function readLogind(root = "/", canHibernate?: boolean): Promise<LogindConfig> {
  const { entries, files } = await readConfig(root, "systemd/logind.conf", "Login");
  const warnings: string[] = [];
  const valid = entries.filter((e) => {
    if (!(e.key in TRIGGER_DEFAULTS) && e.key !== "SleepOperation") return false;
    const ok = e.key === "SleepOperation"
      ? e.value.split(/\s+/).filter(Boolean).every(isAction)
      : e.value === "" || isAction(e.value);
    if (!ok) warnings.push(`${e.file}:${e.line}: ${e.key}=${e.value} is not a logind action; ignored`);
    return ok;
  });
  const sleepEntry = lastValue(valid, "SleepOperation");
  const sleepOperation = sleepEntry?.value
    ? sleepEntry.value.split(/\s+/).filter(Boolean) as Action[]
    : [...DEFAULT_SLEEP_OPERATION];
  const hibernate = canHibernate ??
    ((await readTrimmed(root, "/sys/power/state")) ?? "").split(/\s+/).includes("disk");
  // `sleep`: the first operation this machine can do (hibernation-based ones need a working hibernation)
  const sleepAction = sleepOperation.find((a) => hibernate || !UNPROTECTED_ACTIONS.includes(a)) ?? "suspend";

  const triggers: Trigger[] = [];
  for (const setting of Object.keys(TRIGGER_DEFAULTS) as TriggerSetting[]) {
    const e = lastValue(valid, setting);
    let value: Action;
    let from: string;
    if (e && e.value !== "") {
      value = e.value as Action;
      from = `${e.file}:${e.line}`;
    } else if (setting === "HandleLidSwitchExternalPower") {
      const lid = triggers[0];
      value = lid.value;
      from = `as HandleLidSwitch (${lid.from})`;
    } else {
      value = TRIGGER_DEFAULTS[setting] as Action;
      from = "default";
    }
    const action = value === "sleep" ? sleepAction : value;
    const path = pathOf(action);
    const via = value === "sleep"
      ? ` (sleep → ${action}, the first of SleepOperation=${sleepOperation.join(" ")})`
      : "";
    const why = path === "protected"
      ? `${action}${via}: systemd-suspend.service, locked by cryptsleep once installed`
      : path === "unprotected"
      ? `${action}${via}: not protected — the keys stay in RAM (cryptsleep lets hibernation pass untouched)` +
        (hibernate ? "" : "; hibernation looks unavailable here (no disk in /sys/power/state), so it would fail")
      : `${action}: does not sleep`;
    triggers.push({ setting, value, from, action, path, why });
  }
  return { triggers, sleepOperation, files, warnings };
}

/** The triggers that lead to an unprotected sleep. */
export function unprotected(config: LogindConfig): Trigger[] {
  return config.triggers.filter((t) => t.path === "unprotected");
}

/**
 * @module
 * Is cryptsleep in systemd's suspend path? What `cryptsleep status` and `doctor` say about it: whether the
 * drop-in is installed, whether the ExecStart systemd ends with is cryptsleep's, and whether Debian's
 * cryptsetup-suspend drop-in is active.
 *
 * @example
 * ```ts
 * import { suspendPath } from "./state.ts";
 * const state = await suspendPath("/");
 * console.log(state.installed, state.summary);
 * ```
 */
import { readRecord } from "./record.ts";
import { type DebianDropin, debianDropin, DROPIN, type ExecStart, execStart, isOurCommand } from "./unit.ts";
import { underRoot } from "../host/paths.ts";
import { livingPid } from "../host/proc.ts";
import { PID_FILE } from "../cycle/kept.ts";

/** What systemd would run for a suspend, and whose it is. */
export interface SuspendPath {
  /** cryptsleep's drop-in is there and systemd-suspend.service ends up running cryptsleep. */
  installed: boolean;
  /** cryptsleep's drop-in file exists (it may be overridden by a later one). */
  dropinPresent: boolean;
  /** `cryptsleep install` left a record (uninstall can restore). */
  recorded: boolean;
  /** The ExecStart= systemd ends with. */
  execStart: ExecStart;
  /** Debian's cryptsetup-suspend drop-in. */
  debian: DebianDropin;
  /** One line: who takes systemd's suspend. */
  summary: string;
}

/** Looks at the unit's files under `root`. */
export async function suspendPath(root = "/"): Promise<SuspendPath> {
  const exec = await execStart(root);
  const debian = await debianDropin(root);
  const recorded = (await readRecord(root)) !== null;
  let dropinPresent = true;
  try {
    await Deno.lstat(underRoot(root, DROPIN));
  } catch {
    dropinPresent = false;
  }
  const last = exec.commands.at(-1) ?? "";
  // install's options (--console, --max-tries, ...) follow the flag
  const ours = isOurCommand(last) && exec.from.at(-1) === DROPIN;
  const installed = dropinPresent && ours;
  const runs = exec.commands.length ? `systemd-suspend.service runs ${last} (${exec.from.at(-1)})` : "no ExecStart";
  const summary = installed
    ? `installed: ${runs}`
    : dropinPresent
    ? `${DROPIN} is there but overridden: ${runs}; run cryptsleep install again`
    : `not installed: ${runs}; the lid, the menu and the idle timer sleep with the keys in RAM — run cryptsleep install`;
  return { installed, dropinPresent, recorded, execStart: exec, debian, summary };
}

/**
 * The kept mode's state when systemd-suspend.service runs its client (`install --kept`), or null: whether
 * `cryptsleep serve` runs (pid file under `root`, and that very process there), and what it keeps resident.
 */
export async function keptLine(path: SuspendPath, root = "/"): Promise<string | null> {
  if (!/\/cryptsleep-request(\s|$)/.test(path.execStart.commands.at(-1) ?? "")) return null;
  const pid = livingPid(await Deno.readTextFile(underRoot(root, PID_FILE)).catch(() => ""));
  const status = pid === null ? null : await Deno.readTextFile(`/proc/${pid}/status`).catch(() => null);
  if (!status) {
    return "kept mode: cryptsleep serve is not running, so each suspend starts its own cryptsleep " +
      "(systemctl status cryptsleep-kept.service says why)";
  }
  const rss = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  return `kept mode: cryptsleep serve runs (pid ${pid}, ${(rss / 1024).toFixed(1)} MiB resident)`;
}

/** One line about Debian's cryptsetup-suspend, or null when it is absent. */
export function debianLine(d: DebianDropin): string | null {
  if (!d.path) return null;
  if (d.active) return `Debian's cryptsetup-suspend drop-in is active (${d.path})`;
  return `Debian's cryptsetup-suspend drop-in is masked (${d.path} hides ${d.shipped ?? "it"})`;
}

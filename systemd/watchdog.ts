/**
 * @module
 * systemd's hardware watchdog (`RuntimeWatchdogSec=`) during a cycle. PID 1 pings the watchdog device; the cycle
 * freezes PID 1 from the freeze to the thaw, and after wake the prompt may wait for minutes, so a watchdog left
 * armed resets the machine while the person types (a laptop's iTCO_wdt, like the kernel's softdog, counts on after
 * resume). Before the pin, `cryptsleep suspend` hands the watchdog over: it sets PID 1's
 * `RuntimeWatchdogUSec` to 0 through D-Bus (systemd disarms the device with the magic close), checks that every
 * device stopped, and sets the old value back after the thaw. A device that cannot be stopped (`nowayout`) or
 * that someone else holds open is refused before anything is frozen.
 *
 * @example
 * ```ts
 * import { handOver, rearm } from "./watchdog.ts";
 * const held = await handOver(); // null: no systemd, or its watchdog is off
 * // … freeze, lock, sleep, unlock, thaw …
 * if (held) await rearm(held);
 * ```
 */
import { dirname } from "../host/path.ts";
import { readOptional } from "../host/paths.ts";

const BUS = ["org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"];
const PROPERTY = "RuntimeWatchdogUSec";
const SYSFS = "/sys/class/watchdog";
/** The value to set back, kept while the watchdog is handed over: a crashed run's claim re-arms from it. */
export const RECORD_PATH = "/run/cryptsleep/watchdog-usec";

/** What the hand-over took, for {@linkcode rearm}. */
export interface HandedOver {
  /** PID 1's RuntimeWatchdogUSec before (decimal; 18446744073709551615 is "infinity": the driver's default). */
  previousUSec: string;
  /** The devices that were running, e.g. ["watchdog0"]. */
  devices: string[];
}

/** A watchdog device as sysfs shows it. */
export interface WatchdogDevice {
  /** e.g. "watchdog0". */
  name: string;
  /** The driver's name ("Software Watchdog", "iTCO_wdt"). */
  identity: string;
  /** Whether it counts now. */
  active: boolean;
  /** Whether it keeps counting when closed (it can never be stopped once started). */
  nowayout: boolean;
  /** Its timeout in seconds, if told. */
  timeoutS?: number;
}

/** The watchdog devices under `root` ("/" or a recorded tree). */
export async function watchdogDevices(root = "/"): Promise<WatchdogDevice[]> {
  const dir = `${root.replace(/\/$/, "")}${SYSFS}`;
  const out: WatchdogDevice[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch { /* no watchdog class: no device */ }
  for (const e of entries.filter((e) => /^watchdog\d+$/.test(e.name)).sort((a, b) => a.name.localeCompare(b.name))) {
    const read = async (f: string) => (await readOptional(root, `${SYSFS}/${e.name}/${f}`))?.trim();
    const timeout = Number(await read("timeout"));
    out.push({
      name: e.name,
      identity: (await read("identity")) ?? "unknown",
      active: (await read("state")) === "active",
      nowayout: (await read("nowayout")) === "1",
      ...(Number.isFinite(timeout) && timeout > 0 ? { timeoutS: timeout } : {}),
    });
  }
  return out;
}

/** An error of the hand-over, said as what to do; nothing is left changed when it is thrown. */
export class WatchdogError extends Error {
  /** Its name, for stack traces. */
  override name = "WatchdogError";
}

async function busctl(args: string[]): Promise<string> {
  const r = await new Deno.Command("busctl", { args, stdout: "piped", stderr: "piped" }).output();
  const err = new TextDecoder().decode(r.stderr).trim();
  if (!r.success) throw new WatchdogError(`busctl ${args.join(" ")}: exit ${r.code}: ${err}`);
  return new TextDecoder().decode(r.stdout).trim();
}

/** PID 1's RuntimeWatchdogUSec as a decimal string; null when PID 1 is not systemd. */
export async function runtimeWatchdogUSec(): Promise<string | null> {
  // sd_booted(): systemd creates this directory early at boot, and only systemd does
  if (!(await isDir("/run/systemd/system"))) return null;
  const out = await busctl(["get-property", ...BUS, PROPERTY]);
  const m = /^t (\d+)$/.exec(out);
  if (!m) throw new WatchdogError(`busctl get-property ${PROPERTY} printed "${out}", not "t <usec>"`);
  return m[1];
}

/** {@linkcode runtimeWatchdogUSec}, or undefined (unknown) when D-Bus does not answer: the phase asks again. */
export function liveWatchdogUSec(): Promise<string | null | undefined> {
  return runtimeWatchdogUSec().catch(() => undefined);
}

async function isDir(path: string): Promise<boolean> {
  return (await Deno.stat(path).catch(() => null))?.isDirectory === true;
}

async function setUSec(usec: string): Promise<void> {
  await busctl(["set-property", ...BUS, PROPERTY, "t", usec]);
  const now = await runtimeWatchdogUSec();
  if (now !== usec) throw new WatchdogError(`set ${PROPERTY}=${usec}, but PID 1 now says ${now}`);
}

/** Why a running device would reset the machine during the cycle. */
export interface Refusal {
  /** What was seen. */
  seen: string;
  /** What to do. */
  fix: string;
}

/**
 * Why the running devices would reset the machine during the cycle, or null when they can be handed over.
 * `systemdUSec`: PID 1's RuntimeWatchdogUSec (null: not systemd); undefined when unknown (a recorded tree), then
 * only a device that can never be stopped is judged.
 */
export function refusalOf(devices: WatchdogDevice[], systemdUSec: string | null | undefined): Refusal | null {
  const active = devices.filter((d) => d.active);
  const named = (ds: WatchdogDevice[]) => ds.map((d) => `${d.name} (${d.identity})`).join(", ");
  const stuck = active.filter((d) => d.nowayout);
  if (stuck.length) {
    return {
      seen: `${named(stuck)} runs with nowayout: it cannot be stopped, and PID 1, frozen while the prompt waits, ` +
        `cannot ping it, so it would reset the machine`,
      fix: "load its driver with nowayout=0 (a modprobe option), or a kernel without CONFIG_WATCHDOG_NOWAYOUT",
    };
  }
  if (active.length && systemdUSec !== undefined && (systemdUSec === null || systemdUSec === "0")) {
    return {
      seen: `${named(active)} runs, and not by systemd's RuntimeWatchdogSec=: whatever pings it is frozen during ` +
        `the cycle, so it would reset the machine`,
      fix: "stop the daemon that holds it (fuser -v /dev/watchdog*), or let systemd drive it (RuntimeWatchdogSec=)",
    };
  }
  return null;
}

/**
 * Disarms systemd's runtime watchdog for the cycle: null when there is nothing to hand over. Throws
 * {@linkcode WatchdogError} (with nothing changed) when a device would keep counting.
 */
export async function handOver(opts: { stopTimeoutMs?: number } = {}): Promise<HandedOver | null> {
  const devices = await watchdogDevices();
  // no device counts: nothing to hand over, and no need for D-Bus (a host may run without a system bus)
  if (!devices.some((d) => d.active)) return null;
  const usec = await runtimeWatchdogUSec();
  const refusal = refusalOf(devices, usec);
  if (refusal) throw new WatchdogError(`${refusal.seen}: ${refusal.fix}`);
  if (usec === null || usec === "0") return null;
  const running = devices.filter((d) => d.active).map((d) => d.name);
  await Deno.mkdir(dirname(RECORD_PATH), { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(RECORD_PATH, `${usec}\n`);
  try {
    await setUSec("0");
  } catch (err) {
    // whether or not PID 1 took it, put the old value back and leave no record that would fail every next claim
    await setUSec(usec).catch(() => {});
    await Deno.remove(RECORD_PATH).catch(() => {});
    throw err;
  }
  // systemd closes the device with the magic character; the driver stops it
  const deadline = Date.now() + (opts.stopTimeoutMs ?? 5_000);
  for (;;) {
    const still = (await watchdogDevices()).filter((d) => d.active);
    if (!still.length) return { previousUSec: usec, devices: running };
    if (Date.now() > deadline) {
      await rearm({ previousUSec: usec, devices: running });
      throw new WatchdogError(
        `${still.map((d) => d.name).join(", ")} still counts after systemd let go of it (${PROPERTY}=0): ` +
          `re-armed as it was; find who holds /dev/${still[0].name} (fuser -v /dev/${still[0].name})`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Gives systemd its watchdog back, as it was before {@linkcode handOver}. */
export async function rearm(held: HandedOver): Promise<void> {
  await setUSec(held.previousUSec);
  await Deno.remove(RECORD_PATH).catch(() => {});
}

/** What a crashed run left handed over: the value to set back, or null. */
export async function readRecord(): Promise<string | null> {
  const text = (await Deno.readTextFile(RECORD_PATH).catch(() => "")).trim();
  return /^\d+$/.test(text) ? text : null;
}

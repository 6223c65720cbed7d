/**
 * @module
 * The kept mode, `cryptsleep serve` (`cryptsleep install --kept` runs it as cryptsleep-kept.service): one process
 * stays between cycles with its runtime started, libcryptsetup loaded, the cycle's code compiled by a dry run, and
 * the next cycle's supervisor already started. systemd-suspend.service's ExecStart (packaging/cryptsleep-request, a
 * shell) asks it for a cycle through the FIFO {@linkcode REQUEST_FIFO} and waits for its answer; each cycle is
 * the same list as `cryptsleep suspend` (cycle/outer.ts). What it keeps between cycles: those two processes' memory,
 * never a key, a passphrase or a ramfs. Their memory must never go to swap (a swap on a volume the cycle locks could
 * not give it back): serve refuses to start in a cgroup whose memory.swap.max is not 0 while swap is on, and before
 * each cycle checks that neither process has a page in swap (if one has, the client runs that cycle itself and serve
 * exits, to be started afresh by systemd). A cycle that leaves serve not as it was (another cgroup, chrooted) or ends
 * in an error the cycle did not turn into an outcome makes it exit the same way, after answering.
 *
 * The protocol, a line each way: the client makes a FIFO under {@linkcode KEPT_DIR}, opens it read-write, and
 * writes `cycle PATH UPTIME` (when it was asked: /proc/uptime's seconds) to the request FIFO; serve answers on PATH
 * `took` as it begins, then `say TEXT` lines (what the cycle has to tell), then `exit N` — or `oneshot` instead of
 * `took`: it runs no cycle, the client runs it itself.
 *
 * @example
 * ```ts
 * import { parseRequest } from "./kept.ts";
 * console.log(parseRequest("cycle /run/cryptsleep/kept/reply.42 100.25", { nowMs: 1764540000000, uptimeS: 100.5 }));
 * // { reply: "/run/cryptsleep/kept/reply.42", requestedAt: 1764539999760 }
 * ```
 */
import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
import { closeFd, mkfifo, O_CLOEXEC, openFd, writeFdSync } from "../ffi/libc.ts";
import type { Outcome } from "./outcome.ts";
import { describe, errnoCode } from "../host/errors.ts";
import { DEFAULT_CGROUP_ROOT, procCgroup, readOr } from "../cgroup/cgroup2.ts";
import { join } from "../host/path.ts";
import type { SuspendOptions } from "./job.ts";
import { suspend } from "./outer.ts";
import { isChrooted } from "../chroot/enter.ts";
import { bundlePath, lineReader, spawnSupervisor, type Supervisor } from "./start.ts";
import { kmsg } from "./report.ts";
import { messages } from "./errors.ts";
import { processIdentity, uptimeS } from "../host/proc.ts";

/** Where the kept process and its clients meet (tmpfs: nothing of it on a disk the cycle locks). */
export const KEPT_DIR = "/run/cryptsleep/kept";
/** The FIFO serve reads requests from. */
export const REQUEST_FIFO = `${KEPT_DIR}/request`;
/** serve's pid and start ("PID START", host/proc.ts processIdentity): the client tells serve from none by it. */
export const PID_FILE = `${KEPT_DIR}/pid`;

/** How long after a cycle the next one's supervisor starts. */
export const SPARE_AFTER_MS = 5000;

const O_WRONLY = 1;
const O_NONBLOCK = 0o4000;

/** What a kept cycle gets from serve instead of starting it itself. */
export interface Kept {
  /** Loaded once. */
  lib: Libcryptsetup;
  /** When the client was asked (ms since the epoch): a cycle ending later answered it too. */
  requestedAt: number;
  /** The supervisor started ahead for this cycle (null: none, the cycle starts its own). Taken once. */
  takeSupervisor(): Supervisor | null;
}

/**
 * A request line, or null for one that is not. Its time is /proc/uptime's first field when the client was asked
 * (seconds since boot; a shell reads it without a fork), made ms since the epoch with `clock`, both read as the
 * line is; or, from a client before that, ms since the epoch.
 */
export function parseRequest(
  line: string,
  clock?: { nowMs: number; uptimeS: number },
): { reply: string; requestedAt: number | null } | null {
  const m = /^cycle (\S+)(?: (\S*))?$/.exec(line.trim());
  if (!m) return null;
  // only a FIFO of our own directory: the line comes from whoever can write the request FIFO (root), but a
  // path elsewhere would be opened for writing by root all the same
  if (!m[1].startsWith(`${KEPT_DIR}/reply.`) || m[1].slice(KEPT_DIR.length + 1).includes("/")) return null;
  const asked = m[2] ?? "";
  if (/^\d{13}$/.test(asked)) return { reply: m[1], requestedAt: Number(asked) };
  if (clock && /^\d+\.\d{1,2}$/.test(asked) && Number(asked) <= clock.uptimeS) {
    // the uptime is cut to 1/100 s: its latest reading, so that a request is never taken for one made before a
    // cycle ended (claim.ts merges those) when it came up to 10 ms after
    const ago = Math.max(0, clock.uptimeS - Number(asked) - 0.01);
    return { reply: m[1], requestedAt: clock.nowMs - Math.round(ago * 1000) };
  }
  // none, or one that cannot be read: the time the line is read stands in
  return { reply: m[1], requestedAt: null };
}

/**
 * /proc/uptime's first field and the time now, for {@linkcode parseRequest}: the uptime first, so that the time
 * since the request is never more than it was, nor the request's time earlier.
 */
export function requestClock(): { nowMs: number; uptimeS: number } | undefined {
  try {
    // read in this order (an object's fields are evaluated in order)
    return { uptimeS: uptimeS(), nowMs: Date.now() };
  } catch {
    return undefined;
  }
}

/**
 * What a cycle's outcome says (`cryptsleep suspend` prints it, serve tells its client) and its exit code
 * (cli/exit_codes.ts: 0 ok, 3 refused, 1 failed).
 */
export function answerOf(outcome: Outcome): { say: string[]; code: number } {
  switch (outcome.kind) {
    case "ok":
      return { say: [], code: 0 };
    case "refused":
      return { say: outcome.reasons.map((r) => `cryptsleep: refused: ${r}`), code: 3 };
    case "failed":
      return { say: outcome.errors.map((e) => `cryptsleep: ${e}`), code: 1 };
  }
}

/**
 * Why this process's memory could go to swap between cycles, or null when it cannot: its cgroup's memory.swap.max
 * is 0, or no swap is on. `swaps` is /proc/swaps's text.
 */
export function swapRisk(swapMax: string | null, swaps: string, cgroup: string): string | null {
  if (swapMax?.trim() === "0") return null;
  const on = swaps.trim().split("\n").slice(1).filter((l) => l.trim());
  if (!on.length) return null;
  return `swap is on (${on.map((l) => l.split(/\s+/)[0]).join(", ")}) and cgroup ${cgroup} lets this process's ` +
    `memory go there (memory.swap.max ${swapMax?.trim() ?? "unreadable"}); between cycles it could, and a swap on a ` +
    "volume the cycle locks could not give it back: run it as cryptsleep-kept.service (cryptsleep install --kept " +
    "sets MemorySwapMax=0), or under systemd-run -p MemorySwapMax=0";
}

/** kB of `pid`'s memory in swap (VmSwap), 0 when it has none or is gone. */
export function swappedKiB(pid: number): number {
  const status = readOr(`/proc/${pid}/status`, "");
  return Number(/^VmSwap:\s+(\d+)/m.exec(status)?.[1] ?? 0);
}

async function ownSwapRisk(): Promise<string | null> {
  const cgroup = await procCgroup(Deno.pid) ?? "/";
  const swapMax = await Deno.readTextFile(join(DEFAULT_CGROUP_ROOT, cgroup, "memory.swap.max")).catch(() => null);
  return swapRisk(swapMax, readOr("/proc/swaps", ""), cgroup);
}

/** Writes the answer's lines to the client's FIFO; a client that went away is only logged. */
function answer(fd: number | null, line: string): void {
  if (fd === null) return;
  try {
    writeFdSync(fd, new TextEncoder().encode(line.replaceAll("\n", " ") + "\n"), "the client's reply FIFO");
  } catch (err) {
    kmsg(`serve: ${messages(err).join("; ")}`);
  }
}

/** Opens the client's FIFO for writing without waiting: null (logged) when nobody reads it any more. */
function openReply(path: string): number | null {
  try {
    return openFd(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  } catch (err) {
    // ENXIO: no reader; ENOENT: the client gave up and removed it
    kmsg(`serve: ${describe(`open ${path}`, err)}: the client is gone (${errnoCode(err) ?? "?"}); no cycle for it`);
    return null;
  }
}

/** Runs `cryptsleep serve` until SIGTERM (between cycles); returns its exit code. */
export async function serve(options: SuspendOptions): Promise<number> {
  // first: a stop asked for while it starts is not lost in the warm-up's own listeners
  let stopping = false;
  let busy = false;
  let wake = () => {};
  const stop = () => {
    stopping = true;
    if (!busy) wake();
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  try {
    return await serving(options, () => stopping, (w) => wake = w, (b) => busy = b);
  } finally {
    Deno.removeSignalListener("SIGTERM", stop);
    Deno.removeSignalListener("SIGINT", stop);
  }
}

async function serving(
  options: SuspendOptions,
  stopping: () => boolean,
  onStop: (wake: () => void) => void,
  setBusy: (busy: boolean) => void,
): Promise<number> {
  await Deno.mkdir(KEPT_DIR, { recursive: true, mode: 0o700 });
  // one serve at a time: a second would take the FIFO from the first, and its end remove the other's files
  using lock = await Deno.open(`${KEPT_DIR}/serve.lock`, { read: true, write: true, create: true, mode: 0o600 });
  if (!(await lock.tryLock(true))) {
    const holder = (await Deno.readTextFile(PID_FILE).catch(() => "")).trim().split(" ")[0] || "unknown";
    console.error(`cryptsleep serve: refused: another cryptsleep serve runs (pid ${holder}): stop it first`);
    return 3;
  }
  // what a serve that was killed left names no serve: gone before anything else, so no client (nor install) takes
  // it for this one
  await Deno.remove(PID_FILE).catch(() => {});
  await Deno.remove(REQUEST_FIFO).catch(() => {});
  const risk = await ownSwapRisk();
  if (risk) {
    console.error(`cryptsleep serve: refused: ${risk}`);
    return 3;
  }
  const lib = Libcryptsetup.open();
  // the first cycle's code compiled now, not at the request: a dry run reads what a cycle would
  const warm = await suspend(options, { dryRun: true }, { lib, requestedAt: Date.now(), takeSupervisor: () => null });
  if (warm.kind !== "ok") {
    for (const l of answerOf(warm).say) console.error(`${l} (a cycle asked for now would say so too)`);
  }
  if (stopping()) return 0;
  // the pid first, the FIFO last: a client (and install) that finds the FIFO finds serve's pid; with its start,
  // so that a pid taken by another process after a crash is not taken for serve (host/proc.ts, livingPid)
  const identity = processIdentity(Deno.pid);
  if (!identity) throw new Error(`cannot read /proc/${Deno.pid}/stat: is /proc mounted?`);
  await Deno.writeTextFile(`${PID_FILE}.new`, `${identity}\n`);
  await Deno.rename(`${PID_FILE}.new`, PID_FILE);
  // made and opened under another name, then renamed: a client never finds it before it is read (a FIFO nobody
  // has open drops what was written to it)
  const making = `${REQUEST_FIFO}.new`;
  await Deno.remove(making).catch(() => {});
  try {
    mkfifo(making, 0o600);
  } catch (err) {
    console.error(`cryptsleep serve: ${messages(err).join("; ")}`);
    return 1;
  }
  // read-write: the FIFO never ends when a client closes it
  const fifo = await Deno.open(making, { read: true, write: true });
  await Deno.rename(making, REQUEST_FIFO);
  const readLine = lineReader(fifo.readable);
  // between cycles: the blocked read is all there is to end
  onStop(() => void Deno.writeTextFile(REQUEST_FIFO, "stop\n", { append: true }).catch(() => {}));
  // where it lives between cycles: each cycle must leave it there, unchrooted
  const home = await procCgroup(Deno.pid);
  let spare: Supervisor | null = spawnSupervisor(bundlePath());
  let respawn: ReturnType<typeof setTimeout> | undefined;
  console.error(`cryptsleep serve: kept (pid ${Deno.pid}, supervisor ${spare.pid} ready); waiting on ${REQUEST_FIFO}`);
  let code = 0;
  try {
    while (!stopping()) {
      const line = await readLine();
      if (line === null || stopping()) break;
      const request = parseRequest(line, requestClock());
      if (!request) {
        if (line.trim() !== "stop") kmsg(`serve: not a request, ignored: ${JSON.stringify(line.slice(0, 80))}`);
        continue;
      }
      const fd = openReply(request.reply);
      if (fd === null) continue;
      if (stopping()) {
        // asked to stop just now: no cycle begins here, the client runs it
        answer(fd, "oneshot");
        closeFd(fd);
        break;
      }
      // a request before the next supervisor started: this cycle starts its own
      clearTimeout(respawn);
      setBusy(true);
      try {
        // memory in swap could not be read back once the volumes are locked: the client runs the cycle itself,
        // and systemd restarts this process with its memory out of swap
        const swapped = swappedPids(spare ? [Deno.pid, spare.pid] : [Deno.pid]);
        if (swapped) {
          console.error(`cryptsleep serve: ${swapped}: the client runs this cycle itself; exiting to be restarted`);
          answer(fd, "oneshot");
          code = 1;
          break;
        }
        answer(fd, "took");
        const ahead = spare?.alive() ? spare : null;
        if (spare && !ahead) {
          kmsg(`serve: the supervisor started ahead (pid ${spare.pid}) is gone; this cycle starts its own`);
          await spare.dismiss();
        }
        spare = null;
        let taken = false;
        const kept: Kept = {
          lib,
          requestedAt: request.requestedAt ?? Date.now(),
          takeSupervisor: () => {
            taken = true;
            return ahead;
          },
        };
        let outcome: Outcome;
        try {
          outcome = await suspend(options, { dryRun: false }, kept);
        } catch (err) {
          // what suspend does not turn into an outcome: said to the client, and this process starts afresh
          outcome = { kind: "failed", errors: messages(err) };
          code = 1;
        }
        const { say, code: exit } = answerOf(outcome);
        for (const l of say) {
          console.error(l);
          answer(fd, `say ${l}`);
        }
        answer(fd, `exit ${exit}`);
        // a cycle that ended before its spawn phase (refused at the claim) never took it: it would wait for ever
        if (ahead && !taken) await ahead.dismiss();
        const off = await strayState(home);
        if (off) {
          console.error(`cryptsleep serve: after the cycle ${off}: exiting to be restarted`);
          code = 1;
        }
      } finally {
        closeFd(fd);
        setBusy(false);
      }
      if (code) break;
      // the next cycle's supervisor, started a while after this one is over: not beside what the wake resumes
      respawn = setTimeout(() => spare ??= spawnSupervisor(bundlePath()), SPARE_AFTER_MS);
    }
  } finally {
    clearTimeout(respawn);
    await Deno.remove(PID_FILE).catch(() => {});
    await Deno.remove(REQUEST_FIFO).catch(() => {});
    fifo.close();
    if (spare) await spare.dismiss();
  }
  return code;
}

/** What of `pids` is in swap, said, or null. */
function swappedPids(pids: number[]): string | null {
  for (const pid of pids) {
    const kib = swappedKiB(pid);
    if (kib > 0) return `pid ${pid} (cryptsleep serve or its supervisor) has ${kib} kB in swap`;
  }
  return null;
}

/** How this process is not as it was between cycles (cgroup `home`, not chrooted), or null. */
async function strayState(home: string | null): Promise<string | null> {
  const now = await procCgroup(Deno.pid);
  if (now !== home) return `it is in cgroup ${now}, not ${home}`;
  // (its own /proc/self/root reads "/" inside a chroot too)
  if (isChrooted()) return "it is still chrooted";
  return null;
}

/**
 * Who kept userspace from freezing: after the timeout, every process (and its first unfrozen thread) in the
 * cgroups that never reported `frozen 1`, with its state, wait channel and kernel stack, and the error that
 * names them and says what to do.
 *
 * @example
 * ```ts
 * import { resolveCgroup2 } from "./cgroup2.ts";
 * import { findRefusers, FreezeTimeoutError } from "./refusers.ts";
 * const root = await resolveCgroup2();
 * const refusers = await findRefusers(root, [`${root.dir}/system.slice`]);
 * console.log(new FreezeTimeoutError(10_000, refusers).message);
 * ```
 * @module
 */
import { join } from "../host/path.ts";
import { type ProcStat, readStat } from "../host/proc.ts";
import { type Cgroup2Root, isFrozen, readOr, readProcs, relCgroup } from "./cgroup2.ts";

/** One process that was still not frozen when the timeout expired. */
export interface Refuser {
  /** The process. */
  pid: number;
  /** The thread that was not frozen, when it is not the main thread. */
  tid?: number;
  /** The process's command name. */
  comm: string;
  /** cgroup path relative to the cgroup2 mount, e.g. "/system.slice/nfs-foo.service". */
  cgroup: string;
  /** State letter from /proc/PID/stat: D (uninterruptible, typical), R, S… */
  state: string;
  /** Where it waits in the kernel ("" when unknown). */
  wchan: string;
  /** Its kernel stack, when readable (root, CONFIG_STACKTRACE). */
  stack?: string;
}

/** Userspace did not freeze in time. Everything has been thawed again when this is thrown. */
export class FreezeTimeoutError extends Error {
  /** The timeout that expired. */
  readonly timeoutMs: number;
  /** Who did not freeze. */
  readonly refusers: Refuser[];
  /** What failed while thawing again. */
  readonly thawErrors: string[];
  /**
   * Names the refusers and says what to do about them.
   * @param timeoutMs The timeout that expired.
   * @param refusers Who did not freeze.
   * @param thawErrors What failed while thawing again.
   * @param how How it was frozen, when not all at once.
   */
  constructor(timeoutMs: number, refusers: Refuser[], thawErrors: string[] = [], how = "") {
    const who = refusers.length
      ? refusers.map((r) =>
        `pid ${r.pid}${r.tid ? `/${r.tid}` : ""} (${r.comm}) in ${r.cgroup}: state ${r.state}, wchan ${r.wchan || "?"}`
      ).join("; ")
      : "no single process identified (the kernel still reported frozen 0)";
    super(
      `userspace did not freeze within ${timeoutMs} ms${how ? ` (${how})` : ""}: ${who}. Nothing was locked and ` +
        `everything was thawed` +
        (thawErrors.length ? ` (thaw errors: ${thawErrors.join("; ")})` : "") +
        `. Processes in state D are stuck in the kernel (typically a hung NFS/FUSE/network mount or a device ` +
        `driver): finish or cancel their I/O, unmount the hung filesystem (umount -l), or kill them (kill -9 PID), ` +
        `or raise the freeze timeout, then try again.`,
    );
    this.name = "FreezeTimeoutError";
    this.timeoutMs = timeoutMs;
    this.refusers = refusers;
    this.thawErrors = thawErrors;
  }
}

/** A thread counts as frozen when it sits in the freezer trap (inside get_signal) or is stopped. */
async function threadFrozen(base: string, st: ProcStat): Promise<{ frozen: boolean; wchan: string; stack?: string }> {
  const wchan = readOr(`${base}/wchan`, "");
  let stack: string | undefined;
  try {
    stack = (await Deno.readTextFile(`${base}/stack`)).trim();
  } catch { /* needs root and CONFIG_STACKTRACE */ }
  const inTrap = /^(get_signal|do_freezer_trap|do_signal_stop)$/.test(wchan) ||
    (stack !== undefined && /\b(do_freezer_trap|get_signal)\+/.test(stack));
  return { frozen: st.state === "T" || st.state === "t" || inTrap, wchan, stack };
}

/** The processes (and their first unfrozen thread) in cgroups that did not report frozen 1. */
export async function findRefusers(root: Cgroup2Root, pending: string[]): Promise<Refuser[]> {
  const dirs: string[] = [];
  async function walk(dir: string) {
    dirs.push(dir);
    try {
      for await (const e of Deno.readDir(dir)) if (e.isDirectory) await walk(join(dir, e.name));
    } catch { /* removed meanwhile */ }
  }
  for (const dir of pending) await walk(dir);

  const refusers: Refuser[] = [];
  for (const dir of dirs) {
    if (isFrozen(dir)) continue;
    let procs: number[] = [];
    try {
      procs = readProcs(dir);
    } catch { /* removed meanwhile */ }
    for (const pid of procs) {
      let tids: number[] = [pid];
      try {
        tids = [];
        for await (const t of Deno.readDir(`/proc/${pid}/task`)) tids.push(Number(t.name));
        tids.sort((a, b) => a - b);
      } catch { /* gone */ }
      for (const tid of tids) {
        const base = `/proc/${pid}/task/${tid}`;
        const st = readStat(`${base}/stat`);
        if (!st) continue;
        const t = await threadFrozen(base, st);
        if (t.frozen) continue;
        const main = tid === pid ? st : readStat(`/proc/${pid}/stat`);
        refusers.push({
          pid,
          ...(tid !== pid ? { tid } : {}),
          comm: main?.comm ?? st.comm,
          cgroup: relCgroup(root, dir),
          state: st.state,
          wchan: t.wchan,
          ...(t.stack !== undefined ? { stack: t.stack } : {}),
        });
        break;
      }
    }
  }
  return refusers;
}

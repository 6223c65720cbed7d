/**
 * Helpers for the kernel freezer tests: a throw-away sub-hierarchy of the host's cgroup2 mount plays the
 * cgroup root ({@linkcode Bed}), with helper processes; everything is killed and removed at the end.
 * Needs root and a cgroup2 mount (on this host /sys/fs/cgroup/unified, hybrid layout).
 *
 * @example
 * ```ts
 * import { Bed, frozenFlag, ignore } from "./testing.ts";
 * if (!ignore) {
 *   await using bed = new Bed();
 *   const dir = await bed.cgroup("a.slice");
 *   await bed.spawn("exec sleep 1000", dir);
 *   console.log(await frozenFlag(dir)); // "0"
 * }
 * ```
 * @module
 */
import { join } from "../host/path.ts";
import { parseStat, readStat } from "../host/proc.ts";
import { findCgroup2Mount } from "./cgroup2.ts";

/** The host's cgroup2 mount point, or null (then the tests are ignored). */
export const mount: string | null = await findCgroup2Mount();
/** Whether the kernel tests cannot run here: they need root and a cgroup2 mount. */
export const ignore: boolean = mount === null || Deno.uid() !== 0;

/** Writes `value` to an existing file (a cgroup knob). */
export async function write(path: string, value: string): Promise<void> {
  await Deno.writeTextFile(path, value, { create: false });
}

/** The `frozen` flag of cgroup.events: "0", "1", or "?". */
export async function frozenFlag(dir: string): Promise<string> {
  return /^frozen (\d)$/m.exec(await Deno.readTextFile(join(dir, "cgroup.events")))?.[1] ?? "?";
}

/** utime+stime in clock ticks. */
export async function cpuTicks(pid: number): Promise<number> {
  return parseStat(await Deno.readTextFile(`/proc/${pid}/stat`)).cpuTicks;
}

/** Waits `ms` milliseconds. */
export const sleep = (ms: number): Promise<unknown> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 20 ms until it holds or `ms` pass; true if it held. For "it moves" checks on a slow machine. */
export async function within(ms: number, check: () => Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms;
  do {
    if (await check()) return true;
    await sleep(20);
  } while (Date.now() < end);
  return check();
}

/** The capability that lowering oom_score_adj needs. */
export const CAP_SYS_RESOURCE = 24;
/** Whether this process has capability `bit` in effect. */
export function hasCap(bit: number): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(Deno.readTextFileSync("/proc/self/status"))?.[1] ?? "0";
  return ((BigInt("0x" + hex) >> BigInt(bit)) & 1n) === 1n;
}

/**
 * Waits for `pid` to reach `state` (and, given `comm`, to be that program: a shell's `exec` is done), or throws after
 * 30 s. A test must not go on from a state it only hoped for: a loaded host can take seconds to get there.
 */
export async function waitState(pid: number, state: string, comm?: string): Promise<void> {
  const end = Date.now() + 30_000;
  for (;;) {
    const st = readStat(`/proc/${pid}/stat`);
    if (st?.state === state && (comm === undefined || st.comm === comm)) return;
    if (Date.now() > end) {
      throw new Error(
        `pid ${pid} not in state ${state}${comm ? ` as ${comm}` : ""} within 30 s: ${st?.comm} ${st?.state}`,
      );
    }
    await sleep(10);
  }
}

/** A scratch cgroup root with helper processes; kills and removes everything at the end. */
export class Bed implements AsyncDisposable {
  /** The scratch cgroup that plays the cgroup root. */
  readonly root: string;
  /** Every process spawned, killed at the end. */
  readonly children: Deno.ChildProcess[] = [];
  /** A scratch directory, removed at the end. */
  readonly tmp: string = Deno.makeTempDirSync({ prefix: "cryptsleep-freeze-" });
  /** Creates the scratch cgroup under the host's cgroup2 mount. */
  constructor() {
    this.root = join(mount!, `cryptsleep-test-${crypto.randomUUID().slice(0, 8)}`);
    Deno.mkdirSync(this.root);
  }
  /** Creates `root/name` (parents too); returns its path. */
  async cgroup(name: string): Promise<string> {
    const dir = join(this.root, name);
    await Deno.mkdir(dir, { recursive: true });
    return dir;
  }
  /**
   * Spawns `sh -c script`, moved into `cgroupDir` if given; returns its pid once it is there. The shell moves itself
   * before the script runs: moved only from here, a child it forked first would stay behind on a loaded host.
   */
  spawn(script: string, cgroupDir?: string): Promise<number> {
    const procs = cgroupDir ? join(cgroupDir, "cgroup.procs") : null;
    const args = procs ? ["-c", 'echo $$ > "$1" || exit 97; eval "$0"', script, procs] : ["-c", script];
    const child = new Deno.Command("sh", { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
    this.children.push(child);
    // moved from here too (the same move again once the shell did it): on return the pid is there
    return procs ? write(procs, String(child.pid)).then(() => child.pid) : Promise.resolve(child.pid);
  }
  /** Kills everything below the root and removes it. */
  async [Symbol.asyncDispose](): Promise<void> {
    // cgroup.kill kills the whole subtree, frozen or not.
    try {
      await write(join(this.root, "cgroup.kill"), "1");
    } catch { /* older kernel: the kills below do it */ }
    for (const c of this.children) {
      try {
        c.kill("SIGKILL");
      } catch { /* already gone */ }
      await c.status;
    }
    const dirs: string[] = [];
    const walk = (d: string) => {
      for (const e of Deno.readDirSync(d)) if (e.isDirectory) walk(join(d, e.name));
      dirs.push(d);
    };
    walk(this.root);
    for (const d of dirs) {
      for (let i = 0; i < 100; i++) {
        try {
          Deno.removeSync(d);
          break;
        } catch {
          await sleep(10);
        }
      }
    }
    Deno.removeSync(this.tmp, { recursive: true });
  }
}

/**
 * A process dead and not reaped (a zombie, its stat kept), for as long as the handle lives: its parent is a shell
 * that exec'd `sleep` before the child ended, and sleep never waits for it.
 */
export async function spawnZombie(): Promise<{ pid: number } & AsyncDisposable> {
  // the child ends 2 s on, well after the exec: a shell that reaped it first would leave no zombie
  const parent = new Deno.Command("sh", { args: ["-c", "(sleep 2) & echo $!; exec sleep 100"], stdout: "piped" })
    .spawn();
  const dispose = async () => {
    parent.kill("SIGKILL");
    await parent.status;
  };
  try {
    const reader = parent.stdout.getReader();
    const pid = Number(new TextDecoder().decode((await reader.read()).value).trim());
    reader.releaseLock();
    const zombie = await within(30_000, () => Promise.resolve(readStat(`/proc/${pid}/stat`)?.state === "Z"));
    if (!zombie) throw new Error(`pid ${pid} did not become a zombie within 30 s`);
    return { pid, [Symbol.asyncDispose]: dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}

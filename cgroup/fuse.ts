/**
 * FUSE servers and the order of the freeze. A process waiting in a FUSE request can be frozen only once its server
 * (the daemon holding `/dev/fuse`: sshfs, bindfs, gvfsd-fuse, xdg-document-portal) answers. Freeze the server first
 * and the request never ends: the freeze times out and the cycle is refused. When the freezer sees a FUSE request
 * holding it up (freezer.ts), it thaws and freezes again in two waves planned here: first every cgroup that holds
 * no FUSE server, and once those report frozen, the ones that do. Limits: a server that shares its cgroup with
 * clients freezes with them, and in the root cgroup a server's descendants go last with it (sshfs's ssh), so a
 * client that is its server's child (an AppImage's program) can still hold the freeze up.
 *
 * @example
 * ```ts
 * import { fuseServers, splitForFuse } from "./fuse.ts";
 * const servers = fuseServers(); // e.g. [1234] for a bindfs; [] with no FUSE mount
 * const { first, last } = splitForFuse(["/sys/fs/cgroup/system.slice", "/sys/fs/cgroup/user.slice"], []);
 * console.log(servers, first, last); // no server: everything in the first wave
 * ```
 * @module
 */
import { dirname, join } from "../host/path.ts";
import { readMountinfoSync } from "../host/mountinfo.ts";
import { readStat } from "../host/proc.ts";
import { linksTo } from "../ffi/libc.ts";
import { type Cgroup2Root, cgroupDir, isFrozen, markCgroup, procCgroup, readProcs, unmarkCgroup } from "./cgroup2.ts";

/** The kernel's FUSE connections, one directory each, where fusectl is mounted (systemd mounts it). */
const CONNECTIONS = "/sys/fs/fuse/connections";
const DEV_FUSE = new TextEncoder().encode("/dev/fuse");

/** A thread waiting on a FUSE server: its wchan, or a frame of its kernel stack (the wait may be inlined). */
const FUSE_WCHAN = /^_*(request_wait_answer|fuse_\w+)$/;
const FUSE_FRAME = /(^|\s)_*(request_wait_answer|fuse_\w+)\+/m;

/**
 * Whether a thread of a process in the cgroups `dirs` (or below them) waits on a FUSE server. Reads the threads of
 * the cgroups not frozen yet: what still holds a freeze up.
 */
export async function fuseWaitIn(dirs: string[]): Promise<boolean> {
  // a cgroup removed meanwhile has no process left to wait
  const procsOr = (dir: string) => {
    try {
      return readProcs(dir);
    } catch {
      return [];
    }
  };
  const visit = async (dir: string): Promise<boolean> => {
    if (isFrozen(dir)) return false;
    for (const pid of procsOr(dir)) {
      let tids: string[] = [];
      try {
        tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((t) => t.name);
      } catch { /* gone */ }
      for (const tid of tids) {
        const base = `/proc/${pid}/task/${tid}`;
        if (FUSE_WCHAN.test((await Deno.readTextFile(`${base}/wchan`).catch(() => "")).trim())) return true;
        if (FUSE_FRAME.test(await Deno.readTextFile(`${base}/stack`).catch(() => ""))) return true;
      }
    }
    try {
      for (const e of Deno.readDirSync(dir)) if (e.isDirectory && await visit(join(dir, e.name))) return true;
    } catch { /* removed meanwhile */ }
    return false;
  };
  for (const dir of dirs) if (await visit(dir)) return true;
  return false;
}

/**
 * Whether a FUSE filesystem is mounted: in PID 1's view (the cycle runs chrooted, and a process's own mountinfo
 * leaves out what is outside its root), or in any mount namespace where fusectl is mounted to count connections.
 */
export function fuseInUse(): boolean {
  const isFuse = (m: { fstype: string }) =>
    m.fstype === "fuse" || m.fstype === "fuseblk" || m.fstype.startsWith("fuse.");
  for (const pid of [1, "self"] as const) {
    try {
      if (readMountinfoSync(pid).some(isFuse)) return true;
    } catch { /* PID 1's view may be closed to this process (no CAP_SYS_PTRACE): its own then */ }
  }
  try {
    for (const _ of Deno.readDirSync(CONNECTIONS)) return true;
  } catch { /* no fusectl */ }
  return false;
}

/** The pids that hold `/dev/fuse` open: the FUSE servers. Empty without a FUSE mount (then nothing is read). */
export function fuseServers(): number[] {
  if (!fuseInUse()) return [];
  const servers: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let fds: string[];
    try {
      fds = [...Deno.readDirSync(`/proc/${e.name}/fd`)].map((fd) => fd.name);
    } catch {
      continue; // gone meanwhile
    }
    // an fd closed meanwhile reads as no link: the others are still looked at
    if (fds.some((fd) => linksTo(`/proc/${e.name}/fd/${fd}`, DEV_FUSE))) servers.push(Number(e.name));
  }
  return servers;
}

/**
 * Splits the top-level cgroups `targets` into two waves of a freeze: `first`, every cgroup (as high up as can be)
 * that holds none of `serverDirs` (the cgroup directories of the FUSE servers), and `last`, the top-level cgroups
 * that hold one. `split`: the cgroups that hold one, at every level (the path down to each server's).
 */
export function splitForFuse(
  targets: string[],
  serverDirs: string[],
): { first: string[]; last: string[]; split: string[] } {
  const holds = (dir: string) => serverDirs.some((s) => s === dir || s.startsWith(dir + "/"));
  const first: string[] = [];
  const split: string[] = [];
  const descend = (dir: string) => {
    split.push(dir);
    let children: string[] = [];
    try {
      children = [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => join(dir, e.name)).sort();
    } catch { /* removed meanwhile */ }
    for (const child of children) (holds(child) ? descend : (d: string) => first.push(d))(child);
  };
  const last = targets.filter(holds);
  for (const dir of targets) (holds(dir) ? descend : (d: string) => first.push(d))(dir);
  return { first, last, split };
}

/** The freeze's two waves, from {@linkcode planWaves}. */
export interface WavePlan {
  /** The FUSE servers found. */
  servers: number[];
  /** Cgroups to freeze first. */
  first: string[];
  /** Top-level cgroups to freeze once the first wave is frozen. */
  last: string[];
  /** Cgroups holding a server (marked "split" so the undo by looking finds the first wave below them). */
  split: string[];
  /** Root-cgroup servers and their descendants there: moved into the frozen cgroup only in the last wave. */
  late: Set<number>;
  /** Why the waves could not be kept apart (then `first` is all of them), if so. */
  note?: string;
}

/** Plans the two waves for the top-level cgroups `targets` (freezing nothing), skipping this process. */
export async function planWaves(root: Cgroup2Root, targets: string[]): Promise<WavePlan> {
  const servers = fuseServers().filter((pid) => pid !== Deno.pid);
  const serverDirs: string[] = [];
  for (const pid of servers) {
    const cg = await procCgroup(pid);
    if (cg !== null) serverDirs.push(cgroupDir(root, cg));
  }
  const late = serverDirs.includes(root.dir) ? rootFamily(root.dir, servers) : new Set<number>();
  const plan: WavePlan = { servers, ...splitForFuse(targets, serverDirs), late };
  const marked = plan.split[0] ?? plan.first.find((dir) => dirname(dir) !== root.dir);
  const why = marked === undefined ? null : markFails(marked);
  if (why !== null) {
    // unmarked, a freeze below the top could outlive a dead agent unseen: all at once, as without a server
    return { ...plan, first: targets, last: [], split: [], note: `FUSE servers frozen with the rest: ${why}` };
  }
  return plan;
}

/** Why a cgroup cannot bear the freeze's mark (set, then taken off again), or null when it can. */
function markFails(dir: string): string | null {
  try {
    markCgroup(dir, "frozen");
    unmarkCgroup(dir);
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** Those of `servers` in the root cgroup `rootDir`, with their descendants there (sshfs's ssh, say). */
function rootFamily(rootDir: string, servers: number[]): Set<number> {
  const parent = new Map<number, number>();
  for (const pid of readProcs(rootDir)) {
    const st = readStat(`/proc/${pid}/stat`);
    if (st) parent.set(pid, st.ppid);
  }
  const family = new Set<number>();
  for (const pid of parent.keys()) {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && hops < 64; p = parent.get(p), hops++) {
      if (servers.includes(p)) family.add(pid);
    }
  }
  return family;
}

/**
 * @module
 * The system-sleep hooks systemd-sleep runs around a suspend; cryptsleep replaces systemd-sleep, so it runs
 * them the same way ({@linkcode runSleepHooks}): `pre` before the cycle touches anything, `post` after it is
 * all undone.
 *
 * systemd's rules (src/sleep/sleep.c `execute()`, src/shared/exec-util.c `execute_directories()`; man
 * systemd-sleep(8), v257):
 * - the directory is SYSTEM_SLEEP_PATH, `/usr/lib/systemd/system-sleep/` (`/lib/systemd/system-sleep/` on a
 *   split-/usr build such as Debian ≤ 11; the same directory on a merged /usr). Upstream does NOT read
 *   `/etc/systemd/system-sleep/` (systemd issues #4927, #15000); `dirs` can add it for a distribution that does.
 * - every regular executable file, by file name; a name in an earlier directory hides it in a later one; an
 *   empty file or a symlink to /dev/null is a mask and is skipped.
 * - argv: `<path> pre suspend`, then `<path> post suspend`; environment: the caller's plus
 *   `SYSTEMD_SLEEP_ACTION=suspend`.
 * - all run in parallel and systemd waits for all of them (EXEC_DIR_PARALLEL), up to one deadline
 *   (DEFAULT_TIMEOUT_USEC, 90 s), after which the stragglers are killed; a failure is logged and ignored
 *   (EXEC_DIR_IGNORE_ERRORS): a hook never stops the suspend.
 *
 * @example
 * ```ts
 * import { runSleepHooks } from "./hooks.ts";
 * const results = await runSleepHooks("pre", { log: (line) => console.error(line) });
 * console.log(results.map((r) => `${r.name}: ${r.ok ? "ok" : r.error}`));
 * ```
 */
import { join } from "../host/path.ts";
import { underRoot } from "../host/paths.ts";
import { setpriority } from "../ffi/libc.ts";
import { niceOfSelf } from "../host/proc.ts";
import { SysError } from "../ffi/errors.ts";

/** Where systemd-sleep looks for hooks, highest priority first (both are one directory on a merged /usr). */
export const SYSTEM_SLEEP_DIRS: readonly string[] = ["/usr/lib/systemd/system-sleep", "/lib/systemd/system-sleep"];

/** systemd's DEFAULT_TIMEOUT_USEC: the deadline for all hooks of one phase together. */
export const HOOK_TIMEOUT_MS = 90_000;

/** How long a hook has between SIGTERM at the deadline and SIGKILL. */
const KILL_GRACE_MS = 2_000;

/** A hook systemd-sleep would run. */
export interface SleepHook {
  /** Its file name (the sort key). */
  name: string;
  /** Its host path. */
  path: string;
}

/** How one hook ran. */
export interface HookResult extends SleepHook {
  /** It exited 0 before the deadline. */
  ok: boolean;
  /** Its exit code, or null when killed by a signal or not started. */
  code: number | null;
  /** It was killed at the deadline. */
  timedOut: boolean;
  /** What went wrong, one line; absent when ok. */
  error?: string;
  /** Wall time from spawn to exit. */
  durationMs: number;
  /** Its stdout and stderr, when `capture` was asked. */
  output?: string;
}

/** Options of {@linkcode runSleepHooks}; the defaults are systemd's. */
export interface HookOptions {
  /** Where the hook directories are ("/" = live; else a scratch tree). */
  root?: string;
  /** The directories, highest priority first. */
  dirs?: readonly string[];
  /** The deadline for all hooks of this phase. */
  timeoutMs?: number;
  /** The operation (argv[2] and SYSTEMD_SLEEP_ACTION); cryptsleep only stands in for suspend. */
  action?: "suspend";
  /** Extra environment for the hooks. */
  env?: Record<string, string>;
  /** Keep each hook's output in its result instead of passing it to this process's stdout/stderr. */
  capture?: boolean;
  /** Where failures are told (systemd logs them); default stderr. */
  log?: (line: string) => void;
  /**
   * The nice the hooks start at (default: this process's). The spawning thread takes it for the spawn and goes
   * back after it, so nothing of a hook runs at another nice; going back from a higher nice needs CAP_SYS_NICE.
   */
  nice?: number;
}

async function isRunnable(path: string): Promise<boolean> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
    if ((await Deno.lstat(path)).isSymlink && (await Deno.realPath(path)) === "/dev/null") return false;
  } catch {
    return false; // dangling symlink: nothing to run
  }
  // executable by someone, regular, non-empty (an empty file masks the name)
  return st.isFile && st.size > 0 && ((st.mode ?? 0) & 0o111) !== 0;
}

/** The hooks under `root`, in systemd's order. */
export async function listSleepHooks(root = "/", dirs: readonly string[] = SYSTEM_SLEEP_DIRS): Promise<SleepHook[]> {
  const byName = new Map<string, string>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = (await Array.fromAsync(Deno.readDir(underRoot(root, dir)))).map((e) => e.name);
    } catch {
      continue; // absent: systemd skips it
    }
    for (const name of names) if (!byName.has(name)) byName.set(name, join(dir, name));
  }
  const out: SleepHook[] = [];
  for (const name of [...byName.keys()].sort()) {
    const path = byName.get(name)!;
    if (await isRunnable(underRoot(root, path))) out.push({ name, path });
  }
  return out;
}

/**
 * Runs `spawn` with this thread at `nice`: Linux's nice is per thread and a child starts at its spawning thread's.
 * The JS thread, the process's main one, spawns synchronously: setpriority(PRIO_PROCESS, 0) sets that thread only.
 */
function atNice<T>(nice: number | undefined, spawn: () => T, log: (line: string) => void): T {
  if (nice === undefined) return spawn();
  const was = niceOfSelf();
  if (nice === was) return spawn();
  // failing here, nothing is spawned: the caller says so
  setpriority(0, nice);
  try {
    return spawn();
  } finally {
    try {
      setpriority(0, was);
    } catch (err) {
      // the child runs: it is returned and awaited all the same; this thread stays at the hooks' nice until the
      // cycle's nice-back
      log(`cryptsleep: system-sleep hooks: this thread's nice back to ${was}: ${(err as Error).message}`);
    }
  }
}

async function runOne(
  hook: SleepHook,
  argv: string[],
  opts: Required<Pick<HookOptions, "root" | "capture">> & {
    env: Record<string, string>;
    signal: AbortSignal;
    nice?: number;
    log: (line: string) => void;
  },
): Promise<HookResult> {
  const start = performance.now();
  const ms = () => Math.round(performance.now() - start);
  const io = opts.capture ? "piped" : "inherit";
  let child: Deno.ChildProcess;
  try {
    child = atNice(opts.nice, () =>
      new Deno.Command(underRoot(opts.root, hook.path), {
        args: argv,
        env: opts.env,
        stdin: "null",
        stdout: io,
        stderr: io,
        // its own process group, so the deadline also reaches what it started (systemd kills the executor's)
        detached: true,
      }).spawn(), opts.log);
  } catch (err) {
    // setpriority's SysError names its call, errno and fix; anything else is the spawn's
    const error = err instanceof SysError
      ? `${hook.path}: not started: ${err.message}`
      : `spawn ${hook.path}: ${err instanceof Error ? err.message : err}; check its #! line and mode`;
    return { ...hook, ok: false, code: null, timedOut: false, error, durationMs: ms() };
  }
  // at the deadline: SIGTERM (what systemd's hooks get, PR_SET_DEATHSIG), SIGKILL if that is ignored
  let timedOut = false;
  let kill: ReturnType<typeof setTimeout> | undefined;
  const onDeadline = () => {
    timedOut = true;
    const send = (sig: Deno.Signal) => {
      try {
        Deno.kill(-child.pid, sig);
      } catch {
        // the group is gone
      }
    };
    send("SIGTERM");
    kill = setTimeout(() => send("SIGKILL"), KILL_GRACE_MS);
  };
  opts.signal.addEventListener("abort", onDeadline, { once: true });
  const [status, out, errOut] = await Promise.all([
    child.status,
    opts.capture ? new Response(child.stdout).text() : "",
    opts.capture ? new Response(child.stderr).text() : "",
  ]);
  opts.signal.removeEventListener("abort", onDeadline);
  clearTimeout(kill);
  const result: HookResult = {
    ...hook,
    ok: status.success,
    code: status.signal ? null : status.code,
    timedOut,
    durationMs: ms(),
    ...(opts.capture ? { output: out + errOut } : {}),
  };
  if (!status.success) {
    result.error = timedOut
      ? `${hook.path} ${argv.join(" ")}: still running at the deadline; killed`
      : status.signal
      ? `${hook.path} ${argv.join(" ")}: killed by ${status.signal}`
      : `${hook.path} ${argv.join(" ")}: exited with ${status.code}`;
  }
  return result;
}

/**
 * Runs every hook with `<phase> suspend`, in parallel, as systemd-sleep does; returns when all have exited or
 * the deadline killed them. Never throws for a hook's failure: each is logged and in its result.
 */
export async function runSleepHooks(phase: "pre" | "post", opts: HookOptions = {}): Promise<HookResult[]> {
  const root = opts.root ?? "/";
  const action = opts.action ?? "suspend";
  const log = opts.log ?? ((line: string) => console.error(line));
  const hooks = await listSleepHooks(root, opts.dirs ?? SYSTEM_SLEEP_DIRS);
  if (hooks.length === 0) return [];
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), opts.timeoutMs ?? HOOK_TIMEOUT_MS);
  try {
    const env = { ...opts.env, SYSTEMD_SLEEP_ACTION: action };
    const results = await Promise.all(
      hooks.map((h) =>
        runOne(h, [phase, action], {
          root,
          capture: Boolean(opts.capture),
          env,
          signal: deadline.signal,
          nice: opts.nice,
          log,
        })
      ),
    );
    for (const r of results) {
      if (r.error) log(`cryptsleep: system-sleep hook ${r.error} (ignored, as systemd-sleep does)`);
    }
    return results;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * @module
 * The supervisor, from `cryptsleep suspend`'s side. It is started right after the claim, inside the cycle's own
 * cgroup (no swap) and before preflight, as the same program with `supervise`, so its runtime starts while the cycle
 * reads the plan. Once preflight has a job, the job
 * goes to it as one JSON line on its stdin, then the consoles (one JSON line, opened by `cryptsleep suspend`); a cycle that
 * stops before (refused) says `cancel` instead, and it exits having done nothing. Handed a job, it opens that
 * consoles too, pins itself (chroot/pin.ts), chroots into the cycle's root and says `ready` on its stdout. From then
 * on its stdin is its watch: `done` lets it go; the end of the pipe without `done` means `cryptsleep suspend` died,
 * and the supervisor undoes the agent's phases.
 *
 * @example
 * ```ts
 * import { spawnSupervisor } from "./start.ts";
 * declare const job: import("./job.ts").Job; // from preflight
 * const supervisor = spawnSupervisor("/usr/lib/cryptsleep/cryptsleep.js"); // first, while preflight runs
 * await supervisor.handOver(job, [{ path: "/dev/tty8", previousVt: 1 }]);
 * await supervisor.ready();
 * console.log(supervisor.pid);
 * await supervisor.dismiss();
 * ```
 */
import { Console } from "../ffi/tty.ts";
import { type ConsoleRef, Consoles, kernelSerialConsoles } from "./consoles.ts";
import { RefusedError } from "./errors.ts";
import { DIE_AT_ENV } from "./runner.ts";
import { V8_FLAGS } from "../cli/v8_flags.ts";
import type { Job } from "./job.ts";

/** Where the cycle's root is mounted (an empty ramfs both processes chroot into). */
export const RAMFS_DIR = "/run/cryptsleep/root";

/** What the supervisor says on its stdout once it is pinned and chrooted. */
export const READY = "ready";
/** What `cryptsleep suspend` says on the supervisor's stdin when the cycle ended well. */
export const DONE = "done";
/** What `cryptsleep suspend` says instead of a job when the cycle stopped before it had one (refused). */
export const CANCEL = "cancel";

/** The running supervisor. */
export interface Supervisor {
  /** Its process id (the own phase moves it into the tool's cgroup). */
  pid: number;
  /**
   * Hands it the job and the consoles (with the VT to bring back, for a VT of its own): from then on it gets ready
   * to take over.
   */
  handOver(job: Job, consoles: ConsoleRef[]): Promise<void>;
  /** Whether it is still running (a supervisor started ahead, in the kept mode, may have died meanwhile). */
  alive(): boolean;
  /** Waits until it is pinned and chrooted; throws if it has exited since. */
  ready(): Promise<void>;
  /**
   * Lets it go and waits for it to exit: `done` after a hand-over (it still checks what is left), else `cancel`
   * (it exits having done nothing). False when it had died or exits with an error. Idempotent.
   */
  dismiss(): Promise<boolean>;
}

/** Reads lines from a byte stream; null at its end. */
export function lineReader(stream: ReadableStream<Uint8Array>): () => Promise<string | null> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return async () => {
    for (;;) {
      const nl = buffer.indexOf("\n");
      if (nl >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        return line;
      }
      const { value, done } = await reader.read();
      if (done) {
        const rest = buffer;
        buffer = "";
        return rest || null;
      }
      buffer += value;
    }
  };
}

/** How to run this program again with other arguments: the bundle under the same deno, or the compiled binary. */
export function selfArgs(script: string | null, args: string[]): string[] {
  // the wrapper's flags (packaging/cryptsleep.sh); a compiled binary has them built in
  return script === null
    ? args
    : ["run", "-A", "--no-config", "--no-lock", "--no-remote", "--no-npm", `--v8-flags=${V8_FLAGS}`, script, ...args];
}

/**
 * Starts the supervisor with nothing to do yet: its runtime starts, and it loads libcryptsetup, while
 * `cryptsleep suspend` runs preflight. {@linkcode Supervisor.handOver} gives it the job; see the module doc.
 */
export function spawnSupervisor(script: string | null): Supervisor {
  const child = new Deno.Command(Deno.execPath(), {
    args: selfArgs(script, ["supervise"]),
    // the bed's death tests pick the supervisor's moment apart from this process's
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", [DIE_AT_ENV]: Deno.env.get(`${DIE_AT_ENV}_SUPERVISOR`) ?? "" },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const readLine = lineReader(child.stdout);
  const say = (line: string) => writer.write(new TextEncoder().encode(line + "\n"));
  const kill = async () => {
    await writer.close().catch(() => {});
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  };
  let handedOver = false;
  let ready: Promise<void> | null = null;
  let dismissed: Promise<boolean> | null = null;
  let exited = false;
  child.status.then(() => exited = true);
  return {
    pid: child.pid,
    alive: () => !exited,
    async handOver(job, consoles) {
      try {
        await say(JSON.stringify(job));
        await say(JSON.stringify(consoles));
        handedOver = true;
      } catch (err) {
        await kill();
        throw err;
      }
    },
    ready() {
      ready ??= (async () => {
        const line = await readLine();
        if (line === READY) return;
        await kill();
        const status = await child.status;
        throw new Error(
          `the supervisor (pid ${child.pid}) exited before it was ready (${status.signal ?? `code ${status.code}`}): ` +
            "what it said is above",
        );
      })();
      return ready.then(() => {
        if (exited) {
          throw new Error(`the supervisor (pid ${child.pid}) exited after it was ready: its messages are above`);
        }
      });
    },
    dismiss() {
      dismissed ??= (async () => {
        await say(handedOver ? DONE : CANCEL).catch(() => {});
        await writer.close().catch(() => {});
        // drained, so a late line cannot block it
        while (await readLine().catch(() => null) !== null);
        return (await child.status).success;
      })();
      return dismissed;
    },
  };
}

/**
 * The consoles the prompts go to: `--console`; or a newly allocated VT and, with it, each serial console the
 * kernel's `console=` names (the first line typed on either wins). Refused (before anything is locked) where nobody
 * could answer after wake: a pseudo-terminal, whose other end (a terminal emulator, sshd) is frozen with userspace,
 * or a VT that did not come to the front (a serial console beside it is no excuse: on a laptop nobody sees it).
 */
export function openConsole(job: Job, serial = kernelSerialConsoles()): Consoles {
  const path = job.options.console;
  if (path) {
    if (isPty(path)) {
      throw new RefusedError([
        `--console ${path} is a pseudo-terminal: its other end (a terminal emulator, ssh) is frozen with the rest ` +
        "of userspace, so nobody could type the passphrase there; give a VT (/dev/tty8) or a serial console " +
        "(/dev/ttyS0), or leave --console out for a VT of its own",
      ]);
    }
    return new Consoles([Console.open(path)]);
  }
  const con = Console.allocateVt();
  if (!con.switched) {
    con[Symbol.dispose]();
    throw new RefusedError([
      `the prompt's VT (${con.path}) did not come to the front: VT switching is locked (VT_LOCKSWITCH, held by ` +
      "a screen locker or a kiosk) or the VT in front is held by a program that does not let go (VT_PROCESS). " +
      "The prompt would be invisible after wake; release the lock, or give --console a terminal that shows",
    ]);
  }
  const members = [con];
  for (const p of serial) {
    try {
      members.push(Console.open(p));
    } catch { /* a console= without the hardware: the VT serves */ }
  }
  return new Consoles(members);
}

/** Whether `path` is a pseudo-terminal's slave end (Unix 98 ptys: majors 136–143). */
export function isPty(path: string): boolean {
  const rdev = Deno.statSync(path).rdev ?? 0;
  const major = Number((BigInt(rdev) >> 8n) & 0xfffn) | Number((BigInt(rdev) >> 32n) & ~0xfffn);
  return major >= 136 && major <= 143;
}

/** The file the supervisor runs: this bundle, or null for a `deno compile` binary (it embeds the script). */
export function bundlePath(): string | null {
  const here = new URL(import.meta.url);
  if (here.pathname.includes("/deno-compile-")) return null;
  if (here.pathname.endsWith(".js")) return here.pathname;
  throw new RefusedError([
    "suspend must run from the bundle or a compiled binary (the supervisor is the same program): " +
    "deno task bundle, then deno run -A dist/cryptsleep.js suspend",
  ]);
}

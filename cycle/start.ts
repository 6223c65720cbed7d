/**
 * @module
 * How the cycle's three processes start one another. The outer `cryptsleep suspend` (on the real root, frozen
 * with everything else) writes the job into the ramfs and starts the supervisor there, chrooted; the supervisor
 * joins the tool's own cgroup (never frozen), opens the console and starts the agent, which runs the phases.
 *
 * @example
 * ```ts
 * import { agentArgs, RAMFS_DIR } from "./start.ts";
 * console.log(RAMFS_DIR, agentArgs());
 * ```
 */
import { join } from "node:path";
import { spawnChrooted } from "../chroot/enter.ts";
import { Console } from "../ffi/tty.ts";
import { messages, RefusedError } from "./errors.ts";
import { type Job, JOB_PATH, REPORT_PATH } from "./job.ts";
import { LAST_REPORT } from "./report.ts";
import type { OuterContext } from "./context.ts";

/** Where the ramfs is mounted. */
export const RAMFS_DIR = "/run/cryptsleep/root";
/** The supervisor tells the agent which terminal it opened (a VT it allocated, or --console). */
export const CONSOLE_ENV = "CRYPTSLEEP_CONSOLE";

/**
 * Hands the job to the supervisor in the ramfs and waits for it; then copies the agent's report out before the
 * ramfs goes. Returns whether the supervisor ended with everything unlocked and thawed.
 */
export async function startSupervisor(ctx: OuterContext): Promise<boolean> {
  const { job, ramfs, timeline } = ctx;
  if (!job || !ramfs) throw new Error("the agent phase needs preflight's job and the ramfs");
  await Deno.writeTextFile(join(ramfs.root, JOB_PATH), JSON.stringify({ ...job, earlier: timeline.toJSON() }));
  const supervisor = spawnChrooted(ramfs, ["supervise"], { stdin: "inherit", stdout: "inherit", stderr: "inherit" });
  const { success } = await supervisor.status;
  try {
    await Deno.mkdir("/run/cryptsleep", { recursive: true });
    await Deno.copyFile(join(ramfs.root, REPORT_PATH), LAST_REPORT);
  } catch (err) {
    console.error(`cryptsleep: no report from the agent (${messages(err).join("; ")})`);
  }
  return success;
}

/** How the supervisor starts the agent: the same bundle with `agent`, or the compiled binary itself. */
export function agentArgs(): string[] {
  return Deno.mainModule.endsWith(".js") ? ["run", "-A", new URL(Deno.mainModule).pathname, "agent"] : ["agent"];
}

/** The console the prompts go to: `--console`, or a newly allocated VT. */
export function openConsole(job: Job): Console {
  return job.options.console ? Console.open(job.options.console) : Console.allocateVt();
}

/** The file the ramfs runs: this bundle, or null for a `deno compile` binary (it embeds the script). */
export function bundlePath(): string | null {
  const here = new URL(import.meta.url);
  if (here.pathname.includes("/deno-compile-")) return null;
  if (here.pathname.endsWith(".js")) return here.pathname;
  throw new RefusedError([
    "suspend must run from the bundle or a compiled binary (the agent is one file in a ramfs): " +
    "deno task bundle, then deno run -A dist/cryptsleep.js suspend",
  ]);
}

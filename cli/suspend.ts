/**
 * @module
 * `cryptsleep suspend`: the whole cycle (see cycle/cycle.ts), and the two internal commands the cycle
 * starts inside the ramfs: `supervise` and `agent`.
 *
 * @example
 * ```sh
 * cryptsleep suspend --dry-run
 * cryptsleep suspend --console /dev/ttyS0 --freeze-timeout 5000
 * ```
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { agent, supervise, suspend } from "../cycle/cycle.ts";
import { defaultOptions, type SuspendOptions } from "../cycle/job.ts";
import { requireRoot } from "./errors.ts";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("expected a whole number > 0");
  return n;
}

export function register(program: Command, exit: (code: number) => never): void {
  const defaults = defaultOptions();
  program.command("suspend")
    .description("freeze userspace, lock every LUKS volume, suspend; after wake prompt, unlock, thaw")
    .option("--dry-run", "run the phases that change nothing; print what the others would do")
    .addOption(
      new Option("--state <state>", "sleep state to write to /sys/power/state").choices(["mem", "freeze"])
        .default(defaults.state),
    )
    .option("--console <tty>", "prompt on this tty (e.g. /dev/ttyS0) instead of a newly allocated VT")
    .option(
      "--freeze-timeout <ms>",
      "give up (thawed, nothing locked) if userspace is not frozen by then",
      positiveInt,
      defaults.freezeTimeoutMs,
    )
    .addOption(
      new Option(
        "--release-at <when>",
        "release a volume key pinned in a kernel keyring at lock (table swap: this suspend is clean) or at " +
          "unlock (re-open: the next one is)",
      ).choices(["lock", "unlock"]).default(defaults.releaseAt),
    )
    .option("--refuse-leak", "refuse when a volume key would stay in RAM during the suspend (pinned keyring)")
    .option("--allow-plain", "suspend without locking when no LUKS volume is active")
    .option(
      "--max-tries <n>",
      "passphrase tries per volume before the supervisor takes over",
      positiveInt,
      defaults.maxTries,
    )
    .action(async (o) => {
      requireRoot("cryptsleep suspend");
      const options: SuspendOptions = {
        state: o.state,
        console: o.console ?? null,
        freezeTimeoutMs: o.freezeTimeout,
        refuseLeak: Boolean(o.refuseLeak),
        releaseAt: o.releaseAt,
        allowPlain: Boolean(o.allowPlain),
        maxTries: o.maxTries,
      };
      exit(await suspend(options, { dryRun: Boolean(o.dryRun) }));
    });
  // started by the cycle inside the ramfs; not for hands
  program.command("supervise", { hidden: true }).action(async () => exit(await supervise()));
  program.command("agent", { hidden: true }).action(async () => exit(await agent()));
}

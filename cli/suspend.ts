/**
 * @module
 * `cryptsleep suspend`: the whole cycle (see cycle/phases.ts), and the internal command it starts beside itself,
 * `supervise`. Each returns an outcome; this maps it to an exit code.
 *
 * @example
 * ```sh
 * cryptsleep suspend --dry-run
 * cryptsleep suspend --console /dev/ttyS0 --freeze-timeout 5000
 * ```
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { defaultOptions, type SuspendOptions } from "../cycle/job.ts";
import type { Outcome } from "../cycle/outcome.ts";
import { suspend } from "../cycle/outer.ts";
import { supervise } from "../cycle/supervisor.ts";
import { requireRoot } from "./errors.ts";
import { promptOptions } from "./prompt_options.ts";
import { ExitCode } from "./exit_codes.ts";

/** The exit code of an outcome; what it has to say goes to stdout (a dry run) or stderr. */
export function exitCodeOf(outcome: Outcome, say = true): ExitCode {
  switch (outcome.kind) {
    case "ok":
      if (say && outcome.dryRun) console.log(outcome.dryRun);
      return ExitCode.OK;
    case "refused":
      if (say) { for (const reason of outcome.reasons) console.error(`cryptsleep: refused: ${reason}`); }
      return ExitCode.REFUSED;
    case "failed":
      if (say) { for (const error of outcome.errors) console.error(`cryptsleep: ${error}`); }
      return ExitCode.FAILED;
  }
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("expected a whole number > 0");
  return n;
}

/** Registers `suspend` and the two internal commands on the program. */
export function register(program: Command, exit: (code: number) => never): void {
  const defaults = defaultOptions();
  const command = program.command("suspend")
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
    .option(
      "--sync-timeout <seconds>",
      "give up (nothing frozen or locked) when sync() makes no writeback progress for this long: a hung NFS, FUSE " +
        "or disk",
      positiveInt,
      defaults.syncTimeoutS,
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
      "--token-without-pin",
      "after wake, use LUKS2 tokens that need no PIN (a TPM2 token enrolled without one): the volume opens with " +
        "nobody typing anything, so whoever opens the lid gets it unlocked",
    )
    .option(
      "--from-systemd",
      "run as systemd-suspend.service's ExecStart (cryptsleep install sets it): marks the report, and suspends " +
        "without locking when no LUKS volume is active, as systemd already decided to sleep",
    );
  // shared with install, which passes them on to the cycles systemd starts
  for (const option of promptOptions(defaults)) command.addOption(option);
  command.action(async (o) => {
    requireRoot("cryptsleep suspend");
    const options: SuspendOptions = {
      state: o.state,
      // --from-systemd reads it from sleep.conf, as systemd-sleep does
      memSleep: null,
      console: o.console ?? null,
      freezeTimeoutMs: o.freezeTimeout,
      syncTimeoutS: o.syncTimeout,
      refuseLeak: Boolean(o.refuseLeak),
      releaseAt: o.releaseAt,
      // nothing to lock is nothing to protect: refusing would only keep a closed laptop awake
      allowPlain: Boolean(o.allowPlain) || Boolean(o.fromSystemd),
      tokenWithoutPin: Boolean(o.tokenWithoutPin),
      // promptOptions(defaults): each is set
      maxTries: o.maxTries,
      afterTries: o.afterTries,
      idleSuspendS: o.idleSuspend,
      fromSystemd: Boolean(o.fromSystemd),
    };
    exit(exitCodeOf(await suspend(options, { dryRun: Boolean(o.dryRun) })));
  });
  // started by the cycle beside itself; not for hands: what it has to say went to the console
  program.command("supervise", { hidden: true }).action(async () => exit(exitCodeOf(await supervise(), false)));
}

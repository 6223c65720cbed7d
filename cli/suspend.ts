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
import { type CommandSpec, InvalidArgument, STATES } from "./args.ts";
import { defaultOptions, type PromptOptions, type SuspendOptions } from "../cycle/job.ts";
import type { Outcome } from "../cycle/outcome.ts";
import { suspend } from "../cycle/outer.ts";
import { supervise } from "../cycle/supervisor.ts";
import { answerOf, serve } from "../cycle/kept.ts";
import { requireRoot } from "./errors.ts";
import { promptOptions, promptValues } from "./prompt_options.ts";
import { ExitCode } from "./exit_codes.ts";

/** The exit code of an outcome; what it has to say goes to stdout (a dry run) or stderr (the lines kept mode's client
 * is told too: cycle/kept.ts answerOf). */
export function exitCodeOf(outcome: Outcome, say = true): ExitCode {
  if (say && outcome.kind === "ok" && outcome.dryRun) console.log(outcome.dryRun);
  const answer = answerOf(outcome);
  if (say) { for (const line of answer.say) console.error(line); }
  return answer.code as ExitCode;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgument("expected a whole number > 0");
  return n;
}

const defaults = defaultOptions();

/** `cryptsleep suspend`. */
const suspendCommand: CommandSpec = {
  name: "suspend",
  help: "freeze userspace, lock every LUKS volume, suspend; after wake prompt, unlock, thaw",
  options: [
    { flag: "--dry-run", help: "run the phases that change nothing; print what the others would do" },
    {
      flag: "--state",
      value: "<state>",
      help: "sleep state to write to /sys/power/state",
      choices: STATES,
      default: defaults.state,
    },
    { flag: "--console", value: "<tty>", help: "prompt on this tty (e.g. /dev/ttyS0) instead of a newly allocated VT" },
    {
      flag: "--freeze-timeout",
      value: "<ms>",
      help: "give up (thawed, nothing locked) if userspace is not frozen by then",
      parse: positiveInt,
      default: defaults.freezeTimeoutMs,
    },
    {
      flag: "--sync-timeout",
      value: "<seconds>",
      help: "give up (nothing frozen or locked) when sync() makes no writeback progress for this long: a hung NFS, " +
        "FUSE or disk",
      parse: positiveInt,
      default: defaults.syncTimeoutS,
    },
    {
      flag: "--release-at",
      value: "<when>",
      help: "release a volume key pinned in a kernel keyring at lock (table swap: this suspend is clean) or at " +
        "unlock (re-open: the next one is)",
      choices: ["lock", "unlock"],
      default: defaults.releaseAt,
    },
    { flag: "--refuse-leak", help: "refuse when a volume key would stay in RAM during the suspend (pinned keyring)" },
    { flag: "--allow-plain", help: "suspend without locking when no LUKS volume is active" },
    {
      flag: "--token-without-pin",
      help: "after wake, use LUKS2 tokens that need no PIN (a TPM2 token enrolled without one): the volume opens " +
        "with nobody typing anything, so whoever opens the lid gets it unlocked",
    },
    {
      flag: "--from-systemd",
      help: "run as systemd-suspend.service's ExecStart (cryptsleep install sets it): marks the report, and " +
        "suspends without locking when no LUKS volume is active, as systemd already decided to sleep",
    },
    // shared with install, which passes them on to the cycles systemd starts
    ...promptOptions(defaults),
  ],
  run: async (o) => {
    requireRoot("cryptsleep suspend");
    return exitCodeOf(await suspend(optionsOf(o), { dryRun: Boolean(o.dryRun) }));
  },
};

/** The cycle's options from the flags {@linkcode suspendCommand} and `serve` share. */
function optionsOf(o: Record<string, unknown>): SuspendOptions {
  return {
    state: o.state as SuspendOptions["state"],
    // --from-systemd reads it from sleep.conf, as systemd-sleep does
    memSleep: null,
    console: (o.console as string | undefined) ?? null,
    freezeTimeoutMs: o.freezeTimeout as number,
    syncTimeoutS: o.syncTimeout as number,
    refuseLeak: Boolean(o.refuseLeak),
    releaseAt: o.releaseAt as SuspendOptions["releaseAt"],
    // nothing to lock is nothing to protect: refusing would only keep a closed laptop awake
    allowPlain: Boolean(o.allowPlain) || Boolean(o.fromSystemd),
    tokenWithoutPin: Boolean(o.tokenWithoutPin),
    // promptOptions(defaults): each is set
    ...promptValues(o) as PromptOptions,
    fromSystemd: Boolean(o.fromSystemd),
  };
}

/** `cryptsleep serve`: the kept mode (cycle/kept.ts), with the cycle's flags; its cycles are systemd's. */
const serveCommand: CommandSpec = {
  name: "serve",
  help: "stay between suspends, ready (the kept mode: cryptsleep install --kept runs it as cryptsleep-kept.service); " +
    "each request on /run/cryptsleep/kept/request is one suspend cycle",
  options: suspendCommand.options.filter((f) => f.flag !== "--dry-run" && f.flag !== "--from-systemd"),
  run: async (o) => {
    requireRoot("cryptsleep serve");
    return await serve(optionsOf({ ...o, fromSystemd: true }));
  },
};

/** `suspend` and the internal command it starts beside itself. */
export const commands: CommandSpec[] = [
  suspendCommand,
  serveCommand,
  // started by the cycle beside itself; not for hands: what it has to say went to the console
  { name: "supervise", help: "", hidden: true, options: [], run: async () => exitCodeOf(await supervise(), false) },
];

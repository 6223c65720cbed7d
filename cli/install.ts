/**
 * @module
 * `cryptsleep install [--dry-run] [--replace-debian] [--console tty] [--max-tries n] [--after-tries action]
 * [--idle-suspend seconds]` and `cryptsleep uninstall [--dry-run]`: put cryptsleep in systemd's suspend path (a
 * drop-in for systemd-suspend.service, see systemd/install.ts, whose ExecStart passes the prompt's options on to
 * `cryptsleep suspend`) and take it out again, restoring what was there.
 *
 * @example
 * ```sh
 * cryptsleep install --dry-run
 * cryptsleep install
 * cryptsleep install --console /dev/ttyS0 --max-tries 3 --after-tries poweroff --idle-suspend 120
 * cryptsleep uninstall
 * ```
 */
import { type CommandSpec, type OptionSpec, rootOption } from "./args.ts";
import {
  install as installDropIn,
  InstallError,
  type InstallOptions,
  type InstallResult,
  uninstall,
} from "../systemd/install.ts";
import { CliError, requireRoot } from "./errors.ts";
import { ExitCode } from "./exit_codes.ts";
import { promptOptions, promptValues } from "./prompt_options.ts";

const EXIT: Record<InstallError["kind"], ExitCode> = {
  usage: ExitCode.USAGE,
  refused: ExitCode.REFUSED,
  env: ExitCode.ENV,
};

/** Runs install or uninstall and prints its lines; its refusals become the documented exit codes. */
export async function runInstall(
  what: (opts: InstallOptions) => Promise<InstallResult>,
  opts: InstallOptions,
): Promise<void> {
  let result: InstallResult;
  try {
    result = await what(opts);
  } catch (e) {
    if (e instanceof InstallError) throw new CliError(e.message, EXIT[e.kind]);
    throw e;
  }
  for (const line of result.lines) console.log(line);
}

/** What the parser gives `install`. */
interface InstallFlags {
  dryRun?: boolean;
  replaceDebian?: boolean;
  exec?: string;
  console?: string;
  tokenWithoutPin?: boolean;
  kept?: boolean;
  root: string;
}

const dryRunOption: OptionSpec = { flag: "--dry-run", help: "print each file action, change nothing" };
const installRoot = rootOption("install into this tree instead of / (no daemon-reload)");

/** `cryptsleep install` and `cryptsleep uninstall`. */
export const commands: CommandSpec[] = [
  {
    name: "install",
    help: "make systemd's suspend (lid, menu, systemctl suspend, idle) run cryptsleep: a drop-in for " +
      "systemd-suspend.service",
    options: [
      dryRunOption,
      {
        flag: "--replace-debian",
        help: "if Debian's cryptsetup-suspend is installed, mask its drop-in (uninstall restores it)",
      },
      {
        flag: "--exec",
        value: "<path>",
        help: "the cryptsleep systemd runs (default: this one, /usr/sbin/cryptsleep)",
      },
      {
        flag: "--console",
        value: "<tty>",
        help: "prompt after wake on this tty (e.g. /dev/ttyS0) instead of a VT of its own",
      },
      // as suspend takes them; the drop-in passes those given on to every cycle systemd starts
      ...promptOptions(),
      {
        flag: "--token-without-pin",
        help: "after wake, open volumes with LUKS2 tokens that need no PIN (a TPM2 token enrolled without one): " +
          "nobody types anything, so whoever opens the lid gets them unlocked",
      },
      {
        flag: "--kept",
        help: "the kept mode: cryptsleep stays between suspends (cryptsleep-kept.service, about 60 MB of RAM, no " +
          "key or passphrase), so a suspend starts no runtime and reaches sleep sooner",
      },
      installRoot,
    ],
    run: async (values) => {
      const o = values as unknown as InstallFlags;
      if (!o.dryRun && o.root === "/") requireRoot("cryptsleep install");
      const { root, dryRun, replaceDebian, exec, console, tokenWithoutPin, kept } = o;
      await runInstall(installDropIn, {
        root,
        dryRun,
        replaceDebian,
        exec,
        console,
        tokenWithoutPin: Boolean(tokenWithoutPin),
        kept: Boolean(kept),
        ...promptValues(values),
      });
      return ExitCode.OK;
    },
  },
  {
    name: "uninstall",
    help: "take cryptsleep out of systemd's suspend path, restoring what install replaced",
    options: [dryRunOption, installRoot],
    run: async (o) => {
      const root = o.root as string;
      if (!o.dryRun && root === "/") requireRoot("cryptsleep uninstall");
      await runInstall(uninstall, { root, dryRun: Boolean(o.dryRun) });
      return ExitCode.OK;
    },
  },
];

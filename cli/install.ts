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
import { type Command, Option } from "commander";
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

/** What commander parses for `install`. */
interface InstallFlags {
  dryRun?: boolean;
  replaceDebian?: boolean;
  exec?: string;
  console?: string;
  maxTries?: number;
  afterTries?: string;
  idleSuspend?: number;
  tokenWithoutPin?: boolean;
  root: string;
}

const rootOption = () =>
  new Option("--root <dir>", "install into this tree instead of / (no daemon-reload)").default("/").hideHelp();

/** Registers `install` and `uninstall` on the program. */
export function register(program: Command, exit: (code: number) => never): void {
  const install = program.command("install")
    .description(
      "make systemd's suspend (lid, menu, systemctl suspend, idle) run cryptsleep: a drop-in for " +
        "systemd-suspend.service",
    )
    .option("--dry-run", "print each file action, change nothing")
    .option("--replace-debian", "if Debian's cryptsetup-suspend is installed, mask its drop-in (uninstall restores it)")
    .option("--exec <path>", "the cryptsleep systemd runs (default: this one, /usr/sbin/cryptsleep)")
    .option("--console <tty>", "prompt after wake on this tty (e.g. /dev/ttyS0) instead of a VT of its own");
  // as suspend takes them; the drop-in passes those given on to every cycle systemd starts
  for (const option of promptOptions()) install.addOption(option);
  install.option(
    "--token-without-pin",
    "after wake, open volumes with LUKS2 tokens that need no PIN (a TPM2 token enrolled without one): nobody " +
      "types anything, so whoever opens the lid gets them unlocked",
  );
  install.addOption(rootOption())
    .action(async (o: InstallFlags) => {
      if (!o.dryRun && o.root === "/") requireRoot("cryptsleep install");
      const { root, dryRun, replaceDebian, exec, console, tokenWithoutPin } = o;
      await runInstall(installDropIn, {
        root,
        dryRun,
        replaceDebian,
        exec,
        console,
        tokenWithoutPin: Boolean(tokenWithoutPin),
        ...promptValues(o),
      });
      exit(ExitCode.OK);
    });
  program.command("uninstall")
    .description("take cryptsleep out of systemd's suspend path, restoring what install replaced")
    .option("--dry-run", "print each file action, change nothing")
    .addOption(rootOption())
    .action(async (o: { dryRun?: boolean; root: string }) => {
      if (!o.dryRun && o.root === "/") requireRoot("cryptsleep uninstall");
      await runInstall(uninstall, { root: o.root, dryRun: o.dryRun });
      exit(ExitCode.OK);
    });
}

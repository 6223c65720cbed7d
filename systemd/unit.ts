/**
 * @module
 * systemd-suspend.service as systemd would load it: its unit file and drop-ins (`<dir>/systemd-suspend.service.d/
 * *.conf` under the unit directories, by file name, a name in a higher-priority directory hiding the same name
 * below, masks skipped — systemd.unit(5)), the ExecStart= it ends with, and the drop-ins cryptsleep and
 * Debian's cryptsetup-suspend put there.
 *
 * @example
 * ```ts
 * import { debianDropin, execStart } from "./unit.ts";
 * const exec = await execStart("/");
 * console.log(exec.commands, exec.from);
 * console.log((await debianDropin("/")).active);
 * ```
 */
import { join } from "../host/path.ts";
import type { PromptOptions } from "../cycle/job.ts";
import { underRoot } from "../host/paths.ts";
import { listDropins, parseConf } from "./conf.ts";

/** The unit cryptsleep stands in for. */
export const UNIT = "systemd-suspend.service";
/** systemd's system unit directories, highest priority first (`/lib/...` is /usr/lib on a merged /usr). */
export const UNIT_DIRS: readonly string[] = [
  "/etc/systemd/system",
  "/run/systemd/system",
  "/usr/local/lib/systemd/system",
  "/usr/lib/systemd/system",
  "/lib/systemd/system",
];
/** Where `cryptsleep install` writes. */
export const DROPIN_DIR = `/etc/systemd/system/${UNIT}.d`;
/** cryptsleep's drop-in. */
export const DROPIN = `${DROPIN_DIR}/cryptsleep.conf`;
/** The file name of Debian's cryptsetup-suspend drop-in (shipped in /usr/lib/systemd/system/…d/). */
export const DEBIAN_DROPIN_NAME = "cryptsetup-suspend.conf";
/** Where `--replace-debian` masks it: the same name in /etc hides the one in /usr/lib. */
export const DEBIAN_MASK = `${DROPIN_DIR}/${DEBIAN_DROPIN_NAME}`;

/**
 * What the drop-in's ExecStart passes to `cryptsleep suspend --from-systemd`: `cryptsleep install`'s options of
 * the same names, for every cycle systemd starts. Each left out is left out of the command (suspend's default).
 */
export interface SuspendArgs extends Partial<PromptOptions> {
  /** `--console`: where the cycle prompts (default: a VT of its own). */
  console?: string;
  /** `--token-without-pin`: LUKS2 tokens without a PIN open volumes after wake (a flag: given when true). */
  tokenWithoutPin?: boolean;
}

/** The flag of each of {@linkcode SuspendArgs}, in the order the command gives them. */
export const SUSPEND_FLAGS: Readonly<Record<keyof SuspendArgs, string>> = {
  console: "--console",
  maxTries: "--max-tries",
  afterTries: "--after-tries",
  idleSuspendS: "--idle-suspend",
  tokenWithoutPin: "--token-without-pin",
};

/** The flags of {@linkcode SUSPEND_FLAGS} that take no value. */
const SWITCHES = new Set(["--token-without-pin"]);

/** The flags of `args`, each with a space before it, in {@linkcode SUSPEND_FLAGS}' order. */
function flagsOf(args: SuspendArgs): string {
  const keys = Object.keys(SUSPEND_FLAGS) as (keyof SuspendArgs)[];
  return keys.filter((key) => args[key] !== undefined && args[key] !== false)
    .map((key) => SWITCHES.has(SUSPEND_FLAGS[key]) ? ` ${SUSPEND_FLAGS[key]}` : ` ${SUSPEND_FLAGS[key]} ${args[key]}`)
    .join("");
}

/** The ExecStart command line for a cryptsleep at `exec`. */
export function suspendCommand(exec: string, args: SuspendArgs = {}): string {
  return `${exec} suspend --from-systemd${flagsOf(args)}`;
}

/** The kept mode's service (`cryptsleep install --kept`): `cryptsleep serve`, cycle/kept.ts. */
export const KEPT_UNIT = "cryptsleep-kept.service";
/** Where install writes it. */
export const KEPT_UNIT_PATH = `/etc/systemd/system/${KEPT_UNIT}`;

/**
 * The kept mode's client beside a cryptsleep at `exec` (the package's layout: …/sbin/cryptsleep and
 * …/lib/cryptsleep/cryptsleep-request), or null when `exec` is not laid out so.
 */
export function requestPath(exec: string): string | null {
  const m = /^(.*)\/sbin\/cryptsleep$/.exec(exec);
  return m ? `${m[1]}/lib/cryptsleep/cryptsleep-request` : null;
}

/** The kept mode's ExecStart for systemd-suspend.service: the client, with the flags of its one-shot fallback. */
export function requestCommand(exec: string, args: SuspendArgs = {}): string {
  const client = requestPath(exec);
  if (!client) throw new Error(`${exec}: the kept mode needs the package's layout (…/sbin/cryptsleep)`);
  return `${client}${flagsOf(args)}`;
}

const VALUED = Object.values(SUSPEND_FLAGS).filter((f) => !SWITCHES.has(f));
const FLAGS = `(?: (?:${VALUED.join("|")}) \\S+| (?:${[...SWITCHES].join("|")}))*$`;
const OURS = new RegExp(`(?: suspend --from-systemd|/lib/cryptsleep/cryptsleep-request)${FLAGS}`);

/**
 * Whether an ExecStart command is one {@linkcode suspendCommand} or {@linkcode requestCommand} makes (whatever its
 * options, in any order).
 */
export function isOurCommand(command: string): boolean {
  return OURS.test(command);
}

/** The drop-in's text for a cryptsleep at `exec`, run with `args`; `kept`: through the kept mode's client. */
export function renderDropIn(exec: string, args: SuspendArgs = {}, kept = false): string {
  return [
    "# Installed by `cryptsleep install`; `cryptsleep uninstall` removes it.",
    "# systemd-suspend.service runs cryptsleep instead of systemd-sleep: every LUKS volume is locked while the",
    "# machine sleeps, whatever asked for the suspend (lid, menu, systemctl suspend, idle).",
    ...(kept
      ? [
        `# The kept mode: ${KEPT_UNIT} runs the cycle; with it not running, the client runs the cycle itself.`,
      ]
      : []),
    "[Service]",
    "ExecStart=",
    `ExecStart=${kept ? requestCommand(exec, args) : suspendCommand(exec, args)}`,
    "# The cycle waits at the passphrase prompt after wake for as long as it takes. Type=oneshot has no start",
    "# timeout by default; said here so no DefaultTimeoutStartSec= or other drop-in can kill it mid-prompt.",
    "TimeoutStartSec=infinity",
    "# As Debian's cryptsetup-suspend: the unlock's Argon2 needs memory, the OOM killer must not pick us.",
    "OOMScoreAdjust=-1000",
    "",
  ].join("\n");
}

/** The kept mode's service for a cryptsleep at `exec`, its cycles run with `args`. */
export function renderKeptUnit(exec: string, args: SuspendArgs = {}): string {
  return [
    "# Installed by `cryptsleep install --kept`; `cryptsleep uninstall` removes it.",
    "# The kept mode: cryptsleep stays between suspends with its runtime started, so the cycle systemd-suspend.service",
    "# asks for starts none. It keeps this process and a supervisor in RAM (about 60 MB; never a key or a passphrase).",
    "[Unit]",
    "Description=cryptsleep, kept ready between suspends",
    "Documentation=man:cryptsleep(8)",
    "",
    "[Service]",
    `ExecStart=${exec} serve${flagsOf(args)}`,
    "# Its memory never goes to swap: a swap on a volume the cycle locks could not give it back after the lock.",
    "MemorySwapMax=0",
    "Restart=on-failure",
    "# 3: it refused (its memory could go to swap): starting it again would refuse again",
    "RestartPreventExitStatus=3",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** The text `--replace-debian` writes over Debian's drop-in name: no settings, so theirs is not applied. */
export const DEBIAN_MASK_TEXT: string = [
  "# Masks Debian's cryptsetup-suspend drop-in of the same name (cryptsleep install --replace-debian):",
  "# only one tool may take systemd-suspend.service's ExecStart. `cryptsleep uninstall` restores it.",
  "",
].join("\n");

/** Whether a drop-in's text sets anything (a comment-only file overrides a lower one with nothing). */
function setsSomething(text: string): boolean {
  return parseConf(text, "").some((e) => e.section !== "");
}

async function readText(root: string, path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(underRoot(root, path));
  } catch {
    return null;
  }
}

/** What systemd would find of Debian's drop-in. */
export interface DebianDropin {
  /** The file systemd applies under that name (host path), or null when there is none. */
  path: string | null;
  /** It sets something: cryptsetup-suspend would take the ExecStart. */
  active: boolean;
  /** A same-named file in a higher directory hides the shipped one (cryptsleep's mask or the admin's). */
  masked: boolean;
  /** The shipped file, when one exists below the one applied. */
  shipped: string | null;
}

/** Finds Debian's cryptsetup-suspend drop-in under `root` and whether it is in force. */
export async function debianDropin(root = "/"): Promise<DebianDropin> {
  const found: string[] = [];
  for (const dir of UNIT_DIRS) {
    const path = join(dir, `${UNIT}.d`, DEBIAN_DROPIN_NAME);
    if ((await readText(root, path)) !== null || (await isDevNull(root, path))) found.push(path);
  }
  if (found.length === 0) return { path: null, active: false, masked: false, shipped: null };
  const path = found[0];
  const text = (await isDevNull(root, path)) ? "" : (await readText(root, path)) ?? "";
  const active = setsSomething(text);
  const shipped = found.find((p) => !p.startsWith("/etc/")) ?? null;
  return { path, active, masked: !active && found.length > 1, shipped };
}

async function isDevNull(root: string, path: string): Promise<boolean> {
  try {
    return (await Deno.readLink(underRoot(root, path))) === "/dev/null";
  } catch {
    return false;
  }
}

/** The ExecStart= systemd ends with for the unit. */
export interface ExecStart {
  /** The command lines, in order (a oneshot may have several). */
  commands: string[];
  /** The file each came from. */
  from: string[];
  /** The unit file and drop-ins read, in order. */
  files: string[];
}

/** Applies the unit file and its drop-ins in systemd's order and returns the ExecStart= left. */
export async function execStart(root = "/"): Promise<ExecStart> {
  const files: string[] = [];
  for (const dir of UNIT_DIRS) {
    const path = join(dir, UNIT);
    if ((await readText(root, path)) !== null) {
      files.push(path);
      break;
    }
  }
  files.push(...(await listDropins(root, `${UNIT}.d`, UNIT_DIRS)));
  const commands: string[] = [];
  const from: string[] = [];
  for (const file of files) {
    for (const e of parseConf((await readText(root, file)) ?? "", file)) {
      if (e.section !== "Service" || e.key !== "ExecStart") continue;
      if (e.value === "") {
        commands.length = 0;
        from.length = 0;
      } else {
        commands.push(e.value);
        from.push(file);
      }
    }
  }
  return { commands, from, files };
}

/**
 * @module
 * `cryptsleep install` / `uninstall`: put cryptsleep in systemd's suspend path with a drop-in for
 * systemd-suspend.service (unit.ts, {@linkcode renderDropIn}) and take it out again, restoring EXACTLY what was
 * there: every file written is recorded first with what it replaced (absent, a file with its bytes and mode, a
 * symlink), and every directory created. Debian's cryptsetup-suspend takes the same ExecStart; install refuses
 * while it is active unless told `replaceDebian`, which masks it with a same-named settings-free drop-in in /etc.
 * Everything goes under a root, so tests run on scratch trees; `systemctl daemon-reload` runs only on "/".
 *
 * @example
 * ```ts
 * import { install, uninstall } from "./install.ts";
 * const plan = await install({ root: "/", dryRun: true, exec: "/usr/sbin/cryptsleep" });
 * console.log(plan.lines.join("\n"));
 * await uninstall({ root: "/", dryRun: true });
 * ```
 */
import { dirname } from "../host/path.ts";
import { KEPT_DIR } from "../cycle/kept.ts";
import { describe } from "../host/errors.ts";
import { existsUnder, underRoot } from "../host/paths.ts";
import { promptOptionProblem, type SuspendOptions } from "../cycle/job.ts";
import {
  DEBIAN_MASK,
  DEBIAN_MASK_TEXT,
  debianDropin,
  DROPIN,
  DROPIN_DIR,
  KEPT_UNIT,
  KEPT_UNIT_PATH,
  renderDropIn,
  renderKeptUnit,
  requestCommand,
  requestPath,
  SUSPEND_FLAGS,
  type SuspendArgs,
  suspendCommand,
} from "./unit.ts";
import {
  type Before,
  readRecord,
  RECORD,
  type RecordedFile,
  recordText,
  restoreStep,
  snapshot,
  type Step,
  writeStep,
} from "./record.ts";

/** Where the ExecStart points when nothing else is said: the package's wrapper. */
export const DEFAULT_EXEC = "/usr/sbin/cryptsleep";

/** Why install or uninstall stopped; `kind` is for the CLI's exit code. */
export class InstallError extends Error {
  /** usage: bad input; refused: nothing touched, on purpose; env: the machine is not as needed. */
  constructor(message: string, readonly kind: "usage" | "refused" | "env") {
    super(message);
    this.name = "InstallError";
  }
}

/** Options of {@linkcode install} and {@linkcode uninstall}. */
export interface InstallOptions {
  /** "/" = live; else a scratch tree. */
  root?: string;
  /** Print each file action, change nothing. */
  dryRun?: boolean;
  /** The cryptsleep the ExecStart runs (default: $CRYPTSLEEP_EXEC, set by the wrapper, or /usr/sbin/cryptsleep). */
  exec?: string;
  /** Mask Debian's cryptsetup-suspend drop-in when it is active. */
  replaceDebian?: boolean;
  /** Where the cycle prompts after wake (a serial console, say); default: a VT of its own. */
  console?: string;
  /** `--max-tries` for the cycles systemd starts (default: left out, suspend's default). */
  maxTries?: number;
  /** `--after-tries` for the cycles systemd starts (default: left out, suspend's default). */
  afterTries?: SuspendOptions["afterTries"];
  /** `--idle-suspend` for the cycles systemd starts (default: left out, suspend's default). */
  idleSuspendS?: number;
  /** `--token-without-pin` for the cycles systemd starts (default: off). */
  tokenWithoutPin?: boolean;
  /** The kept mode: cryptsleep-kept.service runs the cycles (cycle/kept.ts); off by default. */
  kept?: boolean;
  /** Reloads systemd after a change (default: `systemctl daemon-reload` on "/", nothing elsewhere). */
  reload?: () => Promise<void>;
  /** Runs `systemctl ARGS` (the kept service's enable and start; default: on "/" only, nothing elsewhere). */
  systemctl?: (args: string[]) => Promise<void>;
}

/** What was done (or, in a dry run, would be). */
export interface InstallResult {
  /** One line per action, in order. */
  lines: string[];
  /** Whether any file changed (or would). */
  changed: boolean;
}

function systemctlReload(): Promise<void> {
  return runSystemctl(["daemon-reload"]);
}

function reloader(root: string, opts: InstallOptions): () => Promise<void> {
  return opts.reload ?? (root === "/" ? systemctlReload : () => Promise.resolve());
}

async function runSystemctl(args: string[]): Promise<void> {
  const what = `systemctl ${args.join(" ")}`;
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("systemctl", { args, stdout: "null", stderr: "piped" }).output();
  } catch (err) {
    throw new InstallError(`${describe(`spawn ${what}`, err)}; the files are in place: run ${what} by hand`, "env");
  }
  if (!out.success) {
    const msg = new TextDecoder().decode(out.stderr).trim();
    throw new InstallError(
      `${what} exited with ${out.code} (${msg}); the files are in place: run it again by hand`,
      "env",
    );
  }
}

/**
 * A step that runs systemctl (on "/"; a scratch root only says it). `mayFail`: a failure is said and the steps go on
 * (stopping a service whose unit was removed by hand must not keep uninstall from restoring the rest).
 */
function systemctlStep(root: string, opts: InstallOptions, args: string[], mayFail = false): Step {
  const run = opts.systemctl ?? (root === "/" ? runSystemctl : null);
  return {
    line: run ? `run systemctl ${args.join(" ")}` : `skip systemctl ${args.join(" ")} (not /)`,
    apply: async () => {
      try {
        if (run) await run(args);
      } catch (err) {
        if (!mayFail) throw err;
        console.error(`cryptsleep: warning: ${err instanceof Error ? err.message : err}; going on`);
      }
    },
  };
}

/**
 * Waits until the kept service is ready (its request FIFO there) or has failed; throws saying where to look. Where
 * systemd does not run (a chroot, an image being built) there is nothing to wait for: said, not waited.
 */
async function awaitKept(): Promise<void> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    const fifo = await Deno.lstat(`${KEPT_DIR}/request`).catch(() => null);
    if (fifo?.isFifo) return;
    let state = "";
    try {
      const out = await new Deno.Command("systemctl", {
        args: ["is-active", KEPT_UNIT],
        stdout: "piped",
        stderr: "null",
      })
        .output();
      state = new TextDecoder().decode(out.stdout).trim();
    } catch (err) {
      throw new InstallError(`${describe(`spawn systemctl is-active ${KEPT_UNIT}`, err)}: is systemd running?`, "env");
    }
    if (state === "" || !(await existsUnder("/", "/run/systemd/system"))) {
      console.error(`cryptsleep: ${KEPT_UNIT}: systemd does not run here (a chroot?): it starts at the next boot`);
      return;
    }
    if (state === "failed" || state === "inactive" || Date.now() > deadline) {
      throw new InstallError(
        `${KEPT_UNIT} did not get ready (${state}): \`journalctl -u ${KEPT_UNIT}\` says why; suspends still lock, ` +
          `each starting its own cryptsleep. Fix that and run cryptsleep install --kept again (it restarts the service), ` +
          "or install without --kept",
        "env",
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The kept mode's client must be there, as the package lays it out beside `exec`. */
async function checkClient(root: string, exec: string): Promise<void> {
  const client = requestPath(exec);
  const st = client ? await Deno.stat(underRoot(root, client)).catch(() => null) : null;
  if (!client || !st?.isFile || ((st.mode ?? 0) & 0o111) === 0) {
    const what = client
      ? `${client} is missing or not executable`
      : `${exec} is not laid out as the package does (…/sbin/cryptsleep), so it has no cryptsleep-request beside it`;
    throw new InstallError(
      `--kept: ${what}: systemd-suspend.service would have no client to run; install the package ` +
        "(apt install ./cryptsleep_*.deb), or leave --kept out",
      "env",
    );
  }
}

async function checkExec(root: string, exec: string): Promise<void> {
  if (!exec.startsWith("/") || /[\s"'\\$%;]/.test(exec)) {
    throw new InstallError(
      `--exec ${exec}: give an absolute path without spaces, quotes or % (ExecStart= syntax)`,
      "usage",
    );
  }
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(underRoot(root, exec));
  } catch (err) {
    throw new InstallError(
      `${describe(`stat ${exec}`, err)}: systemd would have no cryptsleep to run; install the package ` +
        "(apt install ./cryptsleep_*.deb) or pass --exec with the path of an installed cryptsleep",
      "env",
    );
  }
  if (!st.isFile || ((st.mode ?? 0) & 0o111) === 0) {
    throw new InstallError(`${exec} is not an executable file: chmod 755 it or pass --exec`, "env");
  }
}

/** What the ExecStart passes to `cryptsleep suspend`, checked: each value ends up in its command line. */
function suspendArgs(opts: InstallOptions): SuspendArgs {
  const { console, maxTries, afterTries, idleSuspendS, tokenWithoutPin } = opts;
  if (console !== undefined && !/^\/dev\/[\w/.-]+$/.test(console)) {
    throw new InstallError(`--console ${console}: give a terminal's /dev path, e.g. /dev/ttyS0`, "usage");
  }
  // the same rule as suspend's flags (a library caller's values have not been through them)
  for (const key of ["maxTries", "afterTries", "idleSuspendS"] as const) {
    const problem = opts[key] === undefined ? null : promptOptionProblem(key, opts[key]);
    if (problem) throw new InstallError(`${SUSPEND_FLAGS[key]} ${opts[key]}: ${problem}`, "usage");
  }
  return { console, maxTries, afterTries, idleSuspendS, ...(tokenWithoutPin ? { tokenWithoutPin: true } : {}) };
}

/** Installs the drop-in (and the Debian mask when asked); run again with the same options, it changes nothing. */
export async function install(opts: InstallOptions = {}): Promise<InstallResult> {
  const root = opts.root ?? "/";
  const exec = opts.exec ?? Deno.env.get("CRYPTSLEEP_EXEC") ?? DEFAULT_EXEC;
  await checkExec(root, exec);
  const kept = Boolean(opts.kept);
  if (kept) await checkClient(root, exec);
  const args = suspendArgs(opts);
  const debian = await debianDropin(root);
  const record = await readRecord(root);
  const recorded = new Map(record?.files.map((f) => [f.path, f.before]) ?? []);
  const masking = debian.active && debian.path !== DEBIAN_MASK;
  if (masking && !opts.replaceDebian) {
    throw new InstallError(
      `Debian's cryptsetup-suspend drop-in is active (${debian.path}): it takes systemd-suspend.service's ` +
        "ExecStart too, and only one may. Remove it (apt remove cryptsetup-suspend), or run " +
        "cryptsleep install --replace-debian to mask it (cryptsleep uninstall restores it)",
      "refused",
    );
  }
  if (debian.active && debian.path === DEBIAN_MASK) {
    throw new InstallError(
      `${DEBIAN_MASK} sets something, and that name is where cryptsleep masks cryptsetup-suspend: ` +
        "move your settings to another file name, then run cryptsleep install again",
      "refused",
    );
  }
  const steps: Step[] = [];
  const createdDirs = [...(record?.createdDirs ?? [])];
  for (const dir of [DROPIN_DIR, dirname(RECORD)]) {
    // each missing ancestor too, parents first, so uninstall can take away exactly what it made
    const missing: string[] = [];
    for (let d = dir; d !== "/" && !(await existsUnder(root, d)); d = dirname(d)) missing.unshift(d);
    for (const d of missing) {
      if (createdDirs.includes(d)) continue;
      createdDirs.push(d);
      steps.push({ line: `mkdir ${d}`, apply: () => Deno.mkdir(underRoot(root, d), { recursive: true }) });
    }
  }
  const files: RecordedFile[] = [];
  const command = kept ? requestCommand(exec, args) : suspendCommand(exec, args);
  const want: [string, string, string][] = [[DROPIN, renderDropIn(exec, args, kept), `ExecStart=${command}`]];
  if (masking || recorded.has(DEBIAN_MASK)) want.push([DEBIAN_MASK, DEBIAN_MASK_TEXT, `masks ${debian.shipped}`]);
  if (kept) want.push([KEPT_UNIT_PATH, renderKeptUnit(exec, args), "the kept mode's service"]);
  let changed = false;
  const writes: Step[] = [];
  const after: Step[] = [];
  // installed --kept before, not now: its service stops (before the record forgets it) and goes
  const wasKept = record?.files.find((f) => f.path === KEPT_UNIT_PATH);
  const before: Step[] = [];
  if (wasKept && !kept) {
    changed = true;
    // a unit removed by hand has nothing running to stop: that stop may fail
    const gone = !(await existsUnder(root, KEPT_UNIT_PATH));
    before.push(systemctlStep(root, opts, ["disable", "--now", KEPT_UNIT], gone));
    writes.push(await restoreStep(root, wasKept));
  }
  for (const [path, text, why] of want) {
    const before = recorded.get(path) ?? await snapshot(root, path);
    files.push({ path, before, wrote: text });
    const now = await snapshot(root, path);
    if (now.kind === "file" && now.text === text) continue;
    changed = true;
    // installed before with other options: its own text goes, what it replaced stays recorded
    const own = now.kind === "file" && record?.files.some((f) => f.path === path && f.wrote === now.text);
    const what = own ? "replaces what cryptsleep install wrote before" : describeBefore(now);
    writes.push(writeStep(root, path, text, `write ${path} (${why}; ${what})`));
  }
  // (re)started with what it was written with now
  if (kept) {
    after.push(systemctlStep(root, opts, ["enable", KEPT_UNIT]), systemctlStep(root, opts, ["restart", KEPT_UNIT]));
    // started is not ready: serve may refuse (its memory could go to swap); install says so
    if (root === "/" && !opts.systemctl) after.push({ line: `wait until ${KEPT_UNIT} is ready`, apply: awaitKept });
  }
  if (!changed && record) {
    const already = `already installed: ${DROPIN} is as cryptsleep wrote it`;
    // the kept service is (re)started all the same: installing again is how a failed or stopped one comes back
    if (!kept) return { lines: [already], changed: false };
    const r = await run([], root, opts, after);
    return { lines: [already, ...r.lines.filter((l) => !/daemon-reload/.test(l))], changed: false };
  }
  const text = recordText({ version: 1, installedAt: new Date().toISOString(), exec, files, createdDirs });
  // the record first: a write cut short is still undone by uninstall
  steps.push(...before, writeStep(root, RECORD, text, `write ${RECORD} (what uninstall restores)`), ...writes);
  return await run(steps, root, opts, after);
}

/** Restores what install replaced, removes what it created; nothing recorded: nothing to do. */
export async function uninstall(opts: InstallOptions = {}): Promise<InstallResult> {
  const root = opts.root ?? "/";
  const record = await readRecord(root);
  if (!record) {
    const stray = await existsUnder(root, DROPIN);
    return {
      lines: [
        stray
          ? `not installed by cryptsleep install (no ${RECORD}), but ${DROPIN} exists: remove it by hand ` +
            "(rm it, then systemctl daemon-reload) if it is yours to remove"
          : `nothing to uninstall: no ${RECORD}`,
      ],
      changed: false,
    };
  }
  const steps: Step[] = [];
  // the kept service stops before its unit goes
  if (record.files.some((f) => f.path === KEPT_UNIT_PATH)) {
    steps.push(systemctlStep(root, opts, ["disable", "--now", KEPT_UNIT], true));
  }
  for (const f of [...record.files].reverse()) steps.push(await restoreStep(root, f));
  steps.push({ line: `remove ${RECORD}`, apply: () => Deno.remove(underRoot(root, RECORD)) });
  for (const dir of [...record.createdDirs].reverse()) {
    steps.push({
      line: `rmdir ${dir} (if empty)`,
      apply: async () => {
        try {
          await Deno.remove(underRoot(root, dir));
        } catch {
          // not empty: someone put a file there since; it stays
        }
      },
    });
  }
  return await run(steps, root, opts);
}

async function run(steps: Step[], root: string, opts: InstallOptions, after: Step[] = []): Promise<InstallResult> {
  const reload = root === "/" || opts.reload ? "run systemctl daemon-reload" : "skip systemctl daemon-reload (not /)";
  const lines = [...steps.map((s) => s.line), reload, ...after.map((s) => s.line)];
  if (opts.dryRun) return { lines: lines.map((l) => `would ${l}`), changed: steps.length > 0 };
  for (const s of steps) await s.apply();
  await reloader(root, opts)();
  for (const s of after) await s.apply();
  return { lines, changed: true };
}

function describeBefore(b: Before): string {
  return b.kind === "absent" ? "new" : b.kind === "symlink" ? `replaces a symlink to ${b.target}` : "replaces a file";
}

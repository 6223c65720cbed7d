/**
 * @module
 * Starts the agent inside the ramfs: `chroot <ramfs> /bin/deno run … /cryptsleep.js <args>` with a minimal
 * environment. Deno.Command cannot chroot a child itself, so the `chroot` program copied into the ramfs by
 * buildRamfs does it. That copy is started with the ramfs's own dynamic loader and libraries
 * (`ld.so --inhibit-cache --library-path … chroot …`), or directly when static (busybox): starting the agent
 * reads nothing from the (possibly already locked) disks.
 *
 * @example
 * ```ts
 * import { buildRamfs } from "./ramfs.ts";
 * import { spawnChrooted } from "./enter.ts";
 * await using ramfs = await buildRamfs({ dir: "/run/cryptsleep/root", script: "dist/cryptsleep.js" });
 * const agent = spawnChrooted(ramfs, ["agent"], { stdin: "null" });
 * console.log((await agent.status).code);
 * ```
 */
import { DENO_DIR, DENO_PATH, type Ramfs } from "./ramfs.ts";

/** How the chrooted child is started. */
export interface SpawnChrootedOptions {
  /** Default "null": the agent opens its console itself. */
  stdin?: "piped" | "inherit" | "null";
  /** Default "inherit". */
  stdout?: "piped" | "inherit" | "null";
  /** Default "inherit". */
  stderr?: "piped" | "inherit" | "null";
  /** Added to (and overriding) the minimal environment. */
  env?: Record<string, string>;
  /** Deno flags before the script (default: -A --no-config --no-lock). */
  denoFlags?: string[];
  /** Run a different script inside the chroot (inside path) instead of ramfs.script; tests use it. */
  script?: string;
}

/** The environment inside the chroot: nothing from the caller leaks in. */
export function chrootEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: "/bin",
    HOME: "/tmp",
    TMPDIR: "/tmp",
    DENO_DIR,
    DENO_NO_UPDATE_CHECK: "1",
    DENO_NO_PROMPT: "1",
    NO_COLOR: "1",
    ...extra,
  };
}

/** The command line (program + args) that enters the chroot and runs /bin/deno there. */
export function chrootCommand(ramfs: Ramfs, args: string[], opts: SpawnChrootedOptions = {}): [string, string[]] {
  const ch = ramfs.chroot;
  if (!ch) {
    throw new Error(
      `no chroot program in the ramfs at ${ramfs.root}: install coreutils or busybox and rebuild it (buildRamfs chrootBin)`,
    );
  }
  const script = opts.script ?? ramfs.script;
  const inner = script === null
    ? [DENO_PATH, ...args] // compiled binary: the script is embedded
    : [DENO_PATH, "run", ...(opts.denoFlags ?? ["-A", "--no-config", "--no-lock"]), script, ...args];
  const chrootArgs = [...(ch.busybox ? ["chroot"] : []), ramfs.root, ...inner];
  if (ch.static) return [ramfs.root + ch.path, chrootArgs];
  if (!ramfs.loader) throw new Error(`${ch.path} is dynamically linked but the ramfs has no loader`);
  return [
    ramfs.root + ramfs.loader,
    [
      "--inhibit-cache",
      "--library-path",
      ch.libraryDirs.map((d) => ramfs.root + d).join(":"),
      ramfs.root + ch.path,
      ...chrootArgs,
    ],
  ];
}

/** Spawns /bin/deno inside the chroot. The agent opens its console itself. */
export function spawnChrooted(ramfs: Ramfs, args: string[], opts: SpawnChrootedOptions = {}): Deno.ChildProcess {
  const [program, argv] = chrootCommand(ramfs, args, opts);
  return new Deno.Command(program, {
    args: argv,
    env: chrootEnv(opts.env),
    clearEnv: true,
    cwd: "/",
    stdin: opts.stdin ?? "null",
    stdout: opts.stdout ?? "inherit",
    stderr: opts.stderr ?? "inherit",
  }).spawn();
}

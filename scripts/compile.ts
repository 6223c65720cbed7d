/**
 * @module
 * `deno task compile`: a single `dist/cryptsleep` binary via `deno compile`.
 *
 * `deno compile` needs the `denort` runtime of this exact Deno version. Deno downloads it when it can; these
 * machines cannot, so this script only proceeds when `DENORT_BIN` names a denort binary or the Deno cache
 * already holds the runtime archive, and otherwise says how to provide it. The binary behaves like the tested
 * path (pinned deno + `dist/cryptsleep.js`): same entry, same permissions.
 *
 * @example
 * ```sh
 * DENORT_BIN=/opt/denort-2.9.6 deno task compile && dist/cryptsleep --version
 * ```
 */
import { join } from "node:path";
import { V8_FLAGS } from "../cli/v8_flags.ts";

const target = "x86_64-unknown-linux-gnu";
const version = Deno.version.deno;

function denoDir(): string {
  if (Deno.env.get("DENO_DIR")) return Deno.env.get("DENO_DIR")!;
  const xdg = Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/root", ".cache");
  return join(xdg, "deno");
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

const denortBin = Deno.env.get("DENORT_BIN");
const cached = join(denoDir(), "dl", "release", `v${version}`, `denort-${target}.zip`);
if (denortBin ? !exists(denortBin) : !exists(cached)) {
  console.error(
    `compile: no denort runtime for Deno ${version} (${
      denortBin ? `DENORT_BIN=${denortBin} is not a file` : `not in ${cached}`
    }).\n` +
      `  Fetch denort-${target}.zip of Deno v${version} from Deno's releases on a connected machine, then either\n` +
      `  unzip it and run: DENORT_BIN=/path/to/denort deno task compile\n` +
      `  or place the zip at ${cached}.\n` +
      `  The tested path needs none of this: deno task bundle && deno run -A dist/cryptsleep.js`,
  );
  Deno.exit(1);
}

const args = [
  "compile",
  "-A",
  "--no-check",
  `--v8-flags=${V8_FLAGS}`,
  "--output",
  "dist/cryptsleep",
  "--target",
  target,
  "cli/main.ts",
];
const { code } = await new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" }).output();
Deno.exit(code);

/**
 * @module
 * `deno task check:doc`: every module's examples type-check (`deno check --doc`, none marked `ts ignore`), and the
 * library's exports are documented (`deno doc --lint`). Part of `deno task check`, so CI keeps both true.
 *
 * The doc lint covers mod.ts and every folder of modules, the command line's included.
 *
 * @example
 * ```sh
 * deno task check:doc
 * ```
 */
import { join, relative } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
/** Folders whose modules are checked; tests/ and the guest builder are tools of the bed, not modules. */
const FOLDERS = ["cli", "cycle", "host", "cgroup", "chroot", "discovery", "ffi", "systemd", "scripts"];
/** Folders of the library API, whose exports must all be documented. */
const LIBRARY = ["cli", "cycle", "host", "cgroup", "chroot", "discovery", "ffi", "systemd"];

async function modules(folder: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string) {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory && e.name !== "guest") await walk(path);
      else if (e.isFile && e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(relative(ROOT, path));
    }
  }
  await walk(join(ROOT, folder));
  return out.sort();
}

async function deno(args: string[]): Promise<boolean> {
  const { success } = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT, stdout: "inherit", stderr: "inherit" })
    .output();
  return success;
}

const all = ["mod.ts", ...(await Promise.all(FOLDERS.map(modules))).flat()];
const library = ["mod.ts", ...(await Promise.all(LIBRARY.map(modules))).flat()];

const fence = "`".repeat(3) + "ts ignore";
const ignored: string[] = [];
for (const file of all) {
  if ((await Deno.readTextFile(join(ROOT, file))).includes(fence)) ignored.push(file);
}
if (ignored.length) {
  console.error(
    `check:doc: examples marked "ts ignore" are never checked; make them type-check: ${ignored.join(", ")}`,
  );
}
const checked = await deno(["check", "--quiet", "--doc", ...all]);
const linted = await deno(["doc", "--lint", ...library]);
if (ignored.length || !checked || !linted) Deno.exit(1);
console.log(
  `check:doc: ${all.length} modules' examples type-check; ${library.length} library modules fully documented`,
);

/**
 * @module
 * `deno task deb`: `dist/cryptsleep_<version>_amd64.deb`, built with `dpkg-deb --build --root-owner-group` from a
 * staging tree: the pinned Deno and the bundle in /usr/lib/cryptsleep, the /usr/sbin/cryptsleep wrapper, the man
 * page, bash completion, the systemd-suspend.service drop-in (shipped for reference in /usr/lib/cryptsleep, NOT
 * enabled: `cryptsleep install` writes it to /etc) and the maintainer scripts from packaging/. The version is
 * package.json's.
 *
 * @example
 * ```ts
 * import { buildDeb } from "./deb.ts";
 * const deb = await buildDeb({ bundle: "dist/cryptsleep.js", outDir: "dist" });
 * console.log(deb);
 * ```
 */
import { join } from "node:path";
import { DEFAULT_EXEC } from "../systemd/install.ts";
import { renderDropIn } from "../systemd/unit.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PACKAGING = join(ROOT, "packaging");

/** The Depends: line (libcryptsetup ≥ 2.3 for crypt_safe_alloc & co; the pinned Deno needs libc and libgcc). */
export const DEPENDS = "libcryptsetup12 (>= 2:2.3), libdevmapper1.02.1, systemd, libc6 (>= 2.31), libgcc-s1";

/** Inputs of {@linkcode buildDeb}. */
export interface DebOptions {
  /** The bundle (`deno task bundle` makes dist/cryptsleep.js). */
  bundle: string;
  /** Where the .deb goes. */
  outDir: string;
  /** The Deno binary to ship (default: the pinned one in node_modules). */
  deno?: string;
  /** The package version (default: package.json's). */
  version?: string;
  /** dpkg-deb's -Z (default xz). */
  compression?: "xz" | "gzip" | "zstd" | "none";
}

async function sh(cmd: string, args: string[], stdout: "null" | "piped" = "null"): Promise<Uint8Array> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, stdout, stderr: "piped" }).output();
  } catch (err) {
    throw new Error(`spawn ${cmd}: ${err instanceof Error ? err.message : err}; install it (apt install dpkg gzip)`);
  }
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} exited with ${out.code}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return stdout === "piped" ? out.stdout : new Uint8Array();
}

/** package.json's version. */
export async function packageVersion(): Promise<string> {
  return JSON.parse(await Deno.readTextFile(join(ROOT, "package.json"))).version;
}

/** The DEBIAN/control text. */
export function control(version: string, installedKiB: number): string {
  return [
    "Package: cryptsleep",
    `Version: ${version}`,
    "Architecture: amd64",
    "Maintainer: cryptsleep developers <cryptsleep@localhost>",
    `Installed-Size: ${installedKiB}`,
    `Depends: ${DEPENDS}`,
    // no Conflicts: both can be installed; `cryptsleep install` refuses while cryptsetup-suspend's drop-in is
    // active, and --replace-debian masks it (uninstall restores it)
    "Section: admin",
    "Priority: optional",
    "Description: lock every LUKS volume around suspend-to-RAM",
    " cryptsleep freezes userspace with the cgroup v2 freezer, locks every LUKS volume",
    " (crypt_suspend wipes the key), suspends, prompts for the passphrases after wake",
    " with its code locked in RAM, unlocks and thaws. `cryptsleep install` makes systemd's suspend",
    " (lid, menu, systemctl suspend, idle) run it; hibernation is not protected.",
    "",
  ].join("\n");
}

/** Builds the .deb and returns its path. */
export async function buildDeb(opts: DebOptions): Promise<string> {
  const version = opts.version ?? await packageVersion();
  const deno = opts.deno ?? join(ROOT, "node_modules/deno/deno");
  const stage = await Deno.makeTempDir({ prefix: "cryptsleep-deb-" });
  try {
    // the tree's root becomes the package's ./ entry: a temp dir's 0700 must not reach /
    await Deno.chmod(stage, 0o755);
    const put = async (path: string, data: string | Uint8Array, mode = 0o644) => {
      const at = join(stage, path);
      await Deno.mkdir(join(at, ".."), { recursive: true });
      if (typeof data === "string") await Deno.writeTextFile(at, data);
      else await Deno.writeFile(at, data);
      await Deno.chmod(at, mode);
    };
    const text = (name: string) => Deno.readTextFile(join(PACKAGING, name));
    await put("usr/lib/cryptsleep/deno", await Deno.readFile(deno), 0o755);
    await put("usr/lib/cryptsleep/cryptsleep.js", await Deno.readFile(opts.bundle));
    await put("usr/lib/cryptsleep/systemd-suspend.service.d/cryptsleep.conf", renderDropIn(DEFAULT_EXEC));
    await put("usr/sbin/cryptsleep", await text("cryptsleep.sh"), 0o755);
    await put("usr/lib/cryptsleep/cryptsleep-request", await text("cryptsleep-request"), 0o755);
    const man = join(stage, "cryptsleep.8");
    await Deno.writeTextFile(man, (await text("cryptsleep.8")).replaceAll("@VERSION@", version));
    await put("usr/share/man/man8/cryptsleep.8.gz", await sh("gzip", ["-9n", "-c", man], "piped"));
    await Deno.remove(man);
    await put("usr/share/bash-completion/completions/cryptsleep", await text("cryptsleep.bash-completion"));
    await put(
      "usr/share/doc/cryptsleep/copyright",
      "cryptsleep\nLicense: GPL-2.0-or-later (/usr/share/common-licenses/GPL-2)\n" +
        "The pinned Deno runtime (/usr/lib/cryptsleep/deno) is MIT-licensed, https://github.com/denoland/deno\n",
    );
    const kib = Number(new TextDecoder().decode(await sh("du", ["-sk", stage], "piped")).split(/\s/)[0]);
    await put("DEBIAN/control", control(version, kib));
    for (const s of ["postinst", "prerm", "postrm"]) await put(`DEBIAN/${s}`, await text(s), 0o755);
    await Deno.mkdir(opts.outDir, { recursive: true });
    const out = join(opts.outDir, `cryptsleep_${version}_amd64.deb`);
    await sh("dpkg-deb", ["--root-owner-group", `-Z${opts.compression ?? "xz"}`, "--build", stage, out]);
    return out;
  } finally {
    await Deno.remove(stage, { recursive: true });
  }
}

if (import.meta.main) {
  const out = await buildDeb({ bundle: join(ROOT, "dist/cryptsleep.js"), outDir: join(ROOT, "dist") });
  console.log(out);
}

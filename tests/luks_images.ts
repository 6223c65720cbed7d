/**
 * Test helper: real LUKS1/LUKS2 image files made by `cryptsetup luksFormat` in a temp dir (no device-mapper needed).
 * Costs are tiny by default (pbkdf2 1000 iterations; argon2id 32 KiB, 4 iterations, 1 thread) so tests stay fast.
 * Test passphrases only: the helper writes the passphrase to a 0600 key file inside the temp dir.
 *
 * @example
 * ```ts
 * import { makeLuksImage } from "./luks_images.ts";
 *
 * await using img = await makeLuksImage({ type: "luks2", pbkdf: "argon2id", passphrase: new TextEncoder().encode("pw") });
 * console.log(img.path, img.uuid); // removed with its temp dir at scope end
 * ```
 *
 * @module
 */

import { join } from "node:path";

/** Options for {@linkcode makeLuksImage}. */
export interface LuksImageOptions {
  type: "luks1" | "luks2";
  pbkdf: "pbkdf2" | "argon2id" | "argon2i";
  /** Test passphrase bytes (written to a key file, so binary is fine). */
  passphrase: Uint8Array;
  /** Data image size (default 20 MiB for an attached LUKS2 header, 4 MiB otherwise). */
  sizeMiB?: number;
  /** Put the header in a separate file (`--header`). */
  headerFile?: boolean;
  /** Argon2 memory in KiB (default 32). */
  memoryKiB?: number;
  /** pbkdf2 iterations (default 1000) or Argon2 time cost (default 4). */
  iterations?: number;
  /** Argon2 threads (default 1). */
  parallel?: number;
  /** Fixed UUID (`--uuid`). */
  uuid?: string;
  /** More passphrases for more keyslots (each added with `luksAddKey`, same PBKDF settings). */
  extraPassphrases?: Uint8Array[];
}

/** A LUKS image file; `await using` removes its temp dir. */
export interface LuksImage extends AsyncDisposable {
  /** The data image (holds the header too unless {@linkcode headerPath} is set). */
  path: string;
  /** Detached header file. */
  headerPath?: string;
  /** Temp dir holding everything. */
  dir: string;
  /** LUKS UUID (from `cryptsetup luksUUID`). */
  uuid: string;
  /** Key file with the passphrase (for keyfile tests). */
  keyFile: string;
  /** The PBKDF settings used. */
  pbkdf: { type: string; memoryKiB: number; iterations: number; parallel: number };
}

async function run(args: string[]): Promise<string> {
  const out = await new Deno.Command("cryptsetup", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`cryptsetup ${args.join(" ")} failed (exit ${out.code}): ${text.decode(out.stderr).trim()}`);
  }
  return text.decode(out.stdout).trim();
}

/** Make a LUKS image with `cryptsetup luksFormat --batch-mode`. */
export async function makeLuksImage(opts: LuksImageOptions): Promise<LuksImage> {
  if (opts.type === "luks1" && opts.pbkdf !== "pbkdf2") throw new Error("LUKS1 supports only pbkdf2");
  const dir = await Deno.makeTempDir({ prefix: "cryptsleep-luks-" });
  try {
    const path = join(dir, "data.img");
    const headerPath = opts.headerFile ? join(dir, "header.img") : undefined;
    const keyFile = join(dir, "key");
    await Deno.writeFile(keyFile, opts.passphrase, { mode: 0o600 });
    const sizeMiB = opts.sizeMiB ?? (opts.type === "luks2" && !headerPath ? 20 : 4);
    await Deno.truncate(path, sizeMiB * 1024 * 1024).catch(async () => {
      await Deno.writeFile(path, new Uint8Array(0));
      await Deno.truncate(path, sizeMiB * 1024 * 1024);
    });
    const argon = opts.pbkdf !== "pbkdf2";
    const pbkdf = {
      type: opts.pbkdf,
      memoryKiB: argon ? opts.memoryKiB ?? 32 : 0,
      iterations: opts.iterations ?? (argon ? 4 : 1000),
      parallel: argon ? opts.parallel ?? 1 : 0,
    };
    const cost = ["--pbkdf", pbkdf.type, "--pbkdf-force-iterations", String(pbkdf.iterations)];
    if (argon) cost.push("--pbkdf-memory", String(pbkdf.memoryKiB), "--pbkdf-parallel", String(pbkdf.parallel));
    const hdr = headerPath ? ["--header", headerPath] : [];
    await run([
      "luksFormat",
      "--batch-mode",
      "--type",
      opts.type,
      ...cost,
      ...hdr,
      ...(opts.uuid ? ["--uuid", opts.uuid] : []),
      "--key-file",
      keyFile,
      path,
    ]);
    for (const [i, extra] of (opts.extraPassphrases ?? []).entries()) {
      const newKey = join(dir, `key${i + 1}`);
      await Deno.writeFile(newKey, extra, { mode: 0o600 });
      await run(["luksAddKey", "--batch-mode", ...cost, ...hdr, "--key-file", keyFile, path, newKey]);
    }
    const uuid = await run(["luksUUID", ...(headerPath ? [headerPath] : [path])]);
    return {
      path,
      headerPath,
      dir,
      uuid,
      keyFile,
      pbkdf,
      async [Symbol.asyncDispose]() {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

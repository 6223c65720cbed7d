/**
 * @module
 * LUKS2 tokens with a PIN (systemd's TPM2 and FIDO2; PKCS#11 is declined, discovery/token_types.ts) after wake. Their plugins and the libraries those load
 * later with dlopen(3) live on the disk that will be locked, so everything is loaded before the pin: libcryptsetup
 * loads a token's plugin when asked what the token is (`crypt_token_status`), and the libraries its code declares in
 * `.note.dlopen` (systemd's convention) for the token's feature are loaded here by soname. A later dlopen(3) of the
 * same soname then finds them in memory, pinned with everything else. A token without a PIN would unlock with
 * nobody at the machine: it is used after wake only with `--token-without-pin` (discovery warns of it).
 *
 * @example
 * ```ts
 * import type { Job } from "./job.ts";
 * import { Libcryptsetup } from "../ffi/libcryptsetup.ts";
 * import { loadTokenSupport } from "./tokens.ts";
 *
 * declare const job: Job; // from preflight
 * const loaded = loadTokenSupport(Libcryptsetup.open(), job, (m) => console.log(m));
 * console.log(loaded.libraries); // ["libtss2-esys.so.0", …] for a TPM2 token
 * ```
 */
import { CryptDevice, type Libcryptsetup } from "../ffi/libcryptsetup.ts";
import type { LuksToken, Volume } from "../discovery/mod.ts";
import { tokenType } from "../discovery/token_types.ts";
import { readElf } from "../host/elf.ts";
import { isFileMapping, readMaps } from "../host/maps.ts";
import type { Job } from "./job.ts";
import { detachedHeader } from "./lock.ts";
import { messages } from "./errors.ts";

/** Libraries loaded for tokens, by soname: kept open for the process's life (and its next cycles, kept mode). */
const held = new Map<string, Deno.DynamicLibrary<Record<string, never>>>();
/** Token types whose plugin this process loaded. */
const usable = new Set<string>();

/**
 * The tokens of `volume` the unlock uses, whose plugin this process loaded before the pin: those with a PIN, and
 * with `withoutPin` (`--token-without-pin`) those without one, first.
 */
export function usableTokens(volume: Volume, withoutPin = false): LuksToken[] {
  const tokens = (volume.tokens ?? []).filter((t) => (t.pin || withoutPin) && usable.has(t.type));
  return [...tokens.filter((t) => !t.pin), ...tokens.filter((t) => t.pin)];
}

/** What {@linkcode loadTokenSupport} loaded, and what it could not. */
export interface TokenSupport {
  /** Sonames loaded for the tokens' plugins. */
  libraries: string[];
  /** What is missing, said as what to install or do; those tokens are not used (the passphrase is asked for). */
  problems: string[];
}

/**
 * Loads every plugin and library the PIN tokens of `job`'s volumes need, before the pin. Best effort: a token whose
 * plugin or libraries are missing is left out (its volume's passphrase is asked for), and said in `problems`.
 */
export function loadTokenSupport(lib: Libcryptsetup, job: Job, log: (m: string) => void): TokenSupport {
  const out: TokenSupport = { libraries: [], problems: [] };
  for (const v of job.plan.lock) {
    const tokens = v.tokens.filter((t) => (t.pin || job.options.tokenWithoutPin) && tokenType(t.type));
    if (!tokens.length) continue;
    try {
      using device = CryptDevice.initByName(lib, v.dmName, detachedHeader(job, v));
      for (const t of tokens) {
        const status = device.tokenStatus(t.id);
        if (status === "external") usable.add(t.type);
        else {
          out.problems.push(
            `${v.dmName}: no plugin for its ${t.type} token ${t.id} (${status}): install systemd-cryptsetup`,
          );
        }
      }
    } catch (err) {
      out.problems.push(`${v.dmName}: its tokens: ${messages(err).join("; ")}`);
    }
  }
  if (!usable.size) return out;
  const wanted = [...usable].map((t) => tokenType(t)!);
  const features = new Set(wanted.flatMap((w) => w.features));
  const entries: string[][] = wanted.flatMap((w) => w.also.map((s) => [s]));
  // what the loaded code (the plugins and the libraries they link) declares it will dlopen
  const files = new Set(readMaps().filter(isFileMapping).map((m) => m.path).filter((p) => /\.so(\.|$)/.test(p)));
  for (const file of files) {
    for (const e of readElf(file)?.dlopen ?? []) if (features.has(e.feature)) entries.push(e.soname);
  }
  for (const alternatives of entries) {
    const name = alternatives.find((soname) => out.libraries.includes(soname) || load(soname));
    if (name) {
      if (!out.libraries.includes(name)) out.libraries.push(name);
    } else out.problems.push(`cannot load ${alternatives.join(" or ")} for ${[...usable].join(", ")} tokens`);
  }
  log(`token support loaded: ${out.libraries.join(", ") || "nothing"}`);
  return out;
}

function load(soname: string): boolean {
  if (held.has(soname)) return true;
  try {
    held.set(soname, Deno.dlopen(soname, {}));
    return true;
  } catch {
    return false;
  }
}

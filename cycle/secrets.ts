/**
 * @module
 * Passphrases typed during one unlock: each lives in its own `crypt_safe_alloc` buffer, is kept and tried on every
 * volume still locked (one passphrase usually opens them all; one typed at the wrong volume's prompt opens the
 * right one later), and is zeroed and freed when the unlock ends or before the machine sleeps again.
 * None ever becomes a JS string.
 *
 * @example
 * ```ts
 * import { Secrets } from "./secrets.ts";
 * import { Console } from "../ffi/tty.ts";
 * import { CryptDevice, Libcryptsetup } from "../ffi/libcryptsetup.ts";
 *
 * using con = Console.open("/dev/ttyS0");
 * using secrets = new Secrets(con);
 * const s = await secrets.ask("Passphrase for root: ");
 * using device = CryptDevice.initByName(Libcryptsetup.open(), "root");
 * await device.resumeByPassphrase("root", -1, s.buffer, s.length);
 * secrets.keep(s); // tried on the next volume, zeroed with the others
 * ```
 */
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import type { Consoles } from "./consoles.ts";

/** Longest passphrase accepted, as cryptsetup's own default (512 chars + newline). */
export const MAX_PASSPHRASE = 513;

/** One passphrase as typed. */
export interface Secret {
  /** Its bytes, in `crypt_safe_alloc` memory. */
  buffer: SafeBuffer;
  /** How many bytes of `buffer` were typed. */
  length: number;
  /** The only keyslot to try (a key file's `keyslot=` or the one it opened before); default every one. */
  keyslot?: number;
  /** The keyslot it opened, once it did. */
  opened?: number;
}

/** The passphrases typed during one unlock; each that opened a volume is tried on every volume still locked. */
export class Secrets implements Disposable {
  /** Typed so far and kept, oldest first; each is different. */
  readonly entered: Secret[] = [];
  /** `console`: where {@linkcode Secrets.ask} prompts. */
  constructor(readonly console: Pick<Consoles, "readSecret">) {}

  /**
   * Prompts on the console; the typed bytes go straight into safe memory, the caller's to keep or dispose. Esc, or nothing typed within `idleMs`,
   * throws `PromptLeft` (ffi/tty.ts); `signal` aborts the prompt (what was typed is dropped, zeroed).
   */
  async ask(prompt: string, idleMs?: number, signal?: AbortSignal): Promise<Secret> {
    const buffer = SafeBuffer.alloc(MAX_PASSPHRASE);
    try {
      // the prompt is written once echo is off and old input flushed: what is typed after it is kept
      const length = await this.console.readSecret(buffer, { prompt, idleMs, signal });
      return { buffer, length };
    } catch (err) {
      buffer[Symbol.dispose]();
      throw err;
    }
  }

  /**
   * Keeps a passphrase typed at a prompt, to try it on the volumes after this one; {@linkcode Secrets.forget} zeroes
   * it. One typed again is zeroed at once (the copy kept is tried), so a passphrase costs one key derivation per
   * volume however often it was typed.
   */
  keep(secret: Secret): void {
    const typed = secret.buffer.view();
    const again = this.entered.find((s) =>
      s.length === secret.length && s.buffer.view().subarray(0, s.length).every((b, i) => b === typed[i])
    );
    if (again) {
      secret.buffer[Symbol.dispose]();
      this.entered.splice(this.entered.indexOf(again), 1);
      this.entered.push(again);
    } else this.entered.push(secret);
  }

  /** The kept passphrases in the order to try them on the next volume: the last typed first. */
  tryOrder(): Secret[] {
    return [...this.entered].reverse();
  }

  /** Zeroes and frees every passphrase kept so far; later prompts start afresh. */
  forget(): void {
    for (const s of this.entered.splice(0)) s.buffer[Symbol.dispose]();
  }

  /** Same as {@linkcode Secrets.forget}. */
  [Symbol.dispose](): void {
    this.forget();
  }
}

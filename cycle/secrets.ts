/**
 * @module
 * Passphrases typed during one unlock: each lives in its own `crypt_safe_alloc` buffer, is tried on every
 * volume still locked (one passphrase usually opens them all), and is zeroed and freed when the unlock ends.
 * None ever becomes a JS string.
 *
 * @example
 * ```ts ignore
 * using secrets = new Secrets(console);
 * const s = await secrets.ask("Passphrase for root: ");
 * await device.resumeByPassphrase("root", -1, s.buffer, s.length);
 * ```
 */
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import type { Console } from "../ffi/tty.ts";

/** Longest passphrase accepted, as cryptsetup's own default (512 chars + newline). */
export const MAX_PASSPHRASE = 513;

export interface Secret {
  buffer: SafeBuffer;
  length: number;
}

export class Secrets implements Disposable {
  readonly entered: Secret[] = [];
  constructor(readonly console: Console) {}

  /** Prompts on the console; the typed bytes go straight into safe memory. */
  async ask(prompt: string): Promise<Secret> {
    const buffer = SafeBuffer.alloc(MAX_PASSPHRASE);
    try {
      // the prompt is written once echo is off and old input flushed: what is typed after it is kept
      const length = await this.console.readSecret(buffer, { prompt });
      const secret = { buffer, length };
      this.entered.push(secret);
      return secret;
    } catch (err) {
      buffer[Symbol.dispose]();
      throw err;
    }
  }

  /** Zeroes and frees every passphrase typed so far; later prompts start afresh. */
  forget(): void {
    for (const s of this.entered.splice(0)) s.buffer[Symbol.dispose]();
  }

  [Symbol.dispose](): void {
    this.forget();
  }
}

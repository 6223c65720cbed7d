/**
 * @module
 * The headers of the volumes after the first, read while the wake's first prompt is up: the person types, the CPU
 * idles, and after Enter each of those volumes goes straight to its try (issue #12: Enter → unlocked, ≤ 5 % beyond
 * the key derivation). Each one read ahead passed, first, the checks its turn would make: its disks are there, answer
 * a read at once and still hold its header. Anything in doubt (a disk slow or gone, a detached header, a device
 * below still locked, a loop device below) is not read ahead: its turn checks it (its disk answers a read then too),
 * and says why. A sleep again from the prompt stops the reads ahead and waits for the one under way first; a disk
 * that did not answer within 2 s keeps its read under way, and while it is, Esc at the first prompt does not suspend
 * again (ask.ts: the kernel would freeze that disk's queue with the read in it).
 *
 * @example
 * ```ts
 * import type { AgentContext } from "./context.ts";
 * import type { Volume } from "../discovery/mod.ts";
 * import { ReadAhead } from "./read_ahead.ts";
 *
 * export async function unlockRest(ctx: AgentContext, rest: Volume[]): Promise<void> {
 *   using ahead = new ReadAhead(ctx, rest);
 *   for (const volume of rest) {
 *     using device = await ahead.take(volume); // null: open it as usual
 *     console.log(volume.dmName, device ? "read ahead" : "read now");
 *   }
 * }
 * ```
 */
import { CryptDevice } from "../ffi/libcryptsetup.ts";
import type { Volume } from "../discovery/mod.ts";
import type { AgentContext } from "./context.ts";
import { goneOf, isRetired, slavesOf } from "./gone.ts";
import { detachedHeader } from "./lock.ts";
import { answersNow } from "./wake_checks.ts";

/** After the first prompt is written (it comes ≤ 100 ms after the wake), before anyone can have typed much. */
const START_MS = 250;

/** The locked volume's header, read by libcryptsetup; the kernel keyring is not used for its key. */
export function openDevice(ctx: AgentContext, volume: Volume): CryptDevice {
  const device = CryptDevice.initByName(ctx.lib, volume.dmName, detachedHeader(ctx.job, volume));
  try {
    device.setKeyring(false);
  } catch (err) {
    device[Symbol.dispose]();
    throw err;
  }
  return device;
}

/**
 * Whether a loop device is anywhere under `kname`: its file may live on a volume still locked (an image file on the
 * root), where a read would wait until that unlock, and sysfs does not show it.
 */
function loopBelow(kname: string): boolean {
  return slavesOf(kname).some((s) => /^loop\d+$/.test(s) || loopBelow(s));
}

/** The reads ahead going on: a sleep again stops them first ({@linkcode settleReadsAhead}). */
const running = new Set<ReadAhead>();

/**
 * Stops every read ahead and waits for the one under way (a probe ends within 2 s, a header read is short): a sleep
 * again must not lock a volume under a header read, nor start it with a new probe of a silent disk in flight.
 */
export async function settleReadsAhead(): Promise<void> {
  await Promise.all([...running].map((ahead) => ahead.settle()));
}

/** Headers read ahead, one after the other; dispose drops those not taken. */
export class ReadAhead implements Disposable {
  #devices = new Map<string, Promise<CryptDevice | null>>();
  #stopped = false;
  #last: Promise<unknown> = Promise.resolve();

  /** Starts reading the headers of `volumes` (in order) after {@linkcode START_MS}; none in the recovery. */
  constructor(ctx: AgentContext, volumes: Volume[]) {
    if (ctx.recovery) return;
    let previous: Promise<unknown> = new Promise((r) => setTimeout(r, START_MS));
    for (const volume of volumes) {
      const device = previous.then(() => this.#read(ctx, volume)).catch((err) => {
        ctx.log(`read ahead ${volume.dmName}: ${err instanceof Error ? err.message : err}`);
        return null;
      });
      this.#devices.set(volume.dmName, device);
      previous = device;
    }
    this.#last = previous;
    running.add(this);
  }

  /** Stops reading ahead; resolves once the read under way, if any, is over. */
  async settle(): Promise<void> {
    this.#stopped = true;
    await this.#last.catch(() => {});
  }

  async #read(ctx: AgentContext, volume: Volume): Promise<CryptDevice | null> {
    if (this.#stopped || isRetired(volume.dmName) || volume.header.detached || loopBelow(volume.kname)) return null;
    // answersNow is false too for a volume not locked, swapped, or with a locked device below
    if (goneOf(volume).length || !await answersNow(volume) || this.#stopped) return null;
    const device = openDevice(ctx, volume);
    if (!this.#stopped) return device;
    device[Symbol.dispose]();
    return null;
  }

  /**
   * The volume's header read ahead (waiting for a read under way), or null: then its turn reads it. Taken once;
   * the caller disposes it.
   */
  async take(volume: Volume): Promise<CryptDevice | null> {
    const device = this.#devices.get(volume.dmName);
    this.#devices.delete(volume.dmName);
    return device ? await device : null;
  }

  /** Stops reading ahead and drops what was read and not taken. */
  [Symbol.dispose](): void {
    this.#stopped = true;
    running.delete(this);
    for (const device of this.#devices.values()) device.then((d) => d?.[Symbol.dispose]());
    this.#devices.clear();
  }
}

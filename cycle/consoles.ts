/**
 * @module
 * Where the prompts go: one terminal, or several at once (a VT of its own and the serial console the kernel's
 * `console=` names). Every message goes to each; a prompt is up on each and the first line typed on any wins, the
 * others drop what was typed there, zeroed. A terminal that hangs up is left out, and the rest go on.
 *
 * @example
 * ```ts
 * import { Consoles } from "./consoles.ts";
 * import { SafeBuffer } from "../ffi/safe_buffer.ts";
 *
 * using consoles = Consoles.open([{ path: "/dev/tty8", previousVt: 1 }, { path: "/dev/ttyS0" }]);
 * using answer = SafeBuffer.alloc(513);
 * const n = await consoles.readSecret(answer, { prompt: "Passphrase: " }); // typed on either
 * console.log(n);
 * ```
 */
import { Console, PromptLeft, type ReadSecretOptions } from "../ffi/tty.ts";
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import { SysError } from "../ffi/errors.ts";
import { basename, dirname } from "../host/path.ts";
import { exists } from "../host/paths.ts";

/** A terminal as the supervisor opens it again: its path, and for a VT of its own the VT to bring back. */
export interface ConsoleRef {
  /** `/dev/ttyS0`, `/dev/tty8`. */
  path: string;
  /** For the VT cryptsleep allocated: the VT that was in front before. */
  previousVt?: number;
}

/** Several terminals used as one. Dispose disposes each (a VT of its own brings the old VT back). */
export class Consoles implements Disposable {
  readonly #members: Console[];
  /** Members that hung up or failed: left out of prompts and messages. */
  readonly #gone = new Set<Console>();
  /** Between reads every terminal stays in the secret line mode ({@linkcode Console.keepQuiet}). */
  #quiet = false;

  /** Where each terminal hangs off in sysfs ({@linkcode ttyPlace}), read while it answers: found again by it. */
  readonly #places = new Map<Console, TtyPlace | null>();
  /** Where sysfs is (a test gives a tree of its own). */
  readonly #sys: string;

  /** `members`: the first is the main one (named first in messages). At least one. */
  constructor(members: Console[], sys = "/sys") {
    if (!members.length) throw new Error("Consoles: no terminal");
    this.#members = members;
    this.#sys = sys;
    for (const c of members) if (c.vt === null) this.#places.set(c, ttyPlace(c.path, sys));
  }

  /** Opens each of `refs`; one that cannot be opened is left out, unless none can. */
  static open(refs: ConsoleRef[]): Consoles {
    const opened: Console[] = [];
    const errors: unknown[] = [];
    for (const ref of refs) {
      try {
        opened.push(ref.previousVt ? Console.openVt(ref.path, ref.previousVt) : Console.open(ref.path));
      } catch (err) {
        errors.push(err);
      }
    }
    if (!opened.length) throw errors.length === 1 ? errors[0] : new AggregateError(errors, "no console opens");
    return new Consoles(opened);
  }

  /** What the supervisor needs to open the same terminals. */
  get refs(): ConsoleRef[] {
    return this.#members.map((c) => c.previousVt ? { path: c.path, previousVt: c.previousVt } : { path: c.path });
  }

  /** Their paths, for messages. */
  get path(): string {
    return this.#members.map((c) => c.path).join(" and ");
  }

  /** The members still answering. */
  get live(): Console[] {
    return this.#members.filter((c) => !this.#gone.has(c));
  }

  /** Every terminal hung up, and one that can come back is among them (not a VT: those are not opened again). */
  get awaitingReturn(): boolean {
    return this.live.length === 0 && [...this.#gone].some((c) => c.vt === null);
  }

  /** Writes on each; throws only when it reached none. */
  write(text: string): void {
    this.#each((c) => c.write(text));
  }

  /** {@linkcode Console.keepQuiet} on each. */
  keepQuiet(on: boolean): void {
    this.#quiet = on;
    this.#each((c) => c.keepQuiet(on));
  }

  /** {@linkcode Console.holdSwitch} on each (a VT's; nothing on others). */
  holdSwitch(): void {
    for (const c of this.live) c.holdSwitch();
  }

  /** {@linkcode Console.releaseSwitch} on each. */
  releaseSwitch(): void {
    for (const c of this.#members) c.releaseSwitch();
  }

  /**
   * {@linkcode Console.readSecret} on every live terminal at once; the first line wins and is copied into `buf`
   * (C memory to C memory). Esc on any leaves ({@linkcode PromptLeft}); "idle" only once every terminal is idle, so
   * somebody typing at one is not cut off by another nobody uses. A terminal that fails (hangs up) is left out; the
   * error is thrown only when none is left.
   */
  async readSecret(buf: SafeBuffer, opts: ReadSecretOptions = {}): Promise<number> {
    await this.#revive();
    const live = this.live;
    if (!live.length) {
      throw new SysError("read", 5, {
        subject: this.path,
        hint: "every console hung up; waiting for one to come back",
      });
    }
    if (live.length === 1) return await this.#readOne(live[0], buf, opts);
    const stop = new AbortController();
    const outer = () => stop.abort(opts.signal?.reason);
    opts.signal?.addEventListener("abort", outer, { once: true });
    const own = live.map(() => SafeBuffer.alloc(buf.size));
    type Result = { i: number; n: number; ok: true } | { i: number; err: unknown; ok: false };
    const pending = new Map<number, Promise<Result>>();
    live.forEach((c, i) => {
      const read = c.readSecret(own[i], { ...opts, signal: stop.signal });
      pending.set(i, read.then((n): Result => ({ i, n, ok: true }), (err): Result => ({ i, err, ok: false })));
    });
    let idle = false;
    let failure: unknown;
    try {
      opts.signal?.throwIfAborted();
      while (pending.size) {
        const r = await Promise.race(pending.values());
        pending.delete(r.i);
        if (r.ok) {
          buf.view().set(own[r.i].view().subarray(0, r.n));
          return r.n;
        }
        if (r.err instanceof PromptLeft && r.err.why === "idle") idle = true;
        else if (r.err instanceof SysError && !stop.signal.aborted) {
          this.#gone.add(live[r.i]);
          failure = r.err;
        } else throw r.err; // Esc, a line too long, an abort
      }
      throw idle ? new PromptLeft("idle") : failure;
    } finally {
      // the others stop and drop what was typed on them, zeroed
      stop.abort();
      await Promise.all(pending.values());
      opts.signal?.removeEventListener("abort", outer);
      for (const b of own) b[Symbol.dispose]();
    }
  }

  /**
   * Opens again a terminal that hung up: a USB serial adapter re-enumerated at resume, or unplugged and plugged in
   * again. It is closed first: while its old file is open the adapter's number stays taken, and it comes back under
   * another name (ttyUSB1 for ttyUSB0, seen on the bed). Found by where it hangs off, or by what it is when plugged
   * into another socket ({@linkcode terminalNow}); devtmpfs makes the node, udev is not needed. A VT is left as it is.
   */
  async #revive(): Promise<void> {
    for (const old of [...this.#gone]) {
      // a VT of its own is not opened again as a plain terminal: disposing the old one would switch the screen away
      if (old.vt !== null) continue;
      old[Symbol.dispose](); // idempotent
      const place = this.#places.get(old) ?? null;
      const path = await terminalNow(old.path, place, this.#sys);
      if (!path) continue; // not back yet
      try {
        const fresh = Console.open(path);
        if (this.#quiet) fresh.keepQuiet(true);
        this.#members[this.#members.indexOf(old)] = fresh;
        this.#places.set(fresh, place);
        this.#gone.delete(old);
      } catch { /* not back yet */ }
    }
  }

  async #readOne(c: Console, buf: SafeBuffer, opts: ReadSecretOptions): Promise<number> {
    try {
      return await c.readSecret(buf, opts);
    } catch (err) {
      if (err instanceof SysError) this.#gone.add(c); // the next prompt opens it again if it came back
      throw err;
    }
  }

  #each(fn: (c: Console) => void): void {
    const errors: unknown[] = [];
    const live = this.live;
    if (!live.length) {
      throw new SysError("write", 5, {
        subject: this.path,
        hint: "every console hung up; waiting for one to come back",
      });
    }
    for (const c of live) {
      try {
        fn(c);
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === live.length) {
      throw errors.length === 1 ? errors[0] : new AggregateError(errors, `no console took it: ${this.path}`);
    }
  }

  /** Disposes each terminal. */
  [Symbol.dispose](): void {
    for (const c of this.#members) c[Symbol.dispose]();
  }
}

/** Where a terminal hangs off in sysfs, to find it again under another name ({@linkcode terminalNow}). */
export interface TtyPlace {
  /**
   * For a USB serial adapter's port (`/sys/class/tty/ttyUSB0/device` is a device named after the tty) the interface
   * it is on, the same when the adapter is re-enumerated in the same socket; else the device itself.
   */
  port: string;
  /** For a USB adapter, `vendor:product` of its USB device; else null. */
  usb: string | null;
  /** For a USB adapter that has one, its serial number; else null. */
  serial: string | null;
}

/** Where terminal `path` hangs off; null when sysfs says nothing (a pty, a VT). */
export function ttyPlace(path: string, sys = "/sys"): TtyPlace | null {
  try {
    return placeOf(basename(Deno.realPathSync(path)), sys);
  } catch {
    return null;
  }
}

function placeOf(name: string, sys: string): TtyPlace {
  const dev = Deno.realPathSync(`${sys}/class/tty/${name}/device`);
  const port = basename(dev) === name ? dirname(dev) : dev;
  const read = (f: string) => Deno.readTextFileSync(`${dirname(port)}/${f}`).trim();
  let usb: string | null = null, serial: string | null = null;
  try {
    usb = `${read("idVendor")}:${read("idProduct")}`;
    serial = read("serial") || null;
  } catch { /* not on USB, or no serial number: a cheap adapter */ }
  return { port, usb, serial };
}

/**
 * The `/dev` path of the terminal at `place` now: `path` while it is still there (or, with no place known, while it
 * exists); else the terminal sysfs shows at the same port; else, for a USB adapter plugged into another socket, the
 * one with its serial number, or the only one of its vendor and product; null when there is none yet (or several
 * that could be it).
 */
export async function terminalNow(path: string, place: TtyPlace | null, sys = "/sys"): Promise<string | null> {
  if (place === null) return await exists(path) ? path : null;
  if (ttyPlace(path, sys)?.port === place.port) return path;
  let names: string[];
  try {
    names = [...Deno.readDirSync(`${sys}/class/tty`)].map((e) => e.name);
  } catch {
    return null;
  }
  const places = names.flatMap((name) => {
    try {
      return [{ name, at: placeOf(name, sys) }];
    } catch {
      return []; // no device: a virtual terminal
    }
  });
  const same = places.filter((p) => place.usb !== null && p.at.usb === place.usb);
  const found = places.find((p) => p.at.port === place.port) ??
    (place.serial !== null ? same.find((p) => p.at.serial === place.serial) : undefined) ??
    // a serial number that changed with the socket (QEMU's does) or none: the only adapter of its kind
    (same.length === 1 ? same[0] : undefined);
  return found ? `/dev/${found.name}` : null;
}

/**
 * The serial (non-VT) consoles the kernel writes to (`/sys/class/tty/console/active`: `console=ttyS0` and the
 * like), as `/dev` paths; VTs (`tty0`, `ttyN`) are left out: the prompt has a VT of its own.
 */
export function kernelSerialConsoles(sys = "/sys"): string[] {
  let active: string;
  try {
    active = Deno.readTextFileSync(`${sys}/class/tty/console/active`);
  } catch {
    return [];
  }
  return active.trim().split(/\s+/).filter((n) => n && !/^tty\d*$/.test(n)).map((n) => `/dev/${n}`);
}

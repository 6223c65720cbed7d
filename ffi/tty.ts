/**
 * The unlock prompt's terminal: a serial/tty path or a freshly allocated virtual console, with echo turned off while
 * a secret is read byte by byte straight into {@linkcode SafeBuffer} memory (never a JS string or array copy).
 *
 * VT switching: `allocateVt` finds a free VT (VT_OPENQRY), activates it (VT_ACTIVATE) and waits a bounded time for
 * it to become active by polling VT_GETSTATE instead of VT_WAITACTIVE, which can wait forever when the current VT's
 * owner (a display server in VT_PROCESS mode) is frozen.
 *
 * @example
 * ```ts
 * import { Console } from "./tty.ts";
 * import { SafeBuffer } from "./safe_buffer.ts";
 *
 * using con = Console.open("/dev/ttyS0");
 * using pass = SafeBuffer.alloc(512);
 * con.write("Passphrase for cryptroot: ");
 * const length = await con.readSecret(pass); // echo off; restored afterwards, also on error
 * ```
 *
 * @module
 */

import { SysError } from "./errors.ts";
import {
  closeFd,
  errno,
  eventFd,
  ioctlInt,
  ioctlPtr,
  libcSymbols,
  O_CLOEXEC,
  O_NOCTTY,
  O_RDWR,
  openFd,
  signalEventFd,
} from "./libc.ts";
import { SafeBuffer } from "./safe_buffer.ts";

// <linux/vt.h>
const VT_OPENQRY = 0x5600;
const VT_GETSTATE = 0x5603;
const VT_ACTIVATE = 0x5606;
const VT_DISALLOCATE = 0x5608;
const VT_LOCKSWITCH = 0x560b;
const VT_UNLOCKSWITCH = 0x560c;

// <termios.h> (glibc, Linux x86_64/aarch64): struct termios is 60 bytes.
const TERMIOS_SIZE = 60;
const IFLAG_OFFSET = 0;
const LFLAG_OFFSET = 12;
const CC_OFFSET = 17;
// c_cc slots; 0 (_POSIX_VDISABLE) turns one off
const VINTR = 0, VQUIT = 1, VERASE = 2, VKILL = 3, VEOF = 4, VTIME = 5, VMIN = 6, VSWTC = 7, VSUSP = 10, VEOL = 11;
const VREPRINT = 12;
const VDISCARD = 13, VWERASE = 14, VLNEXT = 15, VEOL2 = 16;
// c_iflag
const INLCR = 0o100;
const IGNCR = 0o200;
const ICRNL = 0o400;
const ISTRIP = 0o40;
const IXON = 0o2000;
// c_lflag
const ISIG = 0o1;
const ICANON = 0o2;
const ECHO = 0o10;
const ECHOE = 0o20;
const ECHOK = 0o40;
const ECHONL = 0o100;
const IEXTEN = 0o100000;
const TCSANOW = 0;
const POLLIN = 1;
const POLLERR = 8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;

const ESC = 0x1b;
// Where the prompt is in an escape sequence (ECMA-48; what arrows, Home, Delete, F-keys send): Esc, then "[" (CSI)
// or "O" (SS3), then parameter (0x30-0x3F) and intermediate (0x20-0x2F) bytes, then one final byte (0x40-0x7E).
/** Not in one. */
const SEQ_NONE = 0;
/** Esc read; nothing after it yet. Alone, it means "leave the prompt". */
const SEQ_ESC = 1;
/** Esc [. */
const SEQ_CSI = 2;
/** Esc O, or parameter or intermediate bytes read: more of them, or the final byte. */
const SEQ_BODY = 3;
/** Esc [ [: the Linux console's F1-F5 (Esc [ [ A .. E); one final byte. */
const SEQ_FKEY = 4;
/** How long the rest of an escape sequence may take after its Esc: a terminal sends a key's bytes together. */
const ESCAPE_MS = 100;

/** The state after byte `c` in escape-sequence state `seq`: SEQ_NONE when `c` ended it, -1 when `c` is not of it. */
function sequenceStep(seq: number, c: number): number {
  if (seq === SEQ_ESC) return c === 0x5b ? SEQ_CSI : c === 0x4f ? SEQ_BODY : -1;
  if (seq === SEQ_CSI && c === 0x5b) return SEQ_FKEY;
  if (seq !== SEQ_FKEY && c >= 0x20 && c <= 0x3f) return SEQ_BODY;
  return c >= 0x40 && c <= 0x7e ? SEQ_NONE : -1;
}

/** open(2): never wait, for the open (a serial line's carrier) nor for a write (flow control). */
const O_NONBLOCK = 0o4000;
/** How long {@linkcode Console.write} waits for a stuck terminal before it drops the rest. */
const WRITE_WAIT_MS = 200;

/** A termios snapshot (opaque bytes) with the local-mode flags exposed. */
class Termios {
  /** The raw `struct termios`. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** A snapshot over `bytes` (zeroed by default, for tcgetattr to fill). */
  constructor(bytes: Uint8Array<ArrayBuffer> = new Uint8Array(TERMIOS_SIZE)) {
    this.bytes = bytes;
  }
  /** c_iflag. */
  get iflag(): number {
    return new DataView(this.bytes.buffer).getUint32(IFLAG_OFFSET, true);
  }
  set iflag(v: number) {
    new DataView(this.bytes.buffer).setUint32(IFLAG_OFFSET, v >>> 0, true);
  }
  /** c_lflag. */
  get lflag(): number {
    return new DataView(this.bytes.buffer).getUint32(LFLAG_OFFSET, true);
  }
  set lflag(v: number) {
    new DataView(this.bytes.buffer).setUint32(LFLAG_OFFSET, v >>> 0, true);
  }
  /** Set a c_cc slot. */
  setCc(index: number, value: number): void {
    this.bytes[CC_OFFSET + index] = value;
  }
  /** An independent copy. */
  clone(): Termios {
    return new Termios(this.bytes.slice());
  }
}

/** tcgetattr(3). */
function getTermios(fd: number): Termios {
  const t = new Termios();
  if (libcSymbols().tcgetattr(fd, t.bytes) < 0) throw new SysError("tcgetattr", errno(), { subject: `fd ${fd}` });
  return t;
}

/**
 * tcsetattr(3) with TCSANOW: never TCSADRAIN or TCSAFLUSH, which wait for the output to drain, forever on a serial
 * line held by flow control or a USB adapter that does not come back.
 */
function setTermios(fd: number, t: Termios): void {
  if (libcSymbols().tcsetattr(fd, TCSANOW, t.bytes) < 0) {
    throw new SysError("tcsetattr", errno(), { subject: `fd ${fd}` });
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Options for {@linkcode Console.readSecret}. */
export interface ReadSecretOptions {
  /** Abort the read: at once, even in the middle of a poll. */
  signal?: AbortSignal;
  /** Poll interval in ms (default 200). */
  pollMs?: number;
  /** Write a newline after the secret (echo is off, so the user's Enter shows nothing). Default true. */
  newline?: boolean;
  /** Written after echo is off and pending input flushed, so nothing typed after it is lost. */
  prompt?: string;
  /** Give up with {@linkcode PromptLeft} ("idle") when no line came this long after the prompt. */
  idleMs?: number;
  /**
   * How long the rest of an escape sequence (an arrow, Delete, Home, an F-key) may take to come after its Esc
   * (default 100 ms): what comes is dropped and the line goes on; Esc with nothing after it leaves the prompt.
   */
  escapeMs?: number;
}

/** The prompt was left without a line: Esc was pressed, or nothing came within `idleMs`. */
export class PromptLeft extends Error {
  /** `why`: "escape" or "idle". */
  constructor(readonly why: "escape" | "idle") {
    super(why === "escape" ? "Esc at the prompt" : "nothing typed at the prompt");
    this.name = "PromptLeft";
  }
}

/** A terminal for prompts. Dispose restores its termios, unlocks VT switching and returns to the previous VT. */
export class Console implements Disposable {
  /** The terminal's fd (O_RDWR, O_NOCTTY). */
  readonly fd: number;
  /** Its path. */
  readonly path: string;
  /** The VT number when allocated by {@linkcode allocateVt}. */
  readonly vt: number | null;
  /** The VT that was active before {@linkcode allocateVt}. */
  readonly previousVt: number | null;
  /** For {@linkcode allocateVt}: whether the VT came to the front within the wait (VT switching may be locked). */
  switched = true;
  #consoleFd: number | null;
  /** It took VT switching ({@linkcode holdSwitch}) and has not let go yet: dispose lets go. */
  #holding = false;
  /** Between reads the terminal stays in the secret line mode ({@linkcode keepQuiet}). */
  #quiet = false;
  /** It allocated its VT (and deallocates it at dispose). */
  #allocated = false;
  #saved: Termios;
  #reading = false;
  /** An eventfd polled beside the terminal while a read with a signal runs; its abort makes it readable (-1: none). */
  #wake = -1;
  #closed = false;

  private constructor(fd: number, path: string, consoleFd: number | null, vt: number | null, prev: number | null) {
    this.fd = fd;
    this.path = path;
    this.#consoleFd = consoleFd;
    this.vt = vt;
    this.previousVt = prev;
    this.#saved = getTermios(fd);
  }

  /** Open a terminal path ("/dev/ttyS0", "/dev/tty8", a pty slave). */
  static open(path: string): Console {
    const fd = openFd(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    try {
      return new Console(fd, path, null, null, null);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /**
   * Open the VT another process allocated and keeps in front ({@linkcode allocateVt}): {@linkcode releaseSwitch}
   * works on it, and dispose brings `previousVt` back, as the allocating process would (it may have died).
   */
  static openVt(path: string, previousVt: number, consolePath = "/dev/tty0"): Console {
    const vt = Number(/^\/dev\/tty(\d+)$/.exec(path)?.[1]);
    if (!vt) throw new SysError("open", 22, { subject: path, hint: "not a virtual console (/dev/ttyN)" });
    const fd = openFd(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    let cfd = -1;
    try {
      cfd = openFd(consolePath, O_RDWR | O_NOCTTY | O_CLOEXEC);
      return new Console(fd, path, cfd, vt, previousVt);
    } catch (e) {
      closeFd(fd);
      if (cfd >= 0) closeFd(cfd);
      throw e;
    }
  }

  /** The first free virtual console (VT_OPENQRY) without allocating or switching to it. */
  static queryFreeVt(consolePath = "/dev/tty0"): number | null {
    const cfd = openFd(consolePath, O_RDWR | O_NOCTTY | O_CLOEXEC);
    try {
      const q = new Int32Array(1);
      ioctlPtr(cfd, VT_OPENQRY, new Uint8Array(q.buffer), "VT_OPENQRY");
      return q[0] > 0 ? q[0] : null;
    } finally {
      closeFd(cfd);
    }
  }

  /**
   * Allocate a free virtual console and switch to it, remembering the active one. Waits up to `waitMs` (default
   * 2000) for the switch ({@linkcode Console.switched} says whether it came).
   */
  static allocateVt(opts: { consolePath?: string; waitMs?: number } = {}): Console {
    const consolePath = opts.consolePath ?? "/dev/tty0";
    const cfd = openFd(consolePath, O_RDWR | O_NOCTTY | O_CLOEXEC);
    let fd = -1;
    try {
      const prev = activeVt(cfd);
      const q = new Int32Array(1);
      ioctlPtr(cfd, VT_OPENQRY, new Uint8Array(q.buffer), "VT_OPENQRY");
      const n = q[0];
      if (n <= 0) {
        throw new SysError("ioctl(VT_OPENQRY)", 16, { subject: consolePath, hint: "no free virtual console" });
      }
      const path = `/dev/tty${n}`;
      fd = openFd(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
      const con = new Console(fd, path, cfd, n, prev);
      ioctlInt(cfd, VT_ACTIVATE, n, "VT_ACTIVATE");
      const until = Date.now() + (opts.waitMs ?? 2000);
      while (activeVt(cfd) !== n && Date.now() < until) sleepSync(10);
      con.#allocated = true;
      con.switched = activeVt(cfd) === n;
      return con;
    } catch (e) {
      if (fd >= 0) closeFd(fd);
      closeFd(cfd);
      throw e;
    }
  }

  /**
   * Holds VT switching (VT_LOCKSWITCH) on a VT console: a key like Alt+F7 cannot take the prompt away (to a frozen
   * display server's VT, whose raw keyboard could not switch back). Best effort; nothing on other terminals.
   */
  holdSwitch(): void {
    const cfd = this.#consoleFd;
    if (cfd === null) return;
    try {
      ioctlInt(cfd, VT_LOCKSWITCH, 0, "VT_LOCKSWITCH");
      this.#holding = true;
    } catch { /* the prompt still works; only Alt+Fn is not held */ }
  }

  /** Lets go of VT switching, whoever took it on this VT (the process that did may have died). */
  releaseSwitch(): void {
    const cfd = this.#consoleFd;
    if (cfd === null) return;
    try {
      ioctlInt(cfd, VT_UNLOCKSWITCH, 0, "VT_UNLOCKSWITCH");
      this.#holding = false;
    } catch { /* nothing more to do */ }
  }

  /**
   * `true`: between reads the terminal stays in the secret line mode (no echo), so what is typed while a passphrase
   * is tried is neither shown nor kept (the next read drops it, zeroed); `false`: back to the saved modes now.
   */
  keepQuiet(on: boolean): void {
    this.#quiet = on;
    if (on) setTermios(this.fd, secretLineMode(this.#saved));
    else setTermios(this.fd, this.#saved);
  }

  /**
   * Write text (prompts, messages; never secrets). The terminal is non-blocking: a line that takes nothing (held by
   * flow control, Scroll Lock, a serial adapter gone) gets what fits within about 200 ms and the rest is dropped,
   * so a stuck console never stops the cycle, nor the prompt on the other consoles.
   */
  write(text: string): void {
    const bytes = new TextEncoder().encode(text);
    const until = Date.now() + WRITE_WAIT_MS;
    for (let off = 0; off < bytes.length;) {
      const part = bytes.subarray(off);
      const r = Number(libcSymbols().write(this.fd, Deno.UnsafePointer.of(part), BigInt(part.length)));
      if (r >= 0) {
        off += r;
        continue;
      }
      const e = errno();
      if (e === 4) continue; // EINTR
      if (e !== 11) throw new SysError("write", e, { subject: this.path });
      if (Date.now() >= until) return; // EAGAIN for too long: the rest is dropped
      sleepSync(10);
    }
  }

  /**
   * Read a line into `buf` with echo off; backspace/DEL erase, ^U (or ^C) clears, Enter ends. Returns the length.
   * Esc, or no line within `idleMs` (counted again while something is typed), throws {@linkcode PromptLeft} with
   * `buf` wiped. The escape sequence of a key like an arrow, Delete, Home or an F-key (Esc followed within
   * `escapeMs` by the rest of a CSI or SS3 sequence) is dropped and the line goes on; Esc followed at once by
   * anything else counts as Esc. Termios is restored afterwards, also on error, unless {@linkcode keepQuiet}
   * holds it. A line longer than the buffer is consumed, wiped and rejected with a RangeError. Input typed before
   * the prompt, what was typed of a line left unfinished, and what came after the line's end with it, is dropped,
   * zeroed in the kernel too.
   *
   * The line is read in canonical mode with echo off: the only mode in which the kernel's line discipline zeroes
   * what a reader copies out of its read buffer (and keeps it from the tty audit log). Its own line editing is
   * turned off, so every byte reaches the buffer once, in order, and is zeroed there; the editing keys and escape
   * sequences are applied here, in `buf`. read(2) goes straight into `buf`: no JS string or array copy.
   *
   * Esc ends the kernel's line (VEOL), so the rest of a sequence waits in the kernel as the start of the next
   * line, which canonical mode hands over only at the next Enter or Esc. After a read that ended in the middle of
   * a sequence, the terminal leaves canonical mode for up to `escapeMs`, until a byte is there, and enters it
   * again: the kernel then hands what came over as a line of its own, read (and zeroed) in canonical mode like any
   * other. A sequence split over several reads is followed from one to the next.
   */
  async readSecret(buf: SafeBuffer, opts: ReadSecretOptions = {}): Promise<number> {
    if (this.#reading) throw new Error("Console.readSecret: already reading");
    using scratch = SafeBuffer.alloc(256);
    this.#reading = true;
    let wake = -1;
    const wakeUp = () => signalEventFd(wake);
    let len = 0;
    let overflow = false;
    const line = secretLineMode(this.#saved);
    try {
      // an abort (a line came on another console) must end the poll now: the unlock waits for this read to end
      wake = opts.signal ? eventFd() : -1;
      this.#wake = wake;
      opts.signal?.addEventListener("abort", wakeUp, { once: true });
      // typed before the prompt: read (the kernel zeroes its copy) and dropped, a partial line too
      this.#dropPending(line, scratch);
      setTermios(this.fd, line);
      if (opts.prompt) this.write(opts.prompt);
      const bytes = buf.view();
      let idleUntil = opts.idleMs ? performance.now() + opts.idleMs : Infinity;
      let escaped = false;
      // where the bytes read so far left an escape sequence; carried from one read to the next
      let seq = SEQ_NONE;
      for (let ended = false; !ended;) {
        if (seq !== SEQ_NONE) {
          opts.signal?.throwIfAborted();
          const more = await this.#awaitMore(line, opts.escapeMs ?? ESCAPE_MS);
          opts.signal?.throwIfAborted(); // woken by the abort's eventfd: not a lone Esc
          if (!more) {
            // nothing more came: Esc alone leaves; a sequence cut short (Alt+[ sends Esc [) is dropped
            if (seq === SEQ_ESC) ended = escaped = true;
            seq = SEQ_NONE;
            continue;
          }
        } else if (!await this.#waitReadable(opts)) {
          if (performance.now() >= idleUntil) {
            // keystrokes show only at Enter: what is typed so far is handed over (and zeroed in the kernel)
            this.#pushPartialLine(line);
            if (!this.#readableNow()) throw new PromptLeft("idle");
            idleUntil = performance.now() + opts.idleMs!; // somebody is typing
          }
          continue;
        }
        // up to the buffer's end: a line that does not fit shows as one byte too many
        const start = overflow ? 0 : len;
        const r = this.#readInto(buf, start, buf.size - start);
        if (r === 0) throw new SysError("read", 5, { subject: this.path, hint: "end of input before a newline" });
        let w = start;
        for (let i = start; i < start + r; i++) {
          const c = bytes[i];
          bytes[i] = 0;
          // typed after the line's end, handed over with it by a push: dropped, as typed-ahead input is
          if (ended) continue;
          if (seq !== SEQ_NONE) {
            const next = sequenceStep(seq, c);
            if (next >= 0) {
              seq = next; // part of an escape sequence: dropped
              continue;
            }
            // Esc, then at once something that starts no sequence: the Esc was meant
            if (seq === SEQ_ESC) {
              ended = escaped = true;
              continue;
            }
            seq = SEQ_NONE; // a sequence cut short: what came of it is dropped, this byte is typed
          }
          if (c === 0x0a) ended = true;
          else if (c === ESC) seq = SEQ_ESC; // it ends the kernel's line (VEOL): what follows says what it was
          else if (overflow) continue;
          else if (c === 0x7f || c === 0x08) {
            if (w > 0) bytes[--w] = 0;
          } else if (c === 0x15 || c === 0x03) {
            bytes.fill(0, 0, w);
            w = 0;
          } else if (w + 1 >= buf.size) {
            // one byte stays free so a trailing NUL always fits; the rest of the line is drained and dropped
            bytes.fill(0, 0, w);
            overflow = true;
          } else bytes[w++] = c;
        }
        if (overflow) buf.zero();
        len = overflow ? 0 : w;
        if (opts.idleMs) idleUntil = performance.now() + opts.idleMs; // somebody is typing
      }
      if (escaped) {
        buf.zero();
        throw new PromptLeft("escape");
      }
      if (overflow) {
        buf.zero();
        throw new RangeError(`Console.readSecret: input longer than ${buf.size - 1} bytes`);
      }
      return len;
    } catch (e) {
      buf.zero();
      // what was typed of a line not finished (Esc, idle, an abort) must not stay in the kernel's buffer
      try {
        this.#dropPending(line, scratch);
      } catch { /* the terminal went away */ }
      throw e;
    } finally {
      this.#reading = false;
      opts.signal?.removeEventListener("abort", wakeUp);
      this.#wake = -1;
      try {
        if (wake >= 0) closeFd(wake);
      } catch { /* nothing polls it any more */ }
      try {
        if (!this.#quiet) setTermios(this.fd, this.#saved);
      } finally {
        if (opts.newline ?? true) {
          try {
            this.write("\n");
          } catch { /* the terminal went away */ }
        }
      }
    }
  }

  /**
   * Everything pending, a partial line included: read in the secret line mode (so the kernel zeroes its copy) into
   * `scratch`, then wiped.
   */
  #dropPending(line: Termios, scratch: SafeBuffer): void {
    this.#pushPartialLine(line);
    for (let n = 0; n < 64 && this.#readableNow(); n++) {
      if (this.#readInto(scratch, 0, scratch.size) <= 0) break;
    }
    scratch.zero();
  }

  /**
   * Leaves canonical mode and enters it again: the kernel then hands what is pending, a partial line too, to the
   * next read as a line of its own (and zeroes it as it is read).
   */
  #pushPartialLine(line: Termios): void {
    setTermios(this.fd, nonCanonical(line));
    setTermios(this.fd, line);
  }

  /**
   * Whether there is something to read within `ms`, a partial line included: if no line is there, waits out of
   * canonical mode (where poll(2) sees each byte as it comes) until a byte is pending, then enters canonical mode
   * again, which hands what came to the next read as a line of its own (as the idle path's push does). Nothing is
   * read here, so every byte is still read in canonical mode and zeroed in the kernel as it is.
   */
  async #awaitMore(line: Termios, ms: number): Promise<boolean> {
    if (this.#readableNow()) return true;
    setTermios(this.fd, nonCanonical(line));
    try {
      await libcSymbols().poll_nb(pollFds(this.fd, this.#wake), 2n, ms);
    } finally {
      setTermios(this.fd, line);
    }
    return this.#readableNow();
  }

  #readableNow(): boolean {
    const pfd = pollFd(this.fd);
    return libcSymbols().poll(pfd, 1n, 0) > 0 && (pollRevents(pfd) & POLLIN) !== 0;
  }

  /** Waits up to `pollMs` for a line; false on timeout. Throws on abort, hangup or a closed fd. */
  async #waitReadable(opts: ReadSecretOptions): Promise<boolean> {
    opts.signal?.throwIfAborted();
    const pfd = pollFds(this.fd, this.#wake);
    const ready = await libcSymbols().poll_nb(pfd, 2n, opts.pollMs ?? 200);
    opts.signal?.throwIfAborted(); // woken by the abort's eventfd
    if (ready === 0) return false;
    if (ready < 0) {
      // errno stayed on the pool thread: repeat the poll here without waiting to learn it.
      if (libcSymbols().poll(pfd, 2n, 0) >= 0) return false;
      const e = errno();
      if (e === 4) return false; // EINTR
      throw new SysError("poll", e, { subject: this.path });
    }
    const revents = pollRevents(pfd);
    if (revents & POLLNVAL) throw new SysError("poll", 9, { subject: this.path, hint: "the terminal fd was closed" });
    if (!(revents & POLLIN) && revents & (POLLHUP | POLLERR)) {
      throw new SysError("poll", 5, { subject: this.path, hint: "the terminal hung up" });
    }
    return (revents & POLLIN) !== 0;
  }

  /** read(2) of at most `max` bytes into `buf` at `offset`, again on EINTR; -1 on EAGAIN (nothing there). */
  #readInto(buf: SafeBuffer, offset: number, max: number): number {
    for (;;) {
      const r = Number(libcSymbols().read(this.fd, buf.pointerAt(offset), BigInt(max)));
      if (r >= 0) return r;
      const e = errno();
      if (e === 4) continue; // EINTR
      if (e === 11) return -1; // EAGAIN: nothing after all
      throw new SysError("read", e, { subject: this.path });
    }
  }

  /** Restore termios, switch back to the previous VT, close. Best effort, idempotent. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    const tryIt = (fn: () => void) => {
      try {
        fn();
      } catch { /* keep unwinding */ }
    };
    tryIt(() => setTermios(this.fd, this.#saved));
    const cfd = this.#consoleFd;
    if (this.#holding) this.releaseSwitch();
    const front = (): number | null => {
      try {
        return cfd === null ? null : activeVt(cfd);
      } catch {
        return null;
      }
    };
    // only while its VT is still in front: the other process holding it may have switched back already
    if (cfd !== null && this.previousVt !== null && this.previousVt !== this.vt && front() === this.vt) {
      tryIt(() => ioctlInt(cfd, VT_ACTIVATE, this.previousVt!, "VT_ACTIVATE"));
      // the switch completes asynchronously; an active VT cannot be deallocated, so wait a bounded time
      const until = Date.now() + 2000;
      while (front() === this.vt && Date.now() < until) sleepSync(10);
    }
    tryIt(() => closeFd(this.fd));
    if (cfd !== null) {
      if (this.vt !== null && this.#allocated) tryIt(() => ioctlInt(cfd, VT_DISALLOCATE, this.vt!, "VT_DISALLOCATE"));
      tryIt(() => closeFd(cfd));
    }
  }
}

/**
 * The termios for typing a secret: canonical, echo off, no signals. The kernel's erase, kill, word-erase, EOF,
 * reprint and literal-next keys are off, so each byte reaches the reader once; CR ends the line as LF does, and Esc
 * ends it at once. An arrow's or an F-key's sequence starts with Esc too: the reader looks at what follows the Esc
 * (see {@linkcode Console.readSecret}) and drops the sequence.
 */
function secretLineMode(saved: Termios): Termios {
  const t = saved.clone();
  t.lflag = (t.lflag | ICANON) & ~(ECHO | ECHOE | ECHOK | ECHONL | ISIG | IEXTEN);
  t.iflag = (t.iflag | ICRNL) & ~(INLCR | IGNCR | ISTRIP | IXON);
  for (const cc of [VINTR, VQUIT, VERASE, VKILL, VEOF, VSWTC, VSUSP, VREPRINT, VDISCARD, VWERASE, VLNEXT, VEOL2]) {
    t.setCc(cc, 0);
  }
  t.setCc(VEOL, 0x1b); // Esc hands the line over at once: it means "not now"
  return t;
}

/** `line` out of canonical mode (echo stays off): a read or poll(2) returns as soon as one byte is pending. */
function nonCanonical(line: Termios): Termios {
  const raw = line.clone();
  raw.lflag = raw.lflag & ~ICANON;
  raw.setCc(VMIN, 1);
  raw.setCc(VTIME, 0);
  return raw;
}

/** A one-entry `struct pollfd` array for `fd`, waiting for input. */
function pollFd(fd: number): Uint8Array<ArrayBuffer> {
  const pfd = new Uint8Array(8);
  const v = new DataView(pfd.buffer);
  v.setInt32(0, fd, true);
  v.setInt16(4, POLLIN, true);
  return pfd;
}

/** Two `struct pollfd`s: the terminal's first (its revents are {@linkcode pollRevents}'), then `wake` (-1: skipped). */
function pollFds(fd: number, wake: number): Uint8Array<ArrayBuffer> {
  const pfd = new Uint8Array(16);
  pfd.set(pollFd(fd));
  pfd.set(pollFd(wake), 8);
  return pfd;
}

function pollRevents(pfd: Uint8Array<ArrayBuffer>): number {
  return new DataView(pfd.buffer).getInt16(6, true);
}

function activeVt(cfd: number): number {
  // struct vt_stat { unsigned short v_active, v_signal, v_state; }
  const st = new Uint16Array(3);
  ioctlPtr(cfd, VT_GETSTATE, new Uint8Array(st.buffer), "VT_GETSTATE");
  return st[0];
}

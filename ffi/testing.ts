/**
 * @module
 * Real pseudo-terminals for the tests of the prompt (ffi/tty.ts, cycle/consoles.ts): the tool itself never opens a
 * pty; the tests do, to play the person at a terminal. The master end is the keyboard and the screen.
 *
 * @example
 * ```ts
 * import { drain, openPty } from "./testing.ts";
 * using pty = openPty();
 * console.log(pty.slavePath, new TextDecoder().decode(drain(pty.master))); // what the terminal showed
 * ```
 */
import { closeFd, O_CLOEXEC, O_NOCTTY, O_RDWR } from "./libc.ts";

const O_NONBLOCK = 0o4000;
const pt = Deno.dlopen("libc.so.6", {
  posix_openpt: { parameters: ["i32"], result: "i32" },
  grantpt: { parameters: ["i32"], result: "i32" },
  unlockpt: { parameters: ["i32"], result: "i32" },
  ptsname: { parameters: ["i32"], result: "pointer" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  tcgetattr: { parameters: ["i32", "buffer"], result: "i32" },
});
globalThis.addEventListener("unload", () => pt.close());

/** A pty whose master does not block on read, so {@linkcode drain} returns what is pending. Dispose closes it. */
export function openPty(): { master: number; slavePath: string } & Disposable {
  const master = pt.symbols.posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (master < 0 || pt.symbols.grantpt(master) !== 0 || pt.symbols.unlockpt(master) !== 0) {
    throw new Error("openPty: posix_openpt, grantpt or unlockpt failed");
  }
  const slavePath = Deno.UnsafePointerView.getCString(pt.symbols.ptsname(master)!);
  let open = true;
  return {
    master,
    slavePath,
    [Symbol.dispose]() {
      if (open) closeFd(master);
      open = false;
    },
  };
}

/** Whatever is pending on the pty master (EAGAIN, or EIO after a hangup, ends it). */
export function drain(fd: number): Uint8Array {
  const chunks: number[] = [];
  const b = new Uint8Array(256);
  for (let n; (n = Number(pt.symbols.read(fd, b, BigInt(b.length)))) > 0;) chunks.push(...b.subarray(0, n));
  return new Uint8Array(chunks);
}

/** The terminal's c_lflag now (struct termios is 60 bytes, c_lflag at offset 12: glibc, x86_64/aarch64). */
export function lflag(fd: number): number {
  const t = new Uint8Array(60);
  if (pt.symbols.tcgetattr(fd, t) !== 0) throw new Error(`lflag: tcgetattr(${fd}) failed`);
  return new DataView(t.buffer).getUint32(12, true);
}

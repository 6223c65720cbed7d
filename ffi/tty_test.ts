import assert from "node:assert/strict";
import { SysError } from "./errors.ts";
import { closeFd, ioctlPtr, O_CLOEXEC, O_NOCTTY, O_RDWR, openFd, writeFdSync } from "./libc.ts";
import { SafeBuffer } from "./safe_buffer.ts";
import { Console, PromptLeft } from "./tty.ts";
import { drain, lflag, openPty } from "./testing.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

// <termios.h> c_lflag bits
const ISIG = 0o1;
const ICANON = 0o2;
const ECHO = 0o10;

function ptyConsole() {
  const pty = openPty();
  const con = Console.open(pty.slavePath);
  return {
    pty,
    con,
    [Symbol.dispose]() {
      con[Symbol.dispose]();
      pty[Symbol.dispose]();
    },
  };
}

Deno.test("readSecret: bytes go into the SafeBuffer with echo off; termios restored after", async () => {
  using t = ptyConsole();
  const { pty, con } = t;
  assert.ok(lflag(con.fd) & ECHO, "a fresh pty echoes");
  con.write("Passphrase: ");
  assert.equal(dec.decode(drain(pty.master)), "Passphrase: ");
  using buf = SafeBuffer.alloc(64);
  const reading = con.readSecret(buf);
  const during = lflag(con.fd);
  assert.equal(during & ECHO, 0, "echo is off while reading");
  assert.ok(during & ICANON, "canonical while reading: the kernel zeroes its copy of the line as it is read");
  assert.equal(during & ISIG, 0, "no signals from the keyboard while reading");
  writeFdSync(pty.master, enc.encode("secret\n"));
  const len = await reading;
  assert.equal(len, 6);
  assert.deepEqual([...buf.view().subarray(0, 7)], [...enc.encode("secret"), 0]);
  assert.ok(lflag(con.fd) & ECHO, "echo restored");
  const echoed = dec.decode(drain(pty.master));
  assert.ok(!echoed.includes("secret"), `nothing echoed: ${JSON.stringify(echoed)}`);
  assert.match(echoed, /^\r?\n$/, "only the newline we print after the secret");
});

Deno.test("readSecret: backspace, DEL, ^U and a carriage return", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(64);
  const reading = t.con.readSecret(buf, { newline: false });
  writeFdSync(t.pty.master, enc.encode("junk\x15sx\x7fecrex\x08t\r"));
  const len = await reading;
  assert.equal(len, 6);
  assert.deepEqual([...buf.view().subarray(0, 8)], [...enc.encode("secret"), 0, 0]);
  assert.equal(drain(t.pty.master).length, 0, "nothing echoed, no newline when newline: false");
});

Deno.test("readSecret: ^C clears like ^U; the kernel's own erase keys are off, so each byte arrives once", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(64);
  const reading = t.con.readSecret(buf, { newline: false });
  // ^W (word erase) and ^V (literal next) are plain bytes here; ^C clears what came before
  writeFdSync(t.pty.master, enc.encode("ab\x17\x16\x03ok\x04!\n"));
  const len = await reading;
  assert.equal(len, 4);
  assert.deepEqual([...buf.view().subarray(0, 5)], [...enc.encode("ok\x04!"), 0]);
});

Deno.test("readSecret: Esc leaves the prompt at once, and so does no line within idleMs; the buffer is wiped", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(16);
  const escaped = t.con.readSecret(buf, { newline: false });
  writeFdSync(t.pty.master, enc.encode("half\x1b"));
  await assert.rejects(escaped, (e: unknown) => e instanceof PromptLeft && e.why === "escape");
  assert.ok(buf.view().every((b) => b === 0), "what was typed before Esc is wiped");
  assert.ok(lflag(t.con.fd) & ECHO, "termios restored");

  const started = Date.now();
  const idle = t.con.readSecret(buf, { newline: false, idleMs: 150, pollMs: 20 });
  writeFdSync(t.pty.master, enc.encode("no newline"));
  await assert.rejects(idle, (e: unknown) => e instanceof PromptLeft && e.why === "idle");
  assert.ok(Date.now() - started >= 150, "not before idleMs");
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Types `parts` one write each, `gapMs` apart, into a readSecret; resolves to what it read, as text. */
async function typed(parts: string[], gapMs = 0, opts: { escapeMs?: number; size?: number } = {}): Promise<string> {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(opts.size ?? 32);
  const reading = t.con.readSecret(buf, { newline: false, escapeMs: opts.escapeMs });
  for (const [i, part] of parts.entries()) {
    if (i > 0 && gapMs) await sleep(gapMs);
    writeFdSync(t.pty.master, enc.encode(part));
  }
  const len = await reading;
  assert.ok(buf.view().subarray(len).every((b) => b === 0), "nothing of a sequence left after the line");
  const line = dec.decode(buf.view().slice(0, len));
  assert.ok(lflag(t.con.fd) & ICANON && lflag(t.con.fd) & ECHO, "termios restored");
  assert.equal(drain(t.pty.master).length, 0, "nothing echoed");
  return line;
}

Deno.test("readSecret: a lone Esc leaves the prompt once nothing follows it; typed Esc after text too", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(16);
  const started = performance.now();
  const escaped = t.con.readSecret(buf, { newline: false, escapeMs: 60 });
  writeFdSync(t.pty.master, enc.encode("\x1b"));
  await assert.rejects(escaped, (e: unknown) => e instanceof PromptLeft && e.why === "escape");
  assert.ok(performance.now() - started >= 60, "it waited for the rest of a sequence first");
  assert.ok(lflag(t.con.fd) & ICANON && lflag(t.con.fd) & ECHO, "termios restored");
  // Esc followed at once by a byte that starts no sequence (Alt+x) is Esc too; the rest is dropped
  const alt = t.con.readSecret(buf, { newline: false });
  writeFdSync(t.pty.master, enc.encode("ab\x1bxcd\n"));
  await assert.rejects(alt, (e: unknown) => e instanceof PromptLeft && e.why === "escape");
  assert.ok(buf.view().every((b) => b === 0), "buffer wiped");
  // what came after it is not put before the next answer
  const next = t.con.readSecret(buf, { newline: false });
  writeFdSync(t.pty.master, enc.encode("ok\n"));
  assert.equal(await next, 2);
  assert.deepEqual([...buf.view().subarray(0, 3)], [...enc.encode("ok"), 0]);
});

Deno.test("readSecret: an arrow's sequence is dropped and the line goes on", async () => {
  // one write: the kernel hands "abc<Esc>" and "[Adef\n" over as two lines
  assert.equal(await typed(["abc\x1b[Adef\n"]), "abcdef");
  // the key in a write of its own, as a terminal sends it: "[A" waits in the kernel for the next line's end
  assert.equal(await typed(["abc", "\x1b[A", "def\n"], 30), "abcdef");
  // and typing goes on at once, in the same write
  assert.equal(await typed(["abc", "\x1b[Ade", "f\n"], 30), "abcdef");
});

Deno.test("readSecret: Delete, Home (SS3), F-keys and a held arrow key are dropped; editing keys still apply", async () => {
  assert.equal(await typed(["sec", "\x1b[3~", "ret\n"], 20), "secret"); // Delete
  assert.equal(await typed(["ab\x1bOHcd\n"]), "abcd"); // Home, SS3 form
  assert.equal(await typed(["ab", "\x1bOH", "cd\n"], 20), "abcd");
  assert.equal(await typed(["ab", "\x1b[[A", "cd\n"], 20), "abcd"); // F1 on the Linux console
  assert.equal(await typed(["ab", "\x1b[15~", "\x1b[1;5C", "cd\n"], 20), "abcd"); // F5, Ctrl+Right
  assert.equal(await typed(["ok", "\x1b[A\x1b[A\x1b[A\x1b[A", "\n"], 20), "ok"); // repeat
  assert.equal(await typed(["abx", "\x1b[D", "\x7fcd\n"], 20), "abcd"); // DEL after an arrow erases
});

Deno.test("readSecret: a sequence split over several writes is followed from read to read", async () => {
  assert.equal(await typed(["abc\x1b", "[", "1;5", "D", "def\n"], 15), "abcdef");
  assert.equal(await typed(["abc\x1b", "O", "Hdef\n"], 15), "abcdef");
  // Esc [ with nothing after it for escapeMs (Alt+[): dropped, the line goes on
  assert.equal(await typed(["abc\x1b[", "def\n"], 250, { escapeMs: 40 }), "abcdef");
});

Deno.test("readSecret: a sequence at the buffer's end is not an overflow", async () => {
  assert.equal(await typed(["1234567", "\x1b[C", "\n"], 20, { size: 8 }), "1234567");
});

Deno.test("readSecret: idle counts again while a line is being typed; what was typed is kept", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(16);
  const reading = t.con.readSecret(buf, { newline: false, idleMs: 150, pollMs: 20 });
  writeFdSync(t.pty.master, enc.encode("sec"));
  await new Promise((r) => setTimeout(r, 220));
  writeFdSync(t.pty.master, enc.encode("ret\n"));
  assert.equal(await reading, 6, "not idle: somebody was typing");
  assert.deepEqual([...buf.view().subarray(0, 7)], [...enc.encode("secret"), 0]);
});

Deno.test("keepQuiet: echo stays off between reads until it is let go", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(16);
  t.con.keepQuiet(true);
  const reading = t.con.readSecret(buf, { newline: false });
  writeFdSync(t.pty.master, enc.encode("one\n"));
  assert.equal(await reading, 3);
  assert.equal(lflag(t.con.fd) & ECHO, 0, "still no echo after the read");
  writeFdSync(t.pty.master, enc.encode("typed while a passphrase is tried\n"));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(drain(t.pty.master).length, 0, "nothing echoed between reads");
  t.con.keepQuiet(false);
  assert.ok(lflag(t.con.fd) & ECHO, "echo back");
});

Deno.test("readSecret: a partial line typed before the prompt is dropped, not put before the answer", async () => {
  using t = ptyConsole();
  writeFdSync(t.pty.master, enc.encode("stale"));
  await new Promise((r) => setTimeout(r, 100));
  using buf = SafeBuffer.alloc(16);
  const reading = t.con.readSecret(buf, { newline: false });
  writeFdSync(t.pty.master, enc.encode("ok\n"));
  assert.equal(await reading, 2);
  assert.deepEqual([...buf.view().subarray(0, 3)], [...enc.encode("ok"), 0]);
});

Deno.test("readSecret: a line typed before the prompt is dropped; a line of exactly the room fits", async () => {
  using t = ptyConsole();
  writeFdSync(t.pty.master, enc.encode("typed ahead\n"));
  // a pty hands input to the line discipline from a work queue: let it arrive first
  await new Promise((r) => setTimeout(r, 100));
  using buf = SafeBuffer.alloc(8);
  const reading = t.con.readSecret(buf, { newline: false });
  writeFdSync(t.pty.master, enc.encode("1234567\n"));
  assert.equal(await reading, 7);
  assert.deepEqual([...buf.view()], [...enc.encode("1234567"), 0]);
});

Deno.test("readSecret: a line longer than the buffer is consumed, wiped and rejected", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(4);
  const reading = t.con.readSecret(buf);
  writeFdSync(t.pty.master, enc.encode("toolong\n"));
  await assert.rejects(reading, RangeError);
  assert.ok(buf.view().every((b) => b === 0), "buffer wiped");
  assert.ok(lflag(t.con.fd) & ECHO, "echo restored after the error");
  // The next read works. Input typed before it starts is dropped (TCSAFLUSH, like getpass), so type after.
  writeFdSync(t.pty.master, enc.encode("typed ahead\n"));
  // a pty hands input to the line discipline from a work queue: let it arrive before the flush
  await new Promise((r) => setTimeout(r, 100));
  using buf2 = SafeBuffer.alloc(16);
  const next = t.con.readSecret(buf2);
  writeFdSync(t.pty.master, enc.encode("next\n"));
  assert.equal(await next, 4);
  assert.deepEqual([...buf2.view().subarray(0, 4)], [...enc.encode("next")]);
});

Deno.test("readSecret: abort signal and hangup end the read; echo restored", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(16);
  const ac = new AbortController();
  const reading = t.con.readSecret(buf, { signal: ac.signal, pollMs: 20 });
  writeFdSync(t.pty.master, enc.encode("par"));
  setTimeout(() => ac.abort(), 80);
  await assert.rejects(reading, (e: Error) => e.name === "AbortError");
  assert.ok(buf.view().every((b) => b === 0), "partial input wiped");
  assert.ok(lflag(t.con.fd) & ECHO);

  const hang = t.con.readSecret(buf, { pollMs: 20 });
  t.pty[Symbol.dispose](); // close the master: the slave hangs up
  await assert.rejects(hang, (e: unknown) => e instanceof SysError && e.code === "EIO");
});

Deno.test("readSecret: an abort ends a read waiting on a quiet terminal at once, not when its poll times out", async () => {
  using t = ptyConsole();
  using buf = SafeBuffer.alloc(16);
  const ac = new AbortController();
  // the other console's read, when a line came on one: it held the unlock up until its poll ran out (200 ms)
  const pollMs = 30_000;
  const reading = t.con.readSecret(buf, { signal: ac.signal, pollMs });
  await new Promise((r) => setTimeout(r, 50));
  const abortedAt = performance.now();
  ac.abort();
  await assert.rejects(reading, (e: Error) => e.name === "AbortError");
  const ms = performance.now() - abortedAt;
  assert.ok(ms < pollMs / 2, `the read ended ${Math.round(ms)} ms after the abort`);
  assert.ok(lflag(t.con.fd) & ECHO);
});

Deno.test("Console.open: not a terminal → SysError tcgetattr ENOTTY; missing path → open ENOENT", () => {
  assert.throws(
    () => Console.open("/dev/null"),
    (e: unknown) => e instanceof SysError && e.call === "tcgetattr" && e.code === "ENOTTY",
  );
  assert.throws(
    () => Console.open("/nonexistent/tty"),
    (e: unknown) => e instanceof SysError && e.call === "open" && e.code === "ENOENT",
  );
});

function vtUsable(): boolean {
  try {
    const fd = openFd("/dev/tty0", O_RDWR | O_NOCTTY | O_CLOEXEC);
    closeFd(fd);
    return true;
  } catch {
    return false;
  }
}

/** VT_GETSTATE's v_active. */
function activeVt(): number {
  const fd = openFd("/dev/tty0", O_RDWR | O_NOCTTY | O_CLOEXEC);
  try {
    const st = new Uint16Array(3);
    ioctlPtr(fd, 0x5603, new Uint8Array(st.buffer), "VT_GETSTATE");
    return st[0];
  } finally {
    closeFd(fd);
  }
}

Deno.test({
  name: "allocateVt: switches to a free VT and back (only where /dev/tty0 opens)",
  ignore: !vtUsable(),
  fn: () => {
    const before = (() => {
      using probe = Console.allocateVt();
      assert.ok(probe.vt !== null && probe.vt > 0);
      assert.ok(probe.previousVt !== null && probe.previousVt > 0);
      assert.notEqual(probe.vt, probe.previousVt);
      assert.equal(probe.path, `/dev/tty${probe.vt}`);
      assert.equal(activeVt(), probe.vt, "the new VT is active");
      return probe.previousVt;
    })();
    using again = Console.allocateVt();
    assert.equal(again.previousVt, before, "dispose switched back to the previous VT");
  },
});

Deno.test("write to a terminal that takes nothing more returns within a moment, dropping the rest", () => {
  // nobody reads the master: the pty's buffer fills up, as a serial line held by flow control would
  using t = ptyConsole();
  const start = Date.now();
  t.con.write("x".repeat(1 << 20));
  const took = Date.now() - start;
  assert.ok(took < 2000, `returned after ${took} ms`);
  assert.ok(drain(t.pty.master).length > 0, "what fitted was written");
});

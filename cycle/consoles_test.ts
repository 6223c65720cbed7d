import assert from "node:assert/strict";
import { closeFd, writeFdSync } from "../ffi/libc.ts";
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import { Console, PromptLeft } from "../ffi/tty.ts";
import { Consoles, kernelSerialConsoles } from "./consoles.ts";
import { drain, openPty } from "../ffi/testing.ts";

// Two real ptys play a VT and a serial console; their masters are the person's keyboards.
const enc = new TextEncoder();

/** What the terminal showed (pending output on its master). */
function shown(fd: number): string {
  return new TextDecoder().decode(drain(fd));
}

function two() {
  const a = openPty(), b = openPty();
  const consoles = new Consoles([Console.open(a.slavePath), Console.open(b.slavePath)]);
  return {
    a,
    b,
    consoles,
    [Symbol.dispose]() {
      consoles[Symbol.dispose]();
      for (const p of [a, b]) {
        try {
          p[Symbol.dispose]();
        } catch { /* closed by the test */ }
      }
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Types once the prompt shows on that terminal. */
async function typeAtPrompt(master: number, text: string, prompt = "Pass: "): Promise<void> {
  let seen = "";
  for (let i = 0; i < 200 && !seen.includes(prompt); i++) {
    seen += shown(master);
    await sleep(10);
  }
  assert.ok(seen.includes(prompt), `the prompt showed: ${JSON.stringify(seen)}`);
  writeFdSync(master, enc.encode(text));
}

Deno.test("Consoles: the prompt is on both, the first line wins, and the other's half-typed line is dropped", async () => {
  using t = two();
  using buf = SafeBuffer.alloc(64);
  const read = t.consoles.readSecret(buf, { prompt: "Pass: ", pollMs: 20 });
  await typeAtPrompt(t.a.master, "half-typ"); // on the VT, never finished
  await typeAtPrompt(t.b.master, "from-serial\n");
  const n = await read;
  assert.equal(new TextDecoder().decode(buf.view().subarray(0, n)), "from-serial");
  // the VT's unfinished line does not come back with the next prompt
  const next = t.consoles.readSecret(buf, { prompt: "Again: ", pollMs: 20 });
  await typeAtPrompt(t.a.master, "second\n", "Again: ");
  const m = await next;
  assert.equal(new TextDecoder().decode(buf.view().subarray(0, m)), "second");
});

Deno.test("Consoles: Esc on either leaves; idle only when both are idle", async () => {
  using t = two();
  using buf = SafeBuffer.alloc(64);
  const esc = t.consoles.readSecret(buf, { prompt: "Pass: ", pollMs: 20, escapeMs: 30 });
  await typeAtPrompt(t.b.master, "\x1b");
  await assert.rejects(esc, (e: unknown) => e instanceof PromptLeft && e.why === "escape");

  const idle = t.consoles.readSecret(buf, { prompt: "Pass: ", pollMs: 20, idleMs: 600 });
  // somebody types slowly on one: the other going idle does not end the prompt
  await typeAtPrompt(t.a.master, "sl");
  for (let i = 0; i < 4; i++) {
    await sleep(250);
    writeFdSync(t.a.master, enc.encode("o"));
  }
  writeFdSync(t.a.master, enc.encode("w\n"));
  const n = await idle;
  assert.equal(new TextDecoder().decode(buf.view().subarray(0, n)), "sloooow");
  const nobody = t.consoles.readSecret(buf, { prompt: "Pass: ", pollMs: 20, idleMs: 300 });
  await assert.rejects(nobody, (e: unknown) => e instanceof PromptLeft && e.why === "idle");
});

Deno.test("Consoles: a terminal that hangs up is left out; the other still answers; messages reach the rest", async () => {
  using t = two();
  using buf = SafeBuffer.alloc(64);
  const read = t.consoles.readSecret(buf, { prompt: "Pass: ", pollMs: 20 });
  await typeAtPrompt(t.a.master, "");
  closeFd(t.a.master); // the serial adapter is pulled out
  await sleep(100);
  await typeAtPrompt(t.b.master, "still-here\n");
  const n = await read;
  assert.equal(new TextDecoder().decode(buf.view().subarray(0, n)), "still-here");
  assert.equal(t.consoles.live.length, 1);
  t.consoles.write("unlocked\n");
  assert.match(shown(t.b.master), /unlocked/);
});

Deno.test("kernelSerialConsoles: the non-VT consoles of /sys/class/tty/console/active", async () => {
  const sys = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${sys}/class/tty/console`, { recursive: true });
    await Deno.writeTextFile(`${sys}/class/tty/console/active`, "tty0 ttyS0 hvc0\n");
    assert.deepEqual(kernelSerialConsoles(sys), ["/dev/ttyS0", "/dev/hvc0"]);
    await Deno.writeTextFile(`${sys}/class/tty/console/active`, "tty1\n");
    assert.deepEqual(kernelSerialConsoles(sys), []);
    assert.deepEqual(kernelSerialConsoles(`${sys}/none`), []);
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});

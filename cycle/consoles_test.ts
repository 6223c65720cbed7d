import assert from "node:assert/strict";
import { closeFd, writeFdSync } from "../ffi/libc.ts";
import { SafeBuffer } from "../ffi/safe_buffer.ts";
import { Console, PromptLeft } from "../ffi/tty.ts";
import { Consoles, kernelSerialConsoles, terminalNow, ttyPlace } from "./consoles.ts";
import { drain, openPty } from "../ffi/testing.ts";
import { within } from "../cgroup/testing.ts";

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
  const showed = await within(30_000, () => Promise.resolve((seen += shown(master)).includes(prompt)));
  assert.ok(showed, `the prompt showed: ${JSON.stringify(seen)}`);
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

Deno.test("Consoles: a line on one ends the read at once; the other's wait for input does not hold it up", async () => {
  using t = two();
  using buf = SafeBuffer.alloc(64);
  // each console's poll runs this long: the unlock waited for the other's to run out before its try (200 ms a line)
  const pollMs = 30_000;
  const read = t.consoles.readSecret(buf, { prompt: "Pass: ", pollMs });
  await typeAtPrompt(t.a.master, ""); // the VT shows it too, and nobody types there
  await typeAtPrompt(t.b.master, "from-serial\n");
  const typedAt = performance.now();
  const n = await read;
  const ms = performance.now() - typedAt;
  assert.equal(new TextDecoder().decode(buf.view().subarray(0, n)), "from-serial");
  assert.ok(ms < pollMs / 2, `the line came back ${Math.round(ms)} ms after Enter`);
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

Deno.test("terminalNow: a USB adapter back under another name, at its port or in another socket; a serial port by itself", async () => {
  const root = await Deno.makeTempDir({ prefix: "consoles-" });
  try {
    const sys = `${root}/sys`;
    const usbDevice = async (dir: string, serial: string | null) => {
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/idVendor`, "0403\n");
      await Deno.writeTextFile(`${dir}/idProduct`, "6001\n");
      if (serial !== null) await Deno.writeTextFile(`${dir}/serial`, `${serial}\n`);
    };
    const tty = async (name: string, device: string) => {
      await Deno.mkdir(device, { recursive: true });
      await Deno.mkdir(`${sys}/class/tty/${name}`, { recursive: true });
      await Deno.symlink(device, `${sys}/class/tty/${name}/device`);
      await Deno.writeTextFile(`${root}/${name}`, ""); // its /dev node
    };
    const port1 = `${sys}/devices/pci0000:00/usb1/1-1/1-1:1.0`, port2 = `${sys}/devices/pci0000:00/usb1/1-2/1-2:1.0`;
    await usbDevice(`${sys}/devices/pci0000:00/usb1/1-1`, "A1");
    await tty("ttyUSB0", `${port1}/ttyUSB0`);
    await tty("ttyS0", `${sys}/devices/pnp0/00:04`);
    await tty("ttyS1", `${sys}/devices/pnp0/00:05`);
    const usb = ttyPlace(`${root}/ttyUSB0`, sys)!;
    assert.deepEqual(
      usb,
      { port: Deno.realPathSync(port1), usb: "0403:6001", serial: "A1" },
      "the interface, not the port device",
    );
    assert.equal(await terminalNow(`${root}/ttyUSB0`, usb, sys), `${root}/ttyUSB0`, "still there: the same path");
    // re-enumerated while the old one was open: ttyUSB0 gone, the adapter back as ttyUSB1 at the same port
    await Deno.remove(`${sys}/class/tty/ttyUSB0`, { recursive: true });
    await Deno.remove(`${root}/ttyUSB0`);
    assert.equal(await terminalNow(`${root}/ttyUSB0`, usb, sys), null, "not back yet");
    await tty("ttyUSB1", `${port1}/ttyUSB1`);
    assert.equal(await terminalNow(`${root}/ttyUSB0`, usb, sys), "/dev/ttyUSB1");
    // unplugged, and plugged into the other socket: found by vendor, product and serial; another adapter is not it
    await Deno.remove(`${sys}/class/tty/ttyUSB1`, { recursive: true });
    await Deno.remove(`${sys}/devices/pci0000:00/usb1/1-1`, { recursive: true });
    await usbDevice(`${sys}/devices/pci0000:00/usb1/1-3`, "B2");
    await tty("ttyUSB0", `${sys}/devices/pci0000:00/usb1/1-3/1-3:1.0/ttyUSB0`);
    // the only adapter of its kind (a serial number may change with the socket: QEMU's does)
    assert.equal(await terminalNow(`${root}/ttyUSB1`, usb, sys), "/dev/ttyUSB0");
    await usbDevice(`${sys}/devices/pci0000:00/usb1/1-2`, "A1");
    await tty("ttyUSB2", `${port2}/ttyUSB2`);
    assert.equal(await terminalNow(`${root}/ttyUSB1`, usb, sys), "/dev/ttyUSB2", "two of its kind: its serial number");
    const other = { ...usb, serial: "C3" };
    assert.equal(await terminalNow(`${root}/ttyUSB1`, other, sys), null, "two of its kind, neither its serial: none");
    // a serial port never moves: by its path; its neighbour on the same bus is never taken for it
    const s0 = ttyPlace(`${root}/ttyS0`, sys);
    assert.deepEqual(s0, { port: Deno.realPathSync(`${sys}/devices/pnp0/00:04`), usb: null, serial: null });
    assert.equal(await terminalNow(`${root}/ttyS0`, s0, sys), `${root}/ttyS0`);
    // a pty has no sysfs device: by its path, while it exists
    assert.equal(ttyPlace(`${root}/nothing`, sys), null);
    await Deno.writeTextFile(`${root}/pts3`, "");
    assert.equal(await terminalNow(`${root}/pts3`, null, sys), `${root}/pts3`);
    assert.equal(await terminalNow(`${root}/gone`, null, sys), null);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

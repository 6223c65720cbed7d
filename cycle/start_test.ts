// The supervisor's protocol with stand-ins: small scripts run by the same deno as `supervise` would be.
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Job } from "./job.ts";
import { isPty, lineReader, openConsole, spawnSupervisor } from "./start.ts";
import { RefusedError } from "./errors.ts";

const JOB = { ramfsRoot: "/run/x" } as unknown as Job;

async function standIn(body: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  const script = join(dir, "stand-in.js");
  await Deno.writeTextFile(
    script,
    `const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
let buf = "";
async function line() {
  for (;;) {
    const i = buf.indexOf("\\n");
    if (i >= 0) { const l = buf.slice(0, i); buf = buf.slice(i + 1); return l; }
    const { value, done } = await lines.read();
    if (done) return null;
    buf += value;
  }
}
${body}`,
  );
  return script;
}

Deno.test("lineReader: lines in order, the last one without a newline, then null", async () => {
  const read = lineReader(ReadableStream.from([new TextEncoder().encode("a\nb"), new TextEncoder().encode("c\nd")]));
  assert.deepEqual([await read(), await read(), await read(), await read()], ["a", "bc", "d", null]);
});

Deno.test("spawnSupervisor: the job and the console go in, ready comes out, done lets it go", async () => {
  const script = await standIn(`
const job = JSON.parse(await line());
const console = await line();
await Deno.stdout.write(new TextEncoder().encode("ready\\n"));
const word = await line();
const ok = console === JSON.stringify([{ path: "/dev/tty9", previousVt: 2 }]);
Deno.exit(word === "done" && job.ramfsRoot === "/run/x" && ok ? 0 : 7);`);
  const s = spawnSupervisor(script);
  await s.handOver(JOB, [{ path: "/dev/tty9", previousVt: 2 }]);
  await s.ready();
  assert.equal(await s.dismiss(), true);
  assert.equal(await s.dismiss(), true, "a second dismiss only reports");
});

Deno.test("spawnSupervisor: one that dies before it is ready fails ready(), naming its exit", async () => {
  const script = await standIn(`await line(); Deno.exit(3);`);
  const s = spawnSupervisor(script);
  await s.handOver(JOB, [{ path: "/dev/tty9" }]);
  await assert.rejects(s.ready(), /exited before it was ready \(code 3\)/);
  assert.equal(await s.dismiss(), false);
});

Deno.test("openConsole: a pseudo-terminal is refused (its other end is frozen with userspace); a tty is not a pty", () => {
  const pt = Deno.dlopen("libc.so.6", {
    posix_openpt: { parameters: ["i32"], result: "i32" },
    grantpt: { parameters: ["i32"], result: "i32" },
    unlockpt: { parameters: ["i32"], result: "i32" },
    ptsname: { parameters: ["i32"], result: "pointer" },
    close: { parameters: ["i32"], result: "i32" },
  });
  const master = pt.symbols.posix_openpt(0o2 | 0o400 | 0o2000000); // O_RDWR | O_NOCTTY | O_CLOEXEC
  try {
    assert.ok(master >= 0, "posix_openpt");
    assert.equal(pt.symbols.grantpt(master), 0);
    assert.equal(pt.symbols.unlockpt(master), 0);
    const slave = Deno.UnsafePointerView.getCString(pt.symbols.ptsname(master)!);
    assert.equal(isPty(slave), true);
    const job = { options: { console: slave } } as unknown as Job;
    assert.throws(
      () => openConsole(job),
      (e: unknown) => e instanceof RefusedError && /is a pseudo-terminal.*\/dev\/ttyS0/s.test(e.reasons[0]),
    );
    assert.equal(isPty("/dev/null"), false);
  } finally {
    pt.symbols.close(master);
    pt.close();
  }
});

// The supervisor's protocol with stand-ins: small scripts run by the same deno as `supervise` would be.
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Job } from "./job.ts";
import { lineReader, startSupervisor } from "./start.ts";

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

Deno.test("startSupervisor: the job and the console go in, ready comes out, done lets it go", async () => {
  const script = await standIn(`
const job = JSON.parse(await line());
const console = await line();
await Deno.stdout.write(new TextEncoder().encode("ready\\n"));
const word = await line();
Deno.exit(word === "done" && job.ramfsRoot === "/run/x" && console === "/dev/tty9" ? 0 : 7);`);
  const s = await startSupervisor(JOB, script, "/dev/tty9");
  await s.ready();
  assert.equal(await s.dismiss(), true);
  assert.equal(await s.dismiss(), true, "a second dismiss only reports");
});

Deno.test("startSupervisor: one that dies before it is ready fails ready(), naming its exit", async () => {
  const script = await standIn(`await line(); Deno.exit(3);`);
  const s = await startSupervisor(JOB, script, "/dev/tty9");
  await assert.rejects(s.ready(), /exited before it was ready \(code 3\)/);
  assert.equal(await s.dismiss(), false);
});

import assert from "node:assert/strict";
import { STOP_SIGNALS } from "./signals.ts";

/** A child deno that holds the signals, sends each to itself, and says what it saw; then gives them back. */
const CHILD = `
import { ignoreStopSignals } from ${JSON.stringify(new URL("./signals.ts", import.meta.url).href)};
const seen = [];
{
  using _held = ignoreStopSignals((s) => seen.push(s));
  for (const s of ${JSON.stringify(STOP_SIGNALS)}) {
    Deno.kill(Deno.pid, s);
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log("alive after", seen.join(" "));
}
Deno.kill(Deno.pid, "SIGINT");
await new Promise((r) => setTimeout(r, 2000));
console.log("still alive after a SIGINT unheld");
`;

Deno.test("ignoreStopSignals: Ctrl-C, Ctrl-Z, hangup and SIGTERM neither kill nor stop it; disposed, SIGINT kills", async () => {
  const out = await new Deno.Command(Deno.execPath(), { args: ["eval", CHILD], stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, new RegExp(`^alive after ${STOP_SIGNALS.join(" ")}$`, "m"), text);
  assert.doesNotMatch(text, /still alive/, "its default action is back once disposed");
  assert.equal(out.signal, "SIGINT");
});

import assert from "node:assert/strict";
import { join } from "node:path";
import { handOver, refusalOf, watchdogDevices } from "./watchdog.ts";
import { checkWatchdog } from "../cycle/requirements.ts";

/** A scratch root with watchdog devices as sysfs shows them. */
async function tree(devices: Record<string, { state: string; nowayout: string; identity: string }>) {
  const root = await Deno.makeTempDir({ prefix: "cryptsleep-wdt-" });
  for (const [name, d] of Object.entries(devices)) {
    const dir = join(root, "sys/class/watchdog", name);
    await Deno.mkdir(dir, { recursive: true });
    for (const [f, v] of Object.entries({ ...d, timeout: "10" })) await Deno.writeTextFile(join(dir, f), `${v}\n`);
  }
  return {
    root,
    async [Symbol.asyncDispose]() {
      await Deno.remove(root, { recursive: true });
    },
  };
}

const softdog = (state: string, nowayout = "0") => ({ state, nowayout, identity: "Software Watchdog" });

Deno.test("watchdogDevices reads state, nowayout and timeout from sysfs; none when the class is absent", async () => {
  await using t = await tree({ watchdog1: softdog("inactive"), watchdog0: softdog("active", "1") });
  assert.deepEqual(await watchdogDevices(t.root), [
    { name: "watchdog0", identity: "Software Watchdog", active: true, nowayout: true, timeoutS: 10 },
    { name: "watchdog1", identity: "Software Watchdog", active: false, nowayout: false, timeoutS: 10 },
  ]);
  assert.deepEqual(await watchdogDevices(join(t.root, "nowhere")), []);
});

Deno.test("refusalOf: a stopped device or systemd's own can be handed over; nowayout or a daemon's cannot", async () => {
  await using t = await tree({ watchdog0: softdog("active") });
  const [running] = await watchdogDevices(t.root);
  assert.equal(refusalOf([running], "10000000"), null, "systemd's: handed over");
  assert.equal(refusalOf([{ ...running, active: false }], "0"), null, "stopped: nothing to do");
  assert.equal(refusalOf([running], undefined), null, "who runs it unknown (a recorded tree): not judged");
  assert.match(refusalOf([running], "0")?.seen ?? "", /not by systemd's RuntimeWatchdogSec/);
  assert.match(refusalOf([running], null)?.fix ?? "", /fuser -v \/dev\/watchdog/);
  const stuck = refusalOf([{ ...running, nowayout: true }], "10000000");
  assert.match(stuck?.seen ?? "", /watchdog0 \(Software Watchdog\) runs with nowayout/);
  assert.match(stuck?.fix ?? "", /nowayout=0/);
});

Deno.test("the watchdog requirement fails on a device that can never be stopped, with the fix", async () => {
  await using stuck = await tree({ watchdog0: softdog("active", "1") });
  const v = await checkWatchdog(stuck.root, undefined);
  assert.equal(v.status, "fail");
  assert.match(v.fix ?? "", /nowayout=0/);
  await using ok = await tree({ watchdog0: softdog("active") });
  const fine = await checkWatchdog(ok.root, "10000000");
  assert.equal(fine.status, "ok");
  assert.match(fine.seen, /systemd lets go of it for the cycle/);
  assert.equal((await checkWatchdog(join(ok.root, "nowhere"), null)).seen, "no watchdog device");
});

Deno.test("handOver: with no device counting there is nothing to hand over, and D-Bus is not asked", async () => {
  if ((await watchdogDevices()).some((d) => d.active)) return; // a host with a running watchdog: not this case
  const path = Deno.env.get("PATH");
  Deno.env.set("PATH", "/nonexistent"); // no busctl to run: asking D-Bus would throw
  try {
    assert.equal(await handOver(), null);
  } finally {
    Deno.env.set("PATH", path ?? "");
  }
});

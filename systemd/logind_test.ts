import assert from "node:assert/strict";
import { scratchRoot } from "../tests/fixtures/scratch.ts";
import { readLogind, unprotected } from "./logind.ts";

const by = (c: Awaited<ReturnType<typeof readLogind>>, s: string) => c.triggers.find((t) => t.setting === s)!;

Deno.test("logind: nothing configured → logind's defaults, lid and key protected, nothing unprotected", async () => {
  await using s = await scratchRoot({ "sys/power/state": "freeze mem disk\n" });
  const c = await readLogind(s.root);
  assert.deepEqual(c.triggers.map((t) => [t.setting, t.value, t.path]), [
    ["HandleLidSwitch", "suspend", "protected"],
    ["HandleLidSwitchExternalPower", "suspend", "protected"],
    ["HandleLidSwitchDocked", "ignore", "no-sleep"],
    ["HandleSuspendKey", "suspend", "protected"],
    ["IdleAction", "ignore", "no-sleep"],
  ]);
  assert.equal(by(c, "HandleLidSwitch").from, "default");
  assert.match(by(c, "HandleLidSwitchExternalPower").from, /as HandleLidSwitch/);
  assert.deepEqual(unprotected(c), []);
});

Deno.test("logind: drop-ins override; hibernate & co are unprotected; ExternalPower follows the lid", async () => {
  await using s = await scratchRoot({
    "sys/power/state": "freeze mem disk\n",
    "etc/systemd/logind.conf": "[Login]\nHandleLidSwitch=suspend\nIdleAction=hybrid-sleep\n",
    "usr/lib/systemd/logind.conf.d/50-lid.conf": "[Login]\nHandleLidSwitch=suspend-then-hibernate\n",
    "etc/systemd/logind.conf.d/60-key.conf": "[Login]\nHandleSuspendKey=hibernate\nHandleLidSwitchDocked=frobnicate\n",
  });
  const c = await readLogind(s.root);
  assert.equal(by(c, "HandleLidSwitch").value, "suspend-then-hibernate");
  assert.equal(by(c, "HandleLidSwitch").from, "/usr/lib/systemd/logind.conf.d/50-lid.conf:2");
  assert.equal(by(c, "HandleLidSwitchExternalPower").value, "suspend-then-hibernate");
  assert.equal(by(c, "HandleLidSwitchDocked").value, "ignore", "an invalid value is ignored");
  assert.match(c.warnings.join(), /frobnicate is not a logind action/);
  assert.deepEqual(unprotected(c).map((t) => t.setting), [
    "HandleLidSwitch",
    "HandleLidSwitchExternalPower",
    "HandleSuspendKey",
    "IdleAction",
  ]);
  assert.match(by(c, "IdleAction").why, /not protected/);
});

Deno.test("logind: sleep takes the first SleepOperation= the machine can do", async () => {
  await using s = await scratchRoot({
    "sys/power/state": "freeze mem\n",
    "etc/systemd/logind.conf.d/lid.conf": "[Login]\nHandleLidSwitch=sleep\n",
  });
  // no hibernation here: suspend-then-hibernate is skipped, suspend it is
  const noDisk = await readLogind(s.root);
  assert.equal(by(noDisk, "HandleLidSwitch").action, "suspend");
  assert.equal(by(noDisk, "HandleLidSwitch").path, "protected");
  const withDisk = await readLogind(s.root, true);
  assert.equal(by(withDisk, "HandleLidSwitch").action, "suspend-then-hibernate");
  assert.match(by(withDisk, "HandleLidSwitch").why, /sleep → suspend-then-hibernate/);
  await s.write("etc/systemd/logind.conf.d/op.conf", "[Login]\nSleepOperation=suspend\n");
  assert.equal(by(await readLogind(s.root, true), "HandleLidSwitch").path, "protected");
});

import assert from "node:assert/strict";
import { scratchRoot } from "../tests/fixtures/scratch.ts";
import { readSleepConfig, resolveSleep } from "./sleep_conf.ts";

const KERNEL = { "sys/power/state": "freeze mem disk\n", "sys/power/mem_sleep": "s2idle [deep]\n" };

Deno.test("sleep.conf: nothing configured → systemd's defaults: mem, mem_sleep left alone", async () => {
  await using s = await scratchRoot(KERNEL);
  const d = await resolveSleep(s.root);
  assert.ok(d.ok);
  assert.equal(d.state, "mem");
  assert.equal(d.memSleep, null);
  assert.deepEqual(d.config.suspendStates, ["mem", "standby", "freeze"]);
  assert.deepEqual(d.config.files, []);
});

Deno.test("sleep.conf: SuspendState accumulates across files; empty resets; drop-ins by name, /etc hides /usr/lib", async () => {
  await using s = await scratchRoot({
    ...KERNEL,
    "etc/systemd/sleep.conf": "[Sleep]\nSuspendState=standby\n",
    // same name in /usr/lib is hidden by /etc's
    "usr/lib/systemd/sleep.conf.d/50-x.conf": "[Sleep]\nSuspendState=mem\n",
    "etc/systemd/sleep.conf.d/50-x.conf": "[Sleep]\nSuspendState=freeze\n",
    "run/systemd/sleep.conf.d/10-a.conf": "[Sleep]\n# a comment\nSuspendState=disk\n",
    "usr/lib/systemd/sleep.conf.d/90-not-conf.txt": "[Sleep]\nSuspendState=\n",
  });
  const c = await readSleepConfig(s.root);
  assert.deepEqual(c.files, [
    "/etc/systemd/sleep.conf",
    "/run/systemd/sleep.conf.d/10-a.conf",
    "/etc/systemd/sleep.conf.d/50-x.conf",
  ]);
  // standby + disk (dropped, as systemd does) + freeze
  assert.deepEqual(c.suspendStates, ["standby", "freeze"]);
  assert.match(c.warnings.join(), /disk/);
  const d = await resolveSleep(s.root);
  assert.ok(d.ok);
  assert.equal(d.state, "freeze", "the kernel offers no standby: the first offered wins");

  await s.write("etc/systemd/sleep.conf.d/99-reset.conf", "[Sleep]\nSuspendState=\nSuspendState=freeze mem\n");
  assert.deepEqual((await readSleepConfig(s.root)).suspendStates, ["freeze", "mem"]);
});

Deno.test("sleep.conf: MemorySleepMode replaces, is written only when SuspendState has mem, first offered wins", async () => {
  await using s = await scratchRoot({
    ...KERNEL,
    "etc/systemd/sleep.conf": "[Sleep]\nMemorySleepMode=s2idle\n",
    "etc/systemd/sleep.conf.d/a.conf": '[Sleep]\nMemorySleepMode=hibernate "deep" s2idle\n',
  });
  const d = await resolveSleep(s.root);
  assert.ok(d.ok);
  assert.deepEqual(d.config.memorySleepModes, ["hibernate", "deep", "s2idle"]);
  assert.equal(d.memSleep, "deep");

  await s.write("etc/systemd/sleep.conf.d/b.conf", "[Sleep]\nSuspendState=\nSuspendState=freeze\n");
  const f = await resolveSleep(s.root);
  assert.ok(f.ok);
  assert.equal(f.state, "freeze");
  assert.equal(f.memSleep, null, "no mem in SuspendState: mem_sleep is not touched");

  await s.write("etc/systemd/sleep.conf.d/b.conf", "[Sleep]\nMemorySleepMode=shallow\n");
  const bad = await resolveSleep(s.root);
  assert.ok(!bad.ok);
  assert.match(bad.reason, /MemorySleepMode=shallow .*\/sys\/power\/mem_sleep: s2idle deep/);
  assert.match(bad.fix, /s2idle deep/);
});

Deno.test("sleep.conf: AllowSuspend=no refuses; an invalid value is ignored; a masked drop-in is skipped", async () => {
  await using s = await scratchRoot({
    ...KERNEL,
    "usr/lib/systemd/sleep.conf.d/10-no.conf": "[Sleep]\nAllowSuspend=no\n",
  });
  const no = await resolveSleep(s.root);
  assert.ok(!no.ok);
  assert.match(no.reason, /AllowSuspend=no in \/usr\/lib\/systemd\/sleep.conf.d\/10-no.conf/);
  await s.write("etc/systemd/sleep.conf.d/20-maybe.conf", "[Sleep]\nAllowSuspend=perhaps\n");
  const c = await readSleepConfig(s.root);
  assert.equal(c.allowSuspend, false);
  assert.match(c.warnings.join(), /perhaps/);
  // an empty file of the same name in /etc masks it
  await s.write("etc/systemd/sleep.conf.d/10-no.conf", "");
  assert.equal((await readSleepConfig(s.root)).allowSuspend, true);
  // a key outside [Sleep] is not read
  await s.write("etc/systemd/sleep.conf.d/30-other.conf", "[Other]\nAllowSuspend=no\n");
  assert.equal((await readSleepConfig(s.root)).allowSuspend, true);
});

Deno.test("sleep.conf: no state offered (no /sys/power/state) refuses with what to do", async () => {
  await using s = await scratchRoot({});
  const d = await resolveSleep(s.root);
  assert.ok(!d.ok);
  assert.match(d.reason, /none of SuspendState=mem standby freeze .*absent/);
});

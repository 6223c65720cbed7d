import assert from "node:assert/strict";
import { buildTree } from "../tests/fixtures/trees/build.ts";
import { type Check, doctorExitCode, formatChecks, runChecks } from "./doctor.ts";
import { ExitCode } from "./exit_codes.ts";

const byName = (checks: Check[], name: string) => {
  const c = checks.find((x) => x.name === name);
  assert.ok(c, `no check ${name}: ${checks.map((x) => x.name)}`);
  return c;
};

Deno.test("doctor on a ready tree: every kernel check ok, the keyring leak warned", async () => {
  await using tree = await buildTree("luks-root");
  const checks = await runChecks({ root: tree.root, uid: 0 });
  for (const n of ["root", "cgroup2", "cgroup freezer", "sleep states", "sync_on_suspend", "memory", "console"]) {
    assert.equal(byName(checks, n).status, "ok", JSON.stringify(byName(checks, n)));
  }
  assert.match(byName(checks, "mem_sleep").detail, /deep/);
  assert.match(byName(checks, "memory").detail, /Argon2 32 MiB/);
  const key = byName(checks, "keyring cryptroot");
  assert.equal(key.status, "warn");
  assert.match(key.detail, /cryptsetup:11111111-2222-4333-8444-555555555555-d0/);
  assert.ok(key.hint);
  assert.equal(doctorExitCode(checks), ExitCode.OK);
  assert.equal(formatChecks(checks).split("\n").length, checks.length);
});

Deno.test("doctor on the sandbox-like tree: hybrid cgroups warned, no sleep state and no sync_on_suspend fail", async () => {
  await using tree = await buildTree("no-dm");
  const checks = await runChecks({ root: tree.root, uid: 1000 });
  assert.equal(byName(checks, "root").status, "fail");
  const cg = byName(checks, "cgroup2");
  assert.equal(cg.status, "warn");
  assert.match(cg.detail, /hybrid layout: cgroup2 at \/sys\/fs\/cgroup\/unified.*freezer/);
  assert.equal(byName(checks, "cgroup freezer").status, "ok");
  assert.equal(byName(checks, "cgroup2 controllers").status, "warn");
  assert.equal(byName(checks, "sleep states").status, "fail");
  const sync = byName(checks, "sync_on_suspend");
  assert.equal(sync.status, "fail");
  assert.match(sync.detail, /without suspend support/);
  assert.equal(byName(checks, "luks volumes").status, "warn");
  assert.match(byName(checks, "luks volumes").detail, /no dm-crypt devices found/);
  assert.equal(byName(checks, "console").status, "warn");
  assert.equal(doctorExitCode(checks), ExitCode.ENV);
});

Deno.test("doctor: RAM below Argon2 + agent is a fail", async () => {
  await using tree = await buildTree("luks-root");
  await Deno.writeTextFile(`${tree.root}/proc/meminfo`, "MemTotal: 200000 kB\nMemAvailable: 100000 kB\n");
  const checks = await runChecks({ root: tree.root, uid: 0 });
  const mem = byName(checks, "memory");
  assert.equal(mem.status, "fail");
  assert.match(mem.detail, /MemAvailable 97.7 MiB < 160 MiB/);
  assert.equal(doctorExitCode(checks), ExitCode.ENV);
});

Deno.test("doctor: the systemd lines — not installed, Debian's drop-in active, the lid would hibernate", async () => {
  await using tree = await buildTree("luks-root");
  const w = (path: string, text: string) =>
    Deno.mkdir(`${tree.root}/${path}`.replace(/\/[^/]+$/, ""), { recursive: true })
      .then(() => Deno.writeTextFile(`${tree.root}/${path}`, text));
  await w(
    "usr/lib/systemd/system/systemd-suspend.service",
    "[Service]\nExecStart=/usr/lib/systemd/systemd-sleep suspend\n",
  );
  await w(
    "usr/lib/systemd/system/systemd-suspend.service.d/cryptsetup-suspend.conf",
    "[Service]\nExecStart=\nExecStart=/x\n",
  );
  await w("etc/systemd/logind.conf.d/lid.conf", "[Login]\nHandleLidSwitch=hibernate\n");
  const checks = await runChecks({ root: tree.root, uid: 0 });
  const sus = byName(checks, "systemd suspend");
  assert.equal(sus.status, "warn");
  assert.equal(sus.hint, "cryptsleep install --replace-debian");
  assert.equal(byName(checks, "cryptsetup-suspend").status, "warn");
  const lid = byName(checks, "logind HandleLidSwitch");
  assert.equal(lid.status, "warn");
  assert.match(
    lid.detail,
    /HandleLidSwitch=hibernate \(\/etc\/systemd\/logind.conf.d\/lid.conf:2\): hibernate: not protected/,
  );
  assert.equal(byName(checks, "logind HandleLidSwitchExternalPower").status, "warn");
  assert.equal(byName(checks, "sleep.conf").status, "ok");
  assert.equal(doctorExitCode(checks), ExitCode.OK, "systemd lines only warn");
});

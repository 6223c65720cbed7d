import assert from "node:assert/strict";
import { join } from "node:path";
import { scratchRoot } from "../tests/fixtures/scratch.ts";
import { install } from "./install.ts";
import { debianLine, keptLine, suspendPath } from "./state.ts";
import { isOurCommand } from "./unit.ts";
import { processIdentity } from "../host/proc.ts";

Deno.test("suspend path: not installed, installed, overridden by a later drop-in; Debian's seen", async () => {
  await using s = await scratchRoot({
    "usr/lib/systemd/system/systemd-suspend.service": "[Service]\nExecStart=/usr/lib/systemd/systemd-sleep suspend\n",
    "usr/lib/systemd/system/systemd-suspend.service.d/cryptsetup-suspend.conf": "[Service]\nExecStart=\nExecStart=/x\n",
  });
  await s.write("usr/sbin/cryptsleep", "#!/bin/sh\n", 0o755);
  const before = await suspendPath(s.root);
  assert.equal(before.installed, false);
  assert.match(before.summary, /not installed: systemd-suspend.service runs \/x/);
  assert.match(debianLine(before.debian)!, /active/);

  await install({ root: s.root, exec: "/usr/sbin/cryptsleep", replaceDebian: true });
  const after = await suspendPath(s.root);
  assert.equal(after.installed, true);
  assert.equal(after.recorded, true);
  assert.match(
    after.summary,
    /^installed: systemd-suspend.service runs \/usr\/sbin\/cryptsleep suspend --from-systemd/,
  );
  assert.match(debianLine(after.debian)!, /masked/);

  await Deno.writeTextFile(
    join(s.root, "etc/systemd/system/systemd-suspend.service.d/zz-mine.conf"),
    "[Service]\nExecStart=\nExecStart=/mine\n",
  );
  const overridden = await suspendPath(s.root);
  assert.equal(overridden.installed, false);
  assert.match(overridden.summary, /overridden: systemd-suspend.service runs \/mine/);
});

Deno.test("suspend path: installed with --console counts as installed", async () => {
  await using s = await scratchRoot({
    "usr/lib/systemd/system/systemd-suspend.service": "[Service]\nExecStart=/usr/lib/systemd/systemd-sleep suspend\n",
  });
  await s.write("usr/sbin/cryptsleep", "#!/bin/sh\n", 0o755);
  await install({ root: s.root, exec: "/usr/sbin/cryptsleep", console: "/dev/ttyS0" });
  const state = await suspendPath(s.root);
  assert.equal(state.installed, true, state.summary);
  assert.match(state.summary, /^installed: .* --from-systemd --console \/dev\/ttyS0/);
});

Deno.test("suspend path: installed with the prompt's options counts as installed, whatever their order", async () => {
  await using s = await scratchRoot({
    "usr/lib/systemd/system/systemd-suspend.service": "[Service]\nExecStart=/usr/lib/systemd/systemd-sleep suspend\n",
  });
  await s.write("usr/sbin/cryptsleep", "#!/bin/sh\n", 0o755);
  await install({ root: s.root, exec: "/usr/sbin/cryptsleep", maxTries: 3, afterTries: "suspend", idleSuspendS: 60 });
  const state = await suspendPath(s.root);
  assert.equal(state.installed, true, state.summary);
  assert.match(state.summary, /^installed: .* --from-systemd --max-tries 3 --after-tries suspend --idle-suspend 60 /);
  for (
    const command of [
      "/usr/sbin/cryptsleep suspend --from-systemd --idle-suspend 0 --console /dev/ttyS0",
      "/opt/cs/cryptsleep suspend --from-systemd --after-tries poweroff",
    ]
  ) assert.ok(isOurCommand(command), command);
  for (
    const command of [
      "/usr/sbin/cryptsleep suspend --from-systemd --state freeze",
      "/usr/sbin/cryptsleep suspend --from-systemd --max-tries",
      "/usr/sbin/cryptsleep suspend --max-tries 3",
      "/x suspend --from-systemd; /y",
    ]
  ) assert.ok(!isOurCommand(command), command);
});

Deno.test("keptLine: only for the kept mode's client; serve running or not, by its pid file", async () => {
  await using s = await scratchRoot({
    "usr/lib/systemd/system/systemd-suspend.service": "[Service]\nExecStart=/usr/lib/systemd/systemd-sleep suspend\n",
  });
  await s.write("usr/sbin/cryptsleep", "#!/bin/sh\n", 0o755);
  await s.write("usr/lib/cryptsleep/cryptsleep-request", "#!/bin/sh\n", 0o755);
  await install({ root: s.root, exec: "/usr/sbin/cryptsleep" });
  assert.equal(await keptLine(await suspendPath(s.root), s.root), null, "one-shot: nothing to say");
  await install({ root: s.root, exec: "/usr/sbin/cryptsleep", kept: true, systemctl: () => Promise.resolve() });
  const path = await suspendPath(s.root);
  assert.ok(path.installed, path.summary);
  assert.match((await keptLine(path, s.root))!, /serve is not running, so each suspend starts its own/);
  // a pid file without the start, or with another's: a pid taken since serve ended
  await s.write("run/cryptsleep/kept/pid", `${Deno.pid}\n`);
  assert.match((await keptLine(path, s.root))!, /serve is not running/);
  const me = processIdentity(Deno.pid)!;
  await s.write("run/cryptsleep/kept/pid", `${Deno.pid} ${Number(me.split(" ")[1]) + 1}\n`);
  assert.match((await keptLine(path, s.root))!, /serve is not running/);
  await s.write("run/cryptsleep/kept/pid", `${me}\n`);
  assert.match((await keptLine(path, s.root))!, new RegExp(`serve runs \\(pid ${Deno.pid}, [\\d.]+ MiB resident\\)`));
});

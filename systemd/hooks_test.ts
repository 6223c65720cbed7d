import assert from "node:assert/strict";
import { join } from "node:path";
import { scratchRoot } from "../tests/fixtures/scratch.ts";
import { listSleepHooks, runSleepHooks } from "./hooks.ts";
import { niceOfSelf } from "../host/proc.ts";

const DIR = "usr/lib/systemd/system-sleep";

/** A hook that records its argv, SYSTEMD_SLEEP_ACTION and start time in <log>/<name>. */
function recorder(log: string, name: string, extra = ""): string {
  return `#!/bin/sh\nprintf '%s|%s|%s\\n' "$*" "$SYSTEMD_SLEEP_ACTION" "$X" >> ${log}/${name}\n${extra}\n`;
}

Deno.test("hooks: systemd's order, same-name override, masks and non-executables skipped", async () => {
  await using s = await scratchRoot();
  await s.write(`${DIR}/20-b`, "#!/bin/sh\n", 0o755);
  await s.write(`${DIR}/10-a`, "#!/bin/sh\n", 0o755);
  await s.write(`${DIR}/30-notexec`, "#!/bin/sh\n", 0o644);
  await s.write(`${DIR}/40-empty`, "", 0o755);
  await Deno.symlink("/dev/null", join(s.root, DIR, "50-masked"));
  await s.write("etc/systemd/system-sleep/20-b", "#!/bin/sh\n", 0o755);
  assert.deepEqual((await listSleepHooks(s.root)).map((h) => h.path), [
    "/usr/lib/systemd/system-sleep/10-a",
    "/usr/lib/systemd/system-sleep/20-b",
  ]);
  // a distribution that reads /etc too: the earlier directory wins a name
  const withEtc = await listSleepHooks(s.root, ["/etc/systemd/system-sleep", "/usr/lib/systemd/system-sleep"]);
  assert.deepEqual(withEtc.map((h) => h.path), [
    "/usr/lib/systemd/system-sleep/10-a",
    "/etc/systemd/system-sleep/20-b",
  ]);
});

Deno.test("hooks: argv pre/post suspend, SYSTEMD_SLEEP_ACTION, the caller's env, all in parallel", async () => {
  await using s = await scratchRoot();
  const log = join(s.root, "log");
  await Deno.mkdir(log);
  // each waits for the other's mark: only parallel runs finish before the deadline
  await s.write(
    `${DIR}/a`,
    recorder(log, "a", `touch ${log}/a.up; while [ ! -e ${log}/b.up ]; do sleep 0.05; done`),
    0o755,
  );
  await s.write(
    `${DIR}/b`,
    recorder(log, "b", `touch ${log}/b.up; while [ ! -e ${log}/a.up ]; do sleep 0.05; done`),
    0o755,
  );
  const pre = await runSleepHooks("pre", { root: s.root, env: { X: "1" }, timeoutMs: 10_000 });
  assert.deepEqual(pre.map((r) => [r.name, r.ok, r.timedOut]), [["a", true, false], ["b", true, false]]);
  await Deno.remove(join(log, "a.up"));
  await Deno.remove(join(log, "b.up"));
  const post = await runSleepHooks("post", { root: s.root, env: { X: "2" }, timeoutMs: 10_000 });
  assert.ok(post.every((r) => r.ok));
  assert.equal(await s.read("log/a"), "pre suspend|suspend|1\npost suspend|suspend|2\n");
  assert.equal(await s.read("log/b"), "pre suspend|suspend|1\npost suspend|suspend|2\n");
});

Deno.test("hooks: a failing, a hanging and a broken hook are logged, never thrown; the others run", async () => {
  await using s = await scratchRoot();
  const log = join(s.root, "log");
  await Deno.mkdir(log);
  await s.write(`${DIR}/10-fails`, "#!/bin/sh\necho oops >&2\nexit 3\n", 0o755);
  await s.write(`${DIR}/20-hangs`, "#!/bin/sh\ntrap '' TERM\nsleep 120\n", 0o755);
  await s.write(`${DIR}/30-broken`, "#!/nonexistent/interpreter\n", 0o755);
  await s.write(`${DIR}/40-ok`, recorder(log, "ok"), 0o755);
  const lines: string[] = [];
  const t0 = performance.now();
  const results = await runSleepHooks("pre", {
    root: s.root,
    // the one deadline is every hook's: long enough for the quick ones on a loaded machine (CI ran out at 300 ms)
    timeoutMs: 5_000,
    capture: true,
    log: (l) => lines.push(l),
  });
  assert.ok(performance.now() - t0 < 60_000, "the deadline (then SIGKILL) bounds a hook that ignores SIGTERM");
  const by = Object.fromEntries(results.map((r) => [r.name, r]));
  assert.equal(by["10-fails"].code, 3);
  assert.match(by["10-fails"].output!, /oops/);
  assert.equal(by["20-hangs"].timedOut, true);
  assert.equal(by["30-broken"].ok, false);
  assert.equal(by["40-ok"].ok, true);
  assert.equal(await s.read("log/ok"), "pre suspend|suspend|\n");
  assert.equal(lines.length, 3, lines.join("\n"));
  assert.match(lines.join("\n"), /10-fails pre suspend: exited with 3 \(ignored, as systemd-sleep does\)/);
  assert.match(lines.join("\n"), /20-hangs pre suspend: still running at the deadline; killed/);
});

Deno.test("hooks: no directory, no hooks, nothing run", async () => {
  await using s = await scratchRoot();
  assert.deepEqual(await runSleepHooks("pre", { root: s.root }), []);
});

Deno.test({
  name: "hooks: started at the nice asked for, from their first instruction; this process's nice as it was",
  ignore: Deno.uid() !== 0, // going back from the higher nice needs CAP_SYS_NICE
  fn: async () => {
    await using s = await scratchRoot();
    const log = join(s.root, "log");
    await Deno.mkdir(log);
    // the nice of what it runs first (field 19 of cut's own stat), and of what a child of it runs
    const nice = "cut -d' ' -f19 /proc/self/stat";
    await s.write(`${DIR}/a`, `#!/bin/sh\n${nice} > ${log}/a\nsh -c "${nice}" > ${log}/a.child\n`, 0o755);
    const before = niceOfSelf();
    const pre = await runSleepHooks("pre", { root: s.root, timeoutMs: 30_000, nice: before + 7 });
    assert.ok(pre.every((r) => r.ok));
    assert.equal((await s.read("log/a"))?.trim(), String(before + 7));
    assert.equal((await s.read("log/a.child"))?.trim(), String(before + 7));
    assert.equal(niceOfSelf(), before, "this thread went back");
    // no nice given: the hook starts at this process's
    await runSleepHooks("post", { root: s.root, timeoutMs: 30_000 });
    assert.equal((await s.read("log/a"))?.trim(), String(before));
  },
});

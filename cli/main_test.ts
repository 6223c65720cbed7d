import assert from "node:assert/strict";
import { buildTree } from "../tests/fixtures/trees/build.ts";
import { ExitCode } from "./exit_codes.ts";
import { VERSION } from "./version.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("--version prints the version", async () => {
  const r = await cli("--version");
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), VERSION);
});

Deno.test("--help lists plan and doctor and the exit codes", async () => {
  const r = await cli("--help");
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Usage: cryptsleep/);
  assert.match(r.stdout, /\bplan\b/);
  assert.match(r.stdout, /\bdoctor\b/);
  assert.match(r.stdout, /Exit codes:[\s\S]*2 +bad arguments[\s\S]*4 +environment unusable/);
  assert.ok(!r.stdout.includes("--root"), "--root is hidden");
});

Deno.test("unknown command: exit 2, one line on stderr", async () => {
  const r = await cli("frobnicate");
  assert.equal(r.code, ExitCode.USAGE);
  assert.equal(r.stdout, "");
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^cryptsleep: unknown command 'frobnicate' \(see cryptsleep --help\)$/);
});

Deno.test("unknown option: exit 2, one line", async () => {
  const r = await cli("plan", "--frob");
  assert.equal(r.code, ExitCode.USAGE);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(r.stderr, /unknown option '--frob'/);
});

Deno.test("plan --json on this machine: valid JSON, a lock list (empty where there is no dm-crypt)", async () => {
  const r = await cli("plan", "--json");
  assert.equal(r.code, 0, r.stderr);
  const plan = JSON.parse(r.stdout);
  assert.ok(Array.isArray(plan.lock) && Array.isArray(plan.unlock));
  assert.equal(plan.root, "/");
  let dm = 0;
  for await (const e of Deno.readDir("/sys/block")) if (e.name.startsWith("dm-")) dm++;
  assert.equal(plan.dmDevices, dm);
  if (dm === 0) {
    assert.deepEqual(plan.lock, []);
    const human = await cli("plan");
    assert.equal(human.stdout.trim().split("\n")[0], "no dm-crypt devices found (no /sys/block/dm-*)");
    assert.match(human.stdout, /Not protected: hibernate, hybrid-sleep and suspend-then-hibernate/);
  }
});

Deno.test("plan --root on a recorded tree: human table and JSON agree", async () => {
  await using tree = await buildTree("luks-on-lvm");
  const json = await cli("plan", "--json", "--root", tree.root);
  assert.equal(json.code, 0, json.stderr);
  const plan = JSON.parse(json.stdout);
  assert.deepEqual(plan.lock.map((v: { dmName: string }) => v.dmName), ["crypthome", "cryptroot"]);
  const human = await cli("plan", "--root", tree.root);
  assert.equal(human.code, 0);
  assert.match(human.stdout, /2 LUKS volumes to lock/);
  assert.match(human.stdout, /1 +crypthome +LUKS2 +\/dev\/dm-3 +\/dev\/dm-1 +16 MiB/);
  assert.match(human.stdout, /2 +cryptroot +LUKS1 .* none /);
  assert.match(human.stdout, /Unlock order: cryptroot, crypthome/);
  assert.match(human.stdout, /Memory needed on resume: 16 MiB/);
  assert.match(human.stdout, /crypthome: \/etc\/keys\/home\.key on cryptroot, read once it is unlocked/);
});

Deno.test("plan with no sysfs under --root: exit 4, one line saying what to do", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await cli("plan", "--root", dir);
    assert.equal(r.code, ExitCode.ENV);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /no \/sys\/block .*mount -t sysfs/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor on this machine: one line per check, exit 0 only without a fail", async () => {
  const r = await cli("doctor");
  const lines = r.stdout.trim().split("\n");
  assert.ok(lines.length >= 10, r.stdout);
  for (const l of lines) assert.match(l, /^(ok|warn|fail) +\S/);
  const failed = lines.some((l) => l.startsWith("fail"));
  assert.equal(r.code, failed ? ExitCode.ENV : ExitCode.OK);
  const json = await cli("doctor", "--json");
  const parsed = JSON.parse(json.stdout);
  assert.equal(json.code, r.code);
  assert.equal(parsed.checks.length, lines.length);
});

Deno.test("doctor --root on a ready recorded tree exits 0", async () => {
  await using tree = await buildTree("luks-root");
  const r = await cli("doctor", "--root", tree.root);
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /^warn +keyring cryptroot +logon key cryptsetup:11111111-/m);
});

Deno.test("suspend run from source refuses (exit 3) with nothing touched, saying to bundle", async () => {
  const r = await cli("suspend", "--dry-run");
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /run from the bundle or a compiled binary.*deno task bundle/);
});

Deno.test("suspend with a bad --freeze-timeout: exit 2, one line", async () => {
  const r = await cli("suspend", "--freeze-timeout", "soon");
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(r.stderr, /--freeze-timeout.*whole number/);
});

Deno.test("status before any cycle: exit 1, says to run suspend", async () => {
  const r = await cli("status");
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no cycle has run since boot.*cryptsleep suspend/);
});

Deno.test("status says whether systemd's suspend runs cryptsleep (a scratch root, not installed)", async () => {
  const root = await Deno.makeTempDir();
  try {
    const r = await cli("status", "--root", root);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^systemd: not installed: no ExecStart; .*run cryptsleep install$/m);
    const j = await cli("status", "--json", "--root", root);
    assert.equal(JSON.parse(j.stdout).systemd.installed, false);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("install/uninstall on a scratch root: exit 0, the drop-in comes and goes; bad --exec exits 2", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${root}/usr/sbin`, { recursive: true });
    await Deno.writeTextFile(`${root}/usr/sbin/cryptsleep`, "#!/bin/sh\n", { mode: 0o755 });
    const dry = await cli("install", "--dry-run", "--root", root);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would write \/etc\/systemd\/system\/systemd-suspend.service.d\/cryptsleep.conf/);
    const i = await cli("install", "--root", root, "--exec", "/usr/sbin/cryptsleep");
    assert.equal(i.code, 0, i.stderr);
    const st = await cli("status", "--root", root);
    assert.match(st.stdout, /^systemd: installed: .*cryptsleep suspend --from-systemd/m);
    const u = await cli("uninstall", "--root", root);
    assert.equal(u.code, 0, u.stderr);
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), ["usr"], "what install made is gone");
    const bad = await cli("install", "--root", root, "--exec", "relative/cryptsleep");
    assert.equal(bad.code, ExitCode.USAGE);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    assert.match(bad.stderr, /absolute path/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("install takes suspend's prompt options: into the ExecStart, status still sees it installed; bad ones exit 2 as suspend's do", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${root}/usr/sbin`, { recursive: true });
    await Deno.writeTextFile(`${root}/usr/sbin/cryptsleep`, "#!/bin/sh\n", { mode: 0o755 });
    const flags = ["--max-tries", "3", "--after-tries", "suspend", "--idle-suspend", "0"];
    const i = await cli("install", "--root", root, ...flags);
    assert.equal(i.code, 0, i.stderr);
    const dropin = await Deno.readTextFile(`${root}/etc/systemd/system/systemd-suspend.service.d/cryptsleep.conf`);
    assert.match(
      dropin,
      /^ExecStart=\/usr\/sbin\/cryptsleep suspend --from-systemd --max-tries 3 --after-tries suspend --idle-suspend 0$/m,
    );
    const st = await cli("status", "--root", root);
    assert.match(st.stdout, /^systemd: installed: .*--from-systemd --max-tries 3 /m);
    const again = await cli("install", "--root", root, ...flags);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^already installed/);
    for (const command of ["install", "suspend"]) {
      for (
        const [flag, value, says] of [
          ["--max-tries", "0", /give a whole number of tries, 1 or more/],
          ["--max-tries", "1e1", /give a whole number of tries/],
          ["--after-tries", "reboot", /Allowed choices are ask, suspend, poweroff/],
          ["--idle-suspend", "-5", /give a whole number of seconds, 0 \(never\) or more/],
        ] as const
      ) {
        const bad = await cli(command, ...(command === "install" ? ["--root", root] : []), flag, value);
        assert.equal(bad.code, ExitCode.USAGE, `${command} ${flag} ${value}: ${bad.stderr}`);
        assert.equal(bad.stderr.trim().split("\n").length, 1);
        assert.match(bad.stderr, new RegExp(`^cryptsleep: option '${flag} <\\w+>' argument '${value}' is invalid`));
        assert.match(bad.stderr, says);
      }
    }
    assert.match(
      await Deno.readTextFile(`${root}/etc/systemd/system/systemd-suspend.service.d/cryptsleep.conf`),
      /--max-tries 3 /,
      "a refused install changed nothing",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

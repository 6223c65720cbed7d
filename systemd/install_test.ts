import assert from "node:assert/strict";
import { join } from "node:path";
import { type Scratch, scratchRoot } from "../tests/fixtures/scratch.ts";
import { install, InstallError, uninstall } from "./install.ts";
import { RECORD } from "./record.ts";
import {
  DEBIAN_MASK,
  debianDropin,
  DROPIN,
  execStart,
  isOurCommand,
  KEPT_UNIT,
  KEPT_UNIT_PATH,
  renderDropIn,
  suspendCommand,
} from "./unit.ts";

const EXEC = "/usr/sbin/cryptsleep";
const UNIT_FILE = "usr/lib/systemd/system/systemd-suspend.service";
const UNIT_TEXT =
  "[Unit]\nDescription=System Suspend\n[Service]\nType=oneshot\nExecStart=/usr/lib/systemd/systemd-sleep suspend\n";
// as Debian 12's cryptsetup-suspend ships it (its path on a merged /usr)
const DEBIAN = "usr/lib/systemd/system/systemd-suspend.service.d/cryptsetup-suspend.conf";
const DEBIAN_TEXT = "[Service]\nOOMScoreAdjust=-1000\nNice=-10\nExecStart=\n" +
  "ExecStart=/bin/openvt -ws -c8 \\\n    /lib/cryptsetup/scripts/suspend/cryptsetup-suspend-wrapper\n";

async function machine(files: Record<string, string> = {}): Promise<Scratch> {
  const s = await scratchRoot({ [UNIT_FILE]: UNIT_TEXT, ...files });
  await s.write(EXEC.slice(1), "#!/bin/sh\n", 0o755);
  // as on any Debian: /etc/systemd/system and /var/lib exist
  for (const d of ["etc/systemd/system", "var/lib"]) await Deno.mkdir(join(s.root, d), { recursive: true });
  return s;
}

/** Every file under the root with its text (or symlink target) and mode: "exactly what was there". */
async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(dir: string) {
    for await (const e of Deno.readDir(join(root, dir))) {
      const rel = join(dir, e.name);
      const st = await Deno.lstat(join(root, rel));
      if (e.isDirectory) {
        out[rel + "/"] = "dir";
        await walk(rel);
      } else if (e.isSymlink) out[rel] = `-> ${await Deno.readLink(join(root, rel))}`;
      else out[rel] = `${(st.mode! & 0o7777).toString(8)} ${await Deno.readTextFile(join(root, rel))}`;
    }
  }
  await walk("");
  return out;
}

Deno.test("install: the drop-in takes ExecStart; a second install changes nothing; uninstall leaves the tree as found", async () => {
  await using s = await machine();
  const before = await tree(s.root);
  let reloads = 0;
  const reload = () => Promise.resolve(void reloads++);
  const r = await install({ root: s.root, exec: EXEC, reload });
  assert.ok(r.changed);
  assert.equal(reloads, 1);
  assert.equal(await s.read(DROPIN.slice(1)), renderDropIn(EXEC));
  const exec = await execStart(s.root);
  assert.deepEqual(exec.commands, [`${EXEC} suspend --from-systemd`]);
  assert.deepEqual(exec.from, [DROPIN]);
  assert.match(renderDropIn(EXEC), /^TimeoutStartSec=infinity$/m);

  const again = await install({ root: s.root, exec: EXEC, reload });
  assert.equal(again.changed, false);
  assert.match(again.lines[0], /already installed/);
  assert.equal(reloads, 1, "nothing changed: no reload");

  const u = await uninstall({ root: s.root, reload });
  assert.ok(u.changed);
  assert.equal(reloads, 2);
  assert.deepEqual(await tree(s.root), before);
  assert.match((await uninstall({ root: s.root, reload })).lines[0], /nothing to uninstall/);
});

Deno.test("install: a file it replaces (and its mode) comes back byte for byte; a symlink comes back as a symlink", async () => {
  await using s = await machine({ [DROPIN.slice(1)]: "[Service]\n# the admin's own\nNice=5\n" });
  await Deno.chmod(join(s.root, DROPIN), 0o600);
  const before = await tree(s.root);
  const r = await install({ root: s.root, exec: EXEC });
  assert.match(
    r.lines.join("\n"),
    /write \/etc\/systemd\/system\/systemd-suspend.service.d\/cryptsleep.conf .*replaces a file/,
  );
  assert.equal(await s.read(DROPIN.slice(1)), renderDropIn(EXEC));
  await uninstall({ root: s.root });
  assert.deepEqual(await tree(s.root), before);

  await Deno.remove(join(s.root, DROPIN));
  await Deno.symlink("/somewhere/else.conf", join(s.root, DROPIN));
  const withLink = await tree(s.root);
  await install({ root: s.root, exec: EXEC });
  assert.equal((await Deno.lstat(join(s.root, DROPIN))).isSymlink, false);
  await uninstall({ root: s.root });
  assert.deepEqual(await tree(s.root), withLink);
});

Deno.test("install --dry-run: prints each action, changes nothing", async () => {
  await using s = await machine();
  const before = await tree(s.root);
  const r = await install({ root: s.root, exec: EXEC, dryRun: true });
  assert.deepEqual(r.lines.map((l) => l.split(" (")[0]), [
    "would mkdir /etc/systemd/system/systemd-suspend.service.d",
    "would mkdir /var/lib/cryptsleep",
    `would write ${RECORD}`,
    `would write ${DROPIN}`,
    "would skip systemctl daemon-reload",
  ]);
  assert.deepEqual(await tree(s.root), before);
  await install({ root: s.root, exec: EXEC });
  const installed = await tree(s.root);
  const u = await uninstall({ root: s.root, dryRun: true });
  assert.match(u.lines.join("\n"), /would remove \/etc\/systemd\/system\/systemd-suspend.service.d\/cryptsleep.conf/);
  assert.deepEqual(await tree(s.root), installed);
});

Deno.test("install: refuses while Debian's cryptsetup-suspend is active; --replace-debian masks it; uninstall restores it", async () => {
  await using s = await machine({ [DEBIAN]: DEBIAN_TEXT });
  const before = await tree(s.root);
  const d = await debianDropin(s.root);
  assert.deepEqual([d.path, d.active], ["/" + DEBIAN, true]);
  await assert.rejects(
    () => install({ root: s.root, exec: EXEC }),
    (e: InstallError) => e.kind === "refused" && /cryptsetup-suspend.*--replace-debian/.test(e.message),
  );
  assert.deepEqual(await tree(s.root), before, "refused: nothing touched");

  await install({ root: s.root, exec: EXEC, replaceDebian: true });
  const masked = await debianDropin(s.root);
  assert.deepEqual([masked.path, masked.active, masked.masked], [DEBIAN_MASK, false, true]);
  const exec = await execStart(s.root);
  assert.deepEqual(exec.commands, [`${EXEC} suspend --from-systemd`], "only cryptsleep runs");
  // installing again needs no flag: the mask is cryptsleep's own
  assert.equal((await install({ root: s.root, exec: EXEC })).changed, false);

  await uninstall({ root: s.root });
  assert.deepEqual(await tree(s.root), before);
  assert.equal((await debianDropin(s.root)).active, true);
});

Deno.test("install: bad --exec is a usage error; a missing cryptsleep says how to get one", async () => {
  await using s = await machine();
  await assert.rejects(() => install({ root: s.root, exec: "cryptsleep" }), (e: InstallError) => e.kind === "usage");
  await assert.rejects(
    () => install({ root: s.root, exec: "/opt/my tools/cs" }),
    (e: InstallError) => e.kind === "usage",
  );
  await assert.rejects(
    () => install({ root: s.root, exec: "/usr/local/bin/cryptsleep" }),
    (e: InstallError) => e.kind === "env" && /ENOENT.*apt install .\/cryptsleep_\*\.deb/.test(e.message),
  );
});

Deno.test("uninstall: a drop-in edited since install is still restored, and said so", async () => {
  await using s = await machine();
  const before = await tree(s.root);
  await install({ root: s.root, exec: EXEC });
  await s.write(DROPIN.slice(1), "[Service]\nNice=1\n");
  const u = await uninstall({ root: s.root });
  assert.match(u.lines.join("\n"), /changed since install/);
  assert.deepEqual(await tree(s.root), before);
});

Deno.test("install --console: the cycle prompts on that tty; a path that is not a terminal's is refused", async () => {
  await using s = await machine();
  const reload = () => Promise.resolve();
  await install({ root: s.root, exec: EXEC, console: "/dev/ttyS0", reload });
  assert.deepEqual((await execStart(s.root)).commands, [`${EXEC} suspend --from-systemd --console /dev/ttyS0`]);
  const err = await install({ root: s.root, exec: EXEC, console: "ttyS0; rm -rf /", reload }).catch((e) => e);
  assert.ok(err instanceof InstallError && err.kind === "usage", String(err));
  assert.match(err.message, /give a terminal's \/dev path/);
  await uninstall({ root: s.root, reload });
});

Deno.test("install --max-tries/--after-tries/--idle-suspend: in the ExecStart; the same again changes nothing, others rewrite it", async () => {
  await using s = await machine();
  const before = await tree(s.root);
  let reloads = 0;
  const reload = () => Promise.resolve(void reloads++);
  const prompt = { maxTries: 3, afterTries: "poweroff", idleSuspendS: 0 } as const;
  await install({ root: s.root, exec: EXEC, console: "/dev/ttyS0", ...prompt, reload });
  const command =
    `${EXEC} suspend --from-systemd --console /dev/ttyS0 --max-tries 3 --after-tries poweroff --idle-suspend 0`;
  assert.deepEqual((await execStart(s.root)).commands, [command]);
  assert.equal(await s.read(DROPIN.slice(1)), renderDropIn(EXEC, { console: "/dev/ttyS0", ...prompt }));
  assert.equal(suspendCommand(EXEC, { console: "/dev/ttyS0", ...prompt }), command);
  assert.equal(reloads, 1);

  const again = await install({ root: s.root, exec: EXEC, console: "/dev/ttyS0", ...prompt, reload });
  assert.equal(again.changed, false);
  assert.match(again.lines[0], /already installed/);
  assert.equal(reloads, 1, "nothing changed: no reload");

  const other = await install({ root: s.root, exec: EXEC, idleSuspendS: 120, reload });
  assert.ok(other.changed);
  assert.match(other.lines.join("\n"), /--idle-suspend 120; replaces what cryptsleep install wrote before\)/);
  assert.deepEqual((await execStart(s.root)).commands, [`${EXEC} suspend --from-systemd --idle-suspend 120`]);
  assert.equal(reloads, 2);

  // uninstall still restores what the first install found
  await uninstall({ root: s.root, reload });
  assert.deepEqual(await tree(s.root), before);
});

Deno.test("install: a bad prompt option is a usage error saying what to give; nothing touched", async () => {
  await using s = await machine();
  const before = await tree(s.root);
  const bad: [Parameters<typeof install>[0], RegExp][] = [
    [{ maxTries: 0 }, /^--max-tries 0: give a whole number of tries, 1 or more$/],
    [{ maxTries: 2.5 }, /^--max-tries 2.5: give a whole number/],
    [{ idleSuspendS: -1 }, /^--idle-suspend -1: give a whole number of seconds, 0 \(never\) or more$/],
    [{ idleSuspendS: NaN }, /^--idle-suspend NaN: /],
    [{ afterTries: "reboot" as "ask" }, /^--after-tries reboot: give one of ask, suspend, poweroff$/],
  ];
  for (const [opts, message] of bad) {
    const err = await install({ root: s.root, exec: EXEC, ...opts }).catch((e) => e);
    assert.ok(err instanceof InstallError && err.kind === "usage", String(err));
    assert.match(err.message, message);
  }
  assert.deepEqual(await tree(s.root), before);
});

Deno.test("install --token-without-pin: the switch in the ExecStart (no value), known as ours; off leaves it out", async () => {
  await using s = await machine();
  await install({ root: s.root, exec: EXEC, tokenWithoutPin: true, maxTries: 2, reload: () => Promise.resolve() });
  const command = `${EXEC} suspend --from-systemd --max-tries 2 --token-without-pin`;
  assert.deepEqual((await execStart(s.root)).commands, [command]);
  assert.ok(isOurCommand(command), command);
  assert.equal(suspendCommand(EXEC, { tokenWithoutPin: false }), `${EXEC} suspend --from-systemd`);
  assert.ok(!isOurCommand(`${EXEC} suspend --from-systemd --token-without-pin yes`), "the switch takes no value");
});

Deno.test("install --kept: the client takes ExecStart, the service is written and started; back without it, and uninstalled, the tree is as found", async () => {
  await using s = await machine();
  const before = await tree(s.root);
  const calls: string[] = [];
  const opts = {
    root: s.root,
    exec: EXEC,
    console: "/dev/ttyS0",
    reload: () => Promise.resolve(void calls.push("daemon-reload")),
    systemctl: (args: string[]) => Promise.resolve(void calls.push(args.join(" "))),
  };
  // no client beside the program: refused, nothing written
  const missing = await install({ ...opts, kept: true }).catch((e) => e);
  assert.ok(missing instanceof InstallError, String(missing));
  assert.match(missing.message, /cryptsleep-request is missing or not executable.*leave --kept out/);
  assert.deepEqual(await tree(s.root), before);
  await s.write("usr/lib/cryptsleep/cryptsleep-request", "#!/bin/sh\n", 0o755);
  const withClient = await tree(s.root);

  const r = await install({ ...opts, kept: true });
  assert.ok(r.changed);
  const exec = await execStart(s.root);
  assert.deepEqual(exec.commands, ["/usr/lib/cryptsleep/cryptsleep-request --console /dev/ttyS0"]);
  assert.ok(isOurCommand(exec.commands[0]), "status knows it for ours");
  const unit = await s.read(KEPT_UNIT_PATH.slice(1)) ?? "";
  assert.match(unit, /^ExecStart=\/usr\/sbin\/cryptsleep serve --console \/dev\/ttyS0$/m);
  assert.match(unit, /^MemorySwapMax=0$/m);
  assert.deepEqual(calls, ["daemon-reload", `enable ${KEPT_UNIT}`, `restart ${KEPT_UNIT}`]);
  // again, the same: nothing written, the service (re)started all the same (how a failed one comes back)
  calls.length = 0;
  const again = await install({ ...opts, kept: true });
  assert.equal(again.changed, false);
  assert.match(again.lines[0], /already installed/);
  assert.deepEqual(calls.filter((c) => c !== "daemon-reload"), [`enable ${KEPT_UNIT}`, `restart ${KEPT_UNIT}`]);

  // installed again without --kept: the service is stopped and its unit goes; the drop-in runs suspend again
  calls.length = 0;
  const plain = await install(opts);
  assert.match(plain.lines.join("\n"), new RegExp(`systemctl disable --now ${KEPT_UNIT}[^]*remove ${KEPT_UNIT_PATH}`));
  assert.deepEqual(calls, [`disable --now ${KEPT_UNIT}`, "daemon-reload"]);
  assert.equal(await s.read(KEPT_UNIT_PATH.slice(1)).catch(() => null), null);
  assert.deepEqual((await execStart(s.root)).commands, [`${EXEC} suspend --from-systemd --console /dev/ttyS0`]);

  // kept again, then uninstalled: stopped first, every file as it was
  await install({ ...opts, kept: true });
  calls.length = 0;
  await uninstall(opts);
  assert.equal(calls[0], `disable --now ${KEPT_UNIT}`);
  assert.deepEqual(await tree(s.root), withClient);
});

Deno.test("install --kept, then a stop of its service that fails: the record keeps the unit; uninstall restores all the same", async () => {
  await using s = await machine();
  await s.write("usr/lib/cryptsleep/cryptsleep-request", "#!/bin/sh\n", 0o755);
  const withClient = await tree(s.root);
  const ok = { root: s.root, exec: EXEC, reload: () => Promise.resolve() };
  await install({ ...ok, kept: true, systemctl: () => Promise.resolve() });
  const failing = (args: string[]) =>
    args[0] === "disable"
      ? Promise.reject(new InstallError(`systemctl ${args.join(" ")} exited with 5`, "env"))
      : Promise.resolve();
  // back to one-shot with a stop that fails: nothing changed, the unit still recorded for a later uninstall
  await assert.rejects(install({ ...ok, systemctl: failing }), /exited with 5/);
  assert.ok(((await s.read(RECORD.slice(1))) ?? "").includes(KEPT_UNIT_PATH), "still recorded");
  assert.ok(await s.read(KEPT_UNIT_PATH.slice(1)), "still there");
  // uninstall: the failed stop is said, the files are restored anyway
  await uninstall({ ...ok, systemctl: failing });
  assert.deepEqual(await tree(s.root), withClient);
});

import assert from "node:assert/strict";
import {
  cpuMsOf,
  livingPid,
  parseCrypttab,
  parseMeminfo,
  parseProcKeys,
  parseStat,
  parseSwaps,
  processIdentity,
  runtimeStartMs,
} from "./proc.ts";
import { spawnZombie } from "../cgroup/testing.ts";

Deno.test("swaps: header skipped, files and devices", () => {
  const text = "Filename\tType\tSize\tUsed\tPriority\n/dev/dm-2 partition 1048572 0 -2\n/swap\\040file file 10 0 -3\n";
  assert.deepEqual(parseSwaps(text), ["/dev/dm-2", "/swap file"]);
});

Deno.test("crypttab: comments, none/- key files, options", () => {
  const c = parseCrypttab(
    "# comment\n\nroot UUID=x none luks,discard\nhome /dev/vg/home /etc/k luks,header=/boot/h.img\nsw /dev/sda3 -\n",
  );
  assert.deepEqual(c, [
    { name: "root", device: "UUID=x", options: { luks: true, discard: true } },
    { name: "home", device: "/dev/vg/home", keyFile: "/etc/k", options: { luks: true, header: "/boot/h.img" } },
    { name: "sw", device: "/dev/sda3", options: {} },
  ]);
});

Deno.test("meminfo and /proc/keys", () => {
  assert.deepEqual(parseMeminfo("MemTotal:  100 kB\nMemAvailable:   42 kB\n"), { MemTotal: 100, MemAvailable: 42 });
  const keys = parseProcKeys(
    "03014477 I--Q---     1 perm 1f3f0000     0 65534 keyring   _uid_ses.0: 1\n" +
      "1a2b3c4d I--Q---     1 perm 3f010000     0     0 logon     cryptsetup:1111-d0: 64\n" +
      "1a2b3c4e I--Q---     1 perm 3f010000     0     0 logon     cryptsetup:2222-d0\n",
  );
  assert.deepEqual(keys.map((k) => [k.type, k.description]), [
    ["keyring", "_uid_ses.0"],
    ["logon", "cryptsetup:1111-d0"],
    ["logon", "cryptsetup:2222-d0"],
  ]);
});

Deno.test("stat: a command name with spaces and parentheses", () => {
  const st = parseStat("4242 (a (b) c) D 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 30 10 1 0 5 0 0\n");
  assert.deepEqual(st, {
    pid: 4242,
    comm: "a (b) c",
    state: "D",
    ppid: 1,
    flags: 4194560,
    cpuTicks: 3,
    startTicks: 5,
    nice: 10,
  });
});

Deno.test("cpuMsOf and runtimeStartMs: this process, a gone one", () => {
  const cpu = cpuMsOf(Deno.pid);
  assert.ok(typeof cpu === "number" && cpu >= 0 && cpu % 10 === 0, `cpu ${cpu}`);
  assert.equal(cpuMsOf(2 ** 22 + 1), null); // above pid_max's limit: never a process
  const start = runtimeStartMs();
  // the runtime started before its time origin, and not an hour before
  assert.ok(typeof start === "number" && start >= 0 && start < 3_600_000, `start ${start}`);
});

Deno.test("processIdentity and livingPid: the very process, not its pid taken since", async () => {
  const me = processIdentity(Deno.pid);
  assert.match(me ?? "", new RegExp(`^${Deno.pid} \\d+$`));
  assert.equal(livingPid(`${me}\n`), Deno.pid);
  const start = Number(me!.split(" ")[1]);
  // the same pid with another start: the process that wrote it is gone, another got the number
  assert.equal(livingPid(`${Deno.pid} ${start + 1}`), null);
  assert.equal(processIdentity(2 ** 22 + 1), null);
  for (const bad of [`${Deno.pid}`, "", `${Deno.pid} x`, `${me} 1`]) assert.equal(livingPid(bad), null, bad);
  // dead, not yet reaped
  await using zombie = await spawnZombie();
  assert.equal(livingPid(processIdentity(zombie.pid)!), null, "a zombie");
});

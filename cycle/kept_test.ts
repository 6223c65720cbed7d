import assert from "node:assert/strict";
import { join } from "node:path";
import { answerOf, KEPT_DIR, parseRequest, requestClock, swappedKiB, swapRisk } from "./kept.ts";
import { processIdentity } from "../host/proc.ts";
import { spawnZombie } from "../cgroup/testing.ts";
import { lineReader } from "./start.ts";

const CLIENT = new URL("../packaging/cryptsleep-request", import.meta.url).pathname;
/** What the stand-in for `cryptsleep suspend` prints when the client runs the cycle itself. */
const ONESHOT = "oneshot suspend --from-systemd --console /dev/ttyS0\n";

Deno.test("parseRequest: a reply FIFO of the kept directory only; its time from the uptime, or ms", () => {
  const clock = { nowMs: 1764540000000, uptimeS: 5000.5 };
  // 1.25 s before, less the 10 ms the uptime's cut may have taken off
  assert.deepEqual(parseRequest(`cycle ${KEPT_DIR}/reply.42 4999.25\n`, clock), {
    reply: `${KEPT_DIR}/reply.42`,
    requestedAt: 1764539998760,
  });
  // read in the same 1/100 s as the line: now, never later
  assert.equal(parseRequest(`cycle ${KEPT_DIR}/reply.42 5000.50`, clock)?.requestedAt, clock.nowMs);
  // a client from before: ms since the epoch
  assert.equal(parseRequest(`cycle ${KEPT_DIR}/reply.42 1764540000123`, clock)?.requestedAt, 1764540000123);
  // none, one after now (another boot's), no clock to read it by, busybox date's %3N: the time it is read stands in
  for (const asked of ["", " 5001.00", " 4999.25", " 1764540000%3N", " x"]) {
    const c = asked === " 4999.25" ? undefined : clock;
    assert.equal(parseRequest(`cycle ${KEPT_DIR}/reply.7${asked}`, c)?.requestedAt, null, asked);
  }
  const now = requestClock();
  assert.ok(now && now.uptimeS > 0 && Math.abs(now.nowMs - Date.now()) < 1000);
  for (
    const bad of ["cycle /etc/passwd 1", `cycle ${KEPT_DIR}/reply.1/../../x 1`, `cycle ${KEPT_DIR}/pid`, "stop", ""]
  ) {
    assert.equal(parseRequest(bad), null, bad);
  }
});

Deno.test("answerOf: what suspend prints and its exit code", () => {
  assert.deepEqual(answerOf({ kind: "ok" }), { say: [], code: 0 });
  assert.deepEqual(answerOf({ kind: "refused", reasons: ["busy"] }), { say: ["cryptsleep: refused: busy"], code: 3 });
  assert.deepEqual(answerOf({ kind: "failed", errors: ["x"] }), { say: ["cryptsleep: x"], code: 1 });
});

Deno.test("swapRisk: none with memory.swap.max 0 or no swap; else it says what to do", () => {
  const swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/dm-3 partition 1048572 0 -2\n";
  assert.equal(swapRisk("0\n", swaps, "/system.slice/cryptsleep-kept.service"), null);
  assert.equal(swapRisk("max\n", "Filename\tType\tSize\tUsed\tPriority\n", "/"), null);
  const risk = swapRisk("max\n", swaps, "/user.slice");
  assert.match(risk ?? "", /swap is on \(\/dev\/dm-3\) and cgroup \/user.slice .*memory.swap.max max.*MemorySwapMax=0/);
  assert.match(swapRisk(null, swaps, "/") ?? "", /unreadable/);
});

Deno.test("swappedKiB: this process's VmSwap; a gone pid has none", () => {
  assert.ok(swappedKiB(Deno.pid) >= 0);
  assert.equal(swappedKiB(2 ** 22 + 1), 0);
});

/** The client (packaging/cryptsleep-request) against a stand-in for serve: this test reads its request FIFO. */
async function client(
  fn: (t: {
    dir: string;
    pidFile: string;
    run(): { output: Promise<{ code: number; out: string; err: string }> };
    request(): Promise<{ reply: string }>;
    /** Runs the client, reads its request and answers `lines` on its reply FIFO; its output, and that FIFO. */
    answered(lines: string): Promise<{ code: number; out: string; err: string; reply: string }>;
    keeper: Deno.ChildProcess;
  }) => Promise<void>,
  shell = ["sh"],
) {
  const dir = await Deno.makeTempDir({ prefix: "kept-" });
  // stands for serve's process: alive until killed; its command name has what the client must cut at the last ") "
  const sh = join(dir, "x) 1 2 (3) 4");
  await Deno.symlink("/bin/sh", sh);
  const keeper = new Deno.Command(sh, { args: ["-c", "while :; do sleep 1; done"] }).spawn();
  try {
    const pidFile = join(dir, "pid");
    await Deno.writeTextFile(pidFile, `${processIdentity(keeper.pid)}\n`);
    const fake = join(dir, "oneshot");
    await Deno.writeTextFile(fake, '#!/bin/sh\necho "oneshot $*"\nexit 7\n', { mode: 0o755 });
    const mk = await new Deno.Command("mkfifo", { args: [join(dir, "request")] }).output();
    assert.ok(mk.success);
    const fifo = await Deno.open(join(dir, "request"), { read: true, write: true });
    const readLine = lineReader(fifo.readable);
    try {
      const run = () => {
        const child = new Deno.Command(shell[0], {
          args: [...shell.slice(1), CLIENT, "--console", "/dev/ttyS0"],
          env: { CRYPTSLEEP_KEPT_DIR: dir, CRYPTSLEEP_EXEC: fake },
          // a client waiting on what is not serve would wait for ever: ended (TERM) so that the test fails
          signal: AbortSignal.timeout(60_000),
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        return {
          output: child.output().then((o) => ({
            code: o.code,
            out: new TextDecoder().decode(o.stdout),
            err: new TextDecoder().decode(o.stderr),
          })),
        };
      };
      const request = async () => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const line = await Promise.race([
          readLine(),
          new Promise<never>((_, no) => timer = setTimeout(() => no(new Error("no request in 60 s")), 60_000)),
        ]).finally(() => clearTimeout(timer)) ?? "";
        const m = /^cycle (\S+) (\d+\.\d\d)$/.exec(line);
        assert.ok(m, `a request with its time since boot: ${line}`);
        const asked = parseRequest(line.replace(m[1], `${KEPT_DIR}/reply.1`), requestClock())?.requestedAt;
        assert.ok(asked && Math.abs(asked - Date.now()) < 60_000, `asked ${asked}`);
        return { reply: m[1] };
      };
      const answered = async (lines: string) => {
        const c = run();
        const { reply } = await request();
        const w = await Deno.open(reply, { write: true });
        await w.write(new TextEncoder().encode(lines));
        w.close();
        return { ...await c.output, reply };
      };
      await fn({ dir, pidFile, keeper, run, request, answered });
    } finally {
      fifo.close();
    }
  } finally {
    try {
      keeper.kill("SIGKILL");
    } catch { /* killed by the test */ }
    await keeper.status;
    await Deno.remove(dir, { recursive: true });
  }
}

const BUSYBOX = (() => {
  try {
    return Deno.statSync("/usr/bin/busybox").isFile;
  } catch {
    return false;
  }
})();

/** dash (Debian's sh) and busybox's ash, where it is installed: the client runs under either. */
const SHELLS = [["sh"], ...(BUSYBOX ? [["busybox", "sh"]] : [])];

for (const shell of SHELLS) {
  Deno.test(`cryptsleep-request under ${shell.join(" ")}: serve's lines said, its exit code the client's`, async () => {
    await client(async ({ answered }) => {
      const o = await answered("took\nsay a line\nexit 4\n");
      assert.deepEqual([o.code, o.err], [4, "a line\n"]);
    }, shell);
  });
}

Deno.test("cryptsleep-request: serve's lines are said, its exit code is the client's; the reply FIFO goes", async () => {
  await client(async ({ dir, answered }) => {
    const o = await answered("took\nsay cryptsleep: refused: not now\nexit 3\n");
    assert.equal(o.reply, join(dir, `reply.${o.reply.split(".").at(-1)}`));
    assert.equal(o.code, 3);
    assert.equal(o.err, "cryptsleep: refused: not now\n");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "oneshot",
      "pid",
      "request",
      "x) 1 2 (3) 4",
    ]);
  });
});

for (const shell of SHELLS) {
  Deno.test(`cryptsleep-request under ${shell.join(" ")}: no kept process, or one gone before it took the request: one-shot`, async () => {
    await client(async ({ pidFile, run, keeper }) => {
      // a pid file with no process
      keeper.kill("SIGKILL");
      await keeper.status;
      const o = await run().output;
      assert.deepEqual([o.code, o.out], [7, ONESHOT]);
      // no pid file at all; an empty one; a pid alone (a serve from before)
      await Deno.remove(pidFile);
      assert.equal((await run().output).code, 7);
      await Deno.writeTextFile(pidFile, "");
      assert.equal((await run().output).code, 7);
      await Deno.writeTextFile(pidFile, `${Deno.pid}\n`);
      assert.equal((await run().output).code, 7);
      // serve's pid taken by another process since: the pid lives, its start is not the one written
      const other = new Deno.Command("sh", { args: ["-c", "while :; do sleep 1; done", "a (b) c", "d) e"] }).spawn();
      try {
        const [pid, start] = processIdentity(other.pid)!.split(" ");
        await Deno.writeTextFile(pidFile, `${pid} ${Number(start) - 1}\n`);
        assert.equal((await run().output).code, 7);
      } finally {
        other.kill("SIGKILL");
        await other.status;
      }
      // serve dead and not yet reaped (a zombie): its stat still has its start
      await using zombie = await spawnZombie();
      await Deno.writeTextFile(pidFile, `${processIdentity(zombie.pid)}\n`);
      assert.equal((await run().output).code, 7);
    }, shell);
    await client(async ({ dir, run, keeper }) => {
      // serve killed while its FIFO has no reader: the client's write never waits, the watcher sends it one-shot
      await Deno.remove(join(dir, "request"));
      assert.ok((await new Deno.Command("mkfifo", { args: [join(dir, "request")] }).output()).success);
      const c = run();
      await new Promise((r) => setTimeout(r, 500));
      keeper.kill("SIGKILL");
      const o = await c.output;
      assert.deepEqual([o.code, o.out], [7, ONESHOT]);
    }, shell);
    await client(async ({ answered }) => {
      // serve answers oneshot (its memory went to swap): the cycle runs here
      const o = await answered("oneshot\n");
      assert.deepEqual([o.code, o.out], [7, ONESHOT]);
    }, shell);
    await client(async ({ run, request, keeper }) => {
      const c = run();
      await request();
      // serve ends with the request unread (crashed): the watcher says so, and the cycle runs here
      keeper.kill("SIGKILL");
      const o = await c.output;
      assert.deepEqual([o.code, o.out], [7, ONESHOT]);
    }, shell);
  });
}

Deno.test("cryptsleep-request: serve gone during the cycle: exit 1, said, and no second cycle", async () => {
  await client(async ({ run, request, keeper }) => {
    const c = run();
    const { reply } = await request();
    const w = await Deno.open(reply, { write: true });
    await w.write(new TextEncoder().encode("took\n"));
    keeper.kill("SIGKILL");
    const o = await c.output;
    w.close();
    assert.equal(o.code, 1);
    assert.equal(o.out, "", "no one-shot cycle after a cycle began");
    assert.match(o.err, /the kept cryptsleep \(pid \d+\) ended during the cycle.*journalctl -u cryptsleep-kept/);
  });
});

import assert from "node:assert/strict";
import { join } from "node:path";
import { answerOf, KEPT_DIR, parseRequest, swappedKiB, swapRisk } from "./kept.ts";
import { lineReader } from "./start.ts";

const CLIENT = new URL("../packaging/cryptsleep-request", import.meta.url).pathname;

Deno.test("parseRequest: a reply FIFO of the kept directory only; the time when it has milliseconds", () => {
  assert.deepEqual(parseRequest(`cycle ${KEPT_DIR}/reply.42 1764540000123\n`), {
    reply: `${KEPT_DIR}/reply.42`,
    requestedAt: 1764540000123,
  });
  // busybox date prints %3N as it is: the time it is read stands in
  assert.deepEqual(parseRequest(`cycle ${KEPT_DIR}/reply.7 1764540000%3N`), {
    reply: `${KEPT_DIR}/reply.7`,
    requestedAt: null,
  });
  assert.equal(parseRequest(`cycle ${KEPT_DIR}/reply.7`)?.requestedAt, null);
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

Deno.test("swappedKiB: this process's VmSwap; a gone pid has none", async () => {
  assert.ok(await swappedKiB(Deno.pid) >= 0);
  assert.equal(await swappedKiB(2 ** 22 + 1), 0);
});

/** The client (packaging/cryptsleep-request) against a stand-in for serve: this test reads its request FIFO. */
async function client(
  fn: (t: {
    dir: string;
    pidFile: string;
    run(): { output: Promise<{ code: number; out: string; err: string }> };
    request(): Promise<{ reply: string }>;
    keeper: Deno.ChildProcess;
  }) => Promise<void>,
  shell = ["sh"],
) {
  const dir = await Deno.makeTempDir({ prefix: "kept-" });
  // stands for serve's process (its command line says serve): alive until killed
  const keeper = new Deno.Command("sh", { args: ["-c", "while :; do sleep 1; done", "cryptsleep.js", "serve"] })
    .spawn();
  try {
    const pidFile = join(dir, "pid");
    await Deno.writeTextFile(pidFile, `${keeper.pid}\n`);
    const fake = join(dir, "oneshot");
    await Deno.writeTextFile(fake, '#!/bin/sh\necho "oneshot $*"\nexit 7\n', { mode: 0o755 });
    const mk = await new Deno.Command("mkfifo", { args: [join(dir, "request")] }).output();
    assert.ok(mk.success);
    const fifo = await Deno.open(join(dir, "request"), { read: true, write: true });
    const readLine = lineReader(fifo.readable);
    try {
      await fn({
        dir,
        pidFile,
        keeper,
        run: () => {
          const child = new Deno.Command(shell[0], {
            args: [...shell.slice(1), CLIENT, "--console", "/dev/ttyS0"],
            env: { CRYPTSLEEP_KEPT_DIR: dir, CRYPTSLEEP_EXEC: fake },
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
        },
        request: async () => {
          const line = (await readLine()) ?? "";
          const m = /^cycle (\S+) (\d{13})$/.exec(line);
          assert.ok(m, `a request with its time in ms: ${line}`);
          assert.ok(Math.abs(Number(m[2]) - Date.now()) < 60_000);
          return { reply: m[1] };
        },
      });
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

for (const shell of [["sh"], ...(BUSYBOX ? [["busybox", "sh"]] : [])]) {
  Deno.test(`cryptsleep-request under ${shell.join(" ")}: serve's lines said, its exit code the client's`, async () => {
    await client(async ({ run, request }) => {
      const c = run();
      const { reply } = await request();
      const w = await Deno.open(reply, { write: true });
      await w.write(new TextEncoder().encode("took\nsay a line\nexit 4\n"));
      w.close();
      const o = await c.output;
      assert.deepEqual([o.code, o.err], [4, "a line\n"]);
    }, shell);
  });
}

Deno.test("cryptsleep-request: serve's lines are said, its exit code is the client's; the reply FIFO goes", async () => {
  await client(async ({ dir, run, request }) => {
    const c = run();
    const { reply } = await request();
    assert.equal(reply, join(dir, `reply.${reply.split(".").at(-1)}`));
    const w = await Deno.open(reply, { write: true });
    await w.write(new TextEncoder().encode("took\nsay cryptsleep: refused: not now\nexit 3\n"));
    w.close();
    const o = await c.output;
    assert.equal(o.code, 3);
    assert.equal(o.err, "cryptsleep: refused: not now\n");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["oneshot", "pid", "request"]);
  });
});

Deno.test("cryptsleep-request: no kept process, or one gone before it took the request: the cycle runs one-shot", async () => {
  await client(async ({ pidFile, run, keeper }) => {
    // a pid file with no process
    keeper.kill("SIGKILL");
    await keeper.status;
    const o = await run().output;
    assert.deepEqual([o.code, o.out], [7, "oneshot suspend --from-systemd --console /dev/ttyS0\n"]);
    // no pid file at all; an empty one; one naming a process that is not serve
    await Deno.remove(pidFile);
    assert.equal((await run().output).code, 7);
    await Deno.writeTextFile(pidFile, "");
    assert.equal((await run().output).code, 7);
    await Deno.writeTextFile(pidFile, `${Deno.pid}\n`);
    assert.equal((await run().output).code, 7);
    // a server of another kind ("ollama serve")
    const other = new Deno.Command("sh", { args: ["-c", "while :; do sleep 1; done", "ollama", "serve"] }).spawn();
    try {
      await Deno.writeTextFile(pidFile, `${other.pid}\n`);
      assert.equal((await run().output).code, 7);
    } finally {
      other.kill("SIGKILL");
      await other.status;
    }
  });
  await client(async ({ dir, run, keeper }) => {
    // serve killed while its FIFO has no reader: the client's write never waits, the watcher sends it one-shot
    await Deno.remove(join(dir, "request"));
    assert.ok((await new Deno.Command("mkfifo", { args: [join(dir, "request")] }).output()).success);
    const c = run();
    await new Promise((r) => setTimeout(r, 500));
    keeper.kill("SIGKILL");
    const o = await c.output;
    assert.deepEqual([o.code, o.out], [7, "oneshot suspend --from-systemd --console /dev/ttyS0\n"]);
  });
  await client(async ({ run, request }) => {
    // serve answers oneshot (its memory went to swap): the cycle runs here
    const c = run();
    const { reply } = await request();
    const w = await Deno.open(reply, { write: true });
    await w.write(new TextEncoder().encode("oneshot\n"));
    w.close();
    const o = await c.output;
    assert.deepEqual([o.code, o.out], [7, "oneshot suspend --from-systemd --console /dev/ttyS0\n"]);
  });
  await client(async ({ run, request, keeper }) => {
    const c = run();
    await request();
    // serve ends with the request unread (crashed): the watcher says so, and the cycle runs here
    keeper.kill("SIGKILL");
    const o = await c.output;
    assert.deepEqual([o.code, o.out], [7, "oneshot suspend --from-systemd --console /dev/ttyS0\n"]);
  });
});

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

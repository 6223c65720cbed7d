import assert from "node:assert/strict";
import {
  BUSY_REFRESH_AFTER_MS,
  FirmwareCache,
  FirmwareStale,
  oneAtATime,
  type Primed,
  PRIMED_FOR_MS,
  REFRESH_AFTER_MS,
} from "./firmware.ts";

// (a real dry run writes /sys/power/state: it runs on the bed only, tests/vm/firmware_test.ts; here a stand-in)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("FirmwareCache: fresh enough, nothing runs; once the kernel may have dropped it, a suspend is refused", async () => {
  const fresh = new FirmwareCache("mem", {}, performance.now());
  await fresh.keep(); // younger than REFRESH_AFTER_MS: no dry run
  const stale = new FirmwareCache("mem", {}, performance.now() - PRIMED_FOR_MS - 1);
  await assert.rejects(
    () => stale.keep(),
    (e: unknown) => e instanceof FirmwareStale && /10 s the kernel keeps it/.test(e.message),
  );
  stale.renewed(); // a suspend just ended: fresh again
  await stale.keep();
  assert.ok(stale.age < 1000);
});

Deno.test("FirmwareCache: a cache that may be gone is refused only while a volume the firmware loader reads is locked", async () => {
  let locked = false;
  const cache = new FirmwareCache("mem", {}, performance.now() - PRIMED_FOR_MS - 1, { needed: () => locked });
  // the root unlocked (a /home prompt): no refusal; a refresh (none here: not due) would read from the root
  await cache.keep(Number.POSITIVE_INFINITY);
  locked = true; // locked again: nothing can prime it now
  await assert.rejects(() => cache.keep(Number.POSITIVE_INFINITY), FirmwareStale);
  // a KDF run through it: its value, and its throw, come through
  assert.equal(await cache.during(() => Promise.resolve(7)), 7);
  await assert.rejects(() => cache.during(() => Promise.reject(new Error("EPERM"))), /EPERM/);
});

Deno.test("oneAtATime: writes to /sys/power/state never overlap, whatever failed before", async () => {
  const log: string[] = [];
  const step = (name: string, ms: number, fail = false) =>
    oneAtATime(async () => {
      log.push(`${name}+`);
      await sleep(ms);
      log.push(`${name}-`);
      if (fail) throw new Error(name);
    });
  await Promise.allSettled([step("a", 20, true), step("b", 1), step("c", 5)]);
  assert.deepEqual(log, ["a+", "a-", "b+", "b-", "c+", "c-"]);
});

Deno.test("FirmwareCache.keepPrimed: every 4 s while the root is locked, every 6 s while a KDF runs, none once unlocked", async () => {
  const t0 = performance.now();
  const runs: number[] = [];
  let locked = true;
  const cache = new FirmwareCache("mem", {}, t0, {
    needed: () => locked,
    prime: (): Promise<Primed> => {
      const at = performance.now();
      runs.push(at - t0);
      return Promise.resolve({ ok: true, ms: 0, endedAt: at });
    },
  });
  const stop = cache.keepPrimed();
  try {
    // at the prompt: one dry run once the cache is REFRESH_AFTER_MS old
    await sleep(REFRESH_AFTER_MS + 1_500);
    assert.equal(runs.length, 1, `runs at ${runs.map(Math.round)} ms`);
    assert.ok(runs[0] > REFRESH_AFTER_MS, `${runs[0]} ms`);
    // a KDF of 7.5 s: its next comes BUSY_REFRESH_AFTER_MS after the last, not REFRESH_AFTER_MS (one in it, not two)
    await cache.during(() => sleep(BUSY_REFRESH_AFTER_MS + 1_500));
    assert.equal(runs.length, 2, `runs at ${runs.map(Math.round)} ms`);
    assert.ok(runs[1] - runs[0] > BUSY_REFRESH_AFTER_MS, `runs at ${runs.map(Math.round)} ms`);
    // the root unlocked (a /home prompt): no dry run, however old the cache gets
    locked = false;
    await sleep(REFRESH_AFTER_MS + 2_000);
    assert.equal(runs.length, 2, `runs at ${runs.map(Math.round)} ms`);
  } finally {
    await stop();
  }
});

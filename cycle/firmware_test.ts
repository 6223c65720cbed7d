import assert from "node:assert/strict";
import { FirmwareCache, FirmwareStale, oneAtATime, PRIMED_FOR_MS } from "./firmware.ts";

// (a dry run itself writes /sys/power/state: it runs on the bed only, tests/vm/firmware_test.ts)

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
  const cache = new FirmwareCache("mem", {}, performance.now() - PRIMED_FOR_MS - 1, undefined, () => locked);
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
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}-`);
      if (fail) throw new Error(name);
    });
  await Promise.allSettled([step("a", 20, true), step("b", 1), step("c", 5)]);
  assert.deepEqual(log, ["a+", "a-", "b+", "b-", "c+", "c-"]);
});

import assert from "node:assert/strict";
import { syncAll, SyncStalled } from "./sync.ts";

Deno.test("syncAll: sync(1) that finishes returns the ms it took", async () => {
  const ms = await syncAll({ stallMs: 60_000, pollMs: 50 });
  assert.ok(Number.isInteger(ms) && ms >= 0, String(ms));
});

Deno.test("SyncStalled: names the stall, says nothing was frozen or locked, and what to do", () => {
  const e = new SyncStalled(30_400, 41_000);
  assert.match(e.message, /^sync\(\) made no progress for 30 s \(41 s in all\)/);
  assert.match(e.message, /nothing was frozen or locked/);
  assert.match(e.message, /nfs\|fuse.*\/proc\/mounts/);
});

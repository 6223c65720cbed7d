import assert from "node:assert/strict";
import { buildTree } from "../tests/fixtures/trees/build.ts";
import { discover } from "../discovery/mod.ts";
import { detachedHeader, headerReadable } from "./lock.ts";
import type { Job } from "./job.ts";

Deno.test("detachedHeader, headerReadable: never while a volume the header lives on is not live", async () => {
  await using tree = await buildTree("detached-header");
  const plan = await discover({ root: tree.root, uid: 0 });
  const job = { plan } as unknown as Job;
  const vol = (name: string) => plan.lock.find((v) => v.dmName === name)!;
  // the holder under a name no host has: as if its unlock had failed, zz-data's header there is not read
  const holder = `cryptsleep-test-absent-${crypto.randomUUID()}`;
  vol("cryptroot").dmName = holder;
  vol("zz-data").header.on = [holder];
  const still = new RegExp(`zz-data: its detached header /root/zz\\.hdr is on ${holder}, still locked: unlock that`);
  assert.throws(() => detachedHeader(job, vol("zz-data")), still);
  assert.throws(() => headerReadable(job, vol("zz-data")), still);
  // a header on no volume (/boot) is handed out; a volume whose header is on its data device gets none
  assert.equal(detachedHeader(job, vol(holder)), "/boot/root-header.img");
  assert.equal(detachedHeader(job, vol("stray")), undefined);
  headerReadable(job, vol("stray"));
});

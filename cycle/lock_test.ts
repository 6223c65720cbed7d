import assert from "node:assert/strict";
import { buildTree } from "../tests/fixtures/trees/build.ts";
import { discover } from "../discovery/mod.ts";
import { detachedHeader } from "./lock.ts";
import type { Job } from "./job.ts";

Deno.test("detachedHeader: never handed out while a volume the header lives on is not live", async () => {
  await using tree = await buildTree("detached-header");
  const plan = await discover({ root: tree.root, uid: 0 });
  const job = { plan } as unknown as Job;
  const vol = (name: string) => plan.lock.find((v) => v.dmName === name)!;
  // the tree's cryptroot is no mapping of this host: as if its unlock had failed, zz-data's header there is not read
  assert.throws(
    () => detachedHeader(job, vol("zz-data")),
    /zz-data: its detached header \/root\/zz\.hdr is on cryptroot, still locked: unlock that first/,
  );
  // a header on no volume (/boot) is handed out; a volume whose header is on its data device gets none
  assert.equal(detachedHeader(job, vol("cryptroot")), "/boot/root-header.img");
  assert.equal(detachedHeader(job, vol("stray")), undefined);
});

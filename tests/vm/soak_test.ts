/**
 * The soak's short form (issue #10; `deno task soak` runs it for N cycles): 3 cycles on one boot of a guest, the
 * LUKS root and the LUKS2 data disk open, an fsync appender on each, an O_DIRECT writer on the data disk, an mmap
 * writer on the root and a reader walking the tree the whole time. Every record ACKed after its fsync returned is in
 * its file after the soak (read back with the page cache dropped), every cycle reaches S3 and exits 0 with every CPU back online, no volume key
 * half is in RAM while asleep (dumped every cycle here), no I/O error is logged, the loads go on after each wake.
 */
import assert from "node:assert/strict";
import { FULL_TIER, SLOW, tierKernels } from "./cycle_helpers.ts";
import { LAYOUTS } from "../../scripts/soak_lib.ts";
import { soak } from "../../scripts/soak.ts";

// CI's case on one vCPU; the full tier's on two as well (a laptop has several). With two, the first cycle hung
// before S3 on CI once and in a CI run here once: the kernel said both vCPUs were allocating memory, one trapping
// on int3 again and again (code the kernel patches at run time) while the cycle's first cgroup was being made. That
// looks like QEMU's TCG running code patched under another vCPU; until it is shown either way, CI stays off it
const CASES: [string, number][] = tierKernels(["6.1"], ["6.1"]).flatMap((k) => FULL_TIER ? [[k, 1], [k, 2]] : [[k, 1]]);

for (const [kernel, cpus] of CASES) {
  Deno.test({
    name: `kernel ${kernel}, ${cpus} vCPU${
      cpus > 1 ? "s" : ""
    }: soak, 3 cycles under fsync appenders, O_DIRECT and mmap writers and a reader: 0 failures, 0 records lost, 0 key hits`,
    ...SLOW,
    fn: async () => {
      const r = await soak(
        { cycles: 3, kernel, layout: "root+data", dumpEvery: 1, out: null, cpus },
        (m) => console.error(`… ${m}`),
      );
      const s = r.summary;
      assert.equal(s.cycles, 3, r.table);
      assert.deepEqual(s.failures, [], r.table);
      assert.equal(s.s3Reached, 3, r.table);
      assert.equal(s.recordsLost, 0, r.table);
      assert.ok(r.records?.every((c) => c.acked > 0), `every writer ACKed records:\n${r.table}`);
      assert.deepEqual(s.dumps, [1, 2, 3], r.table);
      assert.equal(s.keyHits, 0, r.table);
      assert.deepEqual(s.reasons, [], r.table);
    },
  });
}

// the other layouts under the same loads (the full tier; `deno task soak -- --layout all --kernel all` is the matrix)
for (const layout of FULL_TIER ? LAYOUTS.filter((l) => l !== "root+data") : []) {
  Deno.test({
    name: `kernel 6.1, layout ${layout}: soak, 2 cycles under the loads: 0 failures, 0 records lost, 0 key hits`,
    ...SLOW,
    fn: async () => {
      const r = await soak(
        { cycles: 2, kernel: "6.1", layout, dumpEvery: 1, out: null, cpus: 1 },
        (m) => console.error(`… ${m}`),
      );
      assert.equal(r.summary.s3Reached, 2, r.table);
      assert.ok(r.records?.every((c) => c.acked > 0), `every writer ACKed records:\n${r.table}`);
      assert.deepEqual(r.summary.reasons, [], r.table);
    },
  });
}

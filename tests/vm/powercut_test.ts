/**
 * A power cut while suspended (#10's faults): the battery dies in S3, the machine boots again. Before the sleep the
 * cycle synced and froze the filesystems (lockfs at the lock), so both ext4 volumes must come up with nothing to
 * replay in their journals, `e2fsck -fn` clean, and every record a writer saw acknowledged (fsync or O_DIRECT + fsync
 * returned) before the cut in its file. Full tier only (two boots).
 */
import assert from "node:assert/strict";
import { FULL_TIER, SLOW, startSuspend } from "./cycle_helpers.ts";
import { boot, openDataDisk } from "./harness.ts";
import {
  LOAD_SH,
  LoadLog,
  missingRecords,
  parseRecords,
  recordsScript,
  SLOTS,
  stripLoadLines,
} from "../../scripts/soak_lib.ts";

const STATE = "/run/powercut";
const WRITERS = [
  { name: "root", kind: "writer", file: "/root/cut/root.log" },
  { name: "data", kind: "writer", file: "/mnt/data/cut/data.log" },
  { name: "direct", kind: "direct", file: "/mnt/data/cut/direct.bin" },
];

Deno.test({
  name: "power cut while suspended: journals clean, e2fsck clean, every acknowledged record on disk after the boot",
  ignore: !FULL_TIER,
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ dataDisk: true, writableDisks: true });
    await openDataDisk(vm);
    const ship = await vm.sh(`mkdir -p ${STATE} && cat > ${STATE}/load.sh <<'EOF'\n${LOAD_SH}EOF\necho shipped`);
    assert.equal(ship.code, 0, ship.out);
    for (const w of WRITERS) {
      const r = await vm.sh(`sh ${STATE}/load.sh ${STATE} /dev/ttyS0 ${w.kind} ${w.name} ${w.file} >/dev/null 2>&1 &`);
      assert.equal(r.code, 0, r.out);
    }
    const log = new LoadLog();
    let fed = 0;
    const pump = () => (fed += log.feed(vm.console.slice(fed)));
    for (let i = 0; i < 240 && WRITERS.some((w) => log.acked(w.name).length < 20); i++) {
      await new Promise((r) => setTimeout(r, 500));
      pump();
    }
    assert.ok(WRITERS.every((w) => log.acked(w.name).length >= 20), JSON.stringify(log.progress()));

    await startSuspend(vm);
    await vm.waitForSuspend(300_000);
    pump();
    const acked = Object.fromEntries(WRITERS.map((w) => [w.name, log.acked(w.name)]));
    await vm.powerCut();
    await vm.restart();

    // the root came up from the init's own unlock; its mount said whether its journal needed replaying
    // (timestamps cut: the console reader drops lines that look like the kernel's own)
    const boot2 = await vm.sh("dmesg | sed 's/^\\[[^]]*\\] //' | grep -E '^EXT4-fs \\(dm-[0-9]+\\): ' || true");
    const mounts = stripLoadLines(boot2.out);
    assert.match(mounts, /EXT4-fs \(dm-0\): mounted filesystem/, `the root's mount in the kernel log:\n${mounts}`);
    assert.doesNotMatch(mounts, /recovery complete/, "the root's journal had nothing to replay");
    const data = await vm.sh(
      `printf %s '${vm.guest.passphrase}' | cryptsetup open --key-file - /dev/vdc data && ` +
        "dumpe2fs -h /dev/mapper/data 2>/dev/null | grep -i '^Filesystem features' && e2fsck -fn /dev/mapper/data",
      { timeoutMs: 300_000 },
    );
    assert.equal(data.code, 0, `e2fsck -fn of the data volume:\n${data.out}`);
    assert.doesNotMatch(data.out, /needs_recovery/, "the data volume's journal had nothing to replay");
    const mount = await vm.sh("mount /dev/mapper/data /mnt/data && echo mounted");
    assert.match(mount.out, /mounted/, mount.out);
    for (const w of WRITERS) {
      const r = await vm.sh(recordsScript(w.name, w.file, `/run/${w.name}.nums`, w.kind !== "writer"), {
        timeoutMs: 300_000,
      });
      const file = parseRecords(stripLoadLines(r.out), w.name);
      assert.ok(file, `${w.file} is gone: ${r.out}`);
      assert.deepEqual(
        missingRecords(acked[w.name], file.ranges, w.kind === "writer" ? undefined : SLOTS),
        [],
        `${w.name}: acknowledged records lost`,
      );
      assert.deepEqual([file.bad, file.dups], [0, 0], `${w.name}: torn or doubled records`);
    }
  },
});

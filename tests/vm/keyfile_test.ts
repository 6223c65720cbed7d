/**
 * Crypttab key files after wake, and their hygiene. The data volume `zdata` (it sorts after `root`, so only its key
 * file puts the root's unlock first) can be opened by a key file alone: its passphrase slot is killed.
 * - Key file on the locked root: one passphrase for the root, then `zdata` opens with its key file, no prompt. While
 *   asleep, before and after the key file was read at a wake, 0 hits for its bytes in RAM; the control finds them in
 *   the page cache before the cycle.
 * - Key file on a plain disk plugged in only after wake (systemd's `path:LABEL=…`): the prompt asks for a passphrase
 *   or the disk, the disk comes, `zdata` opens. The next cycle, with the disk left in and /run emptied as by a reboot,
 *   opens it at once, with the one keyslot it opened before (kept in /var/lib/cryptsleep/keyslots.json).
 * The guest boots with init_on_free=1, so freed memory (a shell tool's buffers) holds no stale copy: a hit is a
 * live copy.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { answerPrompt, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, makeExt4, openDataDisk, type VM, volumeKey } from "./harness.ts";

/** Runs `cmd` and fails the test with its output if it fails. */
async function must(vm: VM, cmd: string, timeoutMs = 120_000): Promise<string> {
  const r = await vm.sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\n${r.out}`);
  return r.out;
}

/** Suspends; counts `needles` in RAM while asleep; wakes; the caller answers the prompt. */
async function asleepHits(vm: VM, needles: Uint8Array[]): Promise<number[]> {
  await vm.waitForSuspend(300_000);
  const hits = await vm.searchRam(needles);
  await vm.wake();
  return hits;
}

/** The last cycle's key-file tries for zdata, from its report: [keyslot tried ("any": every one), outcome]. */
async function keyFileTries(vm: VM): Promise<[number | string, string][]> {
  const report = JSON.parse(await must(vm, "cryptsleep status --json 2>/dev/null"));
  const tries = report.facts.tries as { volume: string; how: string; keyslot: number | string; outcome: string }[];
  return tries.filter((t) => t.volume === "zdata" && t.how === "with its key file").map((t) => [t.keyslot, t.outcome]);
}

const ADD_KEY = "cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000";

Deno.test({
  name: "key files: on the locked root, and on a disk plugged in after wake; none of their bytes in RAM asleep",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({ dataDisk: true, cmdline: "init_on_free=1" });
    const rootKey = keyHalves(await volumeKey(vm, "/dev/vda"));
    const dataKey = keyHalves(await volumeKey(vm, "/dev/vdc"));
    await openDataDisk(vm, "zdata", "/mnt/data");
    await must(vm, "echo kept-through-sleep > /mnt/data/kept && sync");

    await t.step("key file on the locked root: read after the root's unlock, never in RAM while asleep", async () => {
      const hex = await must(
        vm,
        "head -c 64 /dev/urandom > /root/data.key && chmod 600 /root/data.key && " +
          "od -An -v -tx1 /root/data.key",
      );
      const fileKey = keyHalves(Uint8Array.from(hex.trim().split(/\s+/).map((h) => parseInt(h, 16))));
      assert.equal(fileKey[0].length + fileKey[1].length, 64, hex);
      const add = await vm.sh(`${ADD_KEY} /dev/vdc /root/data.key`, {
        timeoutMs: 120_000,
        interact: [{ expect: /Enter any existing passphrase:/, send: vm.guest.passphrase + "\n" }],
      });
      assert.equal(add.code, 0, add.out);
      // only the key file opens it now: a passphrase cannot be what unlocks it
      await must(vm, "cryptsetup luksKillSlot --batch-mode --key-file /root/data.key /dev/vdc 0");
      await must(vm, "echo 'zdata /dev/vdc /root/data.key luks,keyslot=1' >> /etc/crypttab");
      const plan = await must(vm, "cryptsleep plan");
      assert.match(plan, /Unlock order: root, zdata/, plan);
      assert.match(plan, /zdata: \/root\/data\.key on root, read once it is unlocked/, plan);

      const control = await vm.searchRam(fileKey);
      assert.ok(control[0] > 0 && control[1] > 0, `control: the key file is in the page cache now: ${control}`);

      for (const round of [1, 2]) {
        const from = vm.console.length;
        await startSuspend(vm);
        const hits = await asleepHits(vm, [...rootKey, ...dataKey, ...fileKey]);
        assert.deepEqual(hits, [0, 0, 0, 0, 0, 0], `round ${round}: no key and no key file byte in RAM asleep`);
        await answerPrompt(vm);
        assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
        const text = vm.console.slice(from);
        assert.match(text, /Unlocking zdata with its key file \.* unlocked\./, text);
        assert.doesNotMatch(text, /Passphrase to unlock zdata/, text);
      }
      assert.equal((await must(vm, "cat /mnt/data/kept")).trim(), "kept-through-sleep");
    });

    await t.step("key file on a disk plugged in after wake: the prompt waits for it, then it opens", async () => {
      const stickKey = crypto.getRandomValues(new Uint8Array(64));
      const dir = await Deno.makeTempDir({ dir: vm.tmp });
      await Deno.mkdir(join(dir, "keys"));
      await Deno.writeFile(join(dir, "keys", "zdata.key"), stickKey);
      const stick = join(vm.tmp, "stick.ext4");
      await makeExt4(dir, stick, "CSKEY");
      await Deno.remove(dir, { recursive: true });

      await vm.plugDisk("stick", stick);
      await must(
        vm,
        "i=0; while [ ! -b /dev/vdd ] && [ $i -lt 60 ]; do i=$((i+1)); sleep 1; done; " +
          "mkdir -p /mnt/key && mount -o ro /dev/vdd /mnt/key",
      );
      await must(vm, `${ADD_KEY} --key-file /root/data.key /dev/vdc /mnt/key/keys/zdata.key`);
      await must(vm, "cryptsetup luksKillSlot --batch-mode --key-file /mnt/key/keys/zdata.key /dev/vdc 1");
      await must(vm, "sed -i 's|^zdata .*|zdata /dev/vdc /keys/zdata.key:LABEL=CSKEY luks|' /etc/crypttab");
      const plan = await must(vm, "cryptsleep plan");
      assert.match(plan, /zdata: \/keys\/zdata\.key on LABEL=CSKEY, mounted read-only after wake/, plan);
      await must(vm, "umount /mnt/key");
      await vm.unplugDisk("stick");
      const stickHalves = keyHalves(stickKey);

      let from = vm.console.length;
      await startSuspend(vm);
      assert.deepEqual(await asleepHits(vm, [...dataKey, ...stickHalves]), [0, 0, 0, 0]);
      await answerPrompt(vm);
      await vm.waitForConsole(/Passphrase to unlock zdata \S+, or insert LABEL=CSKEY: /, 300_000);
      await vm.plugDisk("stick", stick);
      assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
      let text = vm.console.slice(from);
      assert.match(text, /zdata: key file \/keys\/zdata\.key: LABEL=CSKEY is not there\./, text);
      assert.match(text, /Unlocking zdata with its key file \.* unlocked\./, text);
      // no keyslot= in crypttab: every slot tried, and the one that opened is kept for the next wake
      assert.deepEqual(await keyFileTries(vm), [["any", "unlocked"]]);

      // kept on disk too; then /run as a reboot leaves it (no report): the next wake still tries that slot alone
      const uuid = (await must(vm, "cryptsetup luksUUID /dev/vdc")).trim();
      const kept = JSON.parse(await must(vm, "cat /var/lib/cryptsleep/keyslots.json"));
      assert.deepEqual(kept[uuid], { path: "/keys/zdata.key", keyslot: 0 }, JSON.stringify(kept));
      await must(vm, "rm /run/cryptsleep/last.json");

      // the disk left in: read at once after the root's unlock; nothing of it in RAM while asleep
      from = vm.console.length;
      await startSuspend(vm);
      assert.deepEqual(await asleepHits(vm, [...dataKey, ...stickHalves]), [0, 0, 0, 0]);
      await answerPrompt(vm);
      assert.equal(await suspendExit(vm), 0, vm.console.slice(from));
      text = vm.console.slice(from);
      assert.match(text, /Unlocking zdata with its key file \.* unlocked\./, text);
      assert.doesNotMatch(text, /Passphrase to unlock zdata/, text);
      assert.deepEqual(
        await keyFileTries(vm),
        [[0, "unlocked"]],
        "the slot it opened at the wake before the reboot, alone",
      );
      // the cycle's read-only mount of the disk is gone with it
      const after = await must(vm, "cat /mnt/data/kept; grep -c '^/dev/vdd ' /proc/mounts || true");
      assert.equal(after.trim(), "kept-through-sleep\n0");
    });
  },
});

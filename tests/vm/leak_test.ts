/**
 * A volume opened from an image file: cryptsetup attaches the loop device itself, and the loop device's
 * backing file holds the opener's credentials, thread keyring included, so the volume key stays in a
 * kernel keyring after luksSuspend on every kernel, out of root's reach. cryptsleep must see it (doctor), and
 * release it: by default at the lock (the table is swapped onto a placeholder, so the loop device detaches and
 * the key goes: this very suspend is clean), or with `--release-at unlock` by re-opening the volume after the
 * unlock (that suspend warns, truly; the next one is clean). Either way the volume stays the same LUKS mapping.
 */
import assert from "node:assert/strict";
import {
  AFTER_SUPERVISOR,
  answerPrompt,
  armAgentKiller,
  CONSOLE,
  fullCycle,
  SLOW,
  startSuspend,
  suspendExit,
} from "./cycle_helpers.ts";
import { boot, keyHalves, volumeKey } from "./harness.ts";
import { imageVolume } from "./disks.ts";

Deno.test({
  name: "image-file volume: the pinned key is detected and released at the lock (or re-opened at unlock on demand)",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({});
    const pass = vm.guest.passphrase;
    const setup = await vm.sh(
      `${imageVolume(pass, "/run/img.luks", "img")} && ` +
        "printf kept | dd of=/dev/mapper/img conv=fsync 2>/dev/null && grep -c 'logon.*cryptsetup:' /proc/keys",
      { timeoutMs: 180_000 },
    );
    assert.equal(setup.code, 0, setup.out);
    const rootNeedles = keyHalves(await volumeKey(vm, "/dev/vda"));
    const imgNeedles = keyHalves(await volumeKey(vm, "/run/img.luks"));

    await t.step("doctor and plan name the pinned key", async () => {
      const doctor = await vm.sh("cryptsleep doctor", { timeoutMs: 120_000 });
      assert.match(doctor.out, /^warn\s+keyring img\b/m, doctor.out);
      assert.match(doctor.out, /^ok\s+keyring root\b/m, doctor.out);
    });

    await t.step("--refuse-leak with --release-at unlock refuses with nothing touched", async () => {
      const r = await vm.sh(`cryptsleep suspend ${CONSOLE} --refuse-leak --release-at unlock`, { timeoutMs: 180_000 });
      assert.equal(r.code, 3, r.out);
      assert.match(r.out, /refused: the volume key of img is pinned in a kernel keyring/);
      const live = await vm.sh("cat /sys/block/dm-*/dm/suspended | sort -u");
      assert.equal(live.out.trim(), "0");
    });

    await t.step("the first suspend is clean: the lock swaps the table away and the pinned key goes", async () => {
      const first = await fullCycle(vm, [...rootNeedles, ...imgNeedles]);
      assert.deepEqual(first.hits, [0, 0, 0, 0], "no key half of either volume in RAM at the first suspend");
      assert.doesNotMatch(first.text, /stays in RAM during this suspend/);
      const f = await vm.sh("dd if=/dev/mapper/img bs=512 count=1 iflag=direct 2>/dev/null | head -c 4");
      assert.equal(f.out.trim(), "kept", "the data on the image volume reads back through dm-crypt");
      const status = await vm.sh("cryptsleep status --json");
      const facts = JSON.parse(status.out.slice(0, status.out.lastIndexOf("}") + 1)).facts;
      assert.deepEqual(facts.releasedAtLock, ["img"], status.out);
    });

    await t.step("after the unlock: no keyring key, one loop device, the next suspend is clean", async () => {
      const keys = await vm.sh("grep -c 'cryptsetup:' /proc/keys");
      assert.equal(keys.out.trim(), "0", keys.out);
      const loops = await vm.sh("grep -l /run/img.luks /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l");
      assert.equal(loops.out.trim(), "1", "the loop device cryptsetup attached detached itself");
      const status = await vm.sh("cryptsetup status img");
      assert.equal(status.code, 0, status.out);
      assert.match(status.out, /type:\s+LUKS2[\s\S]*device:\s+\/dev\/loop\d+[\s\S]*loop:\s+\/run\/img\.luks/);

      const second = await fullCycle(vm, [...rootNeedles, ...imgNeedles]);
      assert.deepEqual(second.hits, [0, 0, 0, 0], "no key half of either volume in RAM at the second suspend");
      assert.doesNotMatch(second.text, /stays in RAM during this suspend/);
      const f = await vm.sh("dd if=/dev/mapper/img bs=512 count=1 iflag=direct 2>/dev/null | head -c 4");
      assert.equal(f.out.trim(), "kept");
    });

    await t.step("a re-open cut off between its table swaps is finished at the next lock", async () => {
      // the state an agent killed mid re-open leaves: the volume runs as linear through the helper mapping
      const cut = await vm.sh(
        "dmsetup table --showkeys img | dmsetup create cryptsleep-reopen-img && " +
          "mm=$(dmsetup info -c --noheadings -o major,minor cryptsleep-reopen-img | tr -d ' ') && " +
          'dmsetup reload img --table "0 $(blockdev --getsz /dev/mapper/img) linear $mm 0" && dmsetup resume img && ' +
          "dmsetup table img | cut -d' ' -f3",
      );
      assert.equal(cut.code, 0, cut.out);
      assert.equal(cut.out.trim(), "linear");
      const third = await fullCycle(vm, [...rootNeedles, ...imgNeedles]);
      assert.deepEqual(third.hits, [0, 0, 0, 0]);
      const after = await vm.sh(
        "dmsetup table img | cut -d' ' -f3; dmsetup ls | grep -c cryptsleep-reopen; " +
          "dd if=/dev/mapper/img bs=512 count=1 iflag=direct 2>/dev/null | head -c 4",
      );
      assert.deepEqual(after.out.trim().split(/\s+/), ["crypt", "0", "kept"], after.out);
    });

    await t.step("--release-at unlock: the suspend warns, truly; the unlock re-opens; the next is clean", async () => {
      const again = await vm.sh(
        `cryptsetup close img && printf %s '${pass}' | cryptsetup open --key-file - /run/img.luks img && ` +
          "grep -c 'logon.*cryptsetup:' /proc/keys",
        { timeoutMs: 120_000 },
      );
      assert.equal(again.code, 0, again.out);
      assert.equal(again.out.trim(), "1", "pinned again: opened by cryptsetup in keyring mode");
      const first = await fullCycle(vm, [...rootNeedles, ...imgNeedles], "--release-at unlock");
      assert.match(first.text, /warning: img: its volume key stays in RAM during this suspend/);
      assert.deepEqual(first.hits.slice(0, 2), [0, 0], "the root's key is gone");
      assert.ok(first.hits.slice(2).some((n) => n > 0), `the image volume's key is in RAM, as warned: ${first.hits}`);
      assert.match(first.text, /img re-opened: its key is out of the keyring/);
      const second = await fullCycle(vm, [...rootNeedles, ...imgNeedles], "--release-at unlock");
      assert.deepEqual(second.hits, [0, 0, 0, 0]);
      assert.doesNotMatch(second.text, /stays in RAM during this suspend|re-opened/);
    });

    await t.step("cryptsleep killed after a table-swap lock: the supervisor rebuilds the mapping", async () => {
      const again = await vm.sh(
        `cryptsetup close img && printf %s '${pass}' | cryptsetup open --key-file - /run/img.luks img && ` +
          "grep -c 'logon.*cryptsetup:' /proc/keys",
        { timeoutMs: 120_000 },
      );
      assert.equal(again.out.trim(), "1", "pinned again");
      await armAgentKiller(vm);
      const from = vm.console.length;
      await startSuspend(vm);
      await vm.waitForSuspend(300_000);
      assert.deepEqual(await vm.searchRam(imgNeedles), [0, 0], "held: the image volume's key is out of RAM");
      await vm.wake();
      await vm.waitForConsole(/the cycle's process died; the supervisor unlocks/, 300_000);
      await answerPrompt(vm);
      assert.equal(await suspendExit(vm), 137, vm.console.slice(from));
      const after = await vm.sh(
        "cat /run/killer/done; dmsetup table img | cut -d' ' -f3; dmsetup ls | grep -c cryptsleep-; " +
          "dd if=/dev/mapper/img bs=512 count=1 iflag=direct 2>/dev/null | head -c 4; echo; " +
          AFTER_SUPERVISOR,
        { timeoutMs: 120_000 },
      );
      assert.deepEqual(after.out.trim().split(/\s+/), ["killed", "crypt", "0", "kept"], after.out);
    });

    await t.step("the re-opened volume closes the usual way, and its loop device goes with it", async () => {
      const r = await vm.sh(
        "cryptsetup close img && grep -l /run/img.luks /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l",
      );
      assert.equal(r.code, 0, r.out);
      assert.equal(r.out.trim(), "0", "autoclear: the loop device detached at close");
    });
  },
});

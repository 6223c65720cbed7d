/**
 * The bed's second guest type: Debian trixie with systemd, as an encrypted install is laid out. One boot: the
 * passphrase typed at Debian's own initramfs prompt, systemd up, the root and the LVM-on-LUKS /home as crypttab and
 * fstab say, and a plain `systemctl suspend` (no locking) that reaches S3 and wakes with the shell still answering.
 */
import assert from "node:assert/strict";
import { SLOW } from "./cycle_helpers.ts";
import { boot } from "./harness.ts";

Deno.test({
  name: "debian guest: systemd up, LUKS2 root and LVM-on-LUKS /home, systemctl suspend reaches S3 and wakes",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({ guest: "debian", dataDisk: true });

    await t.step("systemd finished booting: running or degraded", async () => {
      const r = await vm.sh("systemctl is-system-running --wait", { timeoutMs: 600_000 });
      const state = r.out.trim().split("\n").at(-1) ?? "";
      if (state === "degraded") {
        const failed = await vm.sh("systemctl --failed --no-pager --plain --no-legend");
        console.error(`degraded; failed units:\n${failed.out}`);
      }
      assert.match(state, /^(running|degraded)$/, r.out);
    });

    await t.step("root is root_crypt, a LUKS2 mapping unlocked by the initramfs", async () => {
      const r = await vm.sh("cryptsetup status root_crypt; findmnt -n -o SOURCE /");
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /is active and is in use/);
      assert.match(r.out, /type:\s+LUKS2/);
      assert.match(r.out, /device:\s+\/dev\/vda/);
      assert.match(r.out, /^\/dev\/mapper\/root_crypt$/m);
    });

    await t.step("/home is LV vg/home on the LUKS2 data volume, mounted and writable", async () => {
      const r = await vm.sh(
        "cryptsetup status data_crypt && findmnt -n -o SOURCE,FSTYPE /home && " +
          'lsblk -s -n -r -o NAME,TYPE "$(findmnt -n -o SOURCE /home)" && cat /home/hello.txt && ' +
          "echo written > /home/w && sync && cat /home/w",
      );
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /type:\s+LUKS2/);
      assert.match(r.out, /^\/dev\/mapper\/vg-home ext4$/m);
      // the stack from the mounted LV down: lvm, then crypt, then the disk
      assert.match(r.out, /^vg-home lvm\ndata_crypt crypt\nvdc disk$/m);
      assert.match(r.out, /hello from vg\/home/);
      assert.match(r.out, /^written$/m);
    });

    await t.step("cryptsleep runs from the tool disk and plans both volumes", async () => {
      const r = await vm.sh("cryptsleep plan --json", { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.out);
      const plan = JSON.parse(r.out.slice(r.out.indexOf("{")));
      const names = plan.lock.map((v: { dmName: string }) => v.dmName).sort();
      assert.deepEqual(names, ["data_crypt", "root_crypt"], r.out);
    });

    await t.step("systemctl suspend reaches S3, system_wakeup wakes it, the shell answers", async () => {
      // Debian's cryptsetup-suspend wrapper would lock and prompt on VT8: mask its drop-in for a plain suspend
      const mask = await vm.sh(
        "mkdir -p /run/systemd/system/systemd-suspend.service.d && " +
          "ln -sf /dev/null /run/systemd/system/systemd-suspend.service.d/cryptsetup-suspend.conf && " +
          "systemctl daemon-reload && systemctl cat --no-pager systemd-suspend.service; cat /sys/power/mem_sleep " +
          "/sys/power/suspend_stats/success",
      );
      assert.equal(mask.code, 0, mask.out);
      assert.doesNotMatch(mask.out, /openvt/, "the cryptsetup-suspend drop-in is masked");
      assert.match(mask.out, /\[deep\]/, "S3 is the kernel's suspend");
      const before = Number(mask.out.trim().split("\n").at(-1));

      vm.clearEvents();
      const r = await vm.sh("systemctl suspend", { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.out);
      await vm.waitForEvent("SUSPEND", 300_000);
      await vm.wake();
      await vm.waitForEvent("WAKEUP", 60_000);
      await vm.waitForShell(300_000);

      const after = await vm.sh("echo awake; cat /sys/power/suspend_stats/success", { timeoutMs: 300_000 });
      assert.match(after.out, /^awake$/m);
      assert.equal(Number(after.out.trim().split("\n").at(-1)), before + 1, "the kernel counts one suspend");
      const io = await vm.sh("echo after-wake > /home/w2 && sync && cat /home/w2", { timeoutMs: 120_000 });
      assert.equal(io.out.trim(), "after-wake");
    });
  },
});

/**
 * The bed's second guest type: Debian trixie with systemd, as an encrypted install is laid out. One boot: the
 * passphrase typed at Debian's own initramfs prompt, systemd up, the root and the LVM-on-LUKS /home as crypttab and
 * fstab say, and a plain `systemctl suspend` (no locking) that reaches S3 and wakes with the shell still answering.
 * Then cryptsleep as a Debian user gets it: the .deb installed with dpkg, `cryptsleep install`, and systemd's own
 * suspend path (what the lid and the menu use) locks both volumes, runs the system-sleep hooks around the cycle and
 * prompts after wake; `cryptsleep uninstall` gives systemd back its plain suspend.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { answerPrompt, lineCount, SLOW } from "./cycle_helpers.ts";
import { boot, keyHalves, volumeKey } from "./harness.ts";
import { buildDeb } from "../../scripts/deb.ts";
import { REPO_ROOT } from "../../scripts/guest/build.ts";

Deno.test({
  name: "debian guest: systemd up, LUKS2 root and LVM-on-LUKS /home, systemctl suspend reaches S3 and wakes",
  ...SLOW,
  fn: async (t) => {
    // the package as a user installs it (zstd: seconds to build, where xz takes minutes under load)
    const debDir = await Deno.makeTempDir({ prefix: "cryptsleep-deb-" });
    const deb = await buildDeb({
      bundle: join(REPO_ROOT, "dist", "cryptsleep.js"),
      outDir: debDir,
      compression: "zstd",
    });
    await using vm = await boot({ guest: "debian", dataDisk: true, toolFiles: { "cryptsleep.deb": deb } });
    await Deno.remove(debDir, { recursive: true });

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

    await t.step("the .deb installs with dpkg; cryptsleep install puts it in systemd-suspend.service", async () => {
      const r = await vm.sh(
        "dpkg -i /usr/local/lib/cryptsleep/cryptsleep.deb && /usr/sbin/cryptsleep --version && " +
          "/usr/sbin/cryptsleep install --console /dev/ttyS0 && systemctl cat --no-pager systemd-suspend.service",
        { timeoutMs: 300_000 },
      );
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /^ExecStart=\/usr\/sbin\/cryptsleep suspend --from-systemd --console \/dev\/ttyS0$/m);
      const status = await vm.sh("/usr/sbin/cryptsleep status; true", { timeoutMs: 120_000 });
      assert.match(status.out, /installed: systemd-suspend.service runs \/usr\/sbin\/cryptsleep/, status.out);
    });

    await t.step(
      "systemctl suspend goes through cryptsleep: S3 with no key half in RAM, hooks, prompt, writer",
      async () => {
        const setup = await vm.sh(
          "mkdir -p /usr/lib/systemd/system-sleep && " +
            "printf '#!/bin/sh\\necho \"$1 $2 $SYSTEMD_SLEEP_ACTION\" >> /run/hooks.log\\n' " +
            "> /usr/lib/systemd/system-sleep/zz-cryptsleep-test && chmod 755 /usr/lib/systemd/system-sleep/zz-cryptsleep-test",
        );
        assert.equal(setup.code, 0, setup.out);
        const writer = await vm.sh(
          "(while :; do echo x >> /home/writer.log; sync; sleep 0.2; done) >/dev/null 2>&1 & sleep 1; echo started",
        );
        assert.equal(writer.code, 0, writer.out);
        const needles = [
          ...keyHalves(await volumeKey(vm, "/dev/vda")),
          ...keyHalves(await volumeKey(vm, "/dev/vdc")),
        ];
        const open = await vm.searchRam(needles);
        assert.ok(open.every((n) => n > 0), `control: every key half is in RAM while open: ${open}`);

        vm.clearEvents();
        const r = await vm.sh("systemctl suspend", { timeoutMs: 120_000 });
        assert.equal(r.code, 0, r.out);
        await vm.waitForEvent("SUSPEND", 600_000);
        assert.deepEqual(await vm.searchRam(needles), needles.map(() => 0), "no key half of root or /home in RAM");
        await vm.wake();
        await answerPrompt(vm, 600_000);
        await vm.waitForShell(600_000);

        // the cycle's outer process runs the post hooks after the thaw: wait until systemd saw the service end
        const ended = await vm.sh(
          'for i in $(seq 300); do [ "$(systemctl show -P ActiveState systemd-suspend.service)" = inactive ] && ' +
            "break; sleep 1; done; systemctl show -P Result systemd-suspend.service",
          { timeoutMs: 400_000 },
        );
        assert.match(ended.out, /^success$/m, `systemd-suspend.service ended well: ${ended.out}`);
        const hooks = await vm.sh("cat /run/hooks.log");
        assert.equal(hooks.out.trim(), "pre suspend suspend\npost suspend suspend", hooks.out);
        const status = await vm.sh("/usr/sbin/cryptsleep status --json", { timeoutMs: 120_000 });
        const report = JSON.parse(status.out.slice(status.out.indexOf("{"), status.out.lastIndexOf("}") + 1));
        assert.equal(report.ok, true, status.out);
        assert.equal(report.facts.trigger, "systemd-suspend.service", status.out);
        const journal = await vm.sh("dmesg | grep -c 'cryptsleep: '");
        assert.ok(Number(journal.out.trim()) > 5, "the timeline is in the kernel log");
        const before = await lineCount(vm, "/home/writer.log");
        await vm.sh("sleep 2");
        assert.ok(await lineCount(vm, "/home/writer.log") > before, "the writer on LVM-on-LUKS /home goes on");
        await vm.sh("kill %1; wait");
      },
    );

    await t.step("cryptsleep uninstall gives systemd back its plain suspend: the keys stay in RAM", async () => {
      const r = await vm.sh(
        "/usr/sbin/cryptsleep uninstall && systemctl cat --no-pager systemd-suspend.service",
        { timeoutMs: 120_000 },
      );
      assert.equal(r.code, 0, r.out);
      assert.doesNotMatch(r.out, /cryptsleep suspend/);
      const needles = keyHalves(await volumeKey(vm, "/dev/vda"));
      vm.clearEvents();
      const s = await vm.sh("systemctl suspend", { timeoutMs: 120_000 });
      assert.equal(s.code, 0, s.out);
      await vm.waitForEvent("SUSPEND", 300_000);
      const hits = await vm.searchRam(needles);
      assert.ok(hits.every((n) => n > 0), `a plain suspend keeps the root's key in RAM: ${hits}`);
      await vm.wake();
      await vm.waitForShell(300_000);
    });
  },
});

/**
 * The bed's second guest type: Debian trixie with systemd, as an encrypted install is laid out. One boot: the
 * passphrase typed at Debian's own initramfs prompt, systemd up, the root and the LVM-on-LUKS /home as crypttab and
 * fstab say, and a plain `systemctl suspend` (no locking) that reaches S3 and wakes with the shell still answering.
 * Then cryptsleep as a Debian user gets it: the .deb installed with dpkg, `cryptsleep install`, and systemd's own
 * suspend path (what the lid and the menu use) locks both volumes, runs the system-sleep hooks around the cycle and
 * prompts after wake — also with a hardware watchdog at 10 s and a prompt that waits 60 s, and with a second request
 * refused; logind's suspend during a cycle by hand is refused; without --console the prompt is on a VT of its own;
 * `install --kept` runs two cycles in cryptsleep-kept.service's one process, locked, and installing without it stops
 * that service again; `cryptsleep uninstall` gives systemd back its plain suspend. Last, a LUKS2 TPM2 token with a PIN (swtpm on the host,
 * QEMU's tpm-tis, systemd-cryptenroll): its plugin and the libraries it loads later live on the locked root, and the
 * cycle loads them before its pin, so the PIN prompt works after wake; a wrong PIN is said and asked again, the right
 * one opens the root, /home's volume its key file on the root; the wrong and the right PIN (fresh words, the right
 * one typed for the enrollment before a reboot, then only at the prompt) are not in RAM at the next suspend while a
 * control word typed into the shell is; Enter alone at the PIN prompt asks for the passphrase.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { answerPrompt, freshWord, FULL_TIER, lineCount, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, REAL_SUSPENDS, type VM, volumeKey } from "./harness.ts";
import { buildDeb } from "../../scripts/deb.ts";
import { REPO_ROOT } from "../../scripts/guest/build.ts";

const enc = new TextEncoder();
const PIN_PROMPT = /TPM2 PIN to unlock root_crypt \(Enter alone: its passphrase\): /;

async function must(vm: VM, cmd: string, timeoutMs = 300_000): Promise<string> {
  const r = await vm.sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\n${r.out}`);
  return r.out;
}

const SET_WATCHDOG = "busctl set-property org.freedesktop.systemd1 /org/freedesktop/systemd1 " +
  "org.freedesktop.systemd1.Manager RuntimeWatchdogUSec t";

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
    await using vm = await boot({
      guest: "debian",
      dataDisk: true,
      vga: true,
      tpm: true,
      // the PIN's check boots again on the same disks (the enrollment kept, RAM fresh)
      writableDisks: true,
      toolFiles: { "cryptsleep.deb": deb },
    });
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
      await vm.waitForSuspend(300_000);
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

        // systemd drives a hardware watchdog at 10 s. softdog, like a laptop's iTCO_wdt, counts on after resume
        // (QEMU's i6300esb does not: the wake resets it); the prompt below waits 60 s with PID 1 frozen
        const wdt = await vm.sh(
          `modprobe softdog && ${SET_WATCHDOG} 10000000 && sleep 1 && cat /sys/class/watchdog/watchdog0/state && ` +
            REAL_SUSPENDS,
        );
        assert.match(wdt.out, /^active$/m, wdt.out);
        const sleptBefore = Number(wdt.out.trim().split("\n").at(-1));

        vm.clearEvents();
        const r = await vm.sh("systemctl suspend", { timeoutMs: 120_000 });
        assert.equal(r.code, 0, r.out);
        // a second request while the cycle runs (a script, the lid again), once the first holds the lock: neither
        // logind's path nor cryptsleep by hand may start a second cycle. In the background: the freeze comes
        // seconds after the lock and may catch it half-way, to go on after the thaw
        const second = await vm.sh(
          "(for i in $(seq 600); do [ -s /run/cryptsleep/lock ] && break; sleep 0.1; done; cat /run/cryptsleep/lock; " +
            "systemctl suspend; echo systemctl-rc=$?; cryptsleep suspend --from-systemd --console /dev/ttyS0; " +
            "echo cryptsleep-rc=$?) >/run/second.log 2>&1 & echo started",
        );
        assert.equal(second.code, 0, second.out);
        await vm.waitForSuspend(600_000);
        assert.deepEqual(await vm.searchRam(needles), needles.map(() => 0), "no key half of root or /home in RAM");
        await vm.wake();
        await answerPrompt(vm, 600_000, 60_000);
        await vm.waitForShell(600_000);
        const refused = await vm.sh(
          "for i in $(seq 300); do grep -q cryptsleep-rc= /run/second.log && break; sleep 1; done; cat /run/second.log",
          { timeoutMs: 400_000 },
        );
        console.error(`second request during the cycle:\n${refused.out}`);
        assert.match(refused.out, /cryptsleep-rc=3$/m, "cryptsleep by hand is refused");
        assert.match(refused.out, /another cryptsleep suspend is running|merged into it/, refused.out);

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

        // the watchdog: still running (no reset while the prompt waited), handed back to systemd as it was
        const after = await vm.sh(
          "systemctl show -P RuntimeWatchdogUSec; cat /sys/class/watchdog/watchdog0/state; sleep 20; " +
            REAL_SUSPENDS,
          { timeoutMs: 120_000 },
        );
        assert.match(after.out, /^10s\nactive$/m, after.out);
        const handed = report.phases.find((p: { name: string }) => p.name === "watchdog");
        assert.equal(handed?.detail?.previousUSec, "10000000", JSON.stringify(handed));
        // one cycle, one S3: the second request neither slept nor started a cycle after the wake
        assert.equal(Number(after.out.trim().split("\n").at(-1)), sleptBefore + 1, after.out);
        assert.equal(vm.eventsSinceClear("SUSPEND").length, 1, "one S3 since the request");
        await vm.sh(`${SET_WATCHDOG} 0`);
      },
    );

    await t.step("logind's suspend while cryptsleep runs by hand: refused, the one cycle sleeps locked", async () => {
      const before = await vm.sh(REAL_SUSPENDS);
      const needles = keyHalves(await volumeKey(vm, "/dev/vdc"));
      vm.clearEvents();
      const byHand = await vm.sh("cryptsleep suspend --console /dev/ttyS0 >/run/by-hand.log 2>&1 & echo started");
      assert.equal(byHand.code, 0, byHand.out);
      // in the background too: the by-hand cycle freezes this shell seconds after its lock
      const r = await vm.sh(
        "(for i in $(seq 600); do [ -s /run/cryptsleep/lock ] && break; sleep 0.1; done; systemctl suspend; " +
          "echo rc=$?) >/run/logind-request.log 2>&1 & echo started",
      );
      assert.equal(r.code, 0, r.out);
      await vm.waitForSuspend(600_000);
      assert.deepEqual(await vm.searchRam(needles), needles.map(() => 0), "asleep with /home locked");
      await vm.wake();
      await answerPrompt(vm, 600_000);
      await vm.waitForShell(600_000);
      const after = await vm.sh(
        "wait; cat /run/by-hand.log /run/logind-request.log; for i in $(seq 300); do " +
          '[ "$(systemctl show -P ActiveState systemd-suspend.service)" != activating ] && break; sleep 1; done; ' +
          "sleep 20; systemctl show -P Result systemd-suspend.service; " +
          "journalctl -b -u systemd-suspend.service --no-pager | tail -n 5; " + REAL_SUSPENDS,
        { timeoutMs: 600_000 },
      );
      console.error(`logind's request during a cycle by hand:\n${after.out}`);
      assert.match(after.out, /^rc=0$/m, "logind took the request");
      assert.match(after.out, /another cryptsleep suspend is running|merged into it/, "the service's run is refused");
      assert.match(after.out, /^exit-code$/m, "systemd-suspend.service failed: logind's sleep did not happen");
      assert.equal(Number(after.out.trim().split("\n").at(-1)), Number(before.out.trim()) + 1, "one S3, no second");
      assert.equal(vm.eventsSinceClear("SUSPEND").length, 1, "one S3 since the request");
    });

    await t.step("installed without --console, the prompt is on a VT of its own, typed on the keyboard", async () => {
      const r = await vm.sh(
        "cryptsleep uninstall && cryptsleep install && systemctl cat --no-pager systemd-suspend.service",
        { timeoutMs: 300_000 },
      );
      assert.match(r.out, /^ExecStart=\/usr\/sbin\/cryptsleep suspend --from-systemd$/m, r.out);
      const from = vm.console.length;
      vm.clearEvents();
      const s = await vm.sh("systemctl suspend", { timeoutMs: 120_000 });
      assert.equal(s.code, 0, s.out);
      await vm.waitForSuspend(600_000);
      await vm.wake();
      // the screen cannot be read after wake (QEMU resets the VGA card), and keys typed before the prompt are
      // flushed by it: type on the keyboard until the serial console, which shows the same prompt and progress,
      // says the root is unlocked. Nothing is typed on the serial console meanwhile: a line there is an answer too.
      const unlocked = /Unlocking root_crypt \.* unlocked\./;
      let thawed = false;
      for (let attempt = 0; attempt < 8 && !thawed; attempt++) {
        await new Promise((res) => setTimeout(res, 10_000));
        await vm.sendKeys(vm.guest.passphrase + "\n");
        thawed = await vm.waitForConsole(unlocked, 40_000, from).then(() => true, () => false);
      }
      assert.ok(thawed, `unlocked from the keyboard: ${vm.console.slice(from)}`);
      await vm.waitForShell(300_000);
      // console=ttyS0 on the kernel's command line: the prompt was on the serial console too; the keyboard's won
      assert.match(vm.console.slice(from), /Passphrase to unlock/, "the prompt is on the serial console too");
      const status = await vm.sh(
        'for i in $(seq 300); do [ "$(systemctl show -P ActiveState systemd-suspend.service)" = inactive ] && ' +
          "break; sleep 1; done; /usr/sbin/cryptsleep status --json",
        { timeoutMs: 400_000 },
      );
      const report = JSON.parse(status.out.slice(status.out.indexOf("{"), status.out.lastIndexOf("}") + 1));
      assert.equal(report.ok, true, status.out);
      assert.equal(report.facts.trigger, "systemd-suspend.service", status.out);
    });

    await t.step("install --kept: systemctl suspend's cycle runs in cryptsleep-kept.service, locked", async () => {
      const r = await vm.sh(
        "cryptsleep install --kept --console /dev/ttyS0 && systemctl cat --no-pager systemd-suspend.service && " +
          "systemctl is-active cryptsleep-kept.service && systemctl show -P MemorySwapMax cryptsleep-kept.service && " +
          "for i in $(seq 600); do [ -p /run/cryptsleep/kept/request ] && break; sleep 0.5; done; " +
          "cat /run/cryptsleep/kept/pid",
        { timeoutMs: 600_000 },
      );
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /^ExecStart=\/usr\/lib\/cryptsleep\/cryptsleep-request --console \/dev\/ttyS0$/m, r.out);
      // the pid file: serve's pid and its start (host/proc.ts processIdentity)
      assert.match(r.out, /^active\n0\n\d+ \d+$/m, r.out);
      const servePid = Number(r.out.trim().split("\n").at(-1)!.split(" ")[0]);
      const needles = [...keyHalves(await volumeKey(vm, "/dev/vda")), ...keyHalves(await volumeKey(vm, "/dev/vdc"))];
      for (const n of [1, 2]) {
        vm.clearEvents();
        const s = await vm.sh("systemctl suspend", { timeoutMs: 120_000 });
        assert.equal(s.code, 0, s.out);
        await vm.waitForSuspend(600_000);
        assert.deepEqual(await vm.searchRam(needles), needles.map(() => 0), `cycle ${n}: no key half in RAM`);
        await vm.wake();
        await answerPrompt(vm, 600_000);
        await vm.waitForShell(600_000);
        const status = await vm.sh(
          'for i in $(seq 300); do [ "$(systemctl show -P ActiveState systemd-suspend.service)" = inactive ] && ' +
            "break; sleep 1; done; systemctl show -P Result systemd-suspend.service; /usr/sbin/cryptsleep status --json",
          { timeoutMs: 400_000 },
        );
        assert.match(status.out, /^success$/m, status.out);
        const report = JSON.parse(status.out.slice(status.out.indexOf("{"), status.out.lastIndexOf("}") + 1));
        assert.equal(report.ok, true, status.out);
        assert.equal(report.facts.kept, true, `cycle ${n} ran in the kept process`);
        console.error(`kept cycle ${n}: request → cycle ${JSON.stringify(report.facts.startMs)} ms`);
      }
      const same = await vm.sh(
        `cat /run/cryptsleep/kept/pid; journalctl -b -u cryptsleep-kept.service --no-pager | tail -n 3`,
      );
      assert.equal(Number(same.out.trim().split("\n")[0].split(" ")[0]), servePid, `the same serve: ${same.out}`);
      // back to the one-shot install: the service stops and its unit goes
      const back = await vm.sh(
        "cryptsleep install --console /dev/ttyS0 && systemctl is-active cryptsleep-kept.service; " +
          "ls /etc/systemd/system/cryptsleep-kept.service; systemctl show -P ExecStart systemd-suspend.service",
        { timeoutMs: 300_000 },
      );
      assert.match(back.out, /^inactive$/m, back.out);
      assert.match(back.out, /No such file/, back.out);
      assert.match(back.out, /cryptsleep suspend --from-systemd --console \/dev\/ttyS0/, back.out);
    });

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
      await vm.waitForSuspend(300_000);
      const hits = await vm.searchRam(needles);
      assert.ok(hits.every((n) => n > 0), `a plain suspend keeps the root's key in RAM: ${hits}`);
      await vm.wake();
      await vm.waitForShell(300_000);
    });

    // last: a PIN token on the root changes what every later prompt asks first
    // as long as the other words searched for: six digits could be found in RAM by chance
    const pin = freshWord();
    const rootKey = keyHalves(await volumeKey(vm, "/dev/vda"));

    await t.step("systemd-cryptenroll puts a TPM2+PIN token on the root; plan lists it", async () => {
      await must(vm, "systemctl is-system-running --wait || true; ls -l /dev/tpmrm0", 600_000);
      await must(
        vm,
        `PASSWORD='${vm.guest.passphrase}' NEWPIN='${pin}' systemd-cryptenroll --tpm2-device=auto ` +
          "--tpm2-with-pin=yes /dev/vda",
      );
      const plan = await must(vm, "cryptsleep plan");
      assert.match(plan, /root_crypt: systemd-tpm2 token \d+/, plan);
      assert.match(plan, /data_crypt: \/etc\/keys\/data\.key on root_crypt, read once it is unlocked/, plan);
    });

    await t.step("booted again (the enrollment kept, the PIN typed for it gone with the RAM)", async () => {
      // a power cut to QEMU: what was written must be on the disk first
      await must(vm, "sync");
      await vm.restart();
      await must(vm, "systemctl is-system-running --wait || true; findmnt -n -o SOURCE /home", 600_000);
    });

    const wrong = freshWord();
    const control = freshWord();
    await t.step("after wake: a wrong PIN is said, the right one opens the root, the key file /home", async () => {
      const from = vm.console.length;
      await startSuspend(vm);
      await vm.waitForSuspend(600_000);
      const asleep = await vm.searchRam([...rootKey, enc.encode(pin)]);
      assert.deepEqual(asleep, [0, 0, 0], "the root's key is out of RAM; the PIN not typed since the boot");
      await vm.wake();
      await vm.waitForConsole(PIN_PROMPT, 600_000);
      await vm.type(`${wrong}\n`);
      await vm.waitForConsole(/The TPM2 token did not open it with this PIN \(1\/\d+\)/, 600_000);
      await vm.waitForConsole(PIN_PROMPT, 600_000);
      await vm.type(`${pin}\n`);
      assert.equal(await suspendExit(vm, 600_000), 0, vm.console.slice(from));
      const text = vm.console.slice(from);
      assert.match(text, /Unlocking root_crypt with its TPM2 token \.* unlocked\./, text);
      assert.match(text, /Unlocking data_crypt with its key file \.* unlocked\./, text);
      assert.doesNotMatch(text, /Passphrase to unlock/, text);
      await must(vm, "echo after-token > /home/t && sync && cat /home/t");
      // what was loaded before the pin: the plugin's libraries as its .note.dlopen names them, and the TCTI
      const status = await must(vm, "cryptsleep status --json");
      const facts = JSON.parse(status.slice(status.indexOf("{"), status.lastIndexOf("}") + 1)).facts;
      assert.match(
        String(facts.tokens),
        /libtss2-esys\.so\.0.*libtss2-tcti-device\.so\.0|libtss2-tcti-device.*esys/,
        status,
      );
    });

    await t.step(
      "the next suspend: the wrong and the right PIN are not in RAM, the control word is; Enter alone asks the passphrase",
      async () => {
        await vm.type(`echo ${control} >/dev/null\n`);
        const from = vm.console.length;
        await startSuspend(vm);
        await vm.waitForSuspend(600_000);
        const hits = await vm.searchRam([enc.encode(wrong), enc.encode(pin), enc.encode(control), ...rootKey]);
        assert.deepEqual(hits.slice(0, 2), [0, 0], `the wrong and the right PIN typed at the last wake: ${hits}`);
        assert.ok(hits[2] > 0, `control: the word typed into the shell is found: ${hits}`);
        assert.deepEqual(hits.slice(3), [0, 0]);
        await vm.wake();
        await vm.waitForConsole(PIN_PROMPT, 600_000);
        await vm.type("\n");
        await answerPrompt(vm, 600_000);
        assert.equal(await suspendExit(vm, 600_000), 0, vm.console.slice(from));
        assert.match(vm.console.slice(from), /Unlocking root_crypt \.* unlocked\./);
      },
    );

    // a variant of the same feature: the full tier only (CI's budget)
    if (!FULL_TIER) return;
    await t.step("a TPM2 token without a PIN: not used unless --token-without-pin; with it, nobody types", async () => {
      await must(
        vm,
        `PASSWORD='${vm.guest.passphrase}' systemd-cryptenroll --wipe-slot=tpm2 --tpm2-device=auto /dev/vda`,
      );
      const plan = await must(vm, "cryptsleep plan");
      assert.match(plan, /token \d+ needs no PIN: .* not used after wake unless suspend is given --token-without-pin/);
      let from = vm.console.length;
      await startSuspend(vm);
      await vm.waitForSuspend(600_000);
      await vm.wake();
      await answerPrompt(vm, 600_000);
      assert.equal(await suspendExit(vm, 600_000), 0, vm.console.slice(from));
      assert.doesNotMatch(vm.console.slice(from), /TPM2/, "the token was not used");

      from = vm.console.length;
      await startSuspend(vm, "--token-without-pin");
      await vm.waitForSuspend(600_000);
      assert.deepEqual(await vm.searchRam(rootKey), [0, 0], "locked all the same while asleep");
      await vm.wake();
      assert.equal(await suspendExit(vm, 600_000), 0, vm.console.slice(from));
      const text = vm.console.slice(from);
      assert.match(text, /Unlocking root_crypt with its TPM2 token \(no PIN\) \.* unlocked\./, text);
      assert.doesNotMatch(text, /Passphrase to unlock|PIN to unlock/, text);
    });
  },
});

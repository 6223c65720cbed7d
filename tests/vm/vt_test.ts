/**
 * The default console: with no --console, cryptsleep prompts on a virtual terminal of its own, and holds VT
 * switching from the freeze to the thaw; the serial console the kernel's console= names gets the same prompt, and
 * the first line typed on either wins. The guest gets a VGA text screen and a PS/2 keyboard. Before sleeping the screen
 * shows a fresh VT, not the shell's; after wake Alt+F1 does not take the prompt away, the passphrase is typed on
 * the keyboard, and the VT active before the cycle is active again.
 *
 * The screen cannot be read after wake: QEMU resets the VGA card at S3 resume and vgacon does not set it up
 * again (acpi_sleep=s3_bios hangs the resume on this bed), so the prompt is not read off the screen. Keys typed
 * before the prompt are flushed by it, so the passphrase is typed again until the cycle ends.
 *
 * The keyboard also wakes the guest from s2idle (`--state freeze`), which has no QMP event and no wakeup
 * command: the test sees the lock in RAM, waits, and presses a key.
 */
import assert from "node:assert/strict";
import {
  answerPrompt,
  SLOW,
  startSuspend,
  SUPERVISOR_GONE,
  suspendExit,
  systemState,
  typeUntilExit,
} from "./cycle_helpers.ts";
import { boot, keyHalves, REAL_SUSPENDS, volumeKey } from "./harness.ts";

Deno.test({
  name: "default console: the prompt is on a VT of its own, typed on the keyboard, and the old VT comes back",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ vga: true });
    const before = (await vm.sh("cat /sys/class/tty/tty0/active")).out.trim();
    assert.match(before, /^tty\d+$/);
    assert.match(await vm.screenText(), /Booting from ROM/, "control: the screen shows the boot VT");
    const from = vm.console.length;

    await startSuspend(vm, "", "");
    await vm.waitForSuspend(300_000);
    assert.doesNotMatch(await vm.screenText(), /Booting from ROM/, "a fresh VT is in front while suspended");
    await vm.wake();
    // Alt+F1 at the prompt: VT switching is held, so what is typed next still reaches the prompt (before, the
    // switch went through, the passphrase went to tty1, and the cycle waited)
    await new Promise((r) => setTimeout(r, 10_000));
    await vm.qmp("send-key", { keys: [{ type: "qcode", data: "alt" }, { type: "qcode", data: "f1" }] });
    assert.equal(await typeUntilExit(vm), 0, vm.console.slice(from));

    // the kernel's console= names the serial console: the prompt is up there too, and the keyboard's line won
    assert.match(vm.console.slice(from), /Passphrase to unlock root/, "the prompt is on the serial console too");
    const after = await vm.sh("cat /sys/class/tty/tty0/active");
    assert.equal(after.out.trim(), before, "the VT active before the cycle is active again");
    const io = await vm.sh("echo vt-ok > /vt-ok && sync && cat /vt-ok");
    assert.equal(io.out.trim(), "vt-ok");

    // the same default, answered on the serial console this time: the VT's prompt gives way
    const second = vm.console.length;
    await startSuspend(vm, "", "");
    await vm.waitForSuspend(300_000);
    await vm.wake();
    await answerPrompt(vm);
    assert.equal(await suspendExit(vm), 0, vm.console.slice(second));
    assert.equal((await vm.sh("cat /sys/class/tty/tty0/active")).out.trim(), before, "the old VT is back");
  },
});

Deno.test({
  name: "--state freeze: s2idle with the key out of RAM, woken by a key press, unlocked on the VT",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ vga: true });
    const setup = await vm.sh(
      "echo enabled > /sys/bus/serio/devices/serio0/power/wakeup && " + REAL_SUSPENDS,
    );
    assert.equal(setup.code, 0, setup.out);
    const successBefore = Number(setup.out.trim());
    const needles = keyHalves(await volumeKey(vm, "/dev/vda"));
    const from = vm.console.length;
    const startedAt = Date.now();

    await startSuspend(vm, "--state freeze", "");
    const until = Date.now() + 300_000;
    let hits = await vm.searchRam(needles);
    while (hits.some((n) => n > 0) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 3000));
      hits = await vm.searchRam(needles);
    }
    assert.deepEqual(hits, [0, 0], "the root's key left RAM");
    await new Promise((r) => setTimeout(r, 10_000));
    assert.doesNotMatch(vm.console.slice(from), /CS-EXIT-\d/, "still asleep: nothing but a wake event ends s2idle");
    assert.equal(vm.events.filter((e) => e.at >= startedAt && e.event === "SUSPEND").length, 0, "not S3");
    await vm.sendKeys(" ");
    assert.equal(await typeUntilExit(vm), 0, vm.console.slice(from));

    const r = await vm.sh("cryptsleep status --json; " + REAL_SUSPENDS);
    assert.equal(r.code, 0, r.out);
    const report = JSON.parse(r.out.slice(0, r.out.lastIndexOf("}") + 1));
    const sleep = report.phases.find((p: { name: string }) => p.name === "sleep");
    assert.equal(sleep.detail.state, "freeze");
    assert.ok(sleep.detail.sleptMs >= 10_000, `slept until the key press: ${sleep.detail.sleptMs} ms`);
    assert.equal(Number(r.out.trim().split("\n").at(-1)), successBefore + 1, "the kernel counts one suspend");
  },
});

// holds or releases VT switching (VT_LOCKSWITCH / VT_UNLOCKSWITCH on /dev/tty0), as a screen locker does
const LOCKSWITCH = `
const libc = Deno.dlopen("libc.so.6", {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "u64"], result: "i32" },
});
const fd = libc.symbols.open(new TextEncoder().encode("/dev/tty0\\0"), 2);
const r = libc.symbols.ioctl(fd, Deno.args[0] === "unlock" ? 0x560cn : 0x560bn, 0n);
console.log(fd >= 0 && r === 0 ? "VT-SWITCH-" + Deno.args[0] : "VT-SWITCH-FAILED");
`;

Deno.test({
  name: "VT switching locked (VT_LOCKSWITCH): refused before anything is locked, exit 3, the VT in front stays",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ vga: true, toolFiles: { "lockswitch.js": new TextEncoder().encode(LOCKSWITCH) } });
    const hold = (what: string) =>
      vm.sh(`DENO_DIR=/run/lockswitch-deno deno run -A /usr/local/lib/cryptsleep/lockswitch.js ${what}`, {
        timeoutMs: 120_000,
      });
    const before = (await vm.sh("cat /sys/class/tty/tty0/active")).out.trim();
    assert.match((await hold("lock")).out, /VT-SWITCH-lock/);
    const state = await systemState(vm);
    const from = vm.console.length;

    await startSuspend(vm, "", "");
    assert.equal(await suspendExit(vm), 3, vm.console.slice(from));
    const out = vm.console.slice(from);
    assert.match(out, /refused: the prompt's VT \(\/dev\/tty\d+\) did not come to the front: VT switching is locked/);
    assert.deepEqual(vm.eventsSinceClear("SUSPEND"), [], "no S3");
    assert.equal(await systemState(vm), state, "nothing left locked, frozen or mounted");
    assert.equal((await vm.sh("cat /sys/class/tty/tty0/active")).out.trim(), before, "the VT in front stays");

    assert.match((await hold("unlock")).out, /VT-SWITCH-unlock/);
  },
});

Deno.test({
  name: "VT prompt, cryptsleep killed at the unlock: the supervisor prompts there, then lets go of VT switching",
  ...SLOW,
  fn: async () => {
    await using vm = await boot({ vga: true });
    const before = (await vm.sh("cat /sys/class/tty/tty0/active")).out.trim();
    const from = vm.console.length;
    vm.clearEvents();
    vm.cursor = vm.console.length;
    await vm.type(`CRYPTSLEEP_TEST_DIE_AT=unlock cryptsleep suspend; echo "CS-EXIT-""$?"\n`);
    await vm.waitForSuspend(300_000);
    await vm.wake();
    assert.equal(await typeUntilExit(vm), 137, vm.console.slice(from));
    const gone = await vm.sh(SUPERVISOR_GONE, { timeoutMs: 120_000 });
    assert.equal(gone.out.trim(), "0", gone.out);
    const after = await vm.sh(
      "cat /sys/class/tty/tty0/active; chvt 3; sleep 1; cat /sys/class/tty/tty0/active; chvt " +
        before.replace("tty", ""),
      { timeoutMs: 120_000 },
    );
    assert.deepEqual(after.out.trim().split("\n"), [before, "tty3"], "the old VT is back, and VT switching works");
  },
});

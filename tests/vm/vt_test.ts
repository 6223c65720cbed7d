/**
 * The default console: with no --console, cryptsleep prompts on a virtual terminal of its own. The guest gets a
 * VGA text screen and a PS/2 keyboard. Before sleeping the screen shows a fresh VT, not the shell's; after wake
 * the passphrase is typed on the keyboard, and the VT active before the cycle is active again.
 *
 * The screen cannot be read after wake: QEMU resets the VGA card at S3 resume and vgacon does not set it up
 * again (acpi_sleep=s3_bios hangs the resume on this bed), so the prompt is not read off the screen. Keys typed
 * before the prompt are flushed by it, so the passphrase is typed again until the cycle ends.
 */
import assert from "node:assert/strict";
import { SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot } from "./harness.ts";

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
    await vm.waitForEvent("SUSPEND", 300_000);
    assert.doesNotMatch(await vm.screenText(), /Booting from ROM/, "a fresh VT is in front while suspended");
    await vm.wake();
    let code: number | null = null;
    for (let attempt = 0; attempt < 4 && code === null; attempt++) {
      await new Promise((r) => setTimeout(r, 10_000));
      await vm.sendKeys(vm.guest.passphrase + "\n");
      code = await suspendExit(vm, 40_000).catch(() => null);
    }
    assert.equal(code, 0, vm.console.slice(from));

    assert.doesNotMatch(vm.console.slice(from), /Passphrase to unlock/, "the prompt was not on the serial console");
    const after = await vm.sh("cat /sys/class/tty/tty0/active");
    assert.equal(after.out.trim(), before, "the VT active before the cycle is active again");
    const io = await vm.sh("echo vt-ok > /vt-ok && sync && cat /vt-ok");
    assert.equal(io.out.trim(), "vt-ok");
  },
});

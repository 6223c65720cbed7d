/**
 * A LUKS2 TPM2 token with a PIN, on the Debian guest (systemd-cryptenroll) with a software TPM (swtpm on the host,
 * QEMU's tpm-tis). The token's plugin and the libraries it loads later live on the root that is locked: the cycle
 * loads them before its pin, so after wake the PIN prompt works with the root still locked. A wrong PIN is said and
 * asked again; the right one opens the root; /home's volume then opens with its key file on the root. A wrong PIN
 * (fresh, random, typed nowhere else) is not in RAM at the next suspend; the control, a fresh word typed into the
 * shell on the same console, is. Enter alone at the PIN prompt goes on to the passphrase.
 */
import assert from "node:assert/strict";
import { answerPrompt, SLOW, startSuspend, suspendExit } from "./cycle_helpers.ts";
import { boot, keyHalves, type VM, volumeKey } from "./harness.ts";

const enc = new TextEncoder();
const PIN_PROMPT = /TPM2 PIN to unlock root_crypt \(Enter alone: its passphrase\): /;

function freshWord(): string {
  const abc = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from(crypto.getRandomValues(new Uint8Array(20)), (b) => abc[b % abc.length]).join("");
}

async function must(vm: VM, cmd: string, timeoutMs = 300_000): Promise<string> {
  const r = await vm.sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\n${r.out}`);
  return r.out;
}

Deno.test({
  name: "TPM2 token with a PIN (swtpm): asked for after wake with the root locked; a wrong PIN leaves no copy",
  ...SLOW,
  fn: async (t) => {
    await using vm = await boot({ guest: "debian", dataDisk: true, tpm: true });
    const pin = `${Math.floor(100000 + Math.random() * 899999)}`;
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

    const wrong = freshWord();
    const control = freshWord();
    await t.step("after wake: a wrong PIN is said, the right one opens the root, the key file /home", async () => {
      const from = vm.console.length;
      await startSuspend(vm);
      await vm.waitForEvent("SUSPEND", 600_000);
      assert.deepEqual(await vm.searchRam(rootKey), [0, 0], "the root's key is out of RAM");
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
      "the next suspend: the wrong PIN is not in RAM, the control word is; Enter alone asks the passphrase",
      async () => {
        await vm.type(`echo ${control} >/dev/null\n`);
        const from = vm.console.length;
        await startSuspend(vm);
        await vm.waitForEvent("SUSPEND", 600_000);
        const hits = await vm.searchRam([enc.encode(wrong), enc.encode(control), ...rootKey]);
        assert.equal(hits[0], 0, `the wrong PIN typed at the last wake: ${hits}`);
        assert.ok(hits[1] > 0, `control: the word typed into the shell is found: ${hits}`);
        assert.deepEqual(hits.slice(2), [0, 0]);
        await vm.wake();
        await vm.waitForConsole(PIN_PROMPT, 600_000);
        await vm.type("\n");
        await answerPrompt(vm, 600_000);
        assert.equal(await suspendExit(vm, 600_000), 0, vm.console.slice(from));
        assert.match(vm.console.slice(from), /Unlocking root_crypt \.* unlocked\./);
      },
    );
  },
});

import assert from "node:assert/strict";
import { declinedToken, tokenType } from "./token_types.ts";

Deno.test("tokenType: each systemd type's PIN rule, label and what its plugin loads later", () => {
  const tpm2 = tokenType("systemd-tpm2")!;
  assert.equal(tpm2.label, "TPM2");
  assert.equal(tpm2.wantsPin({ "tpm2-pin": true }), true);
  assert.equal(tpm2.wantsPin({ "tpm2-pin": false }), false);
  assert.equal(tpm2.wantsPin({}), false);
  assert.deepEqual(tpm2.also, ["libtss2-tcti-device.so.0"]);
  const fido2 = tokenType("systemd-fido2")!;
  assert.equal(fido2.wantsPin({ "fido2-clientPin-required": true }), true);
  assert.equal(fido2.wantsPin({ "fido2-clientPin-required": "yes" }), false, "only JSON true counts");
  assert.deepEqual(fido2.features, ["fido2"]);
});

Deno.test("declinedToken: PKCS#11 is not used after wake, and says why; the types in use are not declined", () => {
  assert.equal(tokenType("systemd-pkcs11"), undefined);
  assert.match(declinedToken("systemd-pkcs11")!, /p11-kit's configuration on the disk that is locked.*pcscd/);
  for (const name of ["systemd-tpm2", "systemd-fido2", "luks2-keyring", "constructor", "__proto__"]) {
    assert.equal(declinedToken(name), undefined, name);
  }
});

Deno.test("tokenType: a type cryptsleep does not use, or an Object key, is undefined", () => {
  for (const name of ["luks2-keyring", "unknown", "constructor", "__proto__", "toString", ""]) {
    assert.equal(tokenType(name), undefined, name);
  }
});

import assert from "node:assert/strict";
import { errnoName, SysError } from "./errors.ts";

Deno.test("errnoName: names, negative returns, unknown numbers", () => {
  assert.equal(errnoName(1), "EPERM");
  assert.equal(errnoName(-16), "EBUSY");
  assert.equal(errnoName(19), "ENODEV");
  assert.equal(errnoName(126), "ENOKEY");
  assert.equal(errnoName(9999), "E9999");
});

Deno.test("SysError: call, errno, code, subject, detail and a call-specific hint in the message", () => {
  const e = new SysError("crypt_resume_by_passphrase", -1, { subject: "cryptroot", detail: "No key available." });
  assert.equal(e.errno, 1);
  assert.equal(e.code, "EPERM");
  assert.match(e.hint, /wrong passphrase/);
  assert.equal(
    e.message,
    "crypt_resume_by_passphrase(cryptroot) failed: EPERM (operation not permitted) [No key available.]: " + e.hint,
  );
  assert.match(new SysError("crypt_suspend", 16).hint, /stacked above/);
  assert.match(new SysError("mount", 1).hint, /root/);
  assert.equal(new SysError("open", 2, { hint: "custom" }).hint, "custom");
});

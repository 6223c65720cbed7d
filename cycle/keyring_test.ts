import { parseProcKeys } from "./keyring.ts";

Deno.test("parseProcKeys keeps colons inside the description", () => {
  const text = [
    "0a1b2c3d I--Q---     1 perm 3f010000     0     0 keyring   _ses: 1",
    "1f2e3d4c I--Q---     1 perm 3f010000     0     0 logon     cryptsetup:1b6e2a4c-7d3f-4d8e-9b35-0c5d3c1f2a77-d0: 64",
  ].join("\n");
  const keys = parseProcKeys(text);
  if (keys.length !== 2) throw new Error(`expected 2 keys, got ${keys.length}`);
  if (keys[1].description !== "cryptsetup:1b6e2a4c-7d3f-4d8e-9b35-0c5d3c1f2a77-d0") {
    throw new Error(`bad description ${keys[1].description}`);
  }
  if (keys[1].type !== "logon" || keys[0].description !== "_ses") throw new Error(JSON.stringify(keys));
});

import assert from "node:assert/strict";
import { describe, errnoCode } from "./errors.ts";

Deno.test("errnoCode: Deno's code when given, else the os error number of the message", async () => {
  const notFound = await Deno.readTextFile("/nonexistent/x").then(() => null, (e) => e);
  assert.ok(notFound instanceof Deno.errors.NotFound);
  assert.equal(errnoCode(notFound), "ENOENT");
  assert.match(describe("read /nonexistent/x", notFound), /^read \/nonexistent\/x: ENOENT: No such file/);
  // what an FsFile.write error looks like: no code, the number in the message
  assert.equal(errnoCode(new Error("No such process (os error 3)")), "ESRCH");
  assert.equal(errnoCode(new Error("no errno here")), "");
  assert.equal(errnoCode(undefined), "");
  assert.equal(describe("x", "plain"), "x: plain");
});

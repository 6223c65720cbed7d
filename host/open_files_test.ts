import assert from "node:assert/strict";
import { join } from "node:path";
import { mountOf, readMountinfoSync } from "./mountinfo.ts";
import { writableFilesOn } from "./open_files.ts";

Deno.test("writableFilesOn names a file open for writing on the filesystem asked about, not one open to read", () => {
  const dir = Deno.makeTempDirSync();
  const mountpoint = mountOf(readMountinfoSync(), dir)!.mountpoint;
  const w = join(dir, "written"), r = join(dir, "read");
  Deno.writeTextFileSync(r, "x");
  using _w = Deno.openSync(w, { write: true, create: true });
  using _r = Deno.openSync(r, { read: true });
  try {
    const found = writableFilesOn([mountpoint]);
    assert.ok(found.includes(Deno.realPathSync(w)), found.join(" "));
    assert.ok(!found.includes(Deno.realPathSync(r)), found.join(" "));
    assert.deepEqual(writableFilesOn([]), []);
    assert.ok(!writableFilesOn(["/no/such/mount"]).includes(Deno.realPathSync(w)));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

import assert from "node:assert/strict";
import { pathReads } from "./paths.ts";

Deno.test("pathReads: each link followed, where it lives, and where the path ends; absolute targets stay in root", async () => {
  const root = await Deno.makeTempDir({ prefix: "paths-" });
  try {
    await Deno.mkdir(`${root}/boot/real`, { recursive: true });
    await Deno.mkdir(`${root}/mnt/x`, { recursive: true });
    await Deno.writeTextFile(`${root}/boot/real/h.hdr`, "");
    // /boot/hdr -> /mnt/x/next (absolute: inside the tree), /mnt/x/next -> ../../boot/real (relative)
    await Deno.symlink("/mnt/x/next", `${root}/boot/hdr`);
    await Deno.symlink("../../boot/./real", `${root}/mnt/x/next`);
    assert.deepEqual(await pathReads(root, "/boot/hdr/h.hdr"), ["/boot/hdr", "/mnt/x/next", "/boot/real/h.hdr"]);
    assert.deepEqual(await pathReads(root, "/boot/real/h.hdr"), ["/boot/real/h.hdr"]);
    assert.deepEqual(await pathReads(root, "/mnt/x/../../boot//real/h.hdr"), ["/boot/real/h.hdr"]);
    assert.equal(await pathReads(root, "/boot/hdr/missing"), undefined);
    assert.equal(await pathReads(root, "/boot/real/h.hdr/.."), undefined, "no `..` out of a file (ENOTDIR)");
    await Deno.symlink("loop", `${root}/loop`);
    assert.equal(await pathReads(root, "/loop/h.hdr"), undefined, "a loop of links");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

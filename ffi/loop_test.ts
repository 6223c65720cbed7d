import assert from "node:assert/strict";
import { join } from "node:path";
import { attachLoop, loopSettings } from "./loop.ts";
import { within } from "../cgroup/testing.ts";

const canLoop = await Deno.stat("/dev/loop-control").then(() => Deno.uid() === 0, () => false);

Deno.test({
  name: "loop: attach a file with offset, read-only and autoclear; sysfs shows it; the last close detaches it",
  ignore: !canLoop,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const file = join(dir, "image");
    try {
      await Deno.writeFile(file, new Uint8Array(4 << 20));
      const name = await (async () => {
        using loop = attachLoop(file, { offset: 1 << 20, readOnly: true, autoclear: true });
        const name = loop.path.slice("/dev/".length);
        assert.match(loop.devno, /^7:\d+$/);
        assert.equal(loop.devno, (await Deno.readTextFile(`/sys/block/${name}/dev`)).trim());
        const s = await loopSettings(name);
        assert.ok(s, "sysfs lists the attached device");
        assert.equal(s.backingFile, file);
        assert.equal(s.offset, 1 << 20);
        assert.equal(s.readOnly, true);
        assert.equal(s.autoclear, true);
        assert.equal((await Deno.readTextFile(`/sys/block/${name}/size`)).trim(), String((3 << 20) / 512));
        return name;
      })();
      // disposed: our fd was the last opener, autoclear detached it
      assert.ok(await within(30_000, async () => (await loopSettings(name)) === null), `${name} detached`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("loop: loopSettings reads a recorded sysfs, and is null for a detached device", async () => {
  const sys = await Deno.makeTempDir();
  try {
    const dir = join(sys, "block", "loop3");
    await Deno.mkdir(join(dir, "loop"), { recursive: true });
    await Deno.mkdir(join(dir, "queue"));
    assert.equal(await loopSettings("loop3", sys), null);
    for (
      const [p, v] of Object.entries({
        "loop/backing_file": "/srv/vault.img\n",
        "loop/offset": "4096\n",
        "loop/sizelimit": "0\n",
        "loop/autoclear": "1\n",
        "loop/dio": "0\n",
        "ro": "0\n",
        "queue/logical_block_size": "4096\n",
      })
    ) await Deno.writeTextFile(join(dir, p), v);
    assert.deepEqual(await loopSettings("loop3", sys), {
      backingFile: "/srv/vault.img",
      offset: 4096,
      sizeLimit: 0,
      readOnly: false,
      autoclear: true,
      directIo: false,
      blockSize: 4096,
    });
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});

Deno.test({
  name: "loop: a missing backing file is a SysError naming it",
  ignore: !canLoop,
  fn: () => {
    assert.throws(
      () => attachLoop("/nonexistent/cryptsleep.img"),
      /ENOENT.*\/nonexistent\/cryptsleep\.img|\/nonexistent\/cryptsleep\.img.*ENOENT/s,
    );
  },
});

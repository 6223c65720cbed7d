import assert from "node:assert/strict";
import { footprint, isFileMapping, parseMaps, readMaps, toPin } from "./maps.ts";

const SAMPLE = `55d0c0000000-55d0c1b8e000 r--p 00000000 fe:01 394 /usr/bin/deno
55d0c1e04000-55d0c5af8000 r-xp 01b8e000 fe:01 394 /usr/bin/deno
55d0c6000000-55d0c6100000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0100000000 ---p 00000000 00:00 0
7f0200000000-7f0200040000 rw-p 00000000 00:00 0
7f0300000000-7f0300001000 r--s 00000000 00:01 77 /memfd:wayland (deleted)
7f0400000000-7f0400001000 rw-s 00000000 00:05 12 /dev/zero (deleted)
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7ffc00100000-7ffc00104000 r--p 00000000 00:00 0                          [vvar]
7ffc00104000-7ffc00106000 r-xp 00000000 00:00 0                          [vdso]
`;

Deno.test("parseMaps reads ranges, perms, inodes and paths", () => {
  const maps = parseMaps(SAMPLE);
  assert.deepEqual(maps.length, 10);
  assert.deepEqual(maps[0], {
    start: 0x55d0c0000000n,
    end: 0x55d0c1b8e000n,
    perms: "r--p",
    inode: 394,
    path: "/usr/bin/deno",
  });
  assert.deepEqual(maps[3].path, "");
  assert.deepEqual(maps[5].path, "/memfd:wayland (deleted)");
});

Deno.test("toPin keeps file mappings, not anonymous memory, reservations, devices or the vdso", () => {
  const pinned = toPin(parseMaps(SAMPLE)).map((m) => m.path);
  assert.deepEqual(pinned, ["/usr/bin/deno", "/usr/bin/deno", "/memfd:wayland (deleted)"]);
  assert.deepEqual(isFileMapping(parseMaps(SAMPLE)[6]), false);
});

Deno.test("this process maps its runtime: toPin finds deno among its own mappings", () => {
  const exe = Deno.realPathSync(Deno.execPath());
  const files = toPin(readMaps()).filter(isFileMapping).map((m) => m.path);
  assert.deepEqual(files.includes(exe), true, `${exe} not in ${files.join(" ")}`);
});

Deno.test("footprint counts a file's pages once for two processes, and the anonymous pages of each", () => {
  const one = footprint([Deno.pid]);
  const twice = footprint([Deno.pid, Deno.pid]);
  assert.ok(one.fileBytes > 1 << 20 && one.anonBytes > 1 << 20, JSON.stringify(one));
  // the same pid twice: same files (deduplicated), twice the anonymous memory (within what changed meanwhile)
  assert.ok(Math.abs(twice.fileBytes - one.fileBytes) < 4 << 20, JSON.stringify({ one, twice }));
  assert.ok(twice.anonBytes > one.anonBytes * 1.5, JSON.stringify({ one, twice }));
  assert.deepEqual(footprint([2 ** 22 + 12345]), { fileBytes: 0, anonBytes: 0 });
});

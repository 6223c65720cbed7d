import assert from "node:assert/strict";
import { posix } from "node:path";
import { basename, dirname, join, normalize } from "./path.ts";

/** Inputs the runtime gives (sysfs, cgroup, /dev, chroot and systemd paths) and the edges around them. */
const CASES = [
  "",
  ".",
  "..",
  "/",
  "//",
  "///",
  "./",
  "../",
  "/.",
  "/..",
  "/../..",
  "a",
  "a/",
  "a//",
  "/a",
  "/a/",
  "//a",
  "///a",
  "//a/b",
  "a/b",
  "a//b",
  "/a//b",
  "a/./b",
  "a/../b",
  "a/b/../..",
  "a/b/../../..",
  "../a/..",
  "../../a",
  "./a/./",
  "/a/b/c/../../d/",
  "/../a",
  "...",
  "a/...",
  ".a/..b/",
  "/sys/block/dm-0/slaves/",
  "/sys/fs/cgroup/cryptsleep.frozen",
  "/run/cryptsleep/root/",
  "/etc/systemd/system/systemd-suspend.service.d/cryptsleep.conf",
  "/dev/mapper/vg--a-lv",
  "cciss!c0d0",
];

/** Every string of up to `n` characters from "/", "." and "a": the slash and dot runs no table thinks of. */
function all(n: number): string[] {
  let level = [""];
  const out = [""];
  for (let i = 0; i < n; i++) {
    level = level.flatMap((s) => ["/", ".", "a"].map((c) => s + c));
    out.push(...level);
  }
  return out;
}

Deno.test("normalize, dirname, basename: node:path's posix results on the table and on every short string", () => {
  for (const p of [...CASES, ...all(7)]) {
    assert.equal(normalize(p), posix.normalize(p), `normalize(${JSON.stringify(p)})`);
    assert.equal(dirname(p), posix.dirname(p), `dirname(${JSON.stringify(p)})`);
    assert.equal(basename(p), posix.basename(p), `basename(${JSON.stringify(p)})`);
  }
});

Deno.test("join: node:path's posix results for none, one, two and three parts", () => {
  assert.equal(join(), posix.join());
  const parts = [...CASES, ...all(4)];
  for (const a of parts) {
    assert.equal(join(a), posix.join(a), `join(${JSON.stringify(a)})`);
    for (const b of parts) assert.equal(join(a, b), posix.join(a, b), `join(${JSON.stringify([a, b])})`);
  }
  for (const a of CASES) {
    for (const b of CASES) {
      for (const c of ["", "/", "..", "x/", "cgroup.procs"]) {
        assert.equal(join(a, b, c), posix.join(a, b, c), `join(${JSON.stringify([a, b, c])})`);
      }
    }
  }
});

import assert from "node:assert/strict";
import { join } from "node:path";
import { mountOf, readMountinfoSync } from "./mountinfo.ts";
import { devOf, writableFilesOn } from "./open_files.ts";

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

Deno.test("devOf: st_dev from major:minor, small and large minors", () => {
  const st = Deno.statSync("/");
  const root = mountOf(readMountinfoSync(), "/")!;
  assert.equal(devOf(root.devno), st.dev);
  assert.equal(devOf("8:1"), 0x801);
  assert.equal(devOf("259:300"), (300 & 0xff) | (259 << 8) | ((300 & ~0xff) << 12));
});

Deno.test({
  name: "writableFilesOn: a file held on a mount since detached is judged by its device, not by the path it shows",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = Deno.makeTempDirSync();
    const mnt = join(dir, "m");
    Deno.mkdirSync(mnt);
    const run = (args: string[]) => new Deno.Command(args[0], { args: args.slice(1) }).outputSync();
    assert.ok(run(["mount", "-t", "tmpfs", "tmpfs", mnt]).success);
    let mounted = true;
    try {
      // a path that exists on "/" as well, as /mapper/control of a chroot's /dev did: only its device tells them apart
      using _f = Deno.openSync(join(mnt, "held"), { write: true, create: true });
      assert.ok(run(["umount", "-l", mnt]).success);
      mounted = false;
      const rootMount = mountOf(readMountinfoSync(), "/")!.mountpoint;
      assert.deepEqual(writableFilesOn([rootMount]).filter((p) => p.endsWith("held")), [], "not on /");
    } finally {
      if (mounted) run(["umount", mnt]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

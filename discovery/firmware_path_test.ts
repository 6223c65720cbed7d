import assert from "node:assert/strict";
import { firmwareDirs, onFirmwarePath } from "./firmware_path.ts";

Deno.test("onFirmwarePath: the mounts above the firmware's directories and below them, no other", () => {
  const dirs = ["/lib/firmware", "/usr/lib/firmware"];
  for (const m of ["/", "/usr", "/usr/lib", "/lib/firmware", "/usr/lib/firmware/intel"]) {
    assert.equal(onFirmwarePath(m, dirs), true, m);
  }
  for (const m of ["/home", "/usr/local", "/lib/firmware2", "/srv/lib/firmware"]) {
    assert.equal(onFirmwarePath(m, dirs), false, m);
  }
});

Deno.test("firmwareDirs: firmware_class.path, the release's directories, and where a link among them leads", async () => {
  const root = await Deno.makeTempDir();
  try {
    const put = async (path: string, text: string) => {
      await Deno.mkdir(`${root}${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
      await Deno.writeTextFile(`${root}${path}`, text);
    };
    await put("/proc/sys/kernel/osrelease", "6.12.0-test\n");
    await put("/sys/module/firmware_class/parameters/path", "/opt/fw\n");
    // merged /usr, and the updates directory a link to a volume of its own
    await Deno.mkdir(`${root}/usr/lib/firmware`, { recursive: true });
    await Deno.mkdir(`${root}/srv/fw-updates`, { recursive: true });
    await Deno.symlink("usr/lib", `${root}/lib`);
    await Deno.symlink("../../../srv/fw-updates", `${root}/usr/lib/firmware/updates`);
    const dirs = await firmwareDirs(root);
    for (const d of ["/opt/fw", "/lib/firmware/updates/6.12.0-test", "/lib/firmware", "/srv/fw-updates"]) {
      assert.ok(dirs.includes(d), `${d} in ${dirs}`);
    }
    assert.equal(onFirmwarePath("/srv", dirs), true);
    assert.equal(onFirmwarePath("/home", dirs), false);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

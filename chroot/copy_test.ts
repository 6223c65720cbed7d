// Copies this host's files into a scratch directory (no mount needed); libcryptsetup is dlopened first so its
// dependency tree is mapped, as the supervisor does before building the ramfs.
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { readElf } from "../host/elf.ts";
import { Builder, mappedFiles } from "./copy.ts";

const lib = Deno.dlopen("libcryptsetup.so.12", {});
globalThis.addEventListener("unload", () => lib.close());

Deno.test("Builder recreates the host's symlink chains: loader, merged /lib, soname links", () => {
  const dir = Deno.makeTempDirSync({ prefix: "cryptsleep-copy-" });
  try {
    // What buildRamfs copies besides the runtime itself: its libraries and loader, and every mapped library.
    const exe = Deno.realPathSync(Deno.execPath());
    const b = new Builder(dir);
    b.elfDeps(exe);
    for (const file of mappedFiles([exe, dir])) {
      const canon = b.mirror(file);
      if (canon) b.elfDeps(canon);
    }
    const interp = readElf(Deno.execPath())!.interp!;
    for (let p = interp; p !== "/"; p = dirname(p)) {
      const host = Deno.lstatSync(p);
      if (host.isSymlink) assert.equal(Deno.readLinkSync(dir + p), Deno.readLinkSync(p), p);
    }
    assert.equal(b.links["/usr/lib/x86_64-linux-gnu/libcryptsetup.so.12"], "libcryptsetup.so.12.9.0");
    assert.equal(
      Deno.realPathSync(dir + "/usr/lib/x86_64-linux-gnu/libcryptsetup.so.12"),
      dir + Deno.realPathSync("/usr/lib/x86_64-linux-gnu/libcryptsetup.so.12"),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

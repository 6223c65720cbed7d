// Real files of this host: the Deno binary, libcryptsetup and its systemd token plugin, compared with binutils.
import assert from "node:assert/strict";
import { readElf } from "./elf.ts";

const LIBCRYPTSETUP = "/usr/lib/x86_64-linux-gnu/libcryptsetup.so.12";

async function run(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  assert.equal(out.code, 0, `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

Deno.test("readElf reads PT_INTERP, DT_NEEDED, DT_SONAME, DT_RUNPATH of real files", () => {
  const exe = readElf(Deno.execPath())!;
  assert.match(exe.interp ?? "", /^\/lib.*\/ld-linux/);
  assert.ok(exe.needed.includes("libc.so.6"), exe.needed.join(" "));
  const info = readElf(LIBCRYPTSETUP)!;
  assert.equal(info.soname, "libcryptsetup.so.12");
  assert.ok(info.needed.includes("libdevmapper.so.1.02.1"), info.needed.join(" "));
  assert.equal(info.interp, null);
  assert.equal(readElf("/etc/ld.so.cache"), null);
  assert.equal(readElf("/nonexistent/lib.so"), null);
  const plugin = "/usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so";
  if (Deno.statSync(plugin).isFile) assert.deepEqual(readElf(plugin)!.runpath, ["/usr/lib/x86_64-linux-gnu/systemd"]);
});

Deno.test("readElf: version definitions of libcryptsetup are the ones readelf -V lists", async () => {
  const versions = readElf(LIBCRYPTSETUP)!.versions;
  // readelf -V: the .gnu.version_d block, one "Name:" per definition; the first (Flags: BASE) is the soname.
  const text = await run("readelf", "-V", "--wide", LIBCRYPTSETUP);
  const block = text.slice(text.indexOf(".gnu.version_d"), text.indexOf(".gnu.version_r"));
  const listed = [...block.matchAll(/Flags: (\S+)\s+Index: \d+\s+Cnt: \d+\s+Name: (\S+)/g)];
  assert.equal(listed[0][1], "BASE");
  assert.equal(listed[0][2], "libcryptsetup.so.12");
  assert.deepEqual(versions, listed.slice(1).map((m) => m[2]));
  assert.equal(versions[0], "CRYPTSETUP_2.0");
  // The package's major.minor is at least the newest API node (a release that adds no symbol adds no node).
  const pkg = (await run("dpkg-query", "-W", "-f", "${Version}", "libcryptsetup12")).match(/^(?:\d+:)?(\d+)\.(\d+)/)!;
  const [maj, min] = versions.at(-1)!.replace("CRYPTSETUP_", "").split(".").map(Number);
  assert.ok(Number(pkg[1]) > maj || (Number(pkg[1]) === maj && Number(pkg[2]) >= min), `${pkg[0]} vs ${versions}`);
  // A file with no version definitions has none.
  assert.deepEqual(readElf(Deno.execPath())!.versions, []);
});

Deno.test("readElf: the .note.dlopen notes (systemd's convention) of a shared object built by binutils", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // one FDO note: namesz, descsz, type, "FDO", then the JSON, each 4-aligned
    await Deno.writeTextFile(
      `${dir}/n.s`,
      [
        '.section .note.dlopen,"a",@note',
        ".balign 4",
        ".long 4",
        ".long 2f - 1f",
        ".long 0x407c0c0a",
        '.asciz "FDO"',
        ".balign 4",
        String.raw`1: .asciz "[{\"feature\":\"tpm\",\"priority\":\"suggested\",\"soname\":[\"libtss2-esys.so.0\"]},` +
        String.raw`{\"feature\":\"fido2\",\"soname\":[\"libfido2.so.1\"]}]"`,
        "2:",
        ".balign 4",
        "",
      ].join("\n"),
    );
    await run("as", "-o", `${dir}/n.o`, `${dir}/n.s`);
    await run("ld", "-shared", "-o", `${dir}/n.so`, `${dir}/n.o`);
    assert.deepEqual(readElf(`${dir}/n.so`)!.dlopen, [
      { feature: "tpm", soname: ["libtss2-esys.so.0"] },
      { feature: "fido2", soname: ["libfido2.so.1"] },
    ]);
    assert.deepEqual(readElf(LIBCRYPTSETUP)!.dlopen, [], "libcryptsetup declares none");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

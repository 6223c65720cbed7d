import assert from "node:assert/strict";
import { join } from "node:path";
import { VERSION } from "../cli/version.ts";
import { V8_FLAGS } from "../cli/v8_flags.ts";
import { CRYPTSLEEP_WRAPPER } from "./guest/build.ts";
import { DEFAULT_EXEC } from "../systemd/install.ts";
import { renderDropIn } from "../systemd/unit.ts";
import { buildDeb, DEPENDS, packageVersion } from "./deb.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function has(cmd: string): boolean {
  try {
    return new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[], env?: Record<string, string>) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", env }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("package.json, cli/version.ts: one version", async () => {
  assert.equal(await packageVersion(), VERSION);
});

Deno.test("the wrappers run deno with cli/v8_flags.ts's flags: the package's and the guests'", async () => {
  const flags = (text: string) => [...text.matchAll(/--v8-flags=(\S+)/g)].map((m) => m[1]);
  assert.deepEqual(flags(await Deno.readTextFile(join(ROOT, "packaging/cryptsleep.sh"))), [V8_FLAGS]);
  assert.deepEqual(flags(CRYPTSLEEP_WRAPPER), [V8_FLAGS]);
});

Deno.test({
  name: "deb: contents, fields, and the unpacked wrapper runs --version (pinned deno, bundle)",
  ignore: !has("dpkg-deb"),
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "cryptsleep-deb-test-" });
    try {
      const bundle = join(tmp, "cryptsleep.js");
      const b = await run(Deno.execPath(), ["bundle", "--platform=deno", "-o", bundle, join(ROOT, "cli/main.ts")]);
      assert.equal(b.code, 0, b.stderr);
      // zstd: fast here; the release task uses xz
      const deb = await buildDeb({ bundle, outDir: join(tmp, "dist"), compression: "zstd" });
      assert.equal(deb, join(tmp, "dist", `cryptsleep_${VERSION}_amd64.deb`));

      const fields = await run("dpkg-deb", ["--field", deb, "Package", "Version", "Architecture", "Depends"]);
      assert.equal(fields.code, 0, fields.stderr);
      assert.equal(
        fields.stdout,
        `Package: cryptsleep\nVersion: ${VERSION}\nArchitecture: amd64\nDepends: ${DEPENDS}\n`,
      );
      assert.match(DEPENDS, /^libcryptsetup12 \(>= 2:2\.3\), libdevmapper1\.02\.1, systemd/);

      const contents = await run("dpkg-deb", ["--contents", deb]);
      const entries = new Map(
        contents.stdout.trim().split("\n").map((l) => {
          const f = l.split(/\s+/);
          return [f[5].replace(/^\./, ""), `${f[0]} ${f[1]}`];
        }),
      );
      for (
        const [path, mode] of [
          ["/", "drwxr-xr-x root/root"],
          ["/usr/lib/cryptsleep/deno", "-rwxr-xr-x root/root"],
          ["/usr/lib/cryptsleep/cryptsleep.js", "-rw-r--r-- root/root"],
          ["/usr/sbin/cryptsleep", "-rwxr-xr-x root/root"],
          ["/usr/lib/cryptsleep/cryptsleep-request", "-rwxr-xr-x root/root"],
          ["/usr/share/man/man8/cryptsleep.8.gz", "-rw-r--r-- root/root"],
          ["/usr/share/bash-completion/completions/cryptsleep", "-rw-r--r-- root/root"],
          ["/usr/lib/cryptsleep/systemd-suspend.service.d/cryptsleep.conf", "-rw-r--r-- root/root"],
        ]
      ) assert.equal(entries.get(path), mode, path);
      // shipped, not enabled: nothing in a directory systemd reads
      assert.ok(![...entries.keys()].some((p) => p.startsWith("/etc/") || p.includes("/systemd/system")));

      const x = join(tmp, "x");
      assert.equal((await run("dpkg-deb", ["-x", deb, x])).code, 0);
      const ctl = join(tmp, "ctl");
      assert.equal((await run("dpkg-deb", ["-e", deb, ctl])).code, 0);
      assert.ok((await Deno.stat(join(ctl, "prerm"))).mode! & 0o100);
      assert.match(await Deno.readTextFile(join(ctl, "postinst")), /configure\)[\s\S]*restart cryptsleep-kept.service/);
      assert.equal((await run("sh", ["-n", join(x, "usr/lib/cryptsleep/cryptsleep-request")])).code, 0);
      assert.match(await Deno.readTextFile(join(ctl, "prerm")), /remove \| deconfigure\)[\s\S]*cryptsleep uninstall/);
      assert.equal(
        await Deno.readTextFile(join(x, "usr/lib/cryptsleep/systemd-suspend.service.d/cryptsleep.conf")),
        renderDropIn(DEFAULT_EXEC),
      );
      const man = await run("sh", ["-c", `gzip -dc ${x}/usr/share/man/man8/cryptsleep.8.gz`]);
      assert.match(man.stdout, new RegExp(`^\\.TH CRYPTSLEEP 8 .*cryptsleep ${VERSION.replaceAll(".", "\\.")}`, "m"));
      assert.equal((await run("bash", ["-n", join(x, "usr/share/bash-completion/completions/cryptsleep")])).code, 0);

      const home = join(tmp, "home");
      const v = await run(join(x, "usr/sbin/cryptsleep"), ["--version"], { HOME: home, PATH: "/usr/bin:/bin" });
      assert.equal(v.code, 0, v.stderr);
      assert.equal(v.stdout.trim(), VERSION);
      // through a symlink elsewhere, and by a relative path: the wrapper still finds its deno and bundle
      await Deno.symlink(join(x, "usr/sbin/cryptsleep"), join(tmp, "cs-link"));
      const linked = await run(join(tmp, "cs-link"), ["--version"], { HOME: home, PATH: "/usr/bin:/bin" });
      assert.equal(linked.stdout.trim(), VERSION, linked.stderr);
      const relative = await run("sh", ["-c", `cd ${x}/usr && ./sbin/cryptsleep --version`], { HOME: home });
      assert.equal(relative.stdout.trim(), VERSION, relative.stderr);
      const i = await run(
        join(x, "usr/sbin/cryptsleep"),
        ["install", "--dry-run", "--root", x, "--exec", "/usr/sbin/cryptsleep"],
        { HOME: home },
      );
      assert.equal(i.code, 0, i.stderr);
      assert.match(i.stdout, /would write \/etc\/systemd\/system\/systemd-suspend.service.d\/cryptsleep.conf/);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

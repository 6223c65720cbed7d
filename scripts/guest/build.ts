/**
 * @module
 * Builds (or reuses from the cache) the QEMU test guest of cryptsleep: a Debian kernel, an initramfs that unlocks
 * a LUKS2 root on `/dev/vda`, the LUKS2 root itself (busybox, cryptsetup, dmsetup, e2fsprogs, keyutils, deno) and a
 * small LUKS2 data disk. Nothing is installed on the host: packages come from a private apt state per suite (the
 * archive URI is read from the host's apt configuration) and are unpacked with `dpkg-deb -x`.
 *
 * The encrypted disks are filled by a "builder boot": the host can run `luksFormat` on image files but has no
 * device-mapper, so a guest boot with `cryptsleep.build=1` copies plain ext4 images through dm-crypt. The Debian
 * guest (scripts/guest/debian.ts) is filled the same way, by {@linkcode builderBoot} with this guest's kernel and
 * initramfs, plus a hook script of its own.
 *
 * Why one file of ~900 lines: the guest's cache key is the hash of this file, so everything that shapes the guest
 * (packages, init scripts, disk layout) lives here and a change to any of it rebuilds the guests; split, a change
 * in a second file could leave a stale guest in the cache.
 *
 * ```sh
 * deno run -A scripts/guest/build.ts --kernel 6.1        # prints the cache directory
 * deno run -A scripts/guest/build.ts --kernel 6.12 --refresh
 * ```
 *
 * ```ts
 * import { ensureGuest } from "./scripts/guest/build.ts";
 * const guest = await ensureGuest({ kernel: "6.1" });
 * console.log(guest.kernelImage, guest.rootDisk, guest.manifest.kernel.release);
 * ```
 */

import { dirname, join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { V8_FLAGS } from "../../cli/v8_flags.ts";

/** Kernel selectors: suite that serves the kernel, suite for userspace, and the meta package to resolve. */
export const KERNELS: Record<string, { suites: string[]; defaultRelease: string; userspace: string; prefix: string }> =
  {
    "6.1": { suites: ["bookworm"], defaultRelease: "bookworm", userspace: "bookworm", prefix: "6.1." },
    "6.12": { suites: ["trixie"], defaultRelease: "trixie", userspace: "trixie", prefix: "6.12." },
    "6.18": {
      suites: ["trixie", "trixie-backports"],
      defaultRelease: "trixie-backports",
      userspace: "trixie",
      prefix: "6.18.",
    },
    "7.3": {
      suites: ["trixie", "trixie-backports"],
      defaultRelease: "trixie-backports",
      userspace: "trixie",
      prefix: "7.3.",
    },
  };

/** Test passphrase of every LUKS volume of the bed (test data, not a secret). */
export const PASSPHRASE = "cryptsleep-test";

/** Userspace packages (dependencies resolved recursively by apt-cache in the private state). */
const USER_PACKAGES = [
  "busybox-static",
  "cryptsetup-bin",
  "libcryptsetup12",
  "dmsetup",
  "e2fsprogs",
  "keyutils",
  "libc6",
  "libgcc-s1",
  "bindfs", // a real FUSE daemon for the tests of FUSE mounts over locked volumes
  "lvm2", // LUKS on LVM (tests/vm/layout_test.ts)
  "btrfs-progs", // btrfs on LUKS (tests/vm/layout_test.ts)
];

/** Modules wanted in the guest; `required` ones must exist as module or built-in. */
const MODULES: { name: string; required: boolean }[] = [
  ...["virtio_pci", "virtio_blk", "dm_mod", "dm_crypt", "ext4", "xts"].map((name) => ({ name, required: true })),
  ...[
    "loop",
    "dm_zero",
    "dm_delay",
    "dm_flakey",
    "aesni_intel",
    "aes_generic",
    "af_alg",
    "algif_skcipher",
    "algif_hash",
    "crc32c_generic",
    "crc32c_intel",
    "sha256_generic",
    "sha256_ssse3",
    "cbc",
    "ecb",
    "hmac",
    // a driver that loads firmware and releases it, as iwlwifi does (tests/vm/firmware_test.ts)
    "test_firmware",
    "fuse",
    "btrfs",
    // btrfs asks the crypto API for "crc32c" (a softdep, not in depends=); 6.18 ships it as a module of its own
    "crc32c_cryptoapi",
  ].map((name) => ({ name, required: false })),
];

const ROOT_MIB = 512; // LUKS2 root device size
const DATA_MIB = 64; // LUKS2 data device size
const LUKS_HEADER_MIB = 16; // LUKS2 default data offset

export interface Manifest {
  key: string;
  kernelSelector: string;
  kernel: { package: string; version: string; release: string; suite: string };
  userspaceSuite: string;
  packages: { name: string; version: string }[];
  deno: { version: string; path: string };
  modules: string[];
  luks: { pbkdf: string; memoryKiB: number; iterations: number; cipher: string; keySize: number };
  disks: { root: { device: string; mib: number }; data: { device: string; mib: number } };
  builtAt: string;
}

export interface Guest {
  dir: string;
  kernelImage: string;
  initrd: string;
  /** LUKS2 root image (never modify: boot with snapshot=on or a copy). */
  rootDisk: string;
  /** LUKS2 data image, ext4 inside, holds `/hello.txt` and `/blob.bin` (+ `/blob.sha256`). */
  dataDisk: string;
  passphrase: string;
  manifest: Manifest;
}

export interface EnsureOptions {
  kernel?: string;
  /** Re-run `apt-get update` and re-resolve package versions. */
  refresh?: boolean;
  /** Rebuild even if a cached image with the same key exists. */
  force?: boolean;
  log?: (msg: string) => void;
}

const here = dirname(fromFileUrl(import.meta.url));
export const REPO_ROOT = join(here, "..", "..");
export const DENO_BIN = join(REPO_ROOT, "node_modules", "@deno", "linux-x64-glibc", "deno");

export function cacheRoot(): string {
  const base = Deno.env.get("XDG_CACHE_HOME") || join(Deno.env.get("HOME") ?? "/root", ".cache");
  return join(base, "cryptsleep");
}

/** Runs a host command; returns its stdout, throws with its stderr on failure. */
export async function run(
  cmd: string[],
  opts: { cwd?: string; stdin?: Uint8Array; env?: Record<string, string> } = {},
) {
  const p = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: opts.cwd,
    env: opts.env,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin) {
    const w = p.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  }
  const r = await p.output();
  const out = new TextDecoder().decode(r.stdout);
  const err = new TextDecoder().decode(r.stderr);
  if (!r.success) {
    throw new Error(`${cmd.join(" ")} failed (exit ${r.code}): ${err.trim() || out.trim()}`.slice(0, 4000));
  }
  return out;
}

/** True if `p` exists (a dangling symlink counts). */
export async function exists(p: string): Promise<boolean> {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** An ext4 filesystem filling `image`, labelled, with the files of `tree`; initialised now, so the guest has no background ext4lazyinit writes. */
export async function ext4Image(image: string, label: string, tree: string): Promise<void> {
  const lazy = "lazy_itable_init=0,lazy_journal_init=0";
  await run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", label, "-E", lazy, "-d", tree, image]);
}

/** Hex SHA-256 of bytes or text. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads the host's apt sources and returns the Debian archive URI + keyring for the main archive. */
export async function hostArchive(): Promise<{ uri: string; signedBy: string | null }> {
  const dir = "/etc/apt/sources.list.d";
  const candidates: { uri: string; signedBy: string | null; suites: string[] }[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.endsWith(".sources")) continue;
      const text = await Deno.readTextFile(join(dir, e.name));
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (k: string) => stanza.match(new RegExp(`^${k}:\\s*(.*)$`, "mi"))?.[1]?.trim();
        const types = field("Types") ?? "";
        if (!types.split(/\s+/).includes("deb")) continue;
        const uris = (field("URIs") ?? "").split(/\s+/).filter(Boolean);
        const suites = (field("Suites") ?? "").split(/\s+/);
        for (const uri of uris) candidates.push({ uri, signedBy: field("Signed-By") ?? null, suites });
      }
    }
  } catch { /* no sources.list.d */ }
  for (const f of ["/etc/apt/sources.list"]) {
    try {
      for (const line of (await Deno.readTextFile(f)).split("\n")) {
        const m = line.match(/^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)/);
        if (!m) continue;
        const signed = m[1]?.match(/signed-by=(\S+?)[\s\]]/)?.[1] ?? null;
        candidates.push({ uri: m[2], signedBy: signed, suites: [m[3]] });
      }
    } catch { /* absent */ }
  }
  // The main archive is the one serving a plain release suite (not -security / -updates).
  const main = candidates.find((c) => c.suites.some((s) => /^[a-z]+$/.test(s)) && !/security/.test(c.uri));
  if (!main) throw new Error("no Debian archive found in /etc/apt/sources.list{,.d}: configure apt on the host first");
  return { uri: main.uri.replace(/\/$/, ""), signedBy: main.signedBy };
}

/** A private apt state (lists, cache, sources) under `dir`: apt-get and apt-cache never touch the host's. */
export class AptState {
  constructor(readonly dir: string, readonly suites: string[], readonly defaultRelease: string) {}

  get opts(): string[] {
    return [
      "-o",
      `Dir::State=${this.dir}/state`,
      "-o",
      `Dir::State::status=${this.dir}/state/status`,
      "-o",
      `Dir::Cache=${this.dir}/cache`,
      "-o",
      `Dir::Etc::SourceList=${this.dir}/sources.list`,
      "-o",
      "Dir::Etc::SourceParts=-",
      "-o",
      `Dir::Etc::Preferences=${this.dir}/preferences`,
      "-o",
      "Dir::Etc::PreferencesParts=-",
      "-o",
      `APT::Default-Release=${this.defaultRelease}`,
      "-o",
      "APT::Architecture=amd64",
      "-o",
      "Acquire::Languages=none",
    ];
  }

  async update(): Promise<void> {
    const { uri, signedBy } = await hostArchive();
    await Deno.mkdir(join(this.dir, "state", "lists", "partial"), { recursive: true });
    await Deno.mkdir(join(this.dir, "cache", "archives", "partial"), { recursive: true });
    await Deno.writeTextFile(join(this.dir, "state", "status"), "");
    await Deno.writeTextFile(join(this.dir, "preferences"), "");
    const opt = signedBy ? `[signed-by=${signedBy}] ` : "";
    await Deno.writeTextFile(
      join(this.dir, "sources.list"),
      this.suites.map((s) => `deb ${opt}${uri} ${s} main\n`).join(""),
    );
    await run(["apt-get", ...this.opts, "update"]);
  }

  async candidate(pkg: string): Promise<string | null> {
    const out = await run(["apt-cache", ...this.opts, "policy", pkg]);
    const m = out.match(/Candidate:\s*(\S+)/);
    return m && m[1] !== "(none)" ? m[1] : null;
  }

  async recursiveDepends(pkgs: string[]): Promise<string[]> {
    const out = await run([
      "apt-cache",
      ...this.opts,
      "depends",
      "--recurse",
      "--no-recommends",
      "--no-suggests",
      "--no-conflicts",
      "--no-breaks",
      "--no-replaces",
      "--no-enhances",
      ...pkgs,
    ]);
    return [...new Set(out.split("\n").filter((l) => l && !l.startsWith(" ") && !l.startsWith("<")))].sort();
  }

  async download(pkgs: { name: string; version: string }[], into: string): Promise<string[]> {
    await Deno.mkdir(into, { recursive: true });
    const want = pkgs.map((p) => ({ ...p, file: `${p.name}_${p.version.replace(/^(\d+):/, "$1%3a")}_` }));
    const have = [...Deno.readDirSync(into)].map((e) => e.name);
    const missing = want.filter((w) => !have.some((h) => h.startsWith(w.file) && h.endsWith(".deb")));
    if (missing.length) {
      await run(["apt-get", ...this.opts, "download", ...missing.map((p) => `${p.name}=${p.version}`)], { cwd: into });
    }
    const after = [...Deno.readDirSync(into)].map((e) => e.name);
    return want.map((w) => {
      const f = after.find((h) => h.startsWith(w.file) && h.endsWith(".deb"));
      if (!f) throw new Error(`download of ${w.name}=${w.version} produced no .deb in ${into}`);
      return join(into, f);
    });
  }
}

interface Resolved {
  kernelSelector: string;
  kernel: { package: string; version: string; suite: string };
  userspaceSuite: string;
  /** The USER_PACKAGES this was resolved for: a cached resolution for another list is resolved again. */
  wanted?: string[];
  packages: { name: string; version: string }[];
}

async function resolve(kernel: string, aptDir: string, log: (m: string) => void): Promise<Resolved> {
  const k = KERNELS[kernel];
  const apt = new AptState(aptDir, k.suites, k.defaultRelease);
  log(`apt-get update (private state ${aptDir}, suites ${k.suites.join(" ")})`);
  await apt.update();
  // Kernel: the newest linux-image-<selector>…-amd64 (plain flavour) the suites serve.
  const names = (await run(["apt-cache", ...apt.opts, "pkgnames", `linux-image-${k.prefix}`])).split("\n")
    .filter((n) => /^linux-image-\S+-amd64$/.test(n) && !/-(cloud|rt)-amd64$/.test(n));
  let kpkg: string | null = null;
  let kver: string | null = null;
  for (const n of names) {
    const v = await apt.candidate(n);
    if (!v) continue;
    if (kver === null || await dpkgNewer(v, kver)) {
      kpkg = n;
      kver = v;
    }
  }
  if (!kpkg || !kver) {
    throw new Error(
      `--kernel ${kernel}: no linux-image-${k.prefix}*-amd64 in ${k.suites.join(", ")}; pick another --kernel`,
    );
  }
  // Userspace from the base suite only (no backports): a second state restricted to it.
  const uapt = new AptState(aptDir, k.suites, k.userspace);
  const packages: { name: string; version: string }[] = [];
  for (const name of await uapt.recursiveDepends(USER_PACKAGES)) {
    const v = await uapt.candidate(name);
    if (v) packages.push({ name, version: v });
  }
  return {
    kernelSelector: kernel,
    kernel: { package: kpkg, version: kver, suite: k.defaultRelease },
    userspaceSuite: k.userspace,
    wanted: USER_PACKAGES,
    packages,
  };
}

async function dpkgNewer(a: string, b: string): Promise<boolean> {
  const r = await new Deno.Command("dpkg", { args: ["--compare-versions", a, "gt", b] }).output();
  return r.success;
}

/** Module name as the kernel sees it: file name without .ko[.xz|.zst|.gz], dashes as underscores. */
function modName(p: string): string {
  return p.split("/").pop()!.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

async function ldd(tree: string, files: string[]): Promise<string[]> {
  // Resolve DT_NEEDED recursively inside the extracted tree.
  const libDirs = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib64", "lib64", "usr/lib", "lib"];
  const found = new Map<string, string>();
  const queue = [...files];
  while (queue.length) {
    const f = queue.shift()!;
    const out = await run(["readelf", "-d", f]).catch(() => "");
    for (const m of out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)) {
      const lib = m[1];
      if (found.has(lib)) continue;
      let path: string | null = null;
      for (const d of libDirs) {
        if (await exists(join(tree, d, lib))) {
          path = join(tree, d, lib);
          break;
        }
      }
      if (!path) throw new Error(`${f} needs ${lib}, not found in the extracted packages under ${tree}`);
      found.set(lib, path);
      queue.push(await Deno.realPath(path));
    }
  }
  return [...found.values()];
}

const INITRAMFS_INIT = `#!/bin/sh
# cryptsleep test-bed initramfs: unlock /dev/vda (LUKS2) as "root", mount it, switch_root.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run/cryptsetup /newroot
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load.order
build=0
hook=0
pass=
for a in $(cat /proc/cmdline); do
  case "$a" in
    cryptsleep.build=1) build=1 ;;
    cryptsleep.buildhook=1) hook=1 ;;
    cryptsleep.pass=*) pass="\${a#cryptsleep.pass=}" ;;
  esac
done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
if [ "$build" = 1 ]; then
  # Builder mode: vda=LUKS root, vdb=plain root ext4, vdc=LUKS data, vdd=plain data ext4.
  ok=1
  printf %s "$pass" | cryptsetup open /dev/vda root --key-file=- || ok=0
  dd if=/dev/vdb of=/dev/mapper/root bs=1M conv=fsync 2>&1 || ok=0
  printf %s "$pass" | cryptsetup open /dev/vdc data --key-file=- || ok=0
  dd if=/dev/vdd of=/dev/mapper/data bs=1M conv=fsync 2>&1 || ok=0
  # Another guest's builder (scripts/guest/debian.ts) finishes in a script from vde, the mappings still open.
  if [ "$hook" = 1 ]; then
    mkdir -p /hook && mount -t ext4 -o ro /dev/vde /hook && sh /hook/build.sh || ok=0
    umount /hook
  fi
  sync
  cryptsetup close root || ok=0
  cryptsetup close data || ok=0
  [ $ok = 1 ] && echo CRYPTSLEEP-BUILD-OK || echo CRYPTSLEEP-BUILD-FAILED
  sync
  poweroff -f
fi
until cryptsetup open /dev/vda root; do echo "cryptsleep-initramfs: unlock failed, retrying"; done
mount -t ext4 /dev/mapper/root /newroot || { echo "cryptsleep-initramfs: mount failed"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
`;

const ROOT_INIT = `#!/bin/sh
# cryptsleep test-bed init (PID 1): mounts, tool disk, then a root shell on ttyS0 respawned forever.
# PID 1 never touches the terminal settings itself (a job's stty would kill it).
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb PS1='# '
cd /
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/cryptsetup /run/lock
mount -t cgroup2 cgroup2 /sys/fs/cgroup && echo +memory > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
mount -o remount,rw / 2>/dev/null
hostname cryptsleep-guest
ip link set lo up 2>/dev/null
# Tool disk (plain ext4 on the last virtio disk with label "cstool"): copy into the encrypted root.
for d in /dev/vd?; do
  # ext4 volume label: superblock at 1024, s_volume_name at +120 (no blkid in busybox-static).
  if [ "$(dd if="$d" bs=1 skip=1144 count=6 2>/dev/null)" = cstool ]; then
    mkdir -p /mnt/tool /usr/local/lib/cryptsleep
    mount -o ro "$d" /mnt/tool && cp -a /mnt/tool/. /usr/local/lib/cryptsleep/ && umount /mnt/tool
    rm -rf /usr/local/lib/cryptsleep/lost+found
    echo "cryptsleep-init: tool disk $d copied to /usr/local/lib/cryptsleep"
  fi
done
sync
echo "cryptsleep-init: ready"
while :; do
  setsid sh -c 'exec /bin/sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'
  sleep 0.2
done
`;

/** `/usr/local/bin/cryptsleep` of the guests: the bundle from the tool disk, run by the guest's deno. */
export const CRYPTSLEEP_WRAPPER = `#!/bin/sh
# deno's caches in tmpfs and V8's flags, as packaging/cryptsleep.sh has them
export DENO_DIR=/run/cryptsleep-deno
exec deno run -A --v8-flags=${V8_FLAGS} /usr/local/lib/cryptsleep/cryptsleep.js "$@"
`;

/** Version of the deno binary that goes into the guests. */
export async function denoVersion(): Promise<string> {
  const out = await run([DENO_BIN, "--version"]);
  return out.match(/deno (\S+)/)?.[1] ?? "unknown";
}

async function buildKey(kernel: string, resolved: Resolved, denoVer: string): Promise<string> {
  const self = await Deno.readFile(fromFileUrl(import.meta.url));
  // the wrapper takes V8's flags from cli/v8_flags.ts: its text is in the key too
  return (await sha256Hex(
    JSON.stringify({ self: await sha256Hex(self), wrapper: CRYPTSLEEP_WRAPPER, kernel, resolved, deno: denoVer }),
  )).slice(0, 16);
}

/**
 * An exclusive lock on `<cache>/<name>.lock`, held until it is disposed: test files run in parallel (`deno test
 * --parallel`), and their builders of one guest, or their downloads into one folder, take turns.
 */
export async function cacheLock(name: string): Promise<Deno.FsFile> {
  const root = cacheRoot();
  await Deno.mkdir(root, { recursive: true });
  const file = await Deno.open(join(root, `${name}.lock`), { create: true, write: true });
  await file.lock(true);
  return file;
}

/**
 * A cached guest, or the turn to build it: test files run in parallel. A guest built for the pinned resolution is found
 * without a lock; otherwise `build-<name>`'s lock comes first, and only under it is the resolution made again where
 * needed (apt's private state is the builder's) and the guest looked for again. `lock` is null when the guest came
 * without one; else the caller builds while it holds it.
 */
export async function findOrLock<R, F extends { built: unknown }>(o: {
  name: string;
  resolvedFile: string;
  refresh?: boolean;
  /** Whether a pinned resolution still answers what is wanted. */
  usable: (pinned: R) => boolean;
  resolve: () => Promise<R>;
  find: (resolved: R) => Promise<F>;
}): Promise<{ lock: Deno.FsFile | null; resolved: R; found: F }> {
  const pinned = async (): Promise<R | null> => {
    if (o.refresh || !await exists(o.resolvedFile)) return null;
    const r: R = JSON.parse(await Deno.readTextFile(o.resolvedFile));
    return o.usable(r) ? r : null;
  };
  const seen = await pinned();
  const hit = seen && await o.find(seen);
  if (seen && hit?.built) return { lock: null, resolved: seen, found: hit };
  const lock = await cacheLock(`build-${o.name}`);
  try {
    let resolved = await pinned();
    if (!resolved) {
      resolved = await o.resolve();
      await Deno.writeTextFile(o.resolvedFile, JSON.stringify(resolved, null, 1));
    }
    return { lock, resolved, found: await o.find(resolved) };
  } catch (e) {
    lock.close();
    throw e;
  }
}

/** Returns the cached guest for `kernel`, building it first if needed. */
export async function ensureGuest(opts: EnsureOptions = {}): Promise<Guest> {
  const kernel = opts.kernel ?? "6.1";
  if (!KERNELS[kernel]) {
    throw new Error(`--kernel ${kernel}: unknown, choose one of ${Object.keys(KERNELS).join(", ")}`);
  }
  const log = opts.log ?? ((m: string) => console.error(`[guest] ${m}`));
  const root = cacheRoot();
  const aptDir = join(root, "apt", kernel);
  const resolvedFile = join(root, `resolved-${kernel}.json`);
  const denoVer = await denoVersion();
  const where = async (resolved: Resolved) => {
    const key = await buildKey(kernel, resolved, denoVer);
    const dir = join(root, `guest-${kernel}-${key}`);
    const guest = (manifest: Manifest): Guest => ({
      dir,
      kernelImage: join(dir, "vmlinuz"),
      initrd: join(dir, "initrd.img"),
      rootDisk: join(dir, "root.luks"),
      dataDisk: join(dir, "data.luks"),
      passphrase: PASSPHRASE,
      manifest,
    });
    const built = !opts.force && await exists(join(dir, "manifest.json"))
      ? guest(JSON.parse(await Deno.readTextFile(join(dir, "manifest.json"))))
      : null;
    return { key, dir, guest, built };
  };
  const { lock, resolved, found } = await findOrLock({
    name: kernel,
    resolvedFile,
    refresh: opts.refresh,
    usable: (r: Resolved) => JSON.stringify(r.wanted) === JSON.stringify(USER_PACKAGES),
    resolve: () => resolve(kernel, aptDir, log),
    find: where,
  });
  using _lock = lock;
  const { key, dir, guest, built } = found;
  if (built) return built;
  const t0 = Date.now();
  log(`building guest ${dir}`);
  if (!await exists(join(aptDir, "state", "lists"))) await resolve(kernel, aptDir, log);
  const work = await Deno.makeTempDir({ dir: root, prefix: "build-" });
  try {
    const manifest = await build(kernel, resolved, denoVer, key, aptDir, work, log);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(dir, { recursive: true });
    for (const f of ["vmlinuz", "initrd.img", "root.luks", "data.luks"]) await Deno.rename(join(work, f), join(dir, f));
    await Deno.writeTextFile(join(dir, "manifest.json"), JSON.stringify(manifest, null, 1));
    log(`guest built in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${dir}`);
    // Older builds for this kernel selector are stale (other key): remove them.
    for (const e of Deno.readDirSync(root)) {
      if (e.name.startsWith(`guest-${kernel}-`) && join(root, e.name) !== dir) {
        await Deno.remove(join(root, e.name), { recursive: true }).catch(() => {});
      }
    }
    return guest(manifest);
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** LUKS2 parameters of every volume of the bed: argon2id with little memory and forced iterations, so unlocking stays fast under TCG. */
export const LUKS = { pbkdf: "argon2id", memoryKiB: 65536, iterations: 4, cipher: "aes-xts-plain64", keySize: 512 };

/** The pbkdf options of {@linkcode LUKS}, for luksFormat and luksAddKey. */
export const LUKS_PBKDF_ARGS = [
  "--pbkdf",
  LUKS.pbkdf,
  "--pbkdf-memory",
  String(LUKS.memoryKiB),
  "--pbkdf-force-iterations",
  String(LUKS.iterations),
  "--pbkdf-parallel",
  "1",
];

/** Creates `image` (`mib` MiB) as a LUKS2 container with {@linkcode LUKS}; the passphrase is in `keyFile`. Host-side: no device-mapper needed. */
export async function luksFormat(image: string, mib: number, label: string, keyFile: string): Promise<void> {
  await run(["truncate", "-s", `${mib}M`, image]);
  await run([
    "cryptsetup",
    "luksFormat",
    "--batch-mode",
    "--type",
    "luks2",
    "--cipher",
    LUKS.cipher,
    "--key-size",
    String(LUKS.keySize),
    ...LUKS_PBKDF_ARGS,
    "--key-file",
    keyFile,
    "--label",
    label,
    image,
  ]);
}

/** What a builder boot gets: the busybox guest's kernel and initramfs, and the disks in their order. */
export interface BuilderBoot {
  kernelImage: string;
  initrd: string;
  /** vda = LUKS root, vdb = its plain ext4, vdc = LUKS data, vdd = its plain image; vde = hook disk (optional). */
  disks: string[];
  /** The guest's console goes here; its tail is in the error of a failed boot. */
  serialLog: string;
  /** Guest RAM in MiB (1024 default). */
  ramMiB?: number;
  timeoutMs?: number;
}

/**
 * Boots the initramfs in builder mode: it opens vda and vdc with {@linkcode PASSPHRASE} and copies vdb and vdd
 * through dm-crypt into them. With a fifth disk (plain ext4), it then runs that disk's `build.sh` with both
 * mappings (`/dev/mapper/root`, `/dev/mapper/data`) open. Throws unless the guest reports success.
 */
export async function builderBoot(b: BuilderBoot): Promise<void> {
  const hook = b.disks.length > 4;
  const qemu = new Deno.Command("qemu-system-x86_64", {
    args: [
      "-machine",
      "pc,accel=tcg",
      "-cpu",
      "max",
      "-m",
      String(b.ramMiB ?? 1024),
      "-smp",
      "1",
      "-nodefaults",
      "-display",
      "none",
      "-no-reboot",
      "-kernel",
      b.kernelImage,
      "-initrd",
      b.initrd,
      "-append",
      `console=ttyS0 panic=-1 loglevel=4 cryptsleep.build=1 cryptsleep.pass=${PASSPHRASE}${
        hook ? " cryptsleep.buildhook=1" : ""
      }`,
      // only the LUKS targets (vda, vdc) are written
      ...b.disks.flatMap((f, i) => ["-drive", `file=${f},if=virtio,format=raw${i % 2 || i > 3 ? ",readonly=on" : ""}`]),
      "-serial",
      `file:${b.serialLog}`,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => qemu.kill("SIGKILL"), b.timeoutMs ?? 20 * 60_000);
  const st = await qemu.output();
  clearTimeout(timer);
  const serial = await Deno.readTextFile(b.serialLog).catch(() => "");
  if (!serial.includes("CRYPTSLEEP-BUILD-OK")) {
    throw new Error(
      `builder boot failed (qemu exit ${st.code}): ${new TextDecoder().decode(st.stderr)}\n--- serial tail ---\n${
        serial.slice(-3000)
      }`,
    );
  }
}

async function build(
  kernel: string,
  resolved: Resolved,
  denoVer: string,
  key: string,
  aptDir: string,
  work: string,
  log: (m: string) => void,
): Promise<Manifest> {
  const k = KERNELS[kernel];
  const debDir = join(cacheRoot(), "debs");
  const kapt = new AptState(aptDir, k.suites, k.defaultRelease);
  const uapt = new AptState(aptDir, k.suites, k.userspace);
  // every kernel's builder downloads into the one folder: a file half written by one is not taken by another
  const download = async (apt: AptState, pkgs: { name: string; version: string }[]) => {
    using _lock = await cacheLock("debs");
    return await apt.download(pkgs, debDir);
  };
  log(`downloading ${resolved.packages.length} packages + ${resolved.kernel.package}`);
  const [kdeb] = await download(kapt, [{ name: resolved.kernel.package, version: resolved.kernel.version }]);
  const udebs = await download(uapt, resolved.packages);

  const pool = join(work, "pool");
  const kpool = join(work, "kpool");
  await Deno.mkdir(pool);
  await Deno.mkdir(kpool);
  for (const d of udebs) await run(["dpkg-deb", "-x", d, pool]);
  await run(["dpkg-deb", "-x", kdeb, kpool]);
  // From 7.x Debian splits the image package: vmlinuz and modules come in exact-version dependencies. Only
  // then are they fetched (6.18's image also names a linux-base-<abi> the archive does not serve).
  const hasModules = (await exists(join(kpool, "lib/modules"))) || (await exists(join(kpool, "usr/lib/modules")));
  const parts = hasModules ? [] : (await run(["dpkg-deb", "-f", kdeb, "Depends"])).split(",").map((d) => d.trim())
    .map((d) => /^(linux-(?:base|binary|modules)-\S+) \(= (\S+)\)$/.exec(d)).filter((m) => m !== null)
    .map((m) => ({ name: m![1], version: m![2] }));
  if (parts.length) {
    log(`kernel split into ${parts.map((p) => p.name).join(", ")}`);
    for (const d of await download(kapt, parts)) await run(["dpkg-deb", "-x", d, kpool]);
  }

  // Kernel + modules.
  const modBase = (await exists(join(kpool, "usr/lib/modules"))) ? "usr/lib/modules" : "lib/modules";
  const releases = [...Deno.readDirSync(join(kpool, modBase))].map((e) => e.name);
  if (releases.length !== 1) throw new Error(`expected one kernel release in ${kdeb}, found ${releases.join(", ")}`);
  const release = releases[0];
  // /boot/vmlinuz-<release> up to 6.x; beside the modules from 7.x
  const vmlinuz = [join(kpool, "boot", `vmlinuz-${release}`), join(kpool, modBase, release, "vmlinuz")];
  const found = (await Promise.all(vmlinuz.map(exists))).indexOf(true);
  if (found < 0) throw new Error(`no kernel image in ${kdeb} and its parts: looked at ${vmlinuz.join(", ")}`);
  await Deno.copyFile(vmlinuz[found], join(work, "vmlinuz"));
  const modDir = join(kpool, modBase, release);
  // No depmod on the host: index the .ko files and read `depends=` from each module's .modinfo section.
  const index = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) walk(p);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) index.set(modName(e.name), p);
    }
  };
  walk(join(modDir, "kernel"));
  const builtin = new Set(
    (await Deno.readTextFile(join(modDir, "modules.builtin"))).split("\n").filter(Boolean).map(modName),
  );
  const initrd = join(work, "initramfs");
  await Deno.mkdir(join(initrd, "lib/modules"), { recursive: true });
  const order: string[] = [];
  const visit = async (name: string, required: boolean) => {
    if (order.includes(name)) return;
    const src = index.get(name);
    if (!src) {
      if (builtin.has(name)) return;
      if (required) throw new Error(`module ${name} neither built into ${release} nor shipped as a module`);
      log(`module ${name} not available in ${release}, skipped`);
      return;
    }
    const dst = join(initrd, "lib/modules", `${name}.ko`);
    if (src.endsWith(".xz")) await run(["sh", "-c", `xz -dc '${src}' > '${dst}'`]);
    else if (src.endsWith(".zst")) await run(["sh", "-c", `zstd -qdc '${src}' > '${dst}'`]);
    else if (src.endsWith(".gz")) await run(["sh", "-c", `gzip -dc '${src}' > '${dst}'`]);
    else await Deno.copyFile(src, dst);
    const info = await run(["readelf", "-p", ".modinfo", dst]);
    const deps = (info.match(/depends=(\S*)/)?.[1] ?? "").split(",").filter(Boolean).map(modName);
    for (const d of deps) await visit(d, true);
    if (!order.includes(name)) order.push(name);
  };
  for (const m of MODULES) await visit(m.name, m.required);

  // Initramfs tree.
  for (
    const d of [
      "bin",
      "sbin",
      "usr/bin",
      "usr/sbin",
      "usr/lib/x86_64-linux-gnu",
      "usr/lib64",
      "etc",
      "proc",
      "sys",
      "dev",
      "run",
      "newroot",
      "lib/modules",
    ]
  ) {
    await Deno.mkdir(join(initrd, d), { recursive: true });
  }
  const loadOrder = order.map((n) => `${n}.ko`);
  await Deno.writeTextFile(join(initrd, "lib/modules/load.order"), loadOrder.join("\n") + "\n");

  // Both trees use merged /usr: /lib -> usr/lib, /lib64 -> usr/lib64.
  const bins = {
    busybox: join(pool, "bin/busybox"),
    cryptsetup: join(pool, "sbin/cryptsetup"),
    dmsetup: join(pool, "sbin/dmsetup"),
  };
  for (const [n, p] of Object.entries(bins)) {
    if (!await exists(p)) {
      const alt = p.replace(/\/(s?bin)\//, "/usr/$1/");
      if (await exists(alt)) (bins as Record<string, string>)[n] = alt;
      else throw new Error(`${n} not found in the extracted packages`);
    }
  }
  const findBin = async (name: string) => {
    for (const d of ["sbin", "bin", "usr/sbin", "usr/bin"]) {
      if (await exists(join(pool, d, name))) return join(pool, d, name);
    }
    throw new Error(`${name} not found in the extracted packages`);
  };
  const applets = (await run([bins.busybox, "--list-full"])).split("\n").filter(Boolean);

  async function populate(tree: string, extra: { src: string; dst: string }[]) {
    await Deno.mkdir(join(tree, "usr/lib"), { recursive: true });
    await Deno.mkdir(join(tree, "usr/lib64"), { recursive: true });
    for (const [l, t] of [["lib", "usr/lib"], ["lib64", "usr/lib64"]]) {
      if (!await exists(join(tree, l))) await Deno.symlink(t, join(tree, l));
    }
    await Deno.mkdir(join(tree, "usr/bin"), { recursive: true });
    await Deno.mkdir(join(tree, "usr/sbin"), { recursive: true });
    for (const d of ["bin", "sbin"]) {
      await Deno.mkdir(join(tree, d), { recursive: true });
    }
    await Deno.copyFile(bins.busybox, join(tree, "bin/busybox"));
    await Deno.chmod(join(tree, "bin/busybox"), 0o755);
    for (const a of applets) {
      const dst = join(tree, a);
      if (await exists(dst)) continue;
      await Deno.mkdir(dirname(dst), { recursive: true });
      await Deno.symlink("/bin/busybox", dst);
    }
    const elfs: string[] = [];
    for (const e of extra) {
      const dst = join(tree, e.dst);
      await Deno.remove(dst).catch(() => {});
      await Deno.mkdir(dirname(dst), { recursive: true });
      await Deno.copyFile(e.src, dst);
      await Deno.chmod(dst, 0o755);
      elfs.push(e.src);
    }
    const libs = await ldd(pool, elfs.filter((f) => f !== DENO_BIN));
    if (elfs.includes(DENO_BIN)) {
      for (const l of await ldd(pool, [DENO_BIN])) if (!libs.includes(l)) libs.push(l);
    }
    for (const l of libs) {
      const name = l.split("/").pop()!;
      const dst = name.startsWith("ld-linux")
        ? join(tree, "usr/lib64", name)
        : join(tree, "usr/lib/x86_64-linux-gnu", name);
      await Deno.mkdir(dirname(dst), { recursive: true });
      await Deno.copyFile(await Deno.realPath(l), dst);
      if (name.startsWith("ld-linux")) {
        await Deno.mkdir(join(tree, "usr/lib/x86_64-linux-gnu"), { recursive: true });
        await Deno.copyFile(await Deno.realPath(l), join(tree, "usr/lib/x86_64-linux-gnu", name));
      }
    }
  }

  await populate(initrd, [
    { src: bins.cryptsetup, dst: "usr/sbin/cryptsetup" },
  ]);
  await Deno.writeTextFile(join(initrd, "init"), INITRAMFS_INIT, { mode: 0o755 });
  await Deno.chmod(join(initrd, "init"), 0o755);
  await run([
    "sh",
    "-c",
    `cd '${initrd}' && find . | cpio -o -H newc -R 0:0 --quiet | gzip -6 > '${join(work, "initrd.img")}'`,
  ]);

  // Root tree.
  const rootfs = join(work, "rootfs");
  await Deno.mkdir(rootfs);
  const userBins: { src: string; dst: string }[] = [
    { src: bins.cryptsetup, dst: "usr/sbin/cryptsetup" },
    { src: bins.dmsetup, dst: "usr/sbin/dmsetup" },
    { src: DENO_BIN, dst: "usr/bin/deno" },
  ];
  for (const n of ["mke2fs", "e2fsck", "tune2fs", "dumpe2fs"]) {
    userBins.push({ src: await findBin(n), dst: `usr/sbin/${n}` });
  }
  userBins.push({ src: await findBin("keyctl"), dst: "usr/bin/keyctl" });
  userBins.push({ src: await findBin("bindfs"), dst: "usr/bin/bindfs" });
  userBins.push({ src: await findBin("lvm"), dst: "usr/sbin/lvm" });
  for (const n of ["mkfs.btrfs", "btrfs"]) userBins.push({ src: await findBin(n), dst: `usr/sbin/${n}` });
  await populate(rootfs, userBins);
  // libcryptsetup and libdevmapper for FFI (dlopen by soname): already pulled in by cryptsetup/dmsetup.
  for (const l of ["libcryptsetup.so.12", "libdevmapper.so.1.02.1"]) {
    if (!await exists(join(rootfs, "usr/lib/x86_64-linux-gnu", l))) throw new Error(`${l} missing in the root tree`);
  }
  // mkfs.ext4 / fsck.ext4 names.
  await Deno.symlink("mke2fs", join(rootfs, "usr/sbin/mkfs.ext4")).catch(() => {});
  await Deno.symlink("e2fsck", join(rootfs, "usr/sbin/fsck.ext4")).catch(() => {});
  for (
    const d of [
      "proc",
      "sys",
      "dev",
      "run",
      "tmp",
      "mnt",
      "root",
      "etc",
      "var/tmp",
      "var/lib",
      "usr/local/bin",
      "usr/local/lib/cryptsleep",
    ]
  ) {
    await Deno.mkdir(join(rootfs, d), { recursive: true });
  }
  // Modules (decompressed) also on the root, for tests that want them after boot.
  await run(["cp", "-a", join(initrd, "lib/modules"), join(rootfs, "usr/lib/modules")]);
  await Deno.writeTextFile(join(rootfs, "sbin/init.cryptsleep"), ROOT_INIT);
  await Deno.remove(join(rootfs, "sbin/init")).catch(() => {});
  await Deno.rename(join(rootfs, "sbin/init.cryptsleep"), join(rootfs, "sbin/init"));
  await Deno.chmod(join(rootfs, "sbin/init"), 0o755);
  await Deno.writeTextFile(join(rootfs, "usr/local/bin/cryptsleep"), CRYPTSLEEP_WRAPPER);
  await Deno.chmod(join(rootfs, "usr/local/bin/cryptsleep"), 0o755);
  await Deno.writeTextFile(join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  await Deno.writeTextFile(join(rootfs, "etc/group"), "root:x:0:\n");
  await Deno.writeTextFile(join(rootfs, "etc/hostname"), "cryptsleep-guest\n");
  await Deno.writeTextFile(join(rootfs, "etc/fstab"), "/dev/mapper/root / ext4 rw 0 1\n");
  await Deno.writeTextFile(
    join(rootfs, "etc/profile"),
    "export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb\nexport PS1='# '\n",
  );
  await Deno.writeTextFile(join(rootfs, "etc/os-release"), `NAME="cryptsleep test guest"\nID=cryptsleep-guest\n`);
  await Deno.writeTextFile(join(rootfs, "etc/cryptsleep-guest.json"), JSON.stringify({ key, kernel: release }) + "\n");

  // Plain ext4 images, LUKS2 containers, builder boot.
  const fsMib = ROOT_MIB - LUKS_HEADER_MIB;
  await run(["truncate", "-s", `${fsMib}M`, join(work, "root.plain")]);
  await ext4Image(join(work, "root.plain"), "root", rootfs);
  const dataTree = join(work, "datatree");
  await Deno.mkdir(dataTree);
  await Deno.writeTextFile(join(dataTree, "hello.txt"), "hello from the cryptsleep data disk\n");
  const blob = new Uint8Array(1 << 20);
  for (let i = 0; i < blob.length; i += 65536) crypto.getRandomValues(blob.subarray(i, i + 65536));
  await Deno.writeFile(join(dataTree, "blob.bin"), blob);
  await Deno.writeTextFile(join(dataTree, "blob.sha256"), `${await sha256Hex(blob)}  blob.bin\n`);
  await run(["truncate", "-s", `${DATA_MIB - LUKS_HEADER_MIB}M`, join(work, "data.plain")]);
  await ext4Image(join(work, "data.plain"), "data", dataTree);

  const luks = LUKS;
  const keyFile = join(work, "pass");
  await Deno.writeTextFile(keyFile, PASSPHRASE, { mode: 0o600 });
  for (const [f, mib] of [["root.luks", ROOT_MIB], ["data.luks", DATA_MIB]] as const) {
    await luksFormat(join(work, f), mib, f.replace(".luks", ""), keyFile);
  }
  log("builder boot: copying the plain images through dm-crypt (takes a while under TCG)");
  await builderBoot({
    kernelImage: join(work, "vmlinuz"),
    initrd: join(work, "initrd.img"),
    disks: [join(work, "root.luks"), join(work, "root.plain"), join(work, "data.luks"), join(work, "data.plain")],
    serialLog: join(work, "builder.log"),
  });

  const manifest: Manifest = {
    key,
    kernelSelector: kernel,
    kernel: { ...resolved.kernel, release },
    userspaceSuite: resolved.userspaceSuite,
    packages: [...resolved.packages, { name: resolved.kernel.package, version: resolved.kernel.version }],
    deno: { version: denoVer, path: "/usr/bin/deno" },
    modules: loadOrder,
    luks,
    disks: { root: { device: "/dev/vda", mib: ROOT_MIB }, data: { device: "/dev/vdc", mib: DATA_MIB } },
    builtAt: new Date().toISOString(),
  };
  return manifest;
}

if (import.meta.main) {
  const args = Deno.args;
  const val = (f: string) => {
    const i = args.indexOf(f);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const g = await ensureGuest({
    kernel: val("--kernel") ?? "6.1",
    refresh: args.includes("--refresh"),
    force: args.includes("--force"),
  });
  console.log(JSON.stringify({ dir: g.dir, kernel: g.manifest.kernel, deno: g.manifest.deno.version }, null, 1));
}

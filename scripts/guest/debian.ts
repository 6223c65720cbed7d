/**
 * @module
 * Builds (or reuses from the cache) the bed's second guest type: Debian trixie with systemd, as an encrypted
 * install is laid out. Root on LUKS2 (ext4 inside) unlocked at boot by Debian's own initramfs from
 * /etc/crypttab; a data disk LUKS2 → LVM PV → VG `vg` → LV `home` (ext4) on /home, opened at boot with a key
 * file that lives on the encrypted root. Root autologin on ttyS0; deno in the image, the cryptsleep bundle from
 * the tool disk as in the busybox guest.
 *
 * The tree comes from `debootstrap` run on the host (the archive the host's apt names); `update-initramfs` runs
 * in it by chroot. The LUKS containers are made on the host; they are filled by the busybox guest's builder
 * boot (scripts/guest/build.ts), whose hook script creates the LVM with the tree's own lvm tools.
 *
 * The cache key: this file's hash, the busybox builder guest's key (so build.ts), the archive's Release date
 * and the candidate versions of the included packages (pinned in resolved-debian.json until --refresh), deno.
 *
 * ```sh
 * deno run -A scripts/guest/debian.ts            # prints the cache directory
 * ```
 */

import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  AptState,
  builderBoot,
  cacheRoot,
  CRYPTSLEEP_WRAPPER,
  DENO_BIN,
  denoVersion,
  ensureGuest,
  exists,
  ext4Image,
  findOrLock,
  hostArchive,
  LUKS,
  LUKS_PBKDF_ARGS,
  luksFormat,
  PASSPHRASE,
  run,
  sha256Hex,
} from "./build.ts";

const SUITE = "trixie";
/** On top of debootstrap's minbase. `systemctl suspend` needs dbus and libpam-systemd (logind). */
const INCLUDE = [
  "systemd",
  "systemd-sysv",
  "udev",
  "dbus",
  "libpam-systemd",
  "cryptsetup",
  "cryptsetup-initramfs",
  "cryptsetup-suspend",
  "systemd-cryptsetup", // its generator turns /etc/crypttab into units; without it the data volume stays shut
  // TPM2 tokens (systemd-cryptenroll, the token plugin): the libraries the plugin loads when it is used
  "libtss2-esys-3.0.2-0t64",
  "libtss2-rc0t64",
  "lvm2",
  "e2fsprogs", // not in trixie's minbase: mkfs and fsck of the ext4 volumes
  "linux-image-amd64",
  "zstd",
  "bindfs", // a real FUSE server, run as a systemd service (tests/vm/fuse_test.ts)
];
/** The busybox guest whose kernel and initramfs run the builder boot. */
const BUILDER_KERNEL = "6.1";
const DATA_MIB = 96;
const LUKS_HEADER_MIB = 16;
const HOSTNAME = "cryptsleep-debian";

export interface DebianManifest {
  key: string;
  suite: string;
  /** Date of the suite's Release file when the versions were pinned. */
  releaseDate: string;
  kernel: { release: string };
  /** Every package installed in the guest (dpkg-query). */
  packages: { name: string; version: string }[];
  deno: { version: string; path: string };
  luks: typeof LUKS;
  disks: {
    root: { device: string; mib: number; uuid: string; dmName: string };
    data: { device: string; mib: number; uuid: string; dmName: string; lv: string; mountpoint: string };
  };
  /** Key of the busybox guest that ran the builder boot. */
  builder: string;
  builtAt: string;
}

export interface DebianGuest {
  kind: "debian";
  dir: string;
  kernelImage: string;
  initrd: string;
  /** LUKS2 root image (never modify: boot with snapshot=on or a copy). */
  rootDisk: string;
  /** LUKS2 → LVM (vg/home, ext4) image, opened at boot from /etc/crypttab with a key file on the root. */
  dataDisk: string;
  passphrase: string;
  /** Kernel arguments the guest needs (root=…); the harness adds the consoles. */
  cmdline: string;
  manifest: DebianManifest;
}

interface Resolved {
  suite: string;
  releaseDate: string;
  packages: { name: string; version: string }[];
}

async function resolve(aptDir: string, log: (m: string) => void): Promise<Resolved> {
  const apt = new AptState(aptDir, [SUITE], SUITE);
  log(`apt-get update (private state ${aptDir}, suite ${SUITE})`);
  await apt.update();
  const lists = join(aptDir, "state", "lists");
  const rel = [...Deno.readDirSync(lists)].find((e) => new RegExp(`_dists_${SUITE}_(In)?Release$`).test(e.name));
  if (!rel) throw new Error(`no ${SUITE} Release file in ${lists}`);
  const releaseDate = (await Deno.readTextFile(join(lists, rel.name))).match(/^Date:\s*(.+)$/m)?.[1] ?? "";
  const packages = [];
  for (const name of INCLUDE) {
    const version = await apt.candidate(name);
    if (!version) throw new Error(`${name} is not in ${SUITE} of the host's archive`);
    packages.push({ name, version });
  }
  return { suite: SUITE, releaseDate, packages };
}

/** Unmounts whatever is mounted below `dir` (deepest first), so removing `dir` never reaches a host tree. */
async function unmountUnder(dir: string): Promise<void> {
  const mounts = (await Deno.readTextFile("/proc/self/mounts")).split("\n").map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m.startsWith(dir + "/")).sort().reverse();
  for (const m of mounts) await run(["umount", "-l", m]).catch(() => {});
}

/** Builder hook (busybox sh, run with /dev/mapper/data open): LVM and ext4 made by the tree's own tools. */
const HOOK = `set -e
t=/t
mkdir -p $t
mount -t ext4 -o ro /dev/vdb $t
mount -t proc proc $t/proc
mount -t sysfs sysfs $t/sys
mount -o bind /dev $t/dev
mount -t tmpfs tmpfs $t/run
mount -t tmpfs tmpfs $t/tmp
mkdir -p $t/run/lock/lvm $t/run/lvm
export DM_DISABLE_UDEV=1 PATH=/usr/sbin:/usr/bin
cfg='devices{use_devicesfile=0} activation{udev_sync=0 udev_rules=0} backup{backup=0 archive=0}'
chroot $t lvm pvcreate --config "$cfg" /dev/mapper/data
chroot $t lvm vgcreate --config "$cfg" vg /dev/mapper/data
chroot $t lvm lvcreate --config "$cfg" --yes -n home -l 100%FREE vg
chroot $t mkfs.ext4 -q -F -L home -E lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/vg-home
chroot $t sh -c 'mount /dev/mapper/vg-home /mnt && echo "hello from vg/home" > /mnt/hello.txt && umount /mnt'
chroot $t lvm vgchange --config "$cfg" -an vg
umount $t/tmp $t/run $t/dev $t/sys $t/proc $t
echo CRYPTSLEEP-HOOK-OK
`;

/** Copies the tool disk (label cstool) onto the encrypted root before the serial shell starts, as the busybox guest's init does. */
const TOOL_UNIT = `[Unit]
Description=cryptsleep test bed: copy the tool disk to /usr/local/lib/cryptsleep
Wants=dev-disk-by\\x2dlabel-cstool.device
After=dev-disk-by\\x2dlabel-cstool.device
Before=serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /run/cstool /usr/local/lib/cryptsleep && mount -o ro LABEL=cstool /run/cstool && cp -a /run/cstool/. /usr/local/lib/cryptsleep/ && rm -rf /usr/local/lib/cryptsleep/lost+found; umount /run/cstool'

[Install]
WantedBy=multi-user.target
`;

/** Files written into the tree (path relative to it → content). */
function guestFiles(rootUuid: string, dataUuid: string): Record<string, string> {
  return {
    "etc/hostname": `${HOSTNAME}\n`,
    "etc/hosts": `127.0.0.1 localhost\n127.0.1.1 ${HOSTNAME}\n`,
    "etc/crypttab": `root_crypt UUID=${rootUuid} none luks,initramfs\n` +
      `data_crypt UUID=${dataUuid} /etc/keys/data.key luks\n`,
    // nofail: a missing /home shows as a failed check in the test, not as a boot stuck in emergency mode
    "etc/fstab": "/dev/mapper/root_crypt / ext4 rw,errors=remount-ro 0 0\n" +
      "/dev/vg/home /home ext4 defaults,nofail,x-systemd.device-timeout=180s 0 0\n",
    "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf": "[Service]\nExecStart=\n" +
      "ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I dumb\n",
    "etc/systemd/journald.conf.d/quiet.conf": "[Journal]\nForwardToConsole=no\nStorage=volatile\n",
    "etc/systemd/system.conf.d/quiet.conf": "[Manager]\nShowStatus=no\n",
    "etc/systemd/system/cryptsleep-tool.service": TOOL_UNIT,
    // Line editing off on the serial shell: readline redraws long lines on a dumb terminal, bytes the bed waits for
    // no pager: `more` would stop a command the bed waits for at --More--
    "root/.bashrc": "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" +
      "export PAGER=cat SYSTEMD_PAGER= SYSTEMD_COLORS=0\n" +
      "PS1='# '\ncase $(tty) in /dev/ttyS*) set +o emacs +o vi ;; esac\n",
    "root/.profile": ". /root/.bashrc\n",
    "usr/local/bin/cryptsleep": CRYPTSLEEP_WRAPPER,
  };
}

/** Writes the tree, the images, the kernel and initramfs into `work`; returns the manifest. */
async function build(
  work: string,
  resolved: Resolved,
  builder: { kernelImage: string; initrd: string; key: string },
  key: string,
  denoVer: string,
  log: (m: string) => void,
): Promise<DebianManifest> {
  const debootstrap = await run(["sh", "-c", "command -v debootstrap"]).catch(() => "");
  if (!debootstrap.trim()) throw new Error("debootstrap is not installed on the host: ./dev installs it");
  const { uri, signedBy } = await hostArchive();
  const tree = join(work, "tree");
  const debs = join(cacheRoot(), "debs-debian");
  await Deno.mkdir(debs, { recursive: true });
  log(`debootstrap ${SUITE} from ${uri} (a few minutes)`);
  await run([
    "debootstrap",
    "--variant=minbase",
    `--include=${INCLUDE.join(",")}`,
    `--cache-dir=${debs}`,
    ...(signedBy ? [`--keyring=${signedBy}`] : []),
    SUITE,
    tree,
    uri,
  ]);

  // LUKS2 headers first: the crypttab names their UUIDs. The segment size is dynamic, so the images grow later.
  const pass = join(work, "pass");
  await Deno.writeTextFile(pass, PASSPHRASE, { mode: 0o600 });
  const rootLuks = join(work, "root.luks");
  const dataLuks = join(work, "data.luks");
  await luksFormat(rootLuks, 32, "root", pass);
  await luksFormat(dataLuks, DATA_MIB, "data", pass);
  const rootUuid = (await run(["cryptsetup", "luksUUID", rootLuks])).trim();
  const dataUuid = (await run(["cryptsetup", "luksUUID", dataLuks])).trim();
  const dataKey = join(tree, "etc/keys/data.key");
  await Deno.mkdir(join(tree, "etc/keys"), { recursive: true, mode: 0o700 });
  await Deno.writeFile(dataKey, crypto.getRandomValues(new Uint8Array(64)), { mode: 0o400 });
  await run(["cryptsetup", "luksAddKey", "--batch-mode", ...LUKS_PBKDF_ARGS, "--key-file", pass, dataLuks, dataKey]);

  for (const [path, text] of Object.entries(guestFiles(rootUuid, dataUuid))) {
    await Deno.mkdir(join(tree, path, ".."), { recursive: true });
    await Deno.writeTextFile(join(tree, path), text);
  }
  await Deno.chmod(join(tree, "usr/local/bin/cryptsleep"), 0o755);
  await Deno.copyFile(DENO_BIN, join(tree, "usr/bin/deno"));
  await Deno.chmod(join(tree, "usr/bin/deno"), 0o755);
  await Deno.mkdir(join(tree, "etc/systemd/system/multi-user.target.wants"), { recursive: true });
  await Deno.symlink(
    "/etc/systemd/system/cryptsleep-tool.service",
    join(tree, "etc/systemd/system/multi-user.target.wants/cryptsleep-tool.service"),
  );

  // The crypttab's `initramfs` option makes the hook include root_crypt although the chroot cannot see the device.
  log("update-initramfs in the tree");
  await run(["chroot", tree, "update-initramfs", "-u", "-k", "all"]);
  const boot = [...Deno.readDirSync(join(tree, "boot"))].map((e) => e.name);
  const vmlinuz = boot.find((n) => n.startsWith("vmlinuz-"));
  if (!vmlinuz || !boot.includes(`initrd.img-${vmlinuz.slice(8)}`)) throw new Error(`no kernel/initrd in ${boot}`);
  const release = vmlinuz.slice("vmlinuz-".length);
  await Deno.copyFile(join(tree, "boot", vmlinuz), join(work, "vmlinuz"));
  await Deno.copyFile(join(tree, "boot", `initrd.img-${release}`), join(work, "initrd.img"));
  const packages = (await run(["chroot", tree, "dpkg-query", "-W", "-f", "${Package} ${Version}\\n"]))
    .split("\n").filter(Boolean).map((l) => ({ name: l.split(" ")[0], version: l.split(" ")[1] }));

  // Smaller image, shorter copy through dm-crypt: apt's caches and the docs go.
  await run([
    "sh",
    "-c",
    `cd '${tree}' && rm -rf var/cache/apt/*.bin var/cache/apt/archives/*.deb var/lib/apt/lists/* ` +
    "usr/share/doc/* usr/share/man/* usr/share/locale/*",
  ]);
  const treeMib = Number((await run(["du", "-sm", tree])).split(/\s/)[0]);
  const fsMib = Math.ceil((treeMib * 1.25 + 256) / 16) * 16;
  const rootMib = fsMib + LUKS_HEADER_MIB;
  log(`tree ${treeMib} MiB → root ext4 ${fsMib} MiB`);
  const rootPlain = join(work, "root.plain");
  await run(["truncate", "-s", `${fsMib}M`, rootPlain]);
  await ext4Image(rootPlain, "root", tree);
  await run(["truncate", "-s", `${rootMib}M`, rootLuks]);
  // The data volume is filled by the hook; the builder's copy step gets an empty MiB.
  const dataPlain = join(work, "data.plain");
  await run(["truncate", "-s", "1M", dataPlain]);
  const hookTree = join(work, "hook");
  await Deno.mkdir(hookTree);
  await Deno.writeTextFile(join(hookTree, "build.sh"), HOOK);
  const hookDisk = join(work, "hook.ext4");
  await run(["truncate", "-s", "8M", hookDisk]);
  await ext4Image(hookDisk, "cshook", hookTree);

  log("builder boot: root through dm-crypt, then LVM on the data volume (several minutes under TCG)");
  const serialLog = join(work, "builder.log");
  await builderBoot({
    kernelImage: builder.kernelImage,
    initrd: builder.initrd,
    disks: [rootLuks, rootPlain, dataLuks, dataPlain, hookDisk],
    serialLog,
    timeoutMs: 30 * 60_000,
  });
  const serial = await Deno.readTextFile(serialLog);
  if (!serial.includes("CRYPTSLEEP-HOOK-OK")) throw new Error(`builder hook failed:\n${serial.slice(-3000)}`);

  return {
    key,
    suite: SUITE,
    releaseDate: resolved.releaseDate,
    kernel: { release },
    packages,
    deno: { version: denoVer, path: "/usr/bin/deno" },
    luks: LUKS,
    disks: {
      root: { device: "/dev/vda", mib: rootMib, uuid: rootUuid, dmName: "root_crypt" },
      data: {
        device: "/dev/vdc",
        mib: DATA_MIB,
        uuid: dataUuid,
        dmName: "data_crypt",
        lv: "vg/home",
        mountpoint: "/home",
      },
    },
    builder: builder.key,
    builtAt: new Date().toISOString(),
  };
}

/** Options of {@linkcode ensureDebianGuest}. */
export interface DebianOptions {
  /** Re-run `apt-get update` and pin the archive's current versions. */
  refresh?: boolean;
  /** Rebuild even if a cached image with the same key exists. */
  force?: boolean;
  log?: (msg: string) => void;
}

/** Returns the cached Debian guest, building it first if needed (and the busybox guest that builds it). */
export async function ensureDebianGuest(opts: DebianOptions = {}): Promise<DebianGuest> {
  const log = opts.log ?? ((m: string) => console.error(`[guest debian] ${m}`));
  const root = cacheRoot();
  const aptDir = join(root, "apt", "debian");
  const resolvedFile = join(root, "resolved-debian.json");
  const denoVer = await denoVersion();
  const self = await sha256Hex(await Deno.readFile(fromFileUrl(import.meta.url)));
  const where = async (resolved: Resolved) => {
    const bb = await ensureGuest({ kernel: BUILDER_KERNEL, log });
    const key = (await sha256Hex(JSON.stringify({ self, resolved, deno: denoVer, builder: bb.manifest.key })))
      .slice(0, 16);
    const dir = join(root, `debian-${key}`);
    const guest = (manifest: DebianManifest): DebianGuest => ({
      kind: "debian",
      dir,
      kernelImage: join(dir, "vmlinuz"),
      initrd: join(dir, "initrd.img"),
      rootDisk: join(dir, "root.luks"),
      dataDisk: join(dir, "data.luks"),
      passphrase: PASSPHRASE,
      cmdline: `root=/dev/mapper/${manifest.disks.root.dmName} rw`,
      manifest,
    });
    const built = !opts.force && await exists(join(dir, "manifest.json"))
      ? guest(JSON.parse(await Deno.readTextFile(join(dir, "manifest.json"))))
      : null;
    return { bb, key, dir, guest, built };
  };
  const { lock, resolved, found } = await findOrLock({
    name: "debian",
    resolvedFile,
    refresh: opts.refresh,
    // pinned until --refresh, or until the package list changes
    usable: (r: Resolved) => r.packages.map((p) => p.name).join() === INCLUDE.join(),
    resolve: () => resolve(aptDir, log),
    find: where,
  });
  using _lock = lock;
  const { bb, key, dir, guest, built } = found;
  if (built) return built;
  const t0 = Date.now();
  log(`building ${dir}`);
  const work = await Deno.makeTempDir({ dir: root, prefix: "build-debian-" });
  try {
    const builder = { kernelImage: bb.kernelImage, initrd: bb.initrd, key: bb.manifest.key };
    const manifest = await build(work, resolved, builder, key, denoVer, log);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(dir, { recursive: true });
    for (const f of ["vmlinuz", "initrd.img", "root.luks", "data.luks"]) await Deno.rename(join(work, f), join(dir, f));
    await Deno.writeTextFile(join(dir, "manifest.json"), JSON.stringify(manifest, null, 1));
    log(`built in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${dir}`);
    // Older Debian guests (another key) are stale; only this builder's own entries are touched.
    for (const e of Deno.readDirSync(root)) {
      if (e.name.startsWith("debian-") && join(root, e.name) !== dir) {
        await Deno.remove(join(root, e.name), { recursive: true }).catch(() => {});
      }
    }
    return guest(manifest);
  } finally {
    await unmountUnder(work);
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const g = await ensureDebianGuest({ refresh: Deno.args.includes("--refresh"), force: Deno.args.includes("--force") });
  console.log(JSON.stringify({ dir: g.dir, kernel: g.manifest.kernel, packages: g.manifest.packages.length }, null, 1));
}

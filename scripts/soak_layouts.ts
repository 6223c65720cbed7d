/**
 * @module
 * The data-disk layouts of `deno task soak` (scripts/soak_lib.ts names them), each set up in the busybox guest by a
 * shell command on its data disk (/dev/vdc, a LUKS2 volume with ext4 as built), leaving the volume's filesystem
 * mounted on /mnt/data; and the `luksDump` arguments that find its volume key (searched for in RAM while asleep).
 *
 * ```ts
 * import { layoutSetup } from "./soak_layouts.ts";
 * console.log(layoutSetup("luks1", "passphrase")?.keyDevice); // "/dev/vdc"
 * ```
 */
import type { Layout } from "./soak_lib.ts";

/** How a layout is made in the guest. */
export interface LayoutSetup {
  /** Shell run once after boot: the data volume open and mounted on /mnt/data. */
  shell: string;
  /** What `cryptsetup luksDump --dump-volume-key` is given to find the data volume's key. */
  keyDevice: string;
}

/** lvm in the busybox guest: no udev, so it makes its own device nodes. */
const LVM = "export DM_DISABLE_UDEV=1 && mkdir -p /run/lvm /run/lock/lvm && ";

/** The data volume's setup for `layout`; null for `root` (no data disk). */
export function layoutSetup(layout: Layout, pass: string): LayoutSetup | null {
  const key = `printf %s '${pass}' | `;
  // Argon2id as a user's would be, small enough for the guest's RAM and TCG's speed
  const format = (type: string, dev: string, more = "") =>
    `${key}cryptsetup luksFormat --batch-mode --type ${type} ${
      type === "luks1" ? "--pbkdf-force-iterations 1000" : "--pbkdf argon2id --pbkdf-memory 32768 " +
        "--pbkdf-force-iterations 4"
    } ${more}--key-file - ${dev}`;
  const open = (dev: string, more = "") => `${key}cryptsetup open ${more}--key-file - ${dev} data`;
  const mount = (dev = "/dev/mapper/data", fs = "ext4") => `mkdir -p /mnt/data && mount -t ${fs} ${dev} /mnt/data`;
  switch (layout) {
    case "root":
      return null;
    case "root+data":
      return { shell: `${open("/dev/vdc")} && ${mount()}`, keyDevice: "/dev/vdc" };
    case "lvm-on-luks":
      // a home LV and a swap LV in use, on the LUKS2 data volume
      return {
        shell: `${open("/dev/vdc")} && ${LVM}lvm pvcreate -q -ff -y /dev/mapper/data && ` +
          "lvm vgcreate -q vg /dev/mapper/data && lvm lvcreate -q -y -L 32M -n home vg && " +
          "lvm lvcreate -q -y -l 100%FREE -n swap vg && mkfs.ext4 -F -q /dev/mapper/vg-home && " +
          `${mount("/dev/mapper/vg-home")} && mkswap /dev/mapper/vg-swap >/dev/null && swapon /dev/mapper/vg-swap`,
        keyDevice: "/dev/vdc",
      };
    case "luks-on-lvm":
      return {
        shell: `${LVM}lvm pvcreate -q -ff -y /dev/vdc && lvm vgcreate -q vg /dev/vdc && ` +
          `lvm lvcreate -q -y -L 48M -n lv vg && ${format("luks2", "/dev/mapper/vg-lv")} && ` +
          `${open("/dev/mapper/vg-lv")} && mkfs.ext4 -F -q /dev/mapper/data && ${mount()}`,
        keyDevice: "/dev/mapper/vg-lv",
      };
    case "luks1":
      return {
        shell: `${format("luks1", "/dev/vdc")} && ${
          open("/dev/vdc")
        } && mkfs.ext4 -F -q /dev/mapper/data && ${mount()}`,
        keyDevice: "/dev/vdc",
      };
    case "detached-header":
      // the header a file on the LUKS root, named in crypttab as a user's would be
      return {
        shell: `truncate -s 16M /root/data.hdr && ${format("luks2", "/dev/vdc", "--header /root/data.hdr ")} && ` +
          `${open("/dev/vdc", "--header /root/data.hdr ")} && ` +
          "echo 'data /dev/vdc none luks,header=/root/data.hdr' >> /etc/crypttab && " +
          `mkfs.ext4 -F -q /dev/mapper/data && ${mount()}`,
        keyDevice: "--header /root/data.hdr /dev/vdc",
      };
    case "btrfs":
      return {
        shell: `${open("/dev/vdc")} && mkfs.btrfs -q -f --mixed /dev/mapper/data && ${
          mount("/dev/mapper/data", "btrfs")
        }`,
        keyDevice: "/dev/vdc",
      };
  }
}

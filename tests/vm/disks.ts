/**
 * @module
 * Disks the VM tests plug in and look for: sparse images on the host, the guest's name of a disk by its size, and a
 * shell command that must succeed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { VM } from "./harness.ts";
import { startSuspend } from "./cycle_helpers.ts";

/** Runs `cmd` in the guest; fails the test unless it exits 0. Returns what it printed. */
export async function must(vm: VM, cmd: string): Promise<string> {
  const r = await vm.sh(cmd, { timeoutMs: 300_000 });
  assert.equal(r.code, 0, `${cmd}\n${r.out}`);
  return r.out;
}

/** The name of the virtio disk of `sectors` sectors, once the kernel has set it up (its node and holders/ there). */
export async function diskOfSize(vm: VM, sectors: number): Promise<string> {
  const name = (await must(
    vm,
    "i=0; while [ $i -lt 120 ]; do for d in /sys/block/vd*; do n=${d##*/}; " +
      `[ "$(cat $d/size)" = ${sectors} ] && [ -d $d/holders ] && [ -b /dev/$n ] && { echo $n; break 2; }; ` +
      "done; i=$((i+1)); sleep 1; done",
  )).trim();
  assert.match(name, /^vd[a-z]+$/, `no disk of ${sectors} sectors came`);
  return name;
}

/** SHA-256 of a file on the host, hex. */
export async function digest(path: string): Promise<string> {
  const bytes = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(path)));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A sparse image file of `mib` MiB in the VM's temporary directory (a disk to plug in). */
export async function sparseImage(vm: VM, name: string, mib: number): Promise<string> {
  const path = join(vm.tmp, name);
  using f = await Deno.open(path, { create: true, write: true });
  await f.truncate(mib << 20);
  return path;
}

/**
 * Shell that formats the image file `file` as LUKS2 (Argon2id, small for the guest) and opens it as `name`:
 * cryptsetup attaches the loop device itself, so the volume key is pinned in a kernel keyring (cycle/pinned/).
 */
export function imageVolume(pass: string, file: string, name: string): string {
  return `truncate -s 48M ${file} && printf %s '${pass}' | cryptsetup luksFormat --batch-mode --type luks2 ` +
    `--pbkdf argon2id --pbkdf-memory 32768 --pbkdf-force-iterations 4 --key-file - ${file} && ` +
    `printf %s '${pass}' | cryptsetup open --key-file - ${file} ${name}`;
}

/**
 * Starts a cycle and, as the guest wakes, pulls disk `id` out (QMP `device_del`): found gone after the resume, as a
 * USB disk pulled out while asleep. Returns where the cycle's console text starts.
 */
export async function pulledAtWake(vm: VM, id: string): Promise<number> {
  const from = vm.console.length;
  await startSuspend(vm);
  await vm.waitForSuspend(300_000);
  await vm.wake();
  await vm.qmp("device_del", { id });
  await vm.waitForEvent("DEVICE_DELETED", 120_000);
  return from;
}

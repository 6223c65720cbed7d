/**
 * @module
 * What the unlock looks at after the wake before it reads a locked volume's header: whether the disks under it are
 * still there, answer a read, and still hold this volume's LUKS header. A volume that fails them is retired (gone.ts):
 * its reads and writes fail at once instead of hanging, and the others unlock. The root filesystem's volume is
 * never given up: without it nothing could go on.
 *
 * @example
 * ```ts
 * import type { AgentContext } from "./context.ts";
 * import type { Volume } from "../discovery/mod.ts";
 * import { retireIfGone, retireIfSilent } from "./wake_checks.ts";
 *
 * export async function stillThere(ctx: AgentContext, volume: Volume): Promise<boolean> {
 *   // each says on the console why it retired the volume
 *   return !(await retireIfGone(ctx, volume) || await retireIfSilent(ctx, volume));
 * }
 * ```
 */
import * as dm from "../ffi/devmapper.ts";
import { readDirectBytes } from "../ffi/libc.ts";
import type { Volume } from "../discovery/mod.ts";
import { type AgentContext, say } from "./context.ts";
import { isSwapped, NotThisVolume } from "./pinned/mod.ts";
import { goneOf, lostDisk, onlyVirtioBelow, retire, slavesOf } from "./gone.ts";
import { LUKS2_SECONDARY_OFFSETS, luks2SecondaryUuidOf, luksUuidOf } from "../discovery/luks_header.ts";
import { devPathOf } from "../host/paths.ts";

/**
 * When a disk under the locked volume is gone, retires the volume (gone.ts) and says so. True when it did.
 */
export async function retireIfGone(ctx: AgentContext, volume: Volume): Promise<boolean> {
  const gone = goneOf(volume);
  if (gone.length === 0) return false;
  await retire(volume);
  say(
    ctx,
    `\ncryptsleep: ${volume.dmName}: ${lostDisk(gone)}: it cannot be unlocked; its reads and writes now fail.\n`,
  );
  ctx.log(`${volume.dmName}: ${lostDisk(gone)}; given the error target`);
  ctx.timeline.appendFact("diskGone", { volume: volume.dmName, devices: gone.join(", "), at: "unlock" });
  return true;
}

/**
 * How long the disks under a locked volume have to answer a read at wake before the volume is retired: virtio disks
 * have no timeout in the kernel (a request not answered never is); other drivers end in an error by themselves
 * (SCSI's 30 s command timeout, resets and retries), so they are given longer.
 */
const ANSWER_MS = { virtio: 30_000, other: 180_000 };
/** After this long without an answer the console says what the unlock waits for. */
const ANSWER_SAY_MS = 2_000;

/** Probe reads not answered yet, by disk: a suspend waits for them (the kernel freezes each disk's queue first). */
const underWay = new Map<string, number>();

/** The disks a probe read of {@linkcode retireIfSilent} still waits on (one retired as silent stays here). */
export function readsUnderWay(): string[] {
  return [...underWay.keys()];
}

async function probe(kname: string): Promise<Uint8Array> {
  underWay.set(kname, (underWay.get(kname) ?? 0) + 1);
  try {
    return await readDirectBytes(`/dev/${kname}`, 0, 4096).catch(() => new Uint8Array());
  } finally {
    const n = underWay.get(kname)! - 1;
    if (n) underWay.set(kname, n);
    else underWay.delete(kname);
  }
}

/**
 * Before anything reads the disks under a locked volume on this thread (libcryptsetup's header read, which would
 * wait forever on a disk that stopped answering), one block of each is read on a worker thread. `signal`: the
 * prompt these checks ran beside was left; nothing more is said or retired.
 * - Silent: after {@linkcode ANSWER_SAY_MS} the console says what the unlock waits for; after {@linkcode ANSWER_MS}
 *   the volume is retired and the others go on (that read stays blocked in the kernel: the process cannot end
 *   before it returns). The root filesystem's volume is never given up: without it nothing could go on.
 * - Exchanged: the block read from the device its header was read from at discovery holds another volume's LUKS
 *   header, or none ({@linkcode NotThisVolume}, retired by the caller): a disk taken away while the machine slept and
 *   another plugged into its slot comes back under the old name (seen on the bed); the kernel cannot tell. Read past
 *   the page cache, which still holds the old header: libcryptsetup then found it there, asked for the passphrase
 *   and would have resumed the old key onto the other disk (seen on the bed with a blank one).
 * True when the volume was retired.
 */
export async function retireIfSilent(ctx: AgentContext, volume: Volume, signal?: AbortSignal): Promise<boolean> {
  const info = dm.info(volume.dmName);
  // only a locked volume waits on its disk; a device under it still suspended (a lower volume not unlocked) is
  // no silent disk: its read would wait for that unlock
  if (!info.exists || !info.suspended || isSwapped(volume) || suspendedBelow(volume.kname)) return false;
  const under = slavesOf(volume.kname);
  const root = holdsRoot(volume);
  const firsts = new Map<string, Uint8Array>();
  const timers: ReturnType<typeof setTimeout>[] = [];
  const after = (ms: number) => new Promise<"late">((r) => timers.push(setTimeout(() => r("late"), ms)));
  const reads = Promise.allSettled(under.map(async (kname) => {
    firsts.set(kname, await probe(kname));
  }));
  try {
    if (await Promise.race([reads, after(ANSWER_SAY_MS)]) === "late") {
      signal?.throwIfAborted();
      const waiting = () => under.filter((k) => !firsts.has(k)).join(", ");
      const budget = onlyVirtioBelow(volume.kname) ? ANSWER_MS.virtio : ANSWER_MS.other;
      say(
        ctx,
        `\ncryptsleep: waiting for the disk of ${volume.dmName} (${waiting()}) to answer` +
          (root ? " (it holds the root filesystem: as long as it takes)\n" : ` (up to ${budget / 1000} s)\n`),
      );
      if (root) await reads;
      else if (await Promise.race([reads, after(budget - ANSWER_SAY_MS)]) === "late") {
        signal?.throwIfAborted();
        const silent = waiting();
        await retire(volume);
        say(
          ctx,
          `\ncryptsleep: ${volume.dmName}: ${lostDisk([`${silent}: no answer to a read in ${budget / 1000} s`])}: ` +
            `it cannot be unlocked; its reads and writes now fail. (cryptsleep cannot end before that read returns.)\n`,
        );
        ctx.log(`${volume.dmName}: its disk (${silent}) does not answer; given the error target`);
        ctx.timeline.appendFact("diskGone", { volume: volume.dmName, devices: silent, at: "unlock" });
        return true;
      }
    }
  } finally {
    for (const t of timers) clearTimeout(t);
  }
  signal?.throwIfAborted();
  await headerStillThere(volume, under, firsts);
  return false;
}

/**
 * Throws {@linkcode NotThisVolume} when the block read from the volume's one disk (`firsts`) holds another LUKS
 * header, or none — only where discovery read this volume's header there (not a detached one, not through
 * dm-integrity's helper device), and never for the root filesystem's volume: without it nothing could go on (its
 * unlock fails, and says why). `secondary`: a LUKS2 primary not found is looked for in its secondary copies.
 */
async function headerStillThere(
  volume: Volume,
  under: string[],
  firsts: Map<string, Uint8Array>,
  secondary = true,
): Promise<void> {
  const [data] = under;
  if (
    under.length === 1 && !volume.header.detached && volume.headerUuid && volume.header.path === devPathOf(data) &&
    !holdsRoot(volume)
  ) {
    // a read that failed says nothing; a block without the header discovery read there minutes ago (before the
    // lock) is another disk — libcryptsetup, whose reads may come from the page cache, would still find the old one
    const first = firsts.get(data);
    let found = first?.length ? luksUuidOf(first) : volume.headerUuid;
    // a LUKS2 primary damaged (while asleep) is no other disk while its secondary copy is this volume's:
    // libcryptsetup unlocks from that copy
    if (found === null && volume.type === "LUKS2" && secondary) found = await secondaryUuid(`/dev/${data}`);
    if (found !== volume.headerUuid) throw new NotThisVolume(volume, `/dev/${data}`, found ?? undefined);
  }
}

/**
 * Whether every disk under the locked volume answers a probe read within `withinMs` and still holds its header
 * where that can be told, as {@linkcode retireIfSilent} checks — but saying nothing and retiring nothing: for a
 * header read ahead of the volume's turn (cycle/read_ahead.ts), which leaves any doubt to that turn.
 */
export async function answersNow(volume: Volume, withinMs = ANSWER_SAY_MS): Promise<boolean> {
  const info = dm.info(volume.dmName);
  if (!info.exists || !info.suspended || isSwapped(volume) || suspendedBelow(volume.kname)) return false;
  const under = slavesOf(volume.kname);
  const firsts = new Map<string, Uint8Array>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reads = Promise.all(under.map(async (kname) => firsts.set(kname, await probe(kname))));
  const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), withinMs));
  try {
    if (await Promise.race([reads, late]) === "late") return false;
  } finally {
    clearTimeout(timer);
  }
  // (no read of the secondary header: unbounded; a primary not found is left to the volume's turn)
  return await headerStillThere(volume, under, firsts, false).then(() => true, () => false);
}

/** The UUID of the first LUKS2 secondary header found on `device` (read past the page cache), or null. */
async function secondaryUuid(device: string): Promise<string | null> {
  for (const offset of LUKS2_SECONDARY_OFFSETS) {
    const block = await readDirectBytes(device, offset, 4096).catch(() => null);
    const uuid = block && luks2SecondaryUuidOf(block);
    if (uuid) return uuid;
  }
  return null;
}

/** Whether the root filesystem is on `volume` or on what is stacked above it: it is never given up. */
export function holdsRoot(volume: Volume): boolean {
  return volume.mounts.some((m) => m.mountpoint === "/");
}

/** Whether any device under `kname` (sysfs `slaves/`, all the way down) is a suspended dm device. */
export function suspendedBelow(kname: string, sysBlock = "/sys/block"): boolean {
  return slavesOf(kname, sysBlock).some((s) => {
    try {
      if (Deno.readTextFileSync(`${sysBlock}/${s}/dm/suspended`).trim() === "1") return true;
    } catch { /* not a dm device */ }
    return suspendedBelow(s, sysBlock);
  });
}

/**
 * `cryptsleep plan [--json]`: what a suspend would lock, in which order, what depends on each volume,
 * how much memory the unlock needs after wake, and what to look out for. Changes nothing.
 *
 * @example
 * ```sh
 * cryptsleep plan
 * cryptsleep plan --json | jq '.lock[].dmName'
 * ```
 * @module
 */
import { type CommandSpec, rootOption } from "./args.ts";
import { discover, type KeyFile, NoSysfsError, type Plan, type Volume } from "../discovery/mod.ts";
import { CliError } from "./errors.ts";
import { ExitCode } from "./exit_codes.ts";

/** What the plan always ends with: the sleeps cryptsleep lets pass with every key in RAM. */
export const NOT_PROTECTED: string =
  "Not protected: hibernate, hybrid-sleep and suspend-then-hibernate keep every key in " +
  "RAM (they need it to write and read the image); cryptsleep only takes over suspend (cryptsleep install).";

/** KiB as MiB for people ("64 MiB", "1.5 MiB"). */
export function mib(kib: number): string {
  const m = kib / 1024;
  return `${Number.isInteger(m) || m >= 100 ? Math.round(m) : m.toFixed(1)} MiB`;
}

/** Left-aligned columns, two spaces apart. */
export function table(rows: string[][], indent = "  "): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd())
    .join("\n");
}

function argonCell(v: Volume): string {
  if (v.keyslots.length === 0) return "unknown";
  return v.argon2MemoryKiB > 0 ? mib(v.argon2MemoryKiB) : "none";
}

function dependsCell(v: Volume): string {
  const parts = [
    ...v.mounts.map((m) => `${m.mountpoint} (${m.fstype})`),
    ...v.swaps.map((s) => `swap ${s}`),
  ];
  return parts.length ? parts.join(", ") : "-";
}

function keyFileCell(v: Volume, kf: KeyFile): string {
  const where = kf.on.includes(v.dmName)
    ? `on ${v.dmName} itself: not read after wake (a passphrase is asked for); its cached copy is dropped`
    : kf.device
    ? `on ${kf.device}, mounted read-only after wake (when it is absent, a passphrase is asked for)`
    : kf.on.length
    ? `on ${kf.on.join(", ")}, read once ${kf.on.length === 1 ? "it is" : "they are"} unlocked`
    : "not on a locked volume";
  return `${kf.path} ${where}`;
}

/** Why the lock list is empty, plainly. */
export function emptyReason(plan: Plan): string {
  if (plan.dmDevices === 0) return "no dm-crypt devices found (no /sys/block/dm-*)";
  if (plan.notLockable.length === 0) {
    return `no dm-crypt devices found (${plan.dmDevices} device-mapper device${
      plan.dmDevices === 1 ? "" : "s"
    }, none of them dm-crypt)`;
  }
  return "no LUKS volume to lock (the dm-crypt mappings found are not LUKS)";
}

/** The plan as a short readable report. */
export function formatPlan(plan: Plan): string {
  const out: string[] = [];
  if (plan.lock.length === 0) {
    out.push(emptyReason(plan));
  } else {
    const n = plan.lock.length;
    out.push(`${n} LUKS volume${n === 1 ? "" : "s"} to lock`, "", "Lock order (top-down):");
    out.push(table([
      ["#", "VOLUME", "TYPE", "DEVICE", "HEADER", "ARGON2", "SUSPENDED FIRST", "MOUNTS / SWAPS"],
      ...plan.lock.map((v, i) => [
        String(i + 1),
        v.dmName,
        v.type,
        v.device,
        v.header.path + (v.header.detached ? " (detached)" : ""),
        argonCell(v),
        v.above.length ? v.above.join(",") : "-",
        dependsCell(v),
      ]),
    ]));
    out.push(`Unlock order: ${plan.unlock.map((v) => v.dmName).join(", ")}`);
    const tokens = plan.unlock.flatMap((v) => (v.tokens ?? []).filter((t) => t.pin).map((t) => ({ v, t })));
    if (tokens.length) {
      out.push("Tokens (their PIN is asked for after wake, before the passphrase):");
      for (const { v, t } of tokens) {
        out.push(`  ${v.dmName}: ${t.type} token ${t.id} (keyslots ${t.keyslots.join(",")})`);
      }
    }
    const keyed = plan.unlock.filter((v) => v.keyFile);
    if (keyed.length) {
      out.push("Key files (read after wake, before any passphrase is asked; none is kept in RAM while asleep):");
      for (const v of keyed) out.push(`  ${v.dmName}: ${keyFileCell(v, v.keyFile!)}`);
    }
    const unread = plan.lock.filter((v) => v.keyslots.length === 0).map((v) => v.dmName);
    const known = plan.maxArgon2MemoryKiB > 0
      ? `${mib(plan.maxArgon2MemoryKiB)} (largest Argon2 keyslot)`
      : unread.length
      ? "0 MiB known"
      : "no Argon2 keyslot (PBKDF2 only)";
    out.push(
      `Memory needed on resume: ${known}${unread.length ? `; unknown for ${unread.join(", ")} (header unread)` : ""}`,
    );
  }
  if (plan.notLockable.length) {
    out.push("", "Not lockable (stay open, keys stay in RAM):");
    out.push(table(plan.notLockable.map((n) => [n.name, n.device ?? "", n.reason])));
  }
  if (plan.warnings.length) {
    out.push("", "Warnings:");
    for (const w of plan.warnings) out.push(`  - ${w}`);
  }
  out.push("", NOT_PROTECTED);
  return out.join("\n");
}

/** discover(), with a missing /sys made into the ENV error the CLI prints. */
export async function discoverOrExplain(root: string): Promise<Plan> {
  try {
    return await discover({ root });
  } catch (e) {
    if (e instanceof NoSysfsError) {
      throw new CliError(
        `no /sys/block under ${root}: sysfs is not mounted; mount it (mount -t sysfs sysfs /sys) and retry`,
        ExitCode.ENV,
      );
    }
    throw e;
  }
}

/** `cryptsleep plan`. */
export const command: CommandSpec = {
  name: "plan",
  help: "show which LUKS volumes a suspend would lock, in which order, and what depends on them",
  options: [
    { flag: "--json", help: "print the plan as JSON" },
    rootOption(),
  ],
  run: async (o) => {
    const plan = await discoverOrExplain(o.root as string);
    console.log(o.json ? JSON.stringify(plan, null, 2) : formatPlan(plan));
    return ExitCode.OK;
  },
};

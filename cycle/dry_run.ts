/**
 * @module
 * `cryptsleep suspend --dry-run`: runs every phase that changes nothing (preflight, discovery, the key
 * checks, reading knobs and cgroups) and prints what each of the others would do. It writes nothing, mounts
 * nothing, freezes nothing.
 *
 * @example
 * ```ts ignore
 * console.log(await describeCycle(job, "/usr/lib/cryptsleep/cryptsleep.js"));
 * ```
 */
import { planRamfs } from "../chroot/ramfs.ts";
import { listFreezable } from "./freeze.ts";
import type { Job } from "./job.ts";
import { keyringKeysFor } from "./keyring.ts";
import { holdName } from "./hold.ts";
import { KNOBS, readKnob } from "./sysfs.ts";

export async function describeCycle(job: Job, script: string | null): Promise<string> {
  const { plan, options } = job;
  const out: string[] = [];
  const say = (phase: string, ...lines: string[]) => out.push(`${phase}:`, ...lines.map((l) => `  ${l}`));

  say("1 preflight", `ok: ${plan.lock.length} volume(s) to lock, ${plan.notLockable.length} not lockable`);
  for (const w of plan.warnings) out.push(`  warning: ${w}`);

  const ramfs = await planRamfs({ dir: job.ramfsRoot, script });
  say(
    "2 ramfs",
    `would mount a ramfs (mode 0700) at ${job.ramfsRoot} and copy ${ramfs.files.length} files, ${
      (ramfs.bytes / 1048576).toFixed(1)
    } MiB: the runtime, ${script ?? "the compiled binary"}, the mapped shared objects`,
  );

  say(
    "3 agent",
    "would start the supervisor and the agent chrooted in the ramfs, in cgroup cryptsleep " +
      "(memory.swap.max=0, oom_score_adj -1000), prompting on " + (options.console ?? "a newly allocated VT"),
  );
  say("4 sync", "would call sync()");

  const freezable = await listFreezable({ own: "cryptsleep" });
  say(
    "5 freeze",
    `would freeze ${freezable.cgroups.length ? freezable.cgroups.join(", ") : "no cgroup"}` +
      (freezable.rootPids.length
        ? `, and ${freezable.rootPids.length} processes of the root cgroup moved into cryptsleep-frozen`
        : "") +
      `; gives up after ${options.freezeTimeoutMs} ms`,
  );

  const mounts = plan.lock.flatMap((v) => v.mounts.map((m) => m.mountpoint));
  say("6 syncfs", mounts.length ? `would syncfs ${[...new Set(mounts)].join(", ")}` : "no filesystem on the volumes");

  const lockLines: string[] = [];
  for (const v of plan.lock) {
    const keys = await keyringKeysFor(v.uuid);
    lockLines.push(
      `${v.above.length ? `suspend ${v.above.join(", ")} (lockfs), then ` : ""}${
        keys.length && job.options.releaseAt === "lock" ? "freeze its filesystem, suspend and wipe" : "crypt_suspend"
      } ${v.dmName} (${v.type} ${v.uuid})` +
        (keys.length
          ? job.options.releaseAt === "lock"
            ? ` — its key is pinned in a kernel keyring: the table would be swapped onto ${
              holdName(v.dmName)
            } to release it`
            : ` — its key is pinned in a kernel keyring: it would stay in RAM this time, re-opened at unlock`
          : ""),
    );
  }
  say("7 lock", ...(lockLines.length ? lockLines : ["nothing to lock"]));

  const knobs: string[] = [];
  for (const [path, value] of [[KNOBS.syncOnSuspend, "0"], [KNOBS.freezeFilesystems, "0"]]) {
    const now = await readKnob(path);
    if (now !== null) knobs.push(`${path} ${now} -> ${value}`);
  }
  say(
    "8 sleep",
    ...knobs.map((k) => `would set ${k} (restored after)`),
    `would write ${options.state} to /sys/power/state (mem_sleep: ${
      (await readKnob("/sys/power/mem_sleep")) ?? "n/a"
    })`,
  );
  say(
    "9 unlock",
    plan.unlock.length
      ? `would prompt, then resume ${plan.unlock.map((v) => v.dmName).join(", ")}` +
        " without the kernel keyring, and read one block from each"
      : "nothing to unlock",
  );
  say("10 thaw", "would thaw every cgroup it froze and move root-cgroup processes back");
  say("11 report", "would write the timeline to /dev/kmsg and /run/cryptsleep/last.json");
  return out.join("\n");
}

/**
 * @module
 * `deno task bench --guest debian [--cycles N]`: cryptsleep side by side with Debian's cryptsetup-suspend in its
 * two modes and a plain suspend, in ONE boot of the Debian trixie guest (systemd, LUKS2 root, LVM-on-LUKS /home).
 * Every cycle is `systemctl suspend`, the path the lid and the menu take. Rounds run plain → Debian → Debian with
 * its ramfs kept → cryptsleep, idle rounds alternating with loaded ones (a writer appending and syncing on /home
 * every 0.2 s), N rounds of each (default 5), so host load moves the four alike and the ratios stay fair where
 * absolute times do not.
 *
 * Debian's two modes: by default its wrapper unpacks the initramfs into a ramfs on every cycle and unmounts it
 * after; with `KEEP_INITRAMFS="true"` in /etc/cryptsetup/suspend.conf ("Debian, kept ramfs", tool `debian-keep`)
 * it leaves the ramfs mounted at /run/cryptsetup/cryptsetup-suspend-initramfs and later cycles use it — the mode
 * a user picks to make Debian's suspend faster, so cryptsleep is weighed against it too. The file is written for
 * that tool's cycles and removed for every other's (the package's copy sets nothing: absent is the default mode).
 * The kept ramfs must not reach the other tools' cycles: the wrapper uses a ramfs it finds there in either mode (a
 * default cycle would skip its unpacking), and a mounted one is ~66 MiB in use and a mount left for whichever
 * cycle comes next. So right after a kept cycle the bench copies the ramfs to a tar file on the root volume (its
 * page cache dropped) and unmounts it, and before the next kept cycle — ahead of its "before" RAM sample — unpacks
 * it into a new ramfs at the same place, read-only as the wrapper leaves it (`keptRamfs`): that cycle
 * starts as it would after the kept cycle before it. Its first cycle unpacks the initramfs; the table's medians
 * are over all of its cycles, mostly reusing it, and a line above the table gives the first apart.
 *
 * Per cycle, on the host clock: request → QMP SUSPEND; wake → prompt; Enter → the serial shell answers (volumes
 * unlocked, userspace thawed); S3 reached (the kernel's suspend_stats). RAM during the cycle: memory.peak of
 * systemd-suspend.service's cgroup (read by a system-sleep post hook all four run), cryptsleep's own cgroup's
 * memory.peak and peak RSS (its report), the ramfs (Debian: `du` from that hook, which its wrapper runs before it
 * unmounts the ramfs; cryptsleep: its report). RAM between cycles: guest RAM in use and tmpfs + ramfs bytes,
 * after − before the cycle; the tool's mounts and processes left. Prints one Markdown table of medians with
 * cryptsleep's ratios to plain, to Debian and to Debian with its ramfs kept, cryptsleep's phases from its report,
 * sentences on where cryptsleep is behind either Debian mode; writes dist/bench-debian.svg and the raw cycles to
 * dist/bench-debian.json (`--replay` that file prints both again; a run saved before the kept mode shows "–"
 * for it). No assertions on speed.
 *
 * cryptsleep is installed once (`cryptsleep install --console /dev/ttyS0`); its drop-in is kept aside and copied
 * in for its cycles, so every switch between the tools is a file copy and a daemon-reload (and, to and from the
 * kept mode, the kept ramfs put aside or back).
 *
 * Both tools prompt on the serial console: cryptsleep is installed with `--console /dev/ttyS0`, and Debian's
 * drop-in, which runs its wrapper on VT8 through openvt, is overridden in /run by the same drop-in with the
 * wrapper's terminal on /dev/ttyS0 ({@linkcode serialDropin}): the bed cannot read a VT after S3 resume (the
 * guest draws its VTs with bochs-drm, so the VGA text buffer the harness reads stays empty).
 *
 * ```sh
 * deno task bench --guest debian              # or: deno run -A scripts/bench.ts --guest debian --cycles 5
 * deno task bench --guest debian --cpus 2     # a laptop has more than one core (on this bed it may die at a wake: README)
 * deno task bench --guest debian --replay dist/bench-debian.json   # the table and plot again, no guest
 * ```
 */

import { join } from "node:path";
import { REPO_ROOT } from "./guest/build.ts";
import type { DebianGuest } from "./guest/debian.ts";
import { boot, REAL_SUSPENDS, type VM } from "../tests/vm/harness.ts";
import { buildDeb } from "./deb.ts";
import { VERSION } from "../cli/version.ts";
import { bundle, lastReport, step } from "./demo.ts";
import { ramfsBytes, svgBars } from "./bench_lib.ts";
import {
  behindDebian,
  comparisonRows,
  isCryptsleep,
  isDebian,
  keptNote,
  type Load,
  markdownTable,
  parseProbe,
  plotRows,
  serialDropin,
  type Tool,
  TOOL_NAMES,
  type ToolCycle,
  TOOLS,
  toolsIn,
} from "./bench_debian_report.ts";

const DROPIN_DIR = "/run/systemd/system/systemd-suspend.service.d";
const DEBIAN_SHIPPED = "/usr/lib/systemd/system/systemd-suspend.service.d/cryptsetup-suspend.conf";
const SERIAL_COPY = "/run/bench/debian-serial.conf";
/** Where `cryptsleep install` puts its drop-in, and where the bench keeps it between cryptsleep's cycles. */
const CS_DROPIN = "/etc/systemd/system/systemd-suspend.service.d/cryptsleep.conf";
const CS_COPY = "/run/bench/cryptsleep.conf";
/** The same for `cryptsleep install --kept` (its service stays installed and running for the whole bench). */
const CS_KEPT_COPY = "/run/bench/cryptsleep-kept.conf";
/** The kept mode's service's cgroup: what it holds between cycles, and whose processes are no leftovers. */
const KEPT_CGROUP = "/sys/fs/cgroup/system.slice/cryptsleep-kept.service";
/** Debian's wrapper reads it (sourced); `KEEP_INITRAMFS="true"` there for the kept mode's cycles only. */
const SUSPEND_CONF = "/etc/cryptsetup/suspend.conf";
/** Where Debian's wrapper mounts its ramfs, and keeps it mounted in the kept mode. */
const KEPT_RAMFS = "/run/cryptsetup/cryptsetup-suspend-initramfs";
/** The kept ramfs while other tools' cycles run: on the root volume, not in RAM. */
const KEPT_STASH = "/var/tmp/bench-kept-ramfs.tar";
const PROMPT: Record<Tool, RegExp | null> = {
  plain: null,
  debian: /Please unlock disk \S+: /,
  "debian-keep": /Please unlock disk \S+: /,
  cryptsleep: /Passphrase to unlock \S+[^\n]*?: /,
  "cryptsleep-kept": /Passphrase to unlock \S+[^\n]*?: /,
};
/** The plot's colour for each tool. */
const COLORS: Record<Tool, string> = {
  plain: "#9a9a9a",
  debian: "#c8902a",
  "debian-keep": "#e8c77e",
  cryptsleep: "#4a7fb5",
  "cryptsleep-kept": "#8fb7df",
};
const LONG = 600_000;

/**
 * system-sleep post hook, run by all four from systemd-suspend.service's cgroup: that cgroup's memory.peak, and
 * Debian's ramfs as during S3 (its wrapper runs the post hooks before it unmounts the ramfs): its bytes, and its
 * device:inode, which tell whether it is the ramfs that was mounted before the cycle (kept) or a new one.
 */
const BENCH_HOOK = `#!/bin/sh
[ "$1" = post ] || exit 0
c=$(sed -n 's/^0:://p' /proc/self/cgroup)
echo "CGROUP=$c PEAK=$(cat "/sys/fs/cgroup$c/memory.peak")" > /run/bench-hook.log
d=${KEPT_RAMFS}
mountpoint -q "$d" && echo "RAMFS=$(du -sbx "$d" | cut -f1) RAMFS_ID=$(stat -c %d:%i "$d")" >> /run/bench-hook.log
exit 0
`;
/** Exiting processes free their memory for seconds after: both RAM samples wait this long first. */
const SETTLE = "sleep 10; ";

/**
 * Prints USED= (MemTotal − MemAvailable − the free pages kept on the per-CPU lists) and SHM= (tmpfs used + ramfs
 * files), in bytes. The per-CPU lists hold tens of MiB for a while after big processes exit (deno's do);
 * MemAvailable counts them as used.
 */
const MEMORY_PROBE = "awk -v pg=$(getconf PAGESIZE) '/^MemTotal:/{t=$2*1024} /^MemAvailable:/{a=$2*1024} " +
  '/^ +count:/{p+=$2} END{printf "USED=%.0f\\n", t-a-p*pg}\' /proc/meminfo /proc/zoneinfo; ' +
  'r=0; for m in $(findmnt -rn -t ramfs -o TARGET); do r=$((r + $(du -sbx "$m" | cut -f1))); done; ' +
  "echo SHM=$(( $(df -B1 --output=used -t tmpfs | tail -n +2 | awk '{s+=$1} END{printf \"%.0f\", s}') + r ))";

function intOrNull(s: string | undefined): number | null {
  return s !== undefined && /^-?\d+$/.test(s) ? Number(s) : null;
}

async function must(vm: VM, cmd: string, timeoutMs = 120_000): Promise<string> {
  const r = await vm.sh(cmd, { timeoutMs });
  if (r.code !== 0) throw new Error(`guest: ${cmd.slice(0, 200)} exited ${r.code}:\n${r.out}`);
  return r.out;
}

/** Writes `text` to `path` in the guest (base64: no quoting to get wrong); a symlink there is replaced. */
async function writeGuestFile(vm: VM, path: string, text: string, mode = "644"): Promise<void> {
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(text)));
  await must(vm, `rm -f ${path} && echo ${b64} | base64 -d > ${path} && chmod ${mode} ${path}`);
}

/**
 * The shell command that puts the kept ramfs where `tool`'s cycle is to find it. Before a kept-mode cycle: the
 * ramfs saved after the last one (none before its first: that cycle unpacks the initramfs), unpacked into a new
 * ramfs at the wrapper's mount point, mounted and remounted read-only as the wrapper leaves it. Before any other
 * tool's: a ramfs left mounted there copied to a tar file on the root volume (page cache dropped: that file is not to
 * crowd the next tool's files out of RAM) and unmounted, so the wrapper in its default mode unpacks its own, and
 * the RAM and the mount count of no other tool include it.
 */
function keptRamfs(tool: Tool): string {
  // coreutils' way to drop a whole file's pages from the page cache: a zero-length copy with nocache
  const dropCache = "count=0 status=none";
  if (tool === "debian-keep") {
    return `if [ -f ${KEPT_STASH} ] && ! mountpoint -q ${KEPT_RAMFS}; then ` +
      `mkdir -p -m0700 ${KEPT_RAMFS} && mount -t ramfs -o nodev,mode=0700 ramfs ${KEPT_RAMFS} && ` +
      `tar -C ${KEPT_RAMFS} --numeric-owner -xpf ${KEPT_STASH} && mount -o remount,ro ${KEPT_RAMFS} && ` +
      `dd if=${KEPT_STASH} of=/dev/null iflag=nocache ${dropCache}; fi`;
  }
  return `if mountpoint -q ${KEPT_RAMFS}; then ` +
    `tar -C ${KEPT_RAMFS} --numeric-owner -cf ${KEPT_STASH} . && ` +
    `dd if=/dev/null of=${KEPT_STASH} oflag=nocache conv=notrunc,fdatasync ${dropCache} && ` +
    `umount ${KEPT_RAMFS} && rmdir ${KEPT_RAMFS}; fi`;
}

/**
 * Puts `tool` in systemd-suspend.service and checks the ExecStart systemd ended with, and the KEEP_INITRAMFS
 * Debian's wrapper will read. Every switch is the same file copy and daemon-reload (to and from the kept mode, the
 * kept ramfs put aside or back first): nothing else runs just before a cycle and muddles the RAM samples around it.
 */
async function selectTool(vm: VM, tool: Tool): Promise<void> {
  await must(vm, keptRamfs(tool), LONG);
  const conf = `${DROPIN_DIR}/cryptsetup-suspend.conf`;
  // the mask is a symlink to /dev/null: rm first, or cp writes through it
  const debian = isDebian(tool) ? `cp ${SERIAL_COPY} ${conf}` : `ln -s /dev/null ${conf}`;
  const keep = tool === "debian-keep" ? ` && printf '%s\\n' 'KEEP_INITRAMFS="true"' > ${SUSPEND_CONF}` : "";
  const copy = tool === "cryptsleep" ? CS_COPY : tool === "cryptsleep-kept" ? CS_KEPT_COPY : null;
  const cryptsleep = copy ? ` && cp ${copy} ${CS_DROPIN}` : "";
  const out = await must(
    vm,
    `rm -f ${conf} ${CS_DROPIN} ${SUSPEND_CONF} && ${debian}${keep}${cryptsleep} && systemctl daemon-reload && ` +
      "systemctl show -P ExecStart systemd-suspend.service && " +
      // as the wrapper reads it: its default, then the file sourced if there
      `echo "KEEP_INITRAMFS=$(KEEP_INITRAMFS=false; [ -f ${SUSPEND_CONF} ] && . ${SUSPEND_CONF}; echo $KEEP_INITRAMFS)"`,
  );
  const want: Record<Tool, string> = {
    plain: "systemd-sleep suspend",
    debian: "cryptsetup-suspend-wrapper",
    "debian-keep": "cryptsetup-suspend-wrapper",
    cryptsleep: "cryptsleep suspend",
    "cryptsleep-kept": "cryptsleep-request",
  };
  if (!out.includes(want[tool])) throw new Error(`${tool}: systemd-suspend.service runs something else:\n${out}`);
  const keepInitramfs = parseProbe(out).KEEP_INITRAMFS;
  if (keepInitramfs !== (tool === "debian-keep" ? "true" : "false")) {
    throw new Error(`${tool}: Debian's wrapper would read KEEP_INITRAMFS=${keepInitramfs}`);
  }
}

/** Host time the serial shell answers again: the harness's probes, each given 3 s (a short one times the answer closely). */
async function shellAnswersAt(vm: VM): Promise<number> {
  await vm.waitForShell(LONG, 3000);
  return Date.now();
}

/** Host time `re` shows on the console after `from`, or null. */
function seenAt(vm: VM, re: RegExp, from: number): Promise<number | null> {
  return vm.waitForConsole(re, LONG, from).then(() => Date.now(), () => null);
}

async function cycle(vm: VM, tool: Tool, load: Load, round: number): Promise<ToolCycle> {
  const before = parseProbe(
    await must(
      vm,
      "rm -f /run/bench-hook.log; " + SETTLE + "echo S3=$(" + REAL_SUSPENDS + "); " +
        `echo KEPT=$(mountpoint -q ${KEPT_RAMFS} && stat -c %d:%i ${KEPT_RAMFS}); ` + MEMORY_PROBE,
    ),
  );
  vm.clearEvents();
  const from = vm.console.length;
  const t0 = Date.now();
  const alloc = isDebian(tool) ? seenAt(vm, /Allocating and mlocking memory/, from) : null;
  const sleeping = isDebian(tool) ? seenAt(vm, /Sleeping\.\.\./, from) : null;
  await must(vm, "systemctl suspend");
  const suspended = await vm.waitForEvent("SUSPEND", LONG);
  // both lines come before the kernel suspends; a second for the serial line to drain
  const marks = await Promise.race([
    Promise.all([alloc, sleeping]),
    new Promise<null[]>((r) => setTimeout(() => r([null, null]), 1000)),
  ]);

  const atWake = vm.console.length;
  const woke = Date.now();
  await vm.wake();
  let wakeToPromptMs: number | null = null;
  let enterToShellMs: number | null = null;
  const prompt = PROMPT[tool];
  let shellAt: number;
  if (prompt) {
    const m = await vm.waitForConsole(prompt, LONG, atWake);
    wakeToPromptMs = Date.now() - woke;
    const enterAt = await vm.answerPrompt(m.index + m[0].length, vm.guest.passphrase + "\n");
    shellAt = await shellAnswersAt(vm);
    enterToShellMs = shellAt - enterAt;
  } else {
    shellAt = await shellAnswersAt(vm);
  }

  // the unit ends after the post hooks and the cleanup: what is left is measured after it
  const after = parseProbe(
    await must(
      vm,
      'for i in $(seq 600); do [ "$(systemctl show -P ActiveState systemd-suspend.service)" = inactive ] && ' +
        "break; sleep 0.5; done; echo RESULT=$(systemctl show -P Result systemd-suspend.service); " +
        "echo S3=$(" + REAL_SUSPENDS + "); sed 's/ /\\n/g' /run/bench-hook.log; " + SETTLE +
        MEMORY_PROBE + "; " +
        "echo MOUNTS=$(findmnt -rn -o TARGET | grep -cE '[c]ryptsleep|[c]ryptsetup-suspend'); n=0; " +
        "for p in /proc/[0-9]*; do grep -q cryptsleep-kept.service $p/cgroup 2>/dev/null && continue; " +
        "tr '\\0' ' ' < $p/cmdline 2>/dev/null | " +
        "grep -qE '[c]ryptsleep[^ ]* (suspend|supervise|agent)|[c]ryptsetup-suspend' && n=$((n+1)); done; " +
        `echo PROCS=$n; echo KEPT_MEM=$(cat ${KEPT_CGROUP}/memory.current 2>/dev/null)` +
        (load === "loaded"
          ? "; a=$(wc -l < /home/writer.log); sleep 2; echo WRITER=$(( $(wc -l < /home/writer.log) - a ))"
          : ""),
      LONG,
    ),
  );
  if (after.RESULT !== "success") step(`${tool}: systemd-suspend.service ended with ${after.RESULT}`);
  const report = isCryptsleep(tool) ? await lastReport(vm) : null;
  const diff = (k: string) => {
    const [a, b] = [intOrNull(after[k]), intOrNull(before[k])];
    return a === null || b === null ? null : a - b;
  };
  const [used, shm, mounts, procs] = [diff("USED"), diff("SHM"), intOrNull(after.MOUNTS), intOrNull(after.PROCS)];
  return {
    tool,
    load,
    round,
    toSuspendMs: suspended.at - t0,
    s3: diff("S3") === 1,
    debianMarks: marks[0] !== null && marks[1] !== null ? { allocMs: marks[0] - t0, sleepingMs: marks[1] - t0 } : null,
    wakeToPromptMs,
    enterToShellMs,
    wakeToShellMs: shellAt - woke,
    // the hook ran in the unit's cgroup, or its number is not the unit's
    serviceMemoryPeakBytes: after.CGROUP?.endsWith("/systemd-suspend.service") ? intOrNull(after.PEAK) : null,
    ramfsBytes: isCryptsleep(tool) ? (report ? ramfsBytes(report) : null) : intOrNull(after.RAMFS),
    // the ramfs its wrapper used (post hook) is the one mounted before the cycle: kept, not unpacked again
    ramfsKept: !isDebian(tool) ? null : !before.KEPT ? false : after.RAMFS_ID ? after.RAMFS_ID === before.KEPT : null,
    between: used !== null && shm !== null && mounts !== null && procs !== null
      ? { usedBytes: used, usedAfterBytes: intOrNull(after.USED)!, tmpfsRamfsBytes: shm, leftovers: mounts + procs }
      : null,
    writerGoesOn: load === "loaded" ? (intOrNull(after.WRITER) ?? 0) > 0 : null,
    report,
    keptServiceBytes: tool === "cryptsleep-kept" ? intOrNull(after.KEPT_MEM) : null,
  };
}

/** Installs the .deb and cryptsleep's drop-in (kept aside), the hook and the serial copy of Debian's drop-in. */
async function prepare(vm: VM): Promise<void> {
  const state = await vm.sh("systemctl is-system-running --wait", { timeoutMs: LONG });
  if (!/^(running|degraded)$/m.test(state.out)) throw new Error(`systemd did not finish booting: ${state.out}`);
  // installed once, Debian's drop-in masked; its drop-in is then kept aside and copied in for its cycles
  await must(
    vm,
    `dpkg -i /usr/local/lib/cryptsleep/cryptsleep.deb >/dev/null && ` +
      `mkdir -p ${DROPIN_DIR} /usr/lib/systemd/system-sleep /run/bench && ` +
      `ln -sf /dev/null ${DROPIN_DIR}/cryptsetup-suspend.conf && rm -f ${SUSPEND_CONF} ${KEPT_STASH} && ` +
      `/usr/sbin/cryptsleep install --console /dev/ttyS0 >/dev/null 2>&1 && cp ${CS_DROPIN} ${CS_COPY} && ` +
      // the kept mode's drop-in kept aside the same way; its service is started and stays
      `/usr/sbin/cryptsleep install --kept --console /dev/ttyS0 >/dev/null 2>&1 && mv ${CS_DROPIN} ${CS_KEPT_COPY} && ` +
      "for i in $(seq 600); do [ -p /run/cryptsleep/kept/request ] && break; sleep 0.5; done; " +
      "systemctl is-active cryptsleep-kept.service",
    LONG,
  );
  // read alone: deno's terminal codes on the line before would glue onto "[Service]"
  const shipped = await must(vm, `cat ${DEBIAN_SHIPPED}`);
  await writeGuestFile(vm, SERIAL_COPY, serialDropin(shipped) + "\n");
  await writeGuestFile(vm, "/usr/lib/systemd/system-sleep/zz-bench", BENCH_HOOK, "755");
}

/**
 * What the bench prints for a run: the title, the table, where cryptsleep is behind either Debian mode, and what
 * the lines measure. A run without cycles of the kept mode (saved before it was benched) says so and shows "–".
 */
export function output(
  cycles: ToolCycle[],
  perTool: number,
  kernel: string,
  suspendVersion: string,
  cpus: number,
): string {
  const rows = comparisonRows(cycles);
  const failed = cycles.filter((c) => c.report && !c.report.ok).length;
  const ran = toolsIn(cycles);
  const kept = keptNote(cycles);
  return [
    `## cryptsleep ${VERSION} beside Debian's cryptsetup-suspend ${suspendVersion} ` +
    `(${ran.includes("debian-keep") ? 'default, and KEEP_INITRAMFS="true"' : "default mode"}) and a plain suspend`,
    "",
    `Debian trixie guest, kernel ${kernel}, one boot, QEMU TCG without KVM on ${cpus} vCPU${cpus === 1 ? "" : "s"} ` +
    `(times ~28× native); ` +
    `${cycles.length} cycles: ${perTool} idle and ${perTool} loaded per tool, rounds ` +
    `${ran.map((t) => TOOL_NAMES[t]).join(" → ")}, idle and loaded rounds alternating. Medians.` +
    `${failed ? ` ${failed} cryptsleep report(s) not ok.` : ""}` +
    (ran.includes("debian-keep") ? "" : ` No cycles of Debian with its ramfs kept in this run: its column is "–".`),
    ...(kept ? ["", kept] : []),
    "",
    markdownTable(rows),
    "",
    behindDebian(rows),
    "",
    "What the lines measure:",
    "- Times: host wall clock. request → S3 runs from typing `systemctl suspend` on the serial shell to QEMU's " +
    "SUSPEND event. Debian's steps come from the lines its cryptsetup-suspend prints on its terminal (“Allocating " +
    "and mlocking memory”, “Sleeping...”). wake → prompt runs from QMP system_wakeup to the prompt on the serial " +
    "console; Enter → unlocked from the typed passphrase to the serial shell's first answer, which comes only once " +
    "the volumes are open and userspace is thawed (probes every 3 s at most; the harness types the passphrase ~0.3 s " +
    "after the prompt). cryptsleep's phases are its report's, on the guest's clock.",
    "- RAM during: memory.peak of systemd-suspend.service's cgroup, read by a system-sleep post hook that all " +
    "four run in that cgroup: the RSS of the unit's processes plus the page cache and ramfs pages they brought in " +
    "(Debian: all of its work, the hook running after the unlock and before its ramfs is unmounted; cryptsleep: " +
    "the start of cryptsleep suspend, before it moves into its own cgroup; plain: systemd-sleep). Page cache is " +
    "charged to the cgroup that first reads a file, so a tool's first cycle pays for reading its files and later " +
    "ones mostly not. cryptsleep copies nothing: its peak is the bytes its pin locked (the files its two " +
    "processes map, resident all through the cycle, whether or not the page cache held them before) plus its own " +
    "cgroup's memory.peak (their anonymous memory, the KDF's included, and page cache first read there — counted " +
    "twice then, against cryptsleep). What they hold after the unlock (`ramHeldBytes`, the KDF's memory freed) and " +
    "each part are lines of their own. ramfs: Debian's by du " +
    "from the same hook. Debian with its ramfs kept: a cycle that used the ramfs kept by an earlier one is charged " +
    "nothing for it (its pages were charged when it was unpacked: to an earlier unit, here to the bench's " +
    "restore), so its total is the unit's peak plus that ramfs. Debian's processes' peak RSS: not measured (short-lived shell children; their RAM is in the " +
    "service's peak).",
    "- RAM between: sampled 10 s after the unit ended (exiting processes free their memory for seconds) and 10 s " +
    "after the tool was put in place: MemTotal − MemAvailable guest-wide, less the free pages the kernel keeps on " +
    "its per-CPU lists (MemAvailable counts them as used; they hold ~25 MiB for a while after deno's processes " +
    "exit), absolute after the cycle and after − before it; tmpfs used + ramfs files, after − before (the " +
    "volatile journal in /run grows in steps); mounts and processes named cryptsleep or cryptsetup-suspend left " +
    "afterwards. Differences around zero get no ratio. The kept mode's ramfs stays between its cycles, as that " +
    "mode has it: it is in that mode's RAM in use after each cycle and counts as one mount left; after − before " +
    "counts it only in the cycle that unpacked it.",
    "- Debian, kept ramfs: Debian's drop-in as for Debian, and /etc/cryptsetup/suspend.conf with " +
    '`KEEP_INITRAMFS="true"` (the file is removed for the other tools: Debian\'s default is "false"). Its wrapper ' +
    "then leaves the unpacked initramfs mounted at /run/cryptsetup/cryptsetup-suspend-initramfs, and its next " +
    "cycle uses it instead of unpacking it again. The other tools' cycles run without it: the wrapper uses a ramfs " +
    "it finds there in either mode (a default-mode cycle would skip its unpacking), and a mounted one would be in " +
    "every other tool's RAM in use and count as a cryptsetup-suspend mount left. So right after a kept cycle the " +
    "bench copies the ramfs to a tar file on the root volume (its page cache dropped) and unmounts it, and before " +
    "the next kept cycle, ahead of its before-sample, unpacks that into a new ramfs at the same place, read-only as " +
    "the wrapper leaves it: that cycle starts as it would right after the kept cycle before it. “ramfs kept from " +
    "an earlier cycle” counts the cycles whose wrapper used the ramfs mounted before the cycle began (the same " +
    "device and inode in the post hook): in the default mode it must be none.",
    "- cryptsleep, kept: `cryptsleep install --kept`, its service (cryptsleep serve) started once at the bench's " +
    "start and running all through it; systemd-suspend.service runs the shell client, which asks it for the cycle. " +
    "What it keeps between cycles is its service's memory.current (its process and the next cycle's supervisor, " +
    "and the page cache charged to them); its processes are not counted as leftovers. RAM in use guest-wide " +
    "includes it for every tool alike.",
    "- Prompts: all on the serial console. cryptsleep: `install --console /dev/ttyS0`. Debian, both modes: its " +
    "drop-in copied to /run with `openvt -ws -c8` (VT8) replaced by the wrapper's stdio on /dev/ttyS0; the bed " +
    "cannot read a VT after S3 resume (bochs-drm draws the VTs).",
  ].join("\n");
}

/** What a run saved to dist/bench-debian.json: enough to print the table and the plot again. */
export interface BenchRun {
  perTool: number;
  /** vCPUs of the guest (absent in runs saved before it was a choice: 1). */
  cpus?: number;
  kernel: string;
  suspendVersion: string;
  cycles: ToolCycle[];
}

/** Prints the table and writes the plot and the run's JSON to dist/. */
async function render(run: BenchRun): Promise<void> {
  console.log(output(run.cycles, run.perTool, run.kernel, run.suspendVersion, run.cpus ?? 1));
  const dist = join(REPO_ROOT, "dist");
  await Deno.mkdir(dist, { recursive: true });
  await Deno.writeTextFile(join(dist, "bench-debian.json"), JSON.stringify(run, null, 1) + "\n");
  // a run saved before the kept mode was benched has no bars for it
  const tools = toolsIn(run.cycles);
  const series = tools.map((t) => ({ name: TOOL_NAMES[t], color: COLORS[t] }));
  const svg = svgBars(
    `${series.map((s) => s.name).join(" / ")}: medians, ${run.perTool} + ${run.perTool} cycles each, QEMU TCG`,
    series,
    plotRows(comparisonRows(run.cycles), tools),
  );
  await Deno.writeTextFile(join(dist, "bench-debian.svg"), svg);
  console.log(`\nPlot: ${join(dist, "bench-debian.svg")}; every cycle: ${join(dist, "bench-debian.json")}`);
}

/**
 * The bench; true when every cycle reached S3 and every cryptsleep report is ok. With `replay` (a saved
 * dist/bench-debian.json) it only prints the table and writes the plot again, with no guest.
 */
export async function benchDebian(
  perTool: number,
  replay = "",
  cpus = 1,
  tools: readonly Tool[] = TOOLS,
): Promise<boolean> {
  if (replay) {
    const run = JSON.parse(await Deno.readTextFile(replay)) as BenchRun;
    await render(run);
    return run.cycles.every((c) => c.s3 && (c.report?.ok ?? true));
  }
  step("deno bundle → dist/cryptsleep.js, the .deb (zstd)");
  await bundle();
  const debDir = await Deno.makeTempDir({ prefix: "cryptsleep-deb-" });
  const deb = await buildDeb({ bundle: join(REPO_ROOT, "dist", "cryptsleep.js"), outDir: debDir, compression: "zstd" });
  step("boot the Debian guest (LUKS2 root, LVM-on-LUKS /home)");
  await using vm = await boot({ guest: "debian", dataDisk: true, cpus, toolFiles: { "cryptsleep.deb": deb } });
  await Deno.remove(debDir, { recursive: true });
  await prepare(vm);
  const cycles: ToolCycle[] = [];
  let failure: unknown = null;
  try {
    for (let round = 1; round <= 2 * perTool; round++) {
      const load: Load = round % 2 ? "idle" : "loaded";
      if (load === "loaded") {
        await must(
          vm,
          "(while :; do echo x >> /home/writer.log; sync; sleep 0.2; done) >/dev/null 2>&1 & " +
            "echo $! > /run/bench-writer.pid; sleep 1",
        );
      }
      for (const tool of tools) {
        step(`round ${round}/${2 * perTool} (${load}): ${tool}`);
        await selectTool(vm, tool);
        const c = await cycle(vm, tool, load, round);
        cycles.push(c);
        step(
          `${tool}: S3 after ${c.toSuspendMs} ms, ${c.s3 ? "S3 counted" : "NO S3 counted"}, ` +
            `prompt ${c.wakeToPromptMs ?? "–"} ms after wake, shell ${c.wakeToShellMs} ms after wake, unit peak ` +
            `${c.serviceMemoryPeakBytes ?? "–"} B, ramfs ${c.ramfsBytes ?? "–"} B, in use after ` +
            `${c.between?.usedAfterBytes ?? "–"} B (${c.between?.usedBytes ?? "–"} B more than before)`,
        );
      }
      if (load === "loaded") await must(vm, "kill $(cat /run/bench-writer.pid); rm -f /run/bench-writer.pid");
    }
  } catch (err) {
    failure = err;
  }

  const guest = vm.guest as DebianGuest;
  await render({
    perTool,
    cpus,
    kernel: guest.manifest.kernel.release,
    suspendVersion: guest.manifest.packages.find((p) => p.name === "cryptsetup-suspend")?.version ?? "?",
    cycles,
  });
  if (failure) {
    // the guest's own words on what went wrong (a panic at a wake, say) are only on its console
    const saved = join(REPO_ROOT, "dist", "bench-debian-console.txt");
    await Deno.writeTextFile(saved, vm.console);
    console.log(`\nSTOPPED after ${cycles.length} cycle(s); the guest's console: ${saved}. Its end:\n`);
    console.log(vm.console.slice(-3000));
    throw failure;
  }
  return cycles.every((c) => c.s3 && (c.report?.ok ?? true));
}

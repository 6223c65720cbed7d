/**
 * @module
 * QEMU test bed of cryptsleep: boots the cached guest (real Debian kernel, LUKS2 root unlocked by typing the
 * passphrase at the initramfs prompt, real dm-crypt, S3 suspend through QMP) and drives it over the serial console.
 * Two guest types: "busybox" (default: our own initramfs and init, scripts/guest/build.ts) and "debian" (Debian
 * trixie with systemd, Debian's initramfs, LVM on LUKS on /home, root autologin on ttyS0: scripts/guest/debian.ts).
 *
 * Why one file of ~700 lines: the `VM` class is the bed's whole interface (QEMU's command line, QMP, the serial
 * shell, S3 and wake, the VGA keyboard, guest RAM searches); every VM test reads this one file to know what it can
 * ask of the guest, and its parts share the one QEMU process they drive.
 *
 * ```ts
 * import { boot } from "./tests/vm/harness.ts";
 * await using vm = await boot({ dataDisk: true });
 * const { code, out } = await vm.sh("cat /proc/version");
 * console.log(code, out);
 * ```
 */

import { Buffer } from "node:buffer";
import { join } from "node:path";
import { ensureGuest, type Guest, REPO_ROOT } from "../../scripts/guest/build.ts";
import { type DebianGuest, ensureDebianGuest } from "../../scripts/guest/debian.ts";

/** A guest of either type. */
export type BedGuest = Guest | DebianGuest;

/** How the harness tells each guest type's boot: its unlock prompt and the line before its shell. */
const BOOT = {
  busybox: { unlock: /Enter passphrase for \S+:/, ready: /cryptsleep-init: ready/, timeoutMs: 240_000 },
  // Debian's cryptroot prompt, then agetty's autologin on ttyS0 (~70 s after start on an idle host)
  debian: { unlock: /Please unlock disk \S+:/, ready: /\(automatic login\)/, timeoutMs: 900_000 },
};

export interface BootOptions {
  /**
   * "busybox" (default) or "debian": Debian trixie with systemd; its data disk (`dataDisk: true`) is LUKS2 → LVM
   * `vg/home` (ext4), opened and mounted on /home at boot from /etc/crypttab and /etc/fstab.
   */
  guest?: "busybox" | "debian";
  /** Kernel selector of scripts/guest/build.ts: "6.1" (default, or $CRYPTSLEEP_KERNEL), "6.12", "6.18", "7.3". */
  kernel?: string;
  /** Guest RAM in MiB (1024 default). */
  ramMiB?: number;
  /** Virtual CPUs (default 1; TCG runs them on host threads of their own). */
  cpus?: number;
  /** Attach the LUKS2 data disk as /dev/vdc (busybox: not opened; debian: opened and mounted at boot). */
  dataDisk?: boolean;
  /** Files for the tool disk (copied into /usr/local/lib/cryptsleep/ at boot): guest-relative name -> host path or bytes. */
  toolFiles?: Record<string, string | Uint8Array>;
  /** Put dist/cryptsleep.js on the tool disk if it exists (default true). */
  includeBundle?: boolean;
  /** Extra kernel command line. */
  cmdline?: string;
  /**
   * blkdebug under the root disk (drive id `root`): {@linkcode VM.stallDisk} can hold its reads. Needs
   * `writableDisks` (a snapshot overlay on top would take the breakpoint instead).
   */
  stallableRoot?: boolean;
  /**
   * Writable private copies of the disks instead of snapshot=on overlays: needed for powerCut() + restart()
   * (writes must survive the power cut).
   */
  writableDisks?: boolean;
  /** Boot timeout (default 240 s; debian 900 s). */
  bootTimeoutMs?: number;
  /** A TPM 2.0 (QEMU's tpm-tis on a swtpm software TPM of the host, its state kept across restarts). */
  tpm?: boolean;
  /**
   * A USB serial adapter (QEMU's usb-serial, an FTDI chip: /dev/ttyUSB0 in the guest) on an xHCI controller, its
   * line on {@linkcode VM.usbText} and {@linkcode VM.typeUsb}; {@linkcode VM.unplugUsbSerial} pulls it out.
   */
  usbSerial?: boolean;
  /** The USB controller of {@linkcode BootOptions.usbSerial}: "xhci" (default) or "uhci" (PIIX3's UHCI). */
  usbController?: "xhci" | "uhci";
  /** Print the serial console to stderr as it arrives. */
  echoConsole?: boolean;
  /**
   * A standard VGA card: the kernel's virtual terminals get a text screen that {@linkcode VM.screenText} reads,
   * and the PS/2 keyboard ({@linkcode VM.sendKeys}) types into the active one.
   */
  vga?: boolean;
}

export interface ShResult {
  code: number;
  /** Output with CRs and kernel log lines removed. */
  out: string;
  /** Raw console text between the markers. */
  raw: string;
}

export interface ShOptions {
  timeoutMs?: number;
  /** Answer prompts: wait for `expect` (after the command started) then type `send`. */
  interact?: { expect: RegExp; send: string | Uint8Array; timeoutMs?: number }[];
}

export interface QmpEvent {
  event: string;
  data?: unknown;
  /** Host time (ms since epoch) when the harness received it. */
  at: number;
}

const enc = new TextEncoder();
/**
 * A shell snippet printing how many suspends the guest's kernel really made: /sys/power/suspend_stats counts the
 * firmware phase's dry runs too (cycle/firmware.ts), each of which says "suspend debug: Waiting" in its log.
 */
export const REAL_SUSPENDS =
  "echo $(( $(cat /sys/power/suspend_stats/success) - $(dmesg | grep -c 'suspend debug: Waiting') ))";

/** CRYPTSLEEP_VM_ECHO=1: every VM's console goes to stderr as it arrives (to watch a test's guest). */
const ECHO = Deno.env.get("CRYPTSLEEP_VM_ECHO") === "1";
const KERNEL_LINE = /\[\s*\d+\.\d{6}\] [^\n]*\n/g;

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

async function readAll(conn: Deno.Conn, onData: (b: Uint8Array) => void): Promise<void> {
  const buf = new Uint8Array(65536);
  while (true) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      return;
    }
    if (n === null) return;
    onData(buf.slice(0, n));
  }
}

async function connectUnix(path: string, timeoutMs = 10_000): Promise<Deno.Conn> {
  const end = Date.now() + timeoutMs;
  while (true) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (e) {
      if (Date.now() > end) throw new Error(`connect ${path} failed: ${e}`);
      await sleep(50);
    }
  }
}

/** Makes an ext4 image of `dir`'s files, labelled `label`. */
export async function makeExt4(dir: string, image: string, label: string): Promise<void> {
  let bytes = 0;
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) walk(p);
      else bytes += Deno.statSync(p).size;
    }
  };
  walk(dir);
  const mib = Math.max(16, Math.ceil(bytes / 1048576) * 2 + 8);
  await Deno.writeFile(image, new Uint8Array());
  await Deno.truncate(image, mib * 1048576);
  const r = await new Deno.Command("mke2fs", {
    args: ["-q", "-F", "-t", "ext4", "-L", label, "-d", dir, image],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) throw new Error(`mke2fs -d ${dir} ${image} failed: ${new TextDecoder().decode(r.stderr)}`);
}

/** A running guest. Dispose (`await using`) kills QEMU and removes the temp files. */
export class VM implements AsyncDisposable {
  readonly guest: BedGuest;
  readonly tmp: string;
  readonly opts: BootOptions;
  /** Full console text since the first boot (CRs removed). */
  console = "";
  /** Console position from which waitForConsole searches. */
  cursor = 0;
  events: QmpEvent[] = [];
  private eventCursor = 0;
  private clearedAt = 0;
  private proc: Deno.ChildProcess | null = null;
  private qmpConn: Deno.Conn | null = null;
  private serialConn: Deno.Conn | null = null;
  private qmpBuf = "";
  private qmpWaiters = new Map<number, (r: { return?: unknown; error?: { class: string; desc: string } }) => void>();
  private qmpId = 1;
  private listeners = new Set<() => void>();
  private decoder = new TextDecoder();
  private shLock: Promise<unknown> = Promise.resolve();
  private shCounter = 0;
  private disks: { root: string; data: string | null; tool: string; snapshot: boolean } | null = null;
  private exited: Promise<Deno.CommandStatus> | null = null;
  private swtpm: Deno.ChildProcess | null = null;
  private usbConn: Deno.Conn | null = null;
  /** What the guest wrote on the USB serial adapter's line (CRs removed). */
  usbText = "";

  constructor(guest: BedGuest, tmp: string, opts: BootOptions) {
    this.guest = guest;
    this.tmp = tmp;
    this.opts = opts;
  }

  get ramBytes(): number {
    return (this.opts.ramMiB ?? 1024) * 1048576;
  }

  private notify() {
    for (const l of [...this.listeners]) l();
  }

  private async prepareDisks() {
    const toolDir = join(this.tmp, "tool");
    await Deno.mkdir(toolDir, { recursive: true });
    if (this.opts.includeBundle !== false) {
      const bundle = join(REPO_ROOT, "dist", "cryptsleep.js");
      try {
        await Deno.copyFile(bundle, join(toolDir, "cryptsleep.js"));
      } catch { /* no bundle yet */ }
    }
    for (const [name, content] of Object.entries(this.opts.toolFiles ?? {})) {
      const dst = join(toolDir, name);
      await Deno.mkdir(join(dst, ".."), { recursive: true });
      if (typeof content === "string") await Deno.copyFile(content, dst);
      else await Deno.writeFile(dst, content);
    }
    const tool = join(this.tmp, "tool.ext4");
    await makeExt4(toolDir, tool, "cstool");
    let root = this.guest.rootDisk;
    let data = this.opts.dataDisk ? this.guest.dataDisk : null;
    const snapshot = !this.opts.writableDisks;
    if (!snapshot) {
      for (const [src, name] of [[root, "root.luks"], [data, "data.luks"]] as const) {
        if (!src) continue;
        const dst = join(this.tmp, name);
        const r = await new Deno.Command("cp", { args: ["--reflink=auto", "--sparse=always", src, dst] }).output();
        if (!r.success) throw new Error(`cp ${src} ${dst} failed`);
        if (name === "root.luks") root = dst;
        else data = dst;
      }
    }
    this.disks = { root, data, tool, snapshot };
  }

  /** Starts QEMU (paused), connects QMP and serial, continues, types the passphrase, waits for the shell. */
  async start(): Promise<void> {
    if (!this.disks) await this.prepareDisks();
    const d = this.disks!;
    const qmpPath = join(this.tmp, "qmp.sock");
    const serPath = join(this.tmp, "serial.sock");
    await Deno.remove(qmpPath).catch(() => {});
    await Deno.remove(serPath).catch(() => {});
    const snap = d.snapshot ? ",snapshot=on" : "";
    if (this.opts.stallableRoot && d.snapshot) throw new Error("boot: stallableRoot needs writableDisks");
    const root = this.opts.stallableRoot
      ? `id=root,driver=raw,file.driver=blkdebug,file.image.driver=file,file.image.filename=${d.root}`
      : `file=${d.root},format=raw`;
    const drives = [
      `${root},if=virtio,cache=unsafe${snap}`,
      `file=${d.tool},if=virtio,format=raw,readonly=on`,
    ];
    if (d.data) drives.push(`file=${d.data},if=virtio,format=raw,cache=unsafe${snap}`);
    const args = [
      "-machine",
      "pc,accel=tcg",
      "-cpu",
      "max",
      "-m",
      String(this.opts.ramMiB ?? 1024),
      "-smp",
      String(this.opts.cpus ?? 1),
      "-nodefaults",
      ...(this.opts.vga ? ["-vga", "std"] : []),
      "-display",
      "none",
      "-no-reboot",
      "-S",
      "-global",
      "PIIX4_PM.disable_s3=0",
      "-rtc",
      "base=utc",
      "-kernel",
      this.guest.kernelImage,
      "-initrd",
      this.guest.initrd,
      "-append",
      this.cmdline(),
      ...drives.flatMap((x) => ["-drive", x]),
      "-qmp",
      `unix:${qmpPath},server=on,wait=off`,
      "-chardev",
      `socket,id=s0,path=${serPath},server=on,wait=off`,
      "-serial",
      "chardev:s0",
      ...(this.opts.tpm ? await this.startTpm() : []),
      ...(this.opts.usbSerial
        ? [
          "-device",
          this.opts.usbController === "uhci" ? "piix3-usb-uhci,id=uhci" : "qemu-xhci,id=xhci",
          "-chardev",
          `socket,id=us0,path=${join(this.tmp, "usb.sock")},server=on,wait=off`,
          "-device",
          "usb-serial,chardev=us0,id=userial",
        ]
        : []),
    ];
    this.proc = new Deno.Command("qemu-system-x86_64", { args, stdin: "null", stdout: "null", stderr: "piped" })
      .spawn();
    const proc = this.proc;
    const stderrText = new Response(proc.stderr).text();
    this.exited = proc.status.then(async (s) => {
      if (this.proc === proc) this.exitedFlag = true;
      this.notify();
      const err = await stderrText.catch(() => "");
      if (err.trim()) this.console += `\n[qemu stderr] ${err.trim()}\n`;
      return s;
    });
    this.qmpConn = await connectUnix(qmpPath);
    this.serialConn = await connectUnix(serPath);
    if (this.opts.usbSerial) {
      this.usbConn = await connectUnix(join(this.tmp, "usb.sock"));
      readAll(this.usbConn, (b) => {
        this.usbText += this.decoder.decode(b, { stream: true }).replaceAll("\r", "");
        this.notify();
      });
    }
    const qconn = this.qmpConn;
    const sconn = this.serialConn;
    readAll(qconn, (b) => this.onQmp(b));
    readAll(sconn, (b) => {
      const t = this.decoder.decode(b, { stream: true }).replaceAll("\r", "");
      if (this.opts.echoConsole || ECHO) Deno.stderr.writeSync(enc.encode(t));
      this.console += t;
      this.notify();
    });
    await this.waitQmpGreeting();
    await this.qmp("qmp_capabilities");
    await this.qmp("cont");
    const kind = "kind" in this.guest ? this.guest.kind : "busybox";
    const timeout = this.opts.bootTimeoutMs ?? BOOT[kind].timeoutMs;
    const t0 = Date.now();
    const prompt = await this.waitForConsole(BOOT[kind].unlock, timeout);
    await this.answerPrompt(prompt.index + prompt[0].length, this.guest.passphrase + "\n");
    await this.waitForConsole(BOOT[kind].ready, timeout - (Date.now() - t0));
    await this.waitForShell(timeout - (Date.now() - t0));
  }

  /**
   * Probes until the serial shell answers. From the second probe on, a Ctrl-C first drops a half-read line: bytes
   * typed while the guest still resumes from S3 can be lost, leaving the shell inside an unclosed quote. Each probe
   * waits `probeMs` for its answer.
   */
  async waitForShell(timeoutMs = 300_000, probeMs = 10_000): Promise<void> {
    const t0 = Date.now();
    for (let attempt = 0;; attempt++) {
      try {
        if (attempt > 0) {
          await this.type("\x03");
          // the tty flushes its input on ^C: what arrives with it is lost (the probe's first letters were, on a
          // loaded host, attempt after attempt)
          await sleep(500);
        }
        const r = await this.sh("echo shell-ok", { timeoutMs: probeMs });
        if (r.out.includes("shell-ok")) return;
      } catch (e) {
        if (Date.now() - t0 > timeoutMs) throw e;
      }
    }
  }

  /** The kernel command line: the Debian guest's root= first, and ttyS0 the last console (its initramfs prompts there). */
  private cmdline(): string {
    // sysrq_always_enabled: a hung case can ask the kernel for its blocked tasks ({@linkcode VM.sysrq})
    const common = `console=ttyS0 loglevel=4 printk.time=1 panic=-1 sysrq_always_enabled ${this.opts.cmdline ?? ""}`
      .trim();
    if (!("kind" in this.guest)) return common;
    return `${this.guest.cmdline} ${this.opts.vga ? "console=tty0 " : ""}${common}`;
  }

  private greeting: (() => void) | null = null;
  private greeted = false;

  private waitQmpGreeting(): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((res) => (this.greeting = res));
  }

  private onQmp(b: Uint8Array) {
    this.qmpBuf += new TextDecoder().decode(b);
    let i: number;
    while ((i = this.qmpBuf.indexOf("\n")) >= 0) {
      const line = this.qmpBuf.slice(0, i).trim();
      this.qmpBuf = this.qmpBuf.slice(i + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      if (msg.QMP) {
        this.greeted = true;
        this.greeting?.();
      } else if (msg.event) {
        this.events.push({ event: msg.event, data: msg.data, at: Date.now() });
        this.notify();
      } else if (msg.id !== undefined) {
        this.qmpWaiters.get(msg.id)?.(msg);
        this.qmpWaiters.delete(msg.id);
      }
    }
  }

  /** Sends a QMP command; throws on a QMP error. */
  async qmp(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (!this.qmpConn) throw new Error(`qmp ${command}: QEMU is not running`);
    const id = this.qmpId++;
    const p = new Promise<{ return?: unknown; error?: { class: string; desc: string } }>((res) =>
      this.qmpWaiters.set(id, res)
    );
    await this.qmpConn.write(enc.encode(JSON.stringify({ execute: command, arguments: args, id }) + "\n"));
    const r = await p;
    if (r.error) throw new Error(`qmp ${command} failed: ${r.error.class}: ${r.error.desc}`);
    return r.return;
  }

  /** Types bytes on the serial console. */
  async type(bytes: string | Uint8Array): Promise<void> {
    if (!this.serialConn) throw new Error("type: QEMU is not running");
    const b = typeof bytes === "string" ? enc.encode(bytes) : bytes;
    // Small pieces: the 16550 FIFO is 16 bytes and TCG is slow.
    for (let i = 0; i < b.length; i += 16) {
      await this.serialConn.write(b.subarray(i, i + 16));
      if (b.length > 16) await sleep(2);
    }
  }

  private waitFor<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = (fn: () => void) => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        fn();
      };
      const listener = () => {
        let v: T | undefined;
        try {
          v = check();
        } catch (e) {
          return done(() => reject(e));
        }
        if (v !== undefined) return done(() => resolve(v as T));
        if (!this.proc || this.exitedFlag) {
          done(() => reject(new Error(`${what}: QEMU exited\n--- console tail ---\n${this.console.slice(-2000)}`)));
        }
      };
      const timer = setTimeout(
        () =>
          done(() =>
            reject(
              new Error(`${what}: timeout after ${timeoutMs} ms\n--- console tail ---\n${this.console.slice(-2000)}`),
            )
          ),
        Math.max(0, timeoutMs),
      );
      this.listeners.add(listener);
      listener();
    });
  }

  private exitedFlag = false;

  /** Waits until `re` matches the console after the cursor; moves the cursor past the match. */
  async waitForConsole(re: RegExp, timeoutMs = 60_000, from?: number): Promise<RegExpExecArray> {
    const m = await this.findConsole(re, timeoutMs, from ?? this.cursor);
    this.cursor = m.index + m[0].length;
    return m;
  }

  private async findConsole(re: RegExp, timeoutMs: number, start: number): Promise<RegExpExecArray> {
    const m = await this.waitFor(
      () => {
        const r = new RegExp(re.source, re.flags.replace("g", ""));
        const hit = r.exec(this.console.slice(start));
        if (!hit) return undefined;
        hit.index += start;
        return hit;
      },
      timeoutMs,
      `waitForConsole(${re})`,
    );
    return m;
  }

  /** Waits for the next not yet consumed QMP event named `name`. */
  async waitForEvent(name: string, timeoutMs = 60_000): Promise<QmpEvent> {
    const idx = await this.waitFor(
      () => {
        for (let i = this.eventCursor; i < this.events.length; i++) if (this.events[i].event === name) return i;
        return undefined;
      },
      timeoutMs,
      `waitForEvent(${name})`,
    );
    this.eventCursor = idx + 1;
    return this.events[idx];
  }

  /**
   * Waits for the guest to reach S3 (QMP SUSPEND). When it does not in `timeoutMs`, the error says what QEMU and the
   * kernel say of it ({@linkcode VM.kernelTasks}: the blocked tasks, every CPU's backtrace): a cycle that hangs on
   * CI leaves nothing else to read.
   */
  async waitForSuspend(timeoutMs: number): Promise<QmpEvent> {
    try {
      return await this.waitForEvent("SUSPEND", timeoutMs);
    } catch (err) {
      if (!this.running) throw err;
      const { qemu, kernel } = await this.whyStuck();
      throw new Error(
        `${err instanceof Error ? err.message : err}\n--- QEMU: ${qemu}; the kernel's tasks ---\n${
          kernel.slice(-12_000)
        }`,
        { cause: err },
      );
    }
  }

  /**
   * What a guest that does not get on says of itself: QEMU's run state (`query-status`: running, or suspended with
   * the event missed) and the kernel's blocked tasks and every CPU's backtrace ({@linkcode VM.kernelTasks}).
   */
  async whyStuck(): Promise<{ qemu: string; kernel: string }> {
    const qemu = JSON.stringify(await this.qmp("query-status").catch((e) => String(e)));
    const kernel = await this.kernelTasks(["w", "l"]).catch((e) => String(e));
    return { qemu, kernel };
  }

  /** Forgets events received so far (waitForEvent only sees later ones). */
  clearEvents(): void {
    this.eventCursor = this.events.length;
    this.clearedAt = this.events.length;
  }

  /** The events of one kind received since the last {@linkcode VM.clearEvents} (`events` keeps them all). */
  eventsSinceClear(name: string): QmpEvent[] {
    return this.events.slice(this.clearedAt).filter((e) => e.event === name);
  }

  /**
   * Runs `cmd` in the guest root shell; returns exit code and output. Robust to echo and kernel messages:
   * the command travels base64-encoded and the output is framed by markers the echo cannot contain.
   */
  sh(cmd: string, opts: ShOptions = {}): Promise<ShResult> {
    const run = this.shLock.then(() => this.shInner(cmd, opts));
    this.shLock = run.catch(() => {});
    return run;
  }

  private async shInner(cmd: string, opts: ShOptions): Promise<ShResult> {
    const b64 = Buffer.from(enc.encode(cmd)).toString("base64");
    const timeoutMs = opts.timeoutMs ?? 60_000;
    if (b64.length <= 600) return await this.framed(`eval "$(echo ${b64} | base64 -d)"`, opts);
    // The line editor of busybox ash has a limited buffer: ship long scripts in pieces.
    const f = `/tmp/.cs-${Date.now().toString(36)}${(this.shCounter++).toString(36)}`;
    for (let i = 0; i < b64.length; i += 500) {
      const r = await this.framed(`printf %s ${b64.slice(i, i + 500)} >> ${f}`, { timeoutMs });
      if (r.code !== 0) throw new Error(`sh: shipping a long script to ${f} failed: ${r.out}`);
    }
    return await this.framed(`eval "$(base64 -d ${f}; rm -f ${f})"`, opts);
  }

  /** Sends one shell line framed by start/end markers; `script` must be short and single-line. */
  private async framed(script: string, opts: ShOptions): Promise<ShResult> {
    const id = `${Date.now().toString(36)}${(this.shCounter++).toString(36)}`;
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const from = this.console.length;
    // Markers are printed as two concatenated words, so the echoed command line never contains them.
    const line = `printf '%s\\n' '@@CS''S${id}'; ${script}; printf '\\n%s:%d\\n' '@@CS''E${id}' $?\n`;
    await this.type(line);
    const startRe = new RegExp(`@@CSS${id}\\n`);
    const s = await this.findConsole(startRe, timeoutMs, from);
    const outStart = s.index + s[0].length;
    let pos = outStart;
    for (const step of opts.interact ?? []) {
      const m = await this.findConsole(step.expect, step.timeoutMs ?? timeoutMs, pos);
      pos = m.index + m[0].length;
      await this.answerPrompt(pos, step.send);
    }
    const e = await this.findConsole(new RegExp(`\\n@@CSE${id}:(\\d+)\\n`), timeoutMs, outStart);
    const raw = this.console.slice(outStart, e.index);
    return { code: Number(e[1]), raw, out: raw.replace(KERNEL_LINE, "") };
  }

  /**
   * Types `send` as the answer to a prompt that ended at console position `after`. Password prompts switch echo
   * off and flush pending input (TCSAFLUSH) just after printing: input that arrives in between is echoed and lost.
   * So: wait a moment, type, and retype while the answer shows up echoed. Returns the host time (ms since epoch)
   * at which the answer that was taken had been typed.
   */
  async answerPrompt(after: number, send: string | Uint8Array): Promise<number> {
    const text = typeof send === "string" ? send.replace(/\n$/, "") : null;
    for (let attempt = 0; attempt < 6; attempt++) {
      await sleep(300 + attempt * 500);
      const mark = this.console.length;
      await this.type(send);
      const typedAt = Date.now();
      if (!text) return typedAt;
      await sleep(1500);
      if (!this.console.slice(Math.max(after, mark)).includes(text)) return typedAt;
    }
    throw new Error("answerPrompt: the answer was echoed (and flushed) six times; the prompt never took input");
  }

  /**
   * Plugs a disk image in as a virtio disk while the guest runs (ACPI PCI hotplug: the kernel alone takes it, no
   * udev needed). `id` names it for {@linkcode VM.unplugDisk}.
   */
  async plugDisk(id: string, image: string, opts: { readOnly?: boolean; stallable?: boolean } = {}): Promise<void> {
    const readOnly = opts.readOnly ?? true;
    const file = { driver: "file", filename: image, "read-only": readOnly };
    await this.qmp("blockdev-add", {
      "node-name": id,
      driver: "raw",
      "read-only": readOnly,
      // blkdebug between: stallDisk can hold its reads
      file: opts.stallable ? { driver: "blkdebug", "node-name": `${id}-debug`, image: file } : file,
    });
    await this.qmp("device_add", { driver: "virtio-blk-pci", drive: id, id });
  }

  /**
   * Puts another image under disk `id` (plugged by {@linkcode VM.plugDisk}): the guest's device stays, with other
   * contents — a disk exchanged under the same name, as the guest's kernel cannot tell (QMP blockdev-reopen).
   */
  async exchangeDiskImage(id: string, image: string): Promise<void> {
    const file = `${id}-exchanged`;
    await this.qmp("blockdev-add", { "node-name": file, driver: "file", filename: image });
    await this.qmp("blockdev-reopen", { options: [{ "node-name": id, driver: "raw", "read-only": false, file }] });
  }

  /**
   * From now on the next read of disk `id` (plugged with `stallable`, or `root` booted with `stallableRoot`) is never
   * answered, until {@linkcode VM.unstallDisk}: a disk that stops answering with nothing in the guest's sysfs to show it
   * (blkdebug's breakpoint on raw's read event).
   */
  async stallDisk(id: string): Promise<void> {
    await this.hmp(`qemu-io ${id} "break read_aio stall-${id}"`);
  }

  /** Answers the read {@linkcode VM.stallDisk} held, and the ones after it. */
  async unstallDisk(id: string): Promise<void> {
    await this.hmp(`qemu-io ${id} "resume stall-${id}"`);
  }

  /** An HMP command through QMP; throws on what it prints, as HMP's errors come back as text. */
  private async hmp(command: string): Promise<string> {
    const out = String(await this.qmp("human-monitor-command", { "command-line": command }) ?? "");
    if (out.trim()) throw new Error(`HMP ${command}: ${out.trim()}`);
    return out;
  }

  /** Unplugs a disk {@linkcode VM.plugDisk} plugged in; waits until the guest let go of it. */
  async unplugDisk(id: string, timeoutMs = 120_000): Promise<void> {
    const from = this.events.length;
    await this.qmp("device_del", { id });
    await this.waitFor(
      () => this.events.slice(from).find((e) => e.event === "DEVICE_DELETED" && JSON.stringify(e.data).includes(id)),
      timeoutMs,
      `unplugDisk(${id})`,
    );
    await this.qmp("blockdev-del", { "node-name": id });
  }

  /** Types on the USB serial adapter's line. */
  async typeUsb(text: string): Promise<void> {
    await this.usbConn!.write(enc.encode(text));
  }

  /** Waits for `re` in what the guest wrote on the USB serial line after `from`. */
  waitForUsb(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    return this.waitFor(() => re.exec(this.usbText.slice(from)) ?? undefined, timeoutMs, `waitForUsb(${re})`);
  }

  /** Pulls the USB serial adapter out (the guest's tty hangs up); {@linkcode VM.plugUsbSerial} puts it back. */
  async unplugUsbSerial(timeoutMs = 120_000): Promise<void> {
    const from = this.events.length;
    await this.qmp("device_del", { id: "userial" });
    await this.waitFor(
      () =>
        this.events.slice(from).find((e) => e.event === "DEVICE_DELETED" && JSON.stringify(e.data).includes("userial")),
      timeoutMs,
      "unplugUsbSerial",
    );
  }

  /** Plugs the USB serial adapter in again, on the same line. */
  async plugUsbSerial(): Promise<void> {
    await this.qmp("device_add", { driver: "usb-serial", chardev: "us0", id: "userial" });
  }

  /** QMP system_wakeup (resume from S3). */
  async wake(): Promise<void> {
    await this.qmp("system_wakeup");
  }

  /**
   * The text on the VGA screen (the active VT under vgacon), row by row: the cells of the text buffer at
   * 0xb8000, read with pmemsave. Needs `vga: true`.
   */
  async screenText(): Promise<string> {
    const p = join(this.tmp, `screen-${Date.now()}.bin`);
    await this.qmp("pmemsave", { val: 0xb8000, size: 80 * 25 * 2, filename: p });
    const cells = await Deno.readFile(p);
    await Deno.remove(p).catch(() => {});
    const rows: string[] = [];
    for (let r = 0; r < 25; r++) {
      let row = "";
      for (let c = 0; c < 80; c++) row += String.fromCharCode(cells[(r * 80 + c) * 2] || 0x20);
      rows.push(row.trimEnd());
    }
    return rows.join("\n");
  }

  /** Alt-SysRq-`key` on the PS/2 keyboard: the kernel acts on it, its userspace frozen or hung or not. */
  async sysrq(key: string): Promise<void> {
    await this.qmp("send-key", { keys: ["alt", "sysrq", key].map((data) => ({ type: "qcode", data })) });
  }

  /**
   * What the kernel says of its tasks for each SysRq key ("w": the blocked ones, "l": every CPU's backtrace), with
   * their stacks, on the console: the text from the first key on. The console's log level is raised for it (8)
   * and set back to the bed's (4) after; `settleMs` is waited after each key for the kernel to print.
   */
  async kernelTasks(keys: string[], settleMs = 5_000): Promise<string> {
    const from = this.console.length;
    for (const key of ["8", ...keys, "4"]) {
      await this.sysrq(key);
      if (key !== "4") await sleep(key === "8" ? 500 : settleMs);
    }
    return this.console.slice(from);
  }

  /** Types `text` on the PS/2 keyboard (QMP send-key): letters, digits, '-', '.', ' ' and '\n'. */
  async sendKeys(text: string): Promise<void> {
    const named: Record<string, string> = { "-": "minus", ".": "dot", " ": "spc", "\n": "ret" };
    for (const ch of text) {
      const code = named[ch] ?? (/^[a-z0-9]$/.test(ch) ? ch : null);
      if (code === null) throw new Error(`sendKeys: no key for ${JSON.stringify(ch)}`);
      await this.qmp("send-key", { keys: [{ type: "qcode", data: code }] });
    }
  }

  /** Dumps all guest RAM to `path` (default in the VM's temp dir); returns the path. */
  async dumpRam(path?: string): Promise<string> {
    const p = path ?? join(this.tmp, `ram-${Date.now()}.dump`);
    await this.qmp("pmemsave", { val: 0, size: this.ramBytes, filename: p });
    return p;
  }

  /** Counts occurrences of each needle in a RAM dump (made now unless `path` is given); scans in chunks. */
  async searchRam(needles: Uint8Array[], path?: string): Promise<number[]> {
    const p = path ?? await this.dumpRam();
    try {
      return await countInFile(p, needles);
    } finally {
      if (!path) await Deno.remove(p).catch(() => {});
    }
  }

  /** Power cut: kill -9 QEMU without any flush. restart() boots again on the same disks. */
  async powerCut(): Promise<void> {
    await this.killQemu("SIGKILL");
  }

  /** Boots again (after powerCut() or a guest poweroff) on the same disks. */
  async restart(): Promise<void> {
    await this.killQemu("SIGKILL");
    this.cursor = this.console.length;
    this.eventCursor = this.events.length;
    this.exitedFlag = false;
    await this.start();
  }

  /** True while QEMU runs. */
  get running(): boolean {
    return this.proc !== null && !this.exitedFlag;
  }

  private async killQemu(sig: Deno.Signal) {
    const proc = this.proc;
    if (!proc) return;
    try {
      proc.kill(sig);
    } catch { /* already gone */ }
    await this.exited;
    this.exitedFlag = true;
    this.proc = null;
    try {
      this.qmpConn?.close();
    } catch { /* closed */ }
    try {
      this.serialConn?.close();
    } catch { /* closed */ }
    try {
      this.usbConn?.close();
    } catch { /* closed */ }
    this.qmpConn = this.serialConn = this.usbConn = null;
    for (const [, w] of this.qmpWaiters) w({ error: { class: "Gone", desc: "QEMU exited" } });
    this.qmpWaiters.clear();
    this.notify();
  }

  /** Starts swtpm (once; it outlives QEMU restarts, as a TPM outlives a reboot); QEMU's arguments for it. */
  private async startTpm(): Promise<string[]> {
    const dir = join(this.tmp, "tpm");
    const sock = join(dir, "swtpm.sock");
    if (!this.swtpm) {
      await Deno.mkdir(dir, { recursive: true });
      this.swtpm = new Deno.Command("swtpm", {
        args: [
          "socket",
          "--tpm2",
          "--tpmstate",
          `dir=${dir}`,
          "--ctrl",
          `type=unixio,path=${sock}`,
          "--log",
          "level=0",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      for (let i = 0; i < 100 && !(await Deno.stat(sock).then(() => true, () => false)); i++) await sleep(50);
    }
    return [
      "-chardev",
      `socket,id=chrtpm,path=${sock}`,
      "-tpmdev",
      "emulator,id=tpm0,chardev=chrtpm",
      "-device",
      "tpm-tis,tpmdev=tpm0",
    ];
  }

  /** Stops QEMU (QMP quit, then SIGKILL) and removes the temp dir. */
  async stop(): Promise<void> {
    if (this.proc) {
      try {
        await Promise.race([this.qmp("quit"), sleep(3000)]);
        await Promise.race([this.exited, sleep(5000)]);
      } catch { /* fall through to kill */ }
      await this.killQemu("SIGKILL");
    }
    if (this.swtpm) {
      try {
        this.swtpm.kill("SIGKILL");
      } catch { /* gone */ }
      await this.swtpm.status;
      this.swtpm = null;
    }
    await Deno.remove(this.tmp, { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Counts occurrences of `needle` starting before `limit`, anchored on a byte that is rare in RAM (not 00/ff). */
function countIn(hay: Uint8Array, needle: Uint8Array, limit: number): number {
  let a = needle.findIndex((b) => b !== 0 && b !== 0xff);
  if (a < 0) a = 0;
  const anchor = needle[a];
  let count = 0;
  let pos = hay.indexOf(anchor, a);
  while (pos >= 0) {
    const start = pos - a;
    if (start >= limit) break;
    let j = 0;
    while (j < needle.length && hay[start + j] === needle[j]) j++;
    if (j === needle.length) count++;
    pos = hay.indexOf(anchor, pos + 1);
  }
  return count;
}

/** Counts (possibly overlapping) occurrences of each needle in a file, reading 64 MiB chunks. */
export async function countInFile(path: string, needles: Uint8Array[]): Promise<number[]> {
  const counts = needles.map(() => 0);
  const maxLen = Math.max(...needles.map((n) => n.length));
  const chunk = 64 << 20;
  const f = await Deno.open(path);
  try {
    const buf = new Uint8Array(chunk + maxLen);
    let carry = 0; // bytes kept from the previous chunk
    while (true) {
      let n = 0;
      while (n < chunk) {
        const r = await f.read(buf.subarray(carry + n, carry + chunk));
        if (r === null) break;
        n += r;
      }
      const total = carry + n;
      if (total === 0) break;
      const view = buf.subarray(0, total);
      const eof = n < chunk;
      // Matches starting in the kept tail are found again next round: stop before it unless at EOF.
      const limit = eof ? total : total - (maxLen - 1);
      needles.forEach((needle, i) => (counts[i] += countIn(view, needle, limit)));
      if (eof) break;
      const keep = maxLen - 1;
      buf.copyWithin(0, total - keep, total);
      carry = keep;
    }
  } finally {
    f.close();
  }
  return counts;
}

/** Parses `cryptsetup luksDump --dump-volume-key` output into the key bytes. */
export function parseVolumeKey(out: string): Uint8Array {
  const m = out.match(/(?:MK|Volume key) dump:\s*((?:[0-9a-f]{2}\s+)+)/i);
  if (!m) throw new Error(`no volume key in luksDump output:\n${out}`);
  const hex = m[1].replace(/\s+/g, "");
  return Uint8Array.from(hex.match(/../g)!.map((h) => parseInt(h, 16)));
}

/** Boots the guest (building or reusing the cached image). */
export async function boot(opts: BootOptions = {}): Promise<VM> {
  const guest = opts.guest === "debian"
    ? await ensureDebianGuest()
    : await ensureGuest({ kernel: opts.kernel ?? Deno.env.get("CRYPTSLEEP_KERNEL") ?? "6.1" });
  const tmp = await Deno.makeTempDir({ prefix: "cryptsleep-vm-" });
  const vm = new VM(guest, tmp, opts);
  try {
    await vm.start();
  } catch (e) {
    await vm.stop();
    throw e;
  }
  return vm;
}

/** Opens the LUKS2 data disk (/dev/vdc) as `name`, typing the passphrase after the prompt, and mounts it. */
export async function openDataDisk(vm: VM, name = "data", mountpoint = "/mnt/data"): Promise<void> {
  const r = await vm.sh(`cryptsetup open /dev/vdc ${name}`, {
    timeoutMs: 120_000,
    interact: [{ expect: /Enter passphrase for \S+:/, send: vm.guest.passphrase + "\n" }],
  });
  if (r.code !== 0) throw new Error(`cryptsetup open /dev/vdc ${name} failed (${r.code}): ${r.out}`);
  const m = await vm.sh(`mkdir -p ${mountpoint} && mount -t ext4 /dev/mapper/${name} ${mountpoint}`);
  if (m.code !== 0) throw new Error(`mount /dev/mapper/${name} failed: ${m.out}`);
}

/** Resumes a luksSuspended volume, typing the passphrase on the console after cryptsetup's prompt. */
export async function luksResume(vm: VM, name: string, timeoutMs = 120_000): Promise<ShResult> {
  return await vm.sh(`cryptsetup luksResume ${name}`, {
    timeoutMs,
    interact: [{ expect: /Enter passphrase for \S+:/, send: vm.guest.passphrase + "\n" }],
  });
}

/** Reads a LUKS volume key inside the guest (luksDump --dump-volume-key); test use only. */
export async function volumeKey(vm: VM, device: string): Promise<Uint8Array> {
  const r = await vm.sh(
    `printf %s '${vm.guest.passphrase}' | cryptsetup luksDump --dump-volume-key --batch-mode --key-file - ${device}`,
    { timeoutMs: 120_000 },
  );
  if (r.code !== 0) throw new Error(`luksDump --dump-volume-key ${device} failed (${r.code}): ${r.out}`);
  return parseVolumeKey(r.out);
}

/** Splits a 64-byte XTS key into its two 32-byte halves (in keyring mode they are never contiguous). */
export function keyHalves(key: Uint8Array): Uint8Array[] {
  const h = key.length / 2;
  return [key.slice(0, h), key.slice(h)];
}

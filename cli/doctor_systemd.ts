/**
 * @module
 * doctor's lines about systemd's suspend path: is cryptsleep installed as systemd-suspend.service's ExecStart,
 * is Debian's cryptsetup-suspend in the way, which of logind's triggers (lid, suspend key, idle) would take an
 * unprotected path (hibernate & co), and what sleep.conf makes a suspend write. They only warn: a machine can
 * run `cryptsleep suspend` by hand without any of it.
 *
 * @example
 * ```ts
 * import { checkSystemd } from "./doctor_systemd.ts";
 * for (const c of await checkSystemd("/")) console.log(c.status, c.name, c.detail);
 * ```
 */
import { readLogind, unprotected } from "../systemd/logind.ts";
import { resolveSleep } from "../systemd/sleep_conf.ts";
import { debianLine, suspendPath } from "../systemd/state.ts";
import type { Check } from "./doctor.ts";

/** The systemd lines of doctor, for the machine under `root`. */
export async function checkSystemd(root: string): Promise<Check[]> {
  const path = await suspendPath(root);
  if (path.execStart.files.length === 0) {
    return [{
      status: "warn",
      name: "systemd suspend",
      detail: "no systemd-suspend.service: not a systemd machine, so only cryptsleep suspend by hand locks the disks",
    }];
  }
  const out: Check[] = [
    path.installed ? { status: "ok", name: "systemd suspend", detail: path.summary } : {
      status: "warn",
      name: "systemd suspend",
      detail: path.summary,
      hint: path.debian.active ? "cryptsleep install --replace-debian" : "cryptsleep install",
    },
  ];
  const debian = debianLine(path.debian);
  if (debian) {
    out.push(
      path.debian.active
        ? {
          status: "warn",
          name: "cryptsetup-suspend",
          detail: `${debian}: it takes systemd-suspend.service's ExecStart, and only one tool may`,
          hint: "apt remove cryptsetup-suspend, or cryptsleep install --replace-debian (uninstall restores it)",
        }
        : { status: "ok", name: "cryptsetup-suspend", detail: debian },
    );
  }
  const logind = await readLogind(root);
  const bad = unprotected(logind);
  for (const t of bad) {
    out.push({
      status: "warn",
      name: `logind ${t.setting}`,
      detail: `${t.setting}=${t.value} (${t.from}): ${t.why}`,
      hint: `set ${t.setting}=suspend in /etc/systemd/logind.conf.d/cryptsleep.conf to have it locked`,
    });
  }
  if (bad.length === 0) {
    const short = logind.triggers.map((t) => `${t.setting}=${t.action}`).join(", ");
    out.push({ status: "ok", name: "logind", detail: `${short}: none takes an unprotected path` });
  }
  for (const w of logind.warnings) out.push({ status: "warn", name: "logind", detail: w });
  const sleep = await resolveSleep(root);
  out.push(
    sleep.ok
      ? {
        status: "ok",
        name: "sleep.conf",
        detail: `a suspend writes ${sleep.state} to /sys/power/state` +
          (sleep.memSleep ? ` after ${sleep.memSleep} to /sys/power/mem_sleep` : "") +
          (sleep.config.files.length ? ` (${sleep.config.files.join(", ")})` : " (systemd's defaults)"),
      }
      : { status: "warn", name: "sleep.conf", detail: sleep.reason, hint: sleep.fix },
  );
  for (const w of sleep.config.warnings) out.push({ status: "warn", name: "sleep.conf", detail: w });
  return out;
}

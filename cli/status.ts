/**
 * @module
 * `cryptsleep status [--json]`: whether cryptsleep is in systemd's suspend path (the drop-in, Debian's
 * cryptsetup-suspend), then the last cycle's timeline, from /run/cryptsleep/last.json.
 *
 * @example
 * ```sh
 * cryptsleep status --json | jq '.phases[] | {name, durationMs}'
 * ```
 */
import { type CommandSpec, rootOption } from "./args.ts";
import { formatTimeline, LAST_REPORT } from "../cycle/report.ts";
import type { TimelineJSON } from "../cycle/timeline.ts";
import { debianLine, keptLine, suspendPath } from "../systemd/state.ts";
import { underRoot } from "../host/paths.ts";

/** `cryptsleep status`. */
export const command: CommandSpec = {
  name: "status",
  help: "say whether systemd's suspend runs cryptsleep, and print the last cycle's timeline",
  options: [
    { flag: "--json", help: "print it as JSON" },
    rootOption("read from this tree instead of /"),
  ],
  run: async (o) => {
    const root = o.root as string;
    const path = await suspendPath(root);
    const systemd = {
      installed: path.installed,
      summary: path.summary,
      execStart: path.execStart.commands,
      debian: { path: path.debian.path, active: path.debian.active },
      kept: await keptLine(path, root),
    };
    let report: TimelineJSON | null = null;
    try {
      report = JSON.parse(await Deno.readTextFile(underRoot(root, LAST_REPORT))) as TimelineJSON;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (o.json) {
      // the report's own keys stay at the top (scripts read .facts and .phases); systemd beside them
      console.log(JSON.stringify({ ...report, systemd }, null, 2));
    } else {
      console.log(`systemd: ${path.summary}`);
      const debian = debianLine(path.debian);
      if (debian) console.log(`systemd: ${debian}`);
      if (systemd.kept) console.log(`systemd: ${systemd.kept}`);
      if (report) console.log(formatTimeline(report));
    }
    if (!report) {
      console.error(`cryptsleep: no cycle has run since boot (${LAST_REPORT} is missing); run cryptsleep suspend`);
      return 1;
    }
    return report.ok ? 0 : 1;
  },
};

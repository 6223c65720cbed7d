/**
 * @module
 * `cryptsleep status [--json]`: the last cycle's timeline, from /run/cryptsleep/last.json.
 *
 * @example
 * ```sh
 * cryptsleep status --json | jq '.phases[] | {name, durationMs}'
 * ```
 */
import type { Command } from "commander";
import { formatTimeline, LAST_REPORT } from "../cycle/report.ts";
import type { TimelineJSON } from "../cycle/timeline.ts";

/** Registers `status` on the program. */
export function register(program: Command, exit: (code: number) => never): void {
  program.command("status")
    .description("print the last suspend cycle's timeline")
    .option("--json", "print it as JSON")
    .action(async (o) => {
      let text: string;
      try {
        text = await Deno.readTextFile(LAST_REPORT);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        console.error(`cryptsleep: no cycle has run since boot (${LAST_REPORT} is missing); run cryptsleep suspend`);
        exit(1);
      }
      const report = JSON.parse(text) as TimelineJSON;
      console.log(o.json ? JSON.stringify(report, null, 2) : formatTimeline(report));
      exit(report.ok ? 0 : 1);
    });
}

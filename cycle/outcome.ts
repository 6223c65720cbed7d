/**
 * @module
 * How a process of the cycle ended. The cycle says what happened; cli/ maps it to an exit code.
 *
 * @example
 * ```ts
 * import { type Outcome, refused } from "./outcome.ts";
 * const o: Outcome = refused(["not root: run cryptsleep suspend as root"]);
 * console.log(o.kind); // "refused"
 * ```
 */

/** The end of a cycle, or of one of its processes. */
export type Outcome =
  /** Done: everything ran and was undone (unlocked, thawed). `dryRun`: what the dry run printed. */
  | { kind: "ok"; dryRun?: string }
  /** Something failed and what was done is undone; `errors` says what (the report has the rest). */
  | { kind: "failed"; errors: string[] }
  /** Refused by preflight; nothing was touched. */
  | { kind: "refused"; reasons: string[] };

/** Everything ran and was undone. */
export const OK: Outcome = { kind: "ok" };

/** Something failed and was undone. */
export function failed(errors: string[]): Outcome {
  return { kind: "failed", errors };
}

/** Refused before anything was touched. */
export function refused(reasons: string[]): Outcome {
  return { kind: "refused", reasons };
}

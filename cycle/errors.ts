/**
 * @module
 * Errors of the cycle, and a way to read every message out of the SuppressedError chains that
 * `await using` builds when an undo fails while unwinding another failure.
 *
 * @example
 * ```ts
 * import { messages } from "./errors.ts";
 * console.log(messages(new SuppressedError(new Error("thaw failed"), new Error("lock failed"))));
 * // ["lock failed", "thaw failed"]
 * ```
 */

/** The cycle refused before touching anything. */
export class RefusedError extends Error {
  /** `reasons`: each thing to fix, said as what to do. */
  constructor(readonly reasons: string[]) {
    super(`refused: ${reasons.join("; ")}`);
    this.name = "RefusedError";
  }
}

/** The outer process stopped the list on a signal, before the agent started; what ran was undone. */
export class InterruptedError extends Error {
  /** Its name, for stack traces. */
  override name = "InterruptedError";
}

/** Every message in an error, oldest cause first (SuppressedError: the suppressed one happened first). */
export function messages(err: unknown): string[] {
  if (err instanceof SuppressedError) return [...messages(err.suppressed), ...messages(err.error)];
  if (err instanceof AggregateError) return err.errors.flatMap(messages);
  if (err instanceof Error) return [err.message];
  return [String(err)];
}

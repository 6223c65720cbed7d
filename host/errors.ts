/**
 * Errors of Deno's own file operations, told the way the rest of the tool tells errors: the call, the errno
 * name, the message — `"rmdir /sys/fs/cgroup/x: EBUSY: Device or resource busy (os error 16): …"`.
 * Native calls made through `ffi/` throw `SysError` (ffi/errors.ts) instead, which already says all that.
 *
 * @example
 * ```ts
 * import { describe, errnoCode } from "./errors.ts";
 * try {
 *   await Deno.readTextFile("/nonexistent");
 * } catch (err) {
 *   console.log(errnoCode(err)); // "ENOENT"
 *   console.log(describe("read /nonexistent", err)); // "read /nonexistent: ENOENT: No such file …"
 * }
 * ```
 * @module
 */
import { errnoName } from "../ffi/errors.ts";

/**
 * The errno name of a failed Deno operation ("EBUSY"), or "" when it carries none.
 *
 * Deno 2.9 sets `code` on errors of its fs ops (`Deno.remove`, `Deno.open`, `Deno.mkdir`…), whatever their
 * class (an EBUSY is a plain `Error`, not `Deno.errors.Busy`). Errors of a write to an open file
 * (`FsFile.write`, and `Deno.writeTextFile`'s write) carry no `code`, only "(os error N)" in the message —
 * e.g. ESRCH when moving a pid that has exited into `cgroup.procs` — so the number is read from there.
 */
export function errnoCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code !== "") return code;
  const m = /\(os error (\d+)\)/.exec(err instanceof Error ? err.message : String(err));
  return m ? errnoName(Number(m[1])) : "";
}

/** "call: EBUSY: message" for a failed Deno operation (the errno left out when unknown). */
export function describe(call: string, err: unknown): string {
  const code = errnoCode(err);
  const msg = err instanceof Error ? err.message : String(err);
  return `${call}: ${code ? code + ": " : ""}${msg}`;
}

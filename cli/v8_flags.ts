/**
 * V8's flags for every runtime of the program: the wrapper (packaging/cryptsleep.sh, checked by scripts/deb_test.ts),
 * the guests' wrapper, the supervisor cryptsleep starts, and a compiled binary.
 *
 * - `--lite-mode`: no optimizing compiler threads competing with the cycle for the CPU, a smaller heap (on the bed:
 *   `plan` 20 % faster, 5 MiB less RSS); cryptsleep's JS is never hot.
 * - `--no-lazy`: deno's code cache holds only what V8 compiled when the program loaded. Lazily, every function was
 *   compiled at its first call, again in every process, each cycle: the wake's code right after the wake among
 *   them. Compiled at load, all of it comes from the cache (busybox guest, 8 cycles each way, alternating: own work
 *   from the wake to the prompt, median 120 → 41 ms; CPU to the sleep 5.1 → 4.5 s, the supervisor's 2.4 → 2.0 s).
 *
 * @example
 * ```ts
 * import { V8_FLAGS } from "./v8_flags.ts";
 * console.log(["deno", "run", "-A", `--v8-flags=${V8_FLAGS}`, "dist/cryptsleep.js"].join(" "));
 * ```
 * @module
 */
export const V8_FLAGS = "--lite-mode,--no-lazy";

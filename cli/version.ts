/**
 * The cryptsleep version: the one place it is written (keep package.json in step).
 *
 * @example
 * ```ts
 * import { VERSION } from "./version.ts";
 * console.log(`cryptsleep ${VERSION}`);
 * ```
 * @module
 */
export const VERSION = "0.1.0";

/**
 * The few path functions the runtime uses, POSIX only, with `node:path`'s posix results for every string (the tests
 * hold them to it). Not `node:path`: importing it loads Deno's Node compatibility layer, about 18 ms of CPU per
 * process start on the host and half a second under the TCG bed, twice per suspend cycle.
 *
 * @example
 * ```ts
 * import { basename, dirname, join, normalize } from "./path.ts";
 * console.log(join("/sys/block", "dm-0", "../dm-1/")); // "/sys/block/dm-1/"
 * console.log(dirname("/run/cryptsleep/root/")); // "/run/cryptsleep"
 * console.log(basename("/dev/loop7")); // "loop7"
 * console.log(normalize("a//b/./../c")); // "a/c"
 * ```
 * @module
 */

/** `path` with "." and empty segments dropped and each ".." taking one back; ".." above "/" stays at "/". */
export function normalize(path: string): string {
  if (path === "") return ".";
  const absolute = path.startsWith("/");
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    // a relative path keeps the ".." it cannot cancel ("../a" stays); an absolute one drops them at the root
    if (seg === ".." && (out.length === 0 || out[out.length - 1] === "..")) {
      if (!absolute) out.push("..");
    } else if (seg === "..") out.pop();
    else out.push(seg);
  }
  // node keeps one trailing slash (a directory named as such stays so)
  const tail = path.endsWith("/") ? "/" : "";
  if (absolute) return out.length ? `/${out.join("/")}${tail}` : "/";
  return out.length ? `${out.join("/")}${tail}` : `.${tail}`;
}

/** The non-empty parts joined by "/" and normalized; "." when all are empty. */
export function join(...parts: string[]): string {
  const kept = parts.filter((p) => p !== "");
  return kept.length ? normalize(kept.join("/")) : ".";
}

/** `path` without its last segment (trailing slashes ignored); "." for a bare name, "/" for one under the root. */
export function dirname(path: string): string {
  if (path === "") return ".";
  const absolute = path.startsWith("/");
  const trimmed = path.replace(/\/+$/, "");
  const cut = trimmed.lastIndexOf("/");
  if (cut === -1) return absolute ? "/" : ".";
  if (cut === 0) return "/";
  // node's quirk: "//a" has the parent "//" (POSIX lets a leading "//" mean something else than "/")
  if (cut === 1 && absolute) return "//";
  // only the last slash is cut: "/a//b" has the parent "/a/", as in node
  return trimmed.slice(0, cut);
}

/** The last segment of `path`, trailing slashes ignored; "" for "/" and "". */
export function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/**
 * @module
 * `Deno.dlopen` without its per-function compile. For each synchronous function it binds, `Deno.dlopen` compiles a
 * fast-call trampoline with Cranelift (~0.25 ms of CPU each on the host; each of the cycle's two processes bound ~100).
 * V8 enters that trampoline only from optimized code, which V8's lite mode (the wrapper's `--v8-flags=--lite-mode`)
 * never makes. On the bed, loading libcryptsetup took 0.48–0.71 s with them and 0.15–0.40 s without. {@linkcode bindLibrary} asks the library for each function's address instead (a static of type
 * `pointer`) and calls it through `Deno.UnsafeFnPointer`: nothing compiled, ~1.5 µs more per call. A missing
 * `optional` function is null, whether `nonblocking` or not.
 *
 * @example
 * ```ts
 * import { bindLibrary } from "./bind.ts";
 * const libc = bindLibrary("libc.so.6", { getpid: { parameters: [], result: "i32" } } as const);
 * console.log(libc.symbols.getpid() === Deno.pid); // true
 * libc.close();
 * ```
 */

/** What {@linkcode bindLibrary} returns: the functions, typed as `Deno.dlopen` types them, and `close`. */
export type BoundLibrary<S extends Deno.ForeignLibraryInterface> = Pick<Deno.DynamicLibrary<S>, "symbols" | "close">;

/** Binds the functions `symbols` of `path` (a soname or a path, as for `Deno.dlopen`); see the module doc. */
export function bindLibrary<const S extends Deno.ForeignLibraryInterface>(path: string, symbols: S): BoundLibrary<S> {
  const addresses: Record<string, Deno.ForeignStatic> = {};
  for (const [key, def] of Object.entries(symbols)) {
    if ("type" in def) throw new TypeError(`bindLibrary: ${key} is a static; it binds functions only`);
    addresses[key] = { name: def.name ?? key, type: "pointer", optional: def.optional };
  }
  // throws as Deno.dlopen would for a missing library or a missing function that is not optional
  const lib = Deno.dlopen(path, addresses);
  const bound: Record<string, unknown> = {};
  for (const [key, def] of Object.entries(symbols) as [string, Deno.ForeignFunction][]) {
    const address = lib.symbols[key] as Deno.PointerValue;
    if (address === null) {
      bound[key] = null;
      continue;
    }
    const signature: Deno.ForeignFunction = {
      parameters: def.parameters,
      result: def.result,
      nonblocking: def.nonblocking,
    };
    const fn = new Deno.UnsafeFnPointer(address as Deno.PointerObject<typeof signature>, signature);
    bound[key] = fn.call.bind(fn);
  }
  const close = () => {
    // a call after this would jump into unmapped code: it throws instead, as Deno.dlopen's symbols do
    for (const key of Object.keys(bound)) {
      if (bound[key] !== null) {
        bound[key] = () => {
          throw new Deno.errors.BadResource(`${key}: ${path} was closed`);
        };
      }
    }
    lib.close();
  };
  return { symbols: bound as Deno.DynamicLibrary<S>["symbols"], close };
}

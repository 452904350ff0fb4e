// Bun's FFI (`bun:ffi`), where the runtime has it: the shipped executable calls a few C functions
// in-process (flock(2) for the lock, libnftables for nft batches) instead of spawning a tool.
// Under Node (the unit tests) there is none, and callers fall back to the tool.

/** The C types used here (bun:ffi's FFIType names). */
export type CType = "i32" | "u32" | "ptr" | "cstring" | "void";
export interface CFunction { args: readonly CType[]; returns: CType }
/** The functions of a library, as bun:ffi's dlopen gives them (their types are the caller's to state). */
export type CLibrary<T> = Record<keyof T, (...args: any[]) => any>;

interface BunFfi {
  dlopen(lib: string, symbols: Record<string, { args: number[]; returns: number }>): { symbols: Record<string, (...args: unknown[]) => unknown> };
  FFIType: Record<CType, number>;
}

let ffi: BunFfi | null | undefined;

/** bun:ffi, loaded synchronously; null where the runtime has none. */
function bunFfi(): BunFfi | null {
  if (ffi === undefined) {
    // process.getBuiltinModule: synchronous, and undefined (not a throw) for bun:ffi under Node.
    const get = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
    ffi = (get?.("bun:ffi") as BunFfi | undefined) ?? null;
  }
  return ffi;
}

/**
 * The functions `symbols` names in the shared library `lib`, or null when there is no FFI here or
 * the library (or a symbol) is missing: the caller then runs the tool instead.
 */
export function openLibrary<T extends Record<string, CFunction>>(lib: string, symbols: T): CLibrary<T> | null {
  const f = bunFfi();
  if (!f) return null;
  try {
    const typed = Object.fromEntries(Object.entries(symbols).map(([name, s]) => [name, { args: s.args.map((a) => f.FFIType[a]), returns: f.FFIType[s.returns] }]));
    return f.dlopen(lib, typed).symbols as CLibrary<T>;
  } catch {
    return null;
  }
}

// `nft -f -` in-process: libnftables, the library the nft command is a thin shell over, called
// through Bun's FFI. The same parser, the same kernel transaction (all of it or nothing) and the
// same error text, without a process: a spawn, an exec and nft's dynamic linking cost ~3 ms of every
// ADD and DEL, the library ~1 ms. Where there is no FFI (Node: the unit tests) or no library, nft runs.
import { openLibrary, type CFunction, type CLibrary } from "./ffi.js";
import type { ToolOutput } from "./exec.js";

const SYMBOLS = {
  nft_ctx_new: { args: ["u32"] as const, returns: "ptr" as const },
  nft_ctx_buffer_output: { args: ["ptr"] as const, returns: "i32" as const },
  nft_ctx_buffer_error: { args: ["ptr"] as const, returns: "i32" as const },
  nft_run_cmd_from_buffer: { args: ["ptr", "ptr"] as const, returns: "i32" as const },
  nft_ctx_get_output_buffer: { args: ["ptr"] as const, returns: "cstring" as const },
  nft_ctx_get_error_buffer: { args: ["ptr"] as const, returns: "cstring" as const },
} satisfies Record<string, CFunction>;

let nft: { lib: CLibrary<typeof SYMBOLS>; ctx: unknown } | null | undefined;

/**
 * Runs an nft script as `nft -f -` would, or returns undefined where it cannot (the caller spawns
 * nft). One context per process, never freed: freeing closes its netlink socket, and after a
 * transaction that deleted anything the kernel makes that close wait for the deleted objects to
 * be destroyed (~10 ms); the process's exit pays it instead, exactly once, as the nft child did.
 */
export function runNftScript(script: string): ToolOutput | undefined {
  if (nft === undefined) {
    const lib = openLibrary("libnftables.so.1", SYMBOLS);
    const ctx = lib?.nft_ctx_new(0);
    nft = lib && ctx ? { lib, ctx } : null;
    // Output and errors into buffers of the context, read after each run, instead of our stdout/stderr.
    if (nft && (lib!.nft_ctx_buffer_output(ctx) !== 0 || lib!.nft_ctx_buffer_error(ctx) !== 0)) nft = null;
  }
  if (!nft) return undefined;
  const status = nft.lib.nft_run_cmd_from_buffer(nft.ctx, Buffer.from(`${script}\0`)) as number;
  // Each read hands over what the context buffered since the last one (open_memstream, rewound).
  const stdout = String(nft.lib.nft_ctx_get_output_buffer(nft.ctx) ?? "");
  const stderr = String(nft.lib.nft_ctx_get_error_buffer(nft.ctx) ?? "");
  return { status: status === 0 ? 0 : 1, stdout, stderr };
}

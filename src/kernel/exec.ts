import { spawnSync } from "node:child_process";
import { CniError, ErrorCode } from "../cni/errors.js";

export interface ToolOutput {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs a kernel tool with an argv array (never a shell) and returns what it said, whatever its exit status. */
export function runTool(argv: readonly string[], input?: string): ToolOutput {
  const [file, ...args] = argv;
  const res = spawnSync(file!, args, { input, encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
  if (res.error) {
    const missing = (res.error as NodeJS.ErrnoException).code === "ENOENT";
    throw new CniError(
      missing ? ErrorCode.pluginNotAvailable : ErrorCode.kernelOperation,
      missing ? `${file} is not installed on this node` : `could not run ${file}: ${res.error.message}`,
    );
  }
  return { status: res.status ?? 128, stdout: res.stdout, stderr: res.stderr };
}

/** A tool's failure as a CNI error carrying the tool's own words and the batch it was fed. */
export function toolFailure(argv: readonly string[], out: ToolOutput, input?: string): CniError {
  const busy = /xtables lock|Another app is currently holding/i.test(out.stderr);
  return new CniError(
    busy ? ErrorCode.tryAgainLater : ErrorCode.kernelOperation,
    `${argv.join(" ")} failed (exit ${out.status}): ${out.stderr.trim() || out.stdout.trim()}`,
    input ?? "",
  );
}

/** Runs a tool that must succeed, and returns its stdout. */
export function mustRun(argv: readonly string[], input?: string): string {
  const out = runTool(argv, input);
  if (out.status !== 0) throw toolFailure(argv, out, input);
  return out.stdout;
}

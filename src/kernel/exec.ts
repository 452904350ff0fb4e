// The one way kernel tools run: argv arrays (never a shell) through a ToolRunner. The batches they
// are fed are rendered by pure functions in src/backend/* as ToolCalls, and run in src/backend/apply.ts.
import { spawnSync } from "node:child_process";
import { CniError, ErrorCode } from "../cni/errors.js";
import { runNftScript } from "./libnftables.js";

export interface ToolOutput {
  status: number;
  stdout: string;
  stderr: string;
}

/** One run of a kernel tool, as data: what a renderer returns and a runner runs. */
export interface ToolCall {
  argv: string[];
  input?: string;
}

/** Runs a kernel tool and returns what it said, whatever its exit status. */
export interface ToolRunner {
  run(argv: readonly string[], input?: string): ToolOutput;
}

/**
 * How long one tool may run. Every legitimate run takes well under a second (a 1000-pod batch
 * included); a tool that hangs under the state lock would otherwise make every later operation on
 * the node answer "try again later" for as long as it hangs. Killed, its operation fails with code
 * 11 and leaves the index dirty, and the next operation heals from the records.
 */
export const TOOL_TIMEOUT_MS = 30_000;

/** A runner of a node: spawnSync, no shell, killed after `timeoutMs`; an nft batch (`nft -f -`) in-process where it can be. */
export function nodeRunner(timeoutMs: number): ToolRunner {
  return {
    run(argv, input) {
      const inProcess = argv.length === 3 && argv.join(" ") === "nft -f -" && input !== undefined ? runNftScript(input) : undefined;
      if (inProcess) return inProcess;
      const [file, ...args] = argv;
      const res = spawnSync(file!, args, { input, encoding: "utf8", maxBuffer: 256 * 1024 * 1024, timeout: timeoutMs, killSignal: "SIGKILL" });
      const code = (res.error as NodeJS.ErrnoException | undefined)?.code;
      if (code === "ETIMEDOUT") {
        throw new CniError(ErrorCode.tryAgainLater, `${argv.join(" ")} did not finish within ${timeoutMs / 1000} s and was killed; the next operation repairs what it left`);
      }
      if (res.error) {
        throw new CniError(
          code === "ENOENT" ? ErrorCode.pluginNotAvailable : ErrorCode.kernelOperation,
          code === "ENOENT" ? `${file} is not installed on this node` : `could not run ${file}: ${res.error.message}`,
        );
      }
      return { status: res.status ?? 128, stdout: res.stdout, stderr: res.stderr };
    },
  };
}

let runner: ToolRunner = nodeRunner(TOOL_TIMEOUT_MS);

/** The seam: every tool run goes through this runner. Returns the one it replaces (tests put it back). */
export function useToolRunner(next: ToolRunner): ToolRunner {
  const previous = runner;
  runner = next;
  return previous;
}

/** Runs a kernel tool through the current runner and returns what it said, whatever its exit status. */
export function runTool(argv: readonly string[], input?: string): ToolOutput {
  return runner.run(argv, input);
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

/** Runs a rendered call that must succeed (none: nothing to do). */
export function runCall(call: ToolCall | undefined): void {
  if (call) mustRun(call.argv, call.input);
}

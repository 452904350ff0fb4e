// Process helpers. Every command is an argv array (never a shell string), and every child gets a
// minimal environment (PATH plus what the command itself needs): NODE_OPTIONS or
// NODE_EXTRA_CA_CERTS inherited from the caller would change what is measured (the latter alone
// adds ~45 ms to every Node start: docs/design.md#one-executable-fast-start).
import { spawn, spawnSync } from "node:child_process";

export const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The only environment children get, plus `extra` (e.g. the CNI_* variables). */
export const cleanEnv = (extra = {}) => ({ PATH, ...extra });

/** argv prefixed to run inside network namespace `ns` (the same way for every measured command). */
export const inNs = (ns, argv) => ["ip", "netns", "exec", ns, ...argv];

export class CommandError extends Error {
  constructor(argv, r) {
    super(`${argv.join(" ")} exited ${r.status ?? r.signal}: ${(r.stderr || r.stdout || "").trim().slice(0, 2000)}`);
    this.result = r;
  }
}

/**
 * Runs argv synchronously. Returns { status, stdout, stderr, ms } where ms is the wall time from
 * spawn to exit as seen by this process: what a container runtime waiting on the plugin would see.
 */
export function run(argv, { input, env = {}, check = true, timeoutMs = 60_000 } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), {
    input, env: cleanEnv(env), encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024,
  });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw new Error(`${argv[0]}: ${r.error.message}`);
  const out = { status: r.status, signal: r.signal, stdout: r.stdout ?? "", stderr: r.stderr ?? "", ms };
  if (check && r.status !== 0) throw new CommandError(argv, out);
  return out;
}

export const runIn = (ns, argv, opts) => run(inNs(ns, argv), opts);

// Children started in the background (iperf3 servers, the pool below), killed by cleanup.
export const children = new Set();

/** Runs argv without blocking; resolves like run(). */
export function runAsync(argv, { input, env = {}, check = true, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(argv[0], argv.slice(1), { env: cleanEnv(env), stdio: ["pipe", "pipe", "pipe"] });
    children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => { clearTimeout(timer); children.delete(child); reject(e); });
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const out = { status, signal, stdout, stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
      if (check && status !== 0) reject(new CommandError(argv, out));
      else resolve(out);
    });
    child.stdin.on("error", () => {}); // the child may exit before reading its stdin
    child.stdin.end(input ?? "");
  });
}

/** Starts a long-running child (e.g. an iperf3 server); the caller stops it with .kill(). */
export function startBackground(argv, env = {}) {
  const child = spawn(argv[0], argv.slice(1), { env: cleanEnv(env), stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.on("close", () => children.delete(child));
  return child;
}

/** Kills the children this process started (by their own handle, never by name). */
export function killChildren() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  children.clear();
}

/** Runs `tasks` (functions returning promises) with at most `limit` in flight. */
export async function pool(tasks, limit) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

/** Lets pending signal handlers run between synchronous measurements (spawnSync blocks the loop). */
export const yieldToLoop = () => new Promise((r) => setImmediate(r));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

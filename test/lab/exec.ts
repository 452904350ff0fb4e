// Process helpers for the lab. Everything is an argv array (no shell), and every
// command that touches networking runs through `ip netns exec <ns>` so the root
// namespace is never changed.
import { spawn, spawnSync } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string;
  /** Full environment for the child (default: inherit). */
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Throw when the exit code is not 0 (default true). */
  check?: boolean;
}

export class ExecError extends Error {
  constructor(
    readonly argv: string[],
    readonly result: ExecResult,
  ) {
    super(`${argv.join(' ')} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  }
}

/** Run a command in the caller's namespace. Only the lab's own bookkeeping uses this directly. */
export function run(argv: string[], opts: ExecOptions = {}): ExecResult {
  const [cmd, ...args] = argv;
  const r = spawnSync(cmd!, args, {
    input: opts.input,
    env: opts.env,
    timeout: opts.timeoutMs ?? 30_000,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  const res: ExecResult = {
    code: r.status ?? (r.signal ? 128 : 1),
    stdout: r.stdout ?? '',
    stderr: (r.stderr ?? '') + (r.error ? String(r.error) : ''),
  };
  if ((opts.check ?? true) && res.code !== 0) throw new ExecError(argv, res);
  return res;
}

/** Async variant, for things that must run concurrently (CNI calls, probes). */
export function runAsync(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd!, args, { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res = { code: code ?? (signal ? 128 : 1), stdout, stderr };
      if ((opts.check ?? true) && res.code !== 0) reject(new ExecError(argv, res));
      else resolve(res);
    });
    child.stdin.on('error', () => {}); // child may exit before reading stdin
    child.stdin.end(opts.input ?? '');
  });
}

export const inNs = (ns: string, argv: string[]): string[] => ['ip', 'netns', 'exec', ns, ...argv];

export function nsExec(ns: string, argv: string[], opts?: ExecOptions): ExecResult {
  return run(inNs(ns, argv), opts);
}

export function nsExecAsync(ns: string, argv: string[], opts?: ExecOptions): Promise<ExecResult> {
  return runAsync(inNs(ns, argv), opts);
}

/** Write sysctls inside a namespace (sysctl -w under ip netns exec sees that namespace's /proc/sys/net). */
export function sysctl(ns: string, values: Record<string, string | number>): void {
  const args = Object.entries(values).map(([k, v]) => `${k}=${v}`);
  nsExec(ns, ['sysctl', '-q', '-w', ...args]);
}

export function readSysctl(ns: string, key: string): string {
  return nsExec(ns, ['sysctl', '-n', key]).stdout.trim();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

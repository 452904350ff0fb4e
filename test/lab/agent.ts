// `markroute agent` in a lab's node namespace: started with a conf dir of its own (the lab's
// conflist, markroute's entry in a file beside it), whose entry names the lab's state dir and log
// file (the agent follows them, as the CNI binary does: no --state-dir, no --log-file), scraped with
// curl inside the namespace, stopped with a signal. What a suite needs to watch it repair.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Conflist } from './cni.ts';
import { findPlugin } from './cni.ts';
import { inNs, sleep } from './exec.ts';
import { createLab, type Lab, type Pod } from './lab.ts';
import { loadPtpConflist, type Backend } from './markroute.ts';
import type { Snapshot } from './snapshot.ts';

export const AGENT_LISTEN = '127.0.0.1:9743';

/** The agent suites' node: pods `first` and `server` (a UDP echo on port 7000), and the node as it was with them, before any agent. */
export interface PodPair {
  lab: Lab;
  list: Conflist;
  first: Pod;
  server: Pod;
  before: Snapshot;
}

/** A lab with the pod pair under `backend`, markroute's entry amended by `entry`. */
export async function podPairLab(backend: Backend, entry: Record<string, unknown> = {}): Promise<PodPair> {
  const lab = await createLab();
  const list = loadPtpConflist(lab, backend);
  Object.assign(list.plugins.find((p) => p.type === 'markroute')!, entry);
  const first = await lab.addPod('first', list);
  const server = await lab.addPod('server', list);
  await lab.serve(server, 'udp', 7000);
  return { lab, list, first, server, before: lab.snapshot() };
}

/** Three probes from `first` to `server`: how many arrived, and whether the fabric's NSG counted them (same-node traffic went out through the fabric). */
export async function fabricCrossing({ lab, first, server }: Pick<PodPair, 'lab' | 'first' | 'server'>): Promise<{ received: number; throughFabric: boolean }> {
  lab.nsg.reset();
  const r = await lab.probe(first, 'udp', server.ip4!, 7000, { count: 3, fresh: true });
  return { received: r.received, throughFabric: lab.nsg.packets(first.ip4!, server.ip4!) >= 3 };
}

export interface Agent {
  child: ChildProcess;
  confDir: string;
  conflistFile: string;
  entryFile: string;
  /** What the agent wrote on stderr (its JSON log lines), for failure messages. */
  stderr(): string;
  /** GET a path with curl inside the node namespace: status code and body. */
  get(path: string): { code: number; body: string };
  /** A metric's value from /metrics (a sample line `name{labels} value`); undefined when the agent does not show it. */
  metric(name: string, labels?: Record<string, string>): number | undefined;
  /** The agent's own pid, from its first log line (under `wrap`, the child is the wrapper). */
  pid(): number | undefined;
  /** Signals the agent; resolves with its exit code (or signal) and how long it took to exit. */
  stop(signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

/** Writes `list` as the conf dir's conflist and its markroute entry as the entry file, then starts the agent and waits for /healthz. */
export async function startAgent(lab: Lab, list: Conflist, { extra = [], wrap = [] }: { extra?: string[]; wrap?: string[] } = {}): Promise<Agent> {
  const confDir = join(lab.dir, 'net.d');
  mkdirSync(confDir, { recursive: true });
  const conflistFile = join(confDir, '10-pods.conflist');
  writeFileSync(conflistFile, JSON.stringify(list, null, 2));
  const entryFile = join(lab.dir, 'entry.json');
  writeFileSync(entryFile, JSON.stringify(list.plugins.find((p) => p.type === 'markroute')));
  const argv = inNs(lab.ns.node, [...wrap, findPlugin('markroute', lab.cniPath)!, 'agent',
    '--conf-dir', confDir, '--entry-file', entryFile, '--listen', AGENT_LISTEN, ...extra]);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const get = (path: string) => {
    const r = lab.exec(lab.ns.node, ['curl', '-sS', '--max-time', '5', '-w', '\n%{http_code}', `http://${AGENT_LISTEN}${path}`], { check: false });
    const at = r.stdout.lastIndexOf('\n');
    return { code: Number(r.stdout.slice(at + 1)) || 0, body: r.stdout.slice(0, Math.max(0, at)) };
  };
  const agent: Agent = {
    child, confDir, conflistFile, entryFile, get,
    stderr: () => stderr,
    pid: () => Number(/"pid":(\d+)[^\n]*"msg":"agent running/.exec(stderr)?.[1]) || undefined,
    metric(name, labels = {}) {
      const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
      const line = get('/metrics').body.split('\n').find((l) => {
        if (l.startsWith('#')) return false;
        const m = /^([a-z_]+)(?:\{(.*)\})? /.exec(l);
        return m?.[1] === name && want.every((w) => (m[2] ?? '').split(',').includes(w)) && (m[2] ?? '').split(',').filter(Boolean).length === want.length;
      });
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : undefined;
    },
    stop(signal) {
      const started = performance.now();
      return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve({ code: child.exitCode, signal: child.signalCode, ms: 0 });
        child.once('exit', (code, sig) => resolve({ code, signal: sig, ms: performance.now() - started }));
        child.kill(signal);
        // A wrapper killed outright (strace) leaves its child running: kill that too.
        const own = agent.pid();
        if (signal === 'SIGKILL' && own && own !== child.pid) {
          try {
            process.kill(own, 'SIGKILL');
          } catch {
            // gone already
          }
        }
      });
    },
  };
  for (let i = 0; i < 100 && get('/healthz').code !== 200; i++) {
    if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}: ${stderr}`);
    await sleep(100);
  }
  if (get('/healthz').code !== 200) throw new Error(`agent not healthy after 10 s: ${stderr}; listening: ${lab.exec(lab.ns.node, ['ss', '-ltnp'], { check: false }).stdout}; curl: ${JSON.stringify(lab.exec(lab.ns.node, ['curl', '-sS', '--max-time', '2', `http://${AGENT_LISTEN}/healthz`], { check: false }))}`);
  // its start line (what it follows, its pid) comes through the pipe after it answers
  for (let i = 0; i < 100 && !agent.pid(); i++) await sleep(20);
  return agent;
}

/** Polls `done` every 25 ms for up to `limitMs` (twice the bound a test asserts, to say by how much it missed): the time it took, or Infinity. */
export async function timeUntil(done: () => boolean, limitMs = 4000): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < limitMs) {
    if (done()) return performance.now() - started;
    await sleep(25);
  }
  return Infinity;
}

/** The node's state with nft's objects in a fixed order: a chain made again (iptables-nft's) is listed after the ones that stayed. */
export const settled = (s: Snapshot) => ({ ...s, nft: s.nft.map((o) => JSON.stringify(o)).sort() });

// dist/markroute run directly in a lone node namespace, for pods that exist only on paper: a
// ptp-style prevResult names a host veth that need not exist and an address nobody else uses.
// Cheap enough for hundreds of calls (crash, contention, load and property suites): no pod
// namespaces, no main plugin. The node is createNodeNamespace()'s (eth0 10.224.0.10/24, default
// route via 10.224.0.1, strict rp_filter); names follow the lab's `mr-p<pid>s<n>-` pattern, so a
// killed run's leftovers are swept by the next createLab()/sweepStaleLabs().
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findPlugin, type CniCommand } from './cni.ts';
import { inNs, nsExec } from './exec.ts';
import { createNodeNamespace, FABRIC_IP, REPO_ROOT, removeNamespace, sweepStaleLabs, UPLINK } from './lab.ts';
import { parseStatus, type Backend, type StatusJson } from './markroute.ts';
import { snapshot, type Snapshot } from './snapshot.ts';

/** A pod on paper: what its main plugin would have returned, without the pod. */
export interface PaperPod {
  name: string;
  containerId: string;
  ifname: string;
  /** Host-side veth named in prevResult (it need not exist). */
  hostIf: string;
  ip4?: string;
  ip6?: string;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
}

export interface Started {
  child: ChildProcess;
  done: Promise<Exit>;
  desc: string;
  /** Whether the process is still running. */
  running(): boolean;
}

export interface CallOptions {
  /** DEL/CHECK: send this prevResult; null sends none (the runtime's DEL after a failed ADD). Default: the pod's. */
  prev?: unknown;
  /** CNI_NETNS override ('' = RemovePodSandbox's DEL). */
  netns?: string;
  /** Merged over the netconf (a key set to undefined is removed). */
  netconf?: Record<string, unknown>;
  /** Extra environment for the plugin process. */
  env?: Record<string, string>;
  /** Exact stdin instead of the netconf. */
  stdin?: string;
}

/** The lab's `mr-p<pid>s<n>-` names: one counter per process, random so two suites in one worker never collide. */
const uniqueTag = () => `mr-p${process.pid}s${randomInt(100_000_000, 999_999_999)}`;

export class DirectNode {
  readonly id = uniqueTag();
  readonly ns: string;
  readonly netnsPath: string;
  readonly dir: string;
  readonly stateDir: string;
  readonly logFile: string;
  readonly bin: string;
  private pods = 0;
  private readonly children = new Set<ChildProcess>();

  constructor(readonly role: string, readonly backend: Backend, readonly network = `mr${role}`.slice(0, 60)) {
    sweepStaleLabs();
    this.ns = `${this.id}-${role}`;
    this.netnsPath = `/run/netns/${this.ns}`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.id}-`));
    this.stateDir = join(this.dir, 'state');
    this.logFile = join(this.dir, 'markroute.log');
    const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':') ?? [join(REPO_ROOT, 'dist')];
    const bin = findPlugin('markroute', cniPath);
    if (!bin) throw new Error(`no markroute in ${cniPath.join(':')}: run npm run build`);
    this.bin = bin;
    createNodeNamespace(this.ns);
  }

  /**
   * A new pod on paper with a unique host veth and address(es) of 10.<a>.<b>.<c> (and fd00:<a>::<n>):
   * `subnet` picks <a> so suites sharing a node keep apart; `family` 'dual' gives both.
   */
  pod(family: 'ipv4' | 'ipv6' | 'dual' = 'ipv4', subnet = 244): PaperPod {
    const n = ++this.pods;
    if (n > 60_000) throw new Error('out of paper pod addresses');
    const name = `p${n}`;
    return {
      name,
      containerId: randomBytes(32).toString('hex'),
      ifname: 'eth0',
      hostIf: `vmr${n}`,
      ...(family !== 'ipv6' ? { ip4: `10.${subnet}.${(n >> 8) & 0xff}.${n & 0xff}` } : {}),
      ...(family !== 'ipv4' ? { ip6: `fd00:${subnet}::${n.toString(16)}` } : {}),
    };
  }

  /** ptp's result for the pod: the host veth without sandbox, the pod's eth0 in its netns, its addresses. */
  prevResult(pod: PaperPod): Record<string, unknown> {
    const ips: Record<string, unknown>[] = [];
    if (pod.ip4) ips.push({ address: `${pod.ip4}/32`, gateway: '10.244.0.1', interface: 1 });
    if (pod.ip6) ips.push({ address: `${pod.ip6}/128`, gateway: 'fd00:244::1', interface: 1 });
    return {
      cniVersion: '1.0.0',
      interfaces: [
        { name: pod.hostIf, mac: '6e:1f:00:00:00:01' },
        { name: pod.ifname, mac: '0a:58:0a:f4:00:05', sandbox: `/run/netns/${pod.name}` },
      ],
      ips,
      routes: [{ dst: '0.0.0.0/0' }],
      dns: {},
    };
  }

  /**
   * markroute's netconf as libcni builds it for this node: the backend, the lab's stateDir and
   * logFile, the uplink and both gateways (so IPv6 pods have a way out too), and the pod's
   * prevResult (none when prev is null or no pod is given).
   */
  netconf(pod?: PaperPod, o: CallOptions = {}): Record<string, unknown> {
    const conf: Record<string, unknown> = {
      cniVersion: '1.0.0',
      name: this.network,
      type: 'markroute',
      mode: 'transparent-tunnel',
      backend: this.backend,
      uplink: UPLINK,
      gateway: FABRIC_IP,
      gateway6: 'fe80::1',
      serviceCIDRs: ['10.96.0.0/12', 'fd00:96::/108'],
      excludeCIDRs: ['168.63.129.16/32'],
      stateDir: this.stateDir,
      logFile: this.logFile,
    };
    const prev = o.prev === null ? undefined : (o.prev ?? (pod ? this.prevResult(pod) : undefined));
    if (prev !== undefined) conf.prevResult = prev;
    for (const [k, v] of Object.entries(o.netconf ?? {})) {
      if (v === undefined) delete conf[k];
      else conf[k] = v;
    }
    return conf;
  }

  env(command: CniCommand, pod?: PaperPod, o: CallOptions = {}): Record<string, string> {
    return {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod?.containerId ?? '',
      CNI_NETNS: o.netns ?? (pod ? this.netnsPath : ''),
      CNI_IFNAME: pod?.ifname ?? '',
      CNI_PATH: join(REPO_ROOT, 'dist'),
      CNI_ARGS: pod ? `K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod.name};K8S_POD_UID=00000000-0000-4000-8000-000000000000;IgnoreUnknown=1` : '',
      ...o.env,
    };
  }

  /** Starts markroute in the node namespace (ip netns exec execs, so the child is markroute itself). */
  start(command: CniCommand, pod?: PaperPod, o: CallOptions = {}): Started {
    return this.spawnIn([this.bin], this.env(command, pod, o), o.stdin ?? JSON.stringify(this.netconf(pod, o)), `${command} ${pod?.name ?? ''}`.trim());
  }

  run(command: CniCommand, pod?: PaperPod, o: CallOptions = {}): Promise<Exit> {
    return this.start(command, pod, o).done;
  }

  /** Runs argv in the node namespace with env and stdin, tracked so destroy() can kill it. */
  spawnIn(argv: string[], env: Record<string, string>, stdin: string, desc = argv.join(' ')): Started {
    const began = performance.now();
    // Niced: hundreds of these at once must not starve the test runner itself (vitest's worker
    // RPC times out after 60 s without an answer from the main process).
    const full = ['nice', '-n', '10', ...inNs(this.ns, argv)];
    const child = spawn(full[0]!, full.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin!.on('error', () => {});
    child.stdin!.end(stdin);
    const done = new Promise<Exit>((resolve) =>
      child.on('close', (code, signal) => {
        this.children.delete(child);
        resolve({ code, signal, stdout, stderr, ms: performance.now() - began });
      }),
    );
    return { child, done, desc, running: () => child.exitCode === null && child.signalCode === null };
  }

  /** The CLI (`markroute status`, `reconcile`) in the node namespace, on this node's state directory. */
  cli(args: string[]) {
    return nsExec(this.ns, [this.bin, ...args, '--state-dir', this.stateDir], { check: false, env: { PATH: process.env.PATH ?? '' } });
  }

  /** The state as `markroute status --json` reports it (read only, under the lock). */
  status(): StatusJson {
    return parseStatus(this.cli(['status', '--json']));
  }

  snapshot(): Snapshot {
    return snapshot(this.ns);
  }

  /** Attachment record files (`*.json`) in the state directory. */
  records(): string[] {
    return this.list('attachments').filter((f) => f.endsWith('.json'));
  }

  /** Parsed attachment records; one being replaced at this moment is skipped. */
  recordObjects(): any[] {
    return this.records().flatMap((f) => {
      try {
        return [JSON.parse(readFileSync(join(this.stateDir, 'attachments', f), 'utf8'))];
      } catch {
        return [];
      }
    });
  }

  /** Write-then-rename temporaries (`*.tmp`) in the state directory and its attachments. */
  tmpFiles(): string[] {
    return [...this.list(''), ...this.list('attachments').map((f) => `attachments/${f}`)].filter((f) => f.endsWith('.tmp'));
  }

  /** The state index, or undefined when absent or being replaced. */
  index(): any {
    try {
      return JSON.parse(readFileSync(join(this.stateDir, 'index.json'), 'utf8'));
    } catch {
      return undefined;
    }
  }

  /**
   * The locks held on markroute's lock file `<stateDir>/lock` (flock(2), as /proc/locks lists them by
   * inode), by the pid that took each (markroute's flock child). Empty: nobody holds it.
   */
  lockHolders(): number[] {
    let ino: number;
    try {
      ino = statSync(join(this.stateDir, 'lock')).ino;
    } catch {
      return [];
    }
    return readFileSync('/proc/locks', 'utf8').split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[1] === 'FLOCK' && f[5]?.split(':')[2] === String(ino))
      .map((f) => Number(f[4]));
  }

  /** The JSON lines markroute logged (one per operation). */
  logLines(): any[] {
    if (!existsSync(this.logFile)) return [];
    return readFileSync(this.logFile, 'utf8').split('\n').filter(Boolean).flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return []; // a line cut short by a SIGKILL
      }
    });
  }

  private list(sub: string): string[] {
    const d = join(this.stateDir, sub);
    return existsSync(d) ? readdirSync(d) : [];
  }

  /** Kills what still runs, removes the namespace and the directory. */
  destroy(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    this.children.clear();
    removeNamespace(this.ns);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The one JSON object a CNI plugin's stdout holds (result or error), or a description of what was wrong. */
export function oneJsonObject(stdout: string): { ok: true; value: Record<string, unknown> } | { ok: false; why: string } {
  if (!stdout.endsWith('\n')) return { ok: false, why: `stdout does not end with one newline: ${JSON.stringify(stdout.slice(-200))}` };
  const lines = stdout.slice(0, -1).split('\n');
  if (lines.length !== 1) return { ok: false, why: `stdout has ${lines.length} lines` };
  try {
    const v: unknown = JSON.parse(lines[0]!);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, why: `stdout is JSON but not an object: ${lines[0]!.slice(0, 200)}` };
    return { ok: true, value: v as Record<string, unknown> };
  } catch (e) {
    return { ok: false, why: `stdout is not JSON (${(e as Error).message}): ${lines[0]!.slice(0, 200)}` };
  }
}

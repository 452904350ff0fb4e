// The lab: a node namespace (where plugins run) wired by a veth to a fabric namespace
// (the cloud gateway that hairpins pod traffic back and enforces an NSG), plus pod
// namespaces made by the real ptp/bridge plugins. Nothing here touches the root
// namespace: every command runs under `ip netns exec mr-<runId>-<role>`.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetworkList, checkNetworkList, delNetworkList, describeFailure, invokePlugin, type CniCommand, type Conflist, type ListRun, type NetConf, type PluginRun, type RuntimeConf } from './cni.ts';
import { inNs, nsExec, nsExecAsync, run, sysctl, type ExecOptions, type ExecResult } from './exec.ts';
import { FABRIC_IP, FABRIC_SYSCTLS4, FABRIC_UPLINK_SYSCTLS4, NODE_IP, NODE_SYSCTLS4, POD_CIDR, PTP_SUBNET, UPLINK } from './constants.mjs';
import { Nsg } from './fabric.ts';
import { KubeProxy, type ClusterIPSpec } from './kubeproxy.ts';
import { hostVethName, reshapeResult, type MainPlugin } from './main-plugins.ts';
import { snapshot, type Snapshot } from './snapshot.ts';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, '../..');
const NETPROBE = join(here, 'netprobe.mjs');

export { FABRIC_IP, NODE_IP, UPLINK } from './constants.mjs';
export const NODE_IP6 = 'fd00:224::10';
export const FABRIC_IP6 = 'fd00:224::1';
/** The fabric's link-local gateway, as clouds hand out (design: gateway6 fe80::1). */
export const FABRIC_LL6 = 'fe80::1';

export interface LabOptions {
  /** Routed back to the node by the fabric (default POD_CIDR, 10.244.0.0/16). */
  podCidr?: string;
  /** Give node, fabric and pods IPv6 too (default false). */
  ipv6?: boolean;
  podCidr6?: string;
  /** host-local subnets per plugin, so ptp and bridge pods can share a lab. */
  subnets?: { ptp?: string; bridge?: string; ptp6?: string; bridge6?: string };
  /** Searched for plugin binaries (default: <repo>/dist, /usr/lib/cni). */
  cniPath?: string[];
}

export type PluginKind = 'ptp' | 'bridge';
export type NsRef = string | { ns: string };
const nsOf = (r: NsRef): string => (typeof r === 'string' ? r : r.ns);

export interface Pod {
  name: string;
  ns: string;
  netnsPath: string;
  containerId: string;
  ifname: string;
  k8s: { namespace: string; name: string; uid: string };
  conflist: Conflist;
  /** Cached result of the last successful ADD (libcni's cache), used as prevResult for DEL. */
  result?: any;
  /** The last ADD's per-plugin runs. */
  add?: ListRun;
  ip4?: string;
  ip6?: string;
  /** Host-side veth in the node namespace. */
  hostIf?: string;
  /** Bridge the host veth is enslaved to (bridge plugin). */
  bridge?: string;
}

export interface AddPodOptions {
  ifname?: string;
  k8sNamespace?: string;
  /** Sent as runtimeConfig["io.kubernetes.cri.pod-annotations"] when a plugin declares it. */
  annotations?: Record<string, string>;
  capabilityArgs?: Record<string, unknown>;
  env?: Record<string, string>;
  /** Return the pod even when ADD fails (inspect pod.add) instead of throwing. */
  allowFailure?: boolean;
  /**
   * The list's first plugin (ptp) stands in for this main plugin: its host veth is renamed as that
   * plugin names its own, and its result reshaped as that plugin shapes its own (main-plugins.ts),
   * before the rest of the chain gets it.
   */
  standIn?: MainPlugin;
}

export interface CniCallOptions {
  conflist?: Conflist;
  /** Override CNI_NETNS ('' = RemovePodSandbox's DEL). */
  netns?: string;
  /** DEL/CHECK prevResult; null sends none (default: the pod's cached ADD result). */
  prevResult?: unknown;
  capabilityArgs?: Record<string, unknown>;
  env?: Record<string, string>;
}

export interface ProbeResult {
  sent: number;
  received: number;
  /** from: who answered; seenAs: the source address the server saw. */
  replies: { from: string; seenAs: string }[];
  errors: string[];
}

export interface EchoServer {
  stop(): void;
}

let seq = 0;
const NETNS_RE = /^mr-p(\d+)s\d+-/;

const listNetns = (): string[] =>
  run(['ip', 'netns', 'list'], { check: false })
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);

/**
 * CNI_ARGS for a pod, with the keys containerd sends and in its order. Exported for suites that
 * start the plugin themselves (e.g. to kill it mid-call) yet must send what the lab sends.
 */
export function cniArgs(pod: Pod): [string, string][] {
  return [
    ['K8S_POD_NAMESPACE', pod.k8s.namespace],
    ['K8S_POD_NAME', pod.k8s.name],
    ['K8S_POD_INFRA_CONTAINER_ID', pod.containerId],
    ['K8S_POD_UID', pod.k8s.uid],
    ['IgnoreUnknown', '1'],
  ];
}

/** Delete one namespace, after killing what still runs in it (our own test processes). */
export function removeNamespace(ns: string): void {
  // A process left in a namespace keeps it (and its veths) alive after `ip netns del`.
  for (const pid of run(['ip', 'netns', 'pids', ns], { check: false }).stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  run(['ip', 'netns', 'del', ns], { check: false });
}

/** Delete every namespace whose name starts with prefix. */
export function sweepNamespaces(prefix: string): void {
  for (const ns of listNetns().filter((n) => n.startsWith(prefix))) removeNamespace(ns);
}

const deadPid = (pid: string | undefined): boolean => {
  if (!pid || Number(pid) === process.pid) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
};

/** Remove labs (namespaces, temp dirs) left behind by test processes that no longer exist, e.g. a killed vitest worker. */
export function sweepStaleLabs(): void {
  for (const ns of listNetns()) if (deadPid(NETNS_RE.exec(ns)?.[1])) removeNamespace(ns);
  for (const d of readdirSync(tmpdir())) {
    if (deadPid(NETNS_RE.exec(d)?.[1])) rmSync(join(tmpdir(), d), { recursive: true, force: true });
  }
}

/**
 * A lone node namespace for suites that run dist/markroute directly, without a fabric or pods:
 * the node's sysctls (strict rp_filter, no DAD), lo, and an uplink `eth0` with NODE_IP/24 and a
 * default route via FABRIC_IP. eth0's veth peer (`eth0p`) stays in the same namespace and is up,
 * so that eth0 has carrier and the route is usable, though nothing answers at FABRIC_IP: that is
 * all markroute needs to find its uplink. The caller removes it with removeNamespace(ns).
 */
export function createNodeNamespace(ns: string): void {
  run(['ip', 'netns', 'add', ns]);
  sysctl(ns, {
    'net.ipv4.conf.all.rp_filter': 1,
    'net.ipv4.conf.default.rp_filter': 1,
    'net.ipv6.conf.all.accept_dad': 0,
    'net.ipv6.conf.default.accept_dad': 0,
  });
  nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
  nsExec(ns, ['ip', 'link', 'add', UPLINK, 'type', 'veth', 'peer', 'name', `${UPLINK}p`]);
  nsExec(ns, ['ip', 'addr', 'add', `${NODE_IP}/24`, 'dev', UPLINK]);
  nsExec(ns, ['ip', 'link', 'set', UPLINK, 'up']);
  nsExec(ns, ['ip', 'link', 'set', `${UPLINK}p`, 'up']);
  nsExec(ns, ['ip', 'route', 'add', 'default', 'via', FABRIC_IP, 'dev', UPLINK]);
}

export class Lab {
  readonly runId = `p${process.pid}s${++seq}`;
  readonly prefix = `mr-${this.runId}-`;
  readonly ns = { node: `${this.prefix}node`, fabric: `${this.prefix}fabric` };
  readonly dir = mkdtempSync(join(tmpdir(), `mr-${this.runId}-`));
  readonly cniPath: string[];
  readonly podCidr: string;
  readonly podCidr6: string;
  readonly ipv6: boolean;
  readonly subnets: Required<NonNullable<LabOptions['subnets']>>;
  readonly nsg = new Nsg(this.ns.fabric);
  readonly kubeProxy = new KubeProxy(this.ns.node);
  readonly pods = new Map<string, Pod>();
  private children = new Set<ChildProcess>();
  private destroyed = false;

  constructor(opts: LabOptions = {}) {
    this.cniPath = opts.cniPath ?? [join(REPO_ROOT, 'dist'), '/usr/lib/cni'];
    this.podCidr = opts.podCidr ?? POD_CIDR;
    this.podCidr6 = opts.podCidr6 ?? 'fd00:244::/48';
    this.ipv6 = opts.ipv6 ?? false;
    this.subnets = {
      ptp: PTP_SUBNET,
      bridge: '10.244.1.0/24',
      ptp6: 'fd00:244::/64',
      bridge6: 'fd00:244:0:1::/64',
      ...opts.subnets,
    };
  }

  /** Build node + fabric. Called by createLab(). */
  setup(): void {
    const { node, fabric } = this.ns;
    run(['ip', 'netns', 'add', node]);
    run(['ip', 'netns', 'add', fabric]);
    // Defaults first, so interfaces created afterwards inherit them.
    sysctl(node, {
      ...NODE_SYSCTLS4, // strict rp_filter, as many distributions ship it
      'net.ipv6.conf.all.forwarding': 1,
      'net.ipv6.conf.all.accept_dad': 0, // no DAD wait for addresses the plugins add
      'net.ipv6.conf.default.accept_dad': 0,
    });
    sysctl(fabric, {
      ...FABRIC_SYSCTLS4, // no redirects: hairpinning must not teach the node a shortcut
      'net.ipv6.conf.all.forwarding': 1,
      'net.ipv6.conf.all.accept_dad': 0,
      'net.ipv6.conf.default.accept_dad': 0,
    });
    // The veth is created from inside the node namespace with its peer placed straight into the fabric.
    nsExec(node, ['ip', 'link', 'add', UPLINK, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', fabric]);
    sysctl(fabric, FABRIC_UPLINK_SYSCTLS4);
    for (const ns of [node, fabric]) nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    nsExec(node, ['ip', 'addr', 'add', `${NODE_IP}/24`, 'dev', UPLINK]);
    nsExec(fabric, ['ip', 'addr', 'add', `${FABRIC_IP}/24`, 'dev', UPLINK]);
    for (const ns of [node, fabric]) nsExec(ns, ['ip', 'link', 'set', UPLINK, 'up']);
    nsExec(node, ['ip', 'route', 'add', 'default', 'via', FABRIC_IP, 'dev', UPLINK]);
    nsExec(fabric, ['ip', 'route', 'add', this.podCidr, 'via', NODE_IP, 'dev', UPLINK]);
    if (this.ipv6) {
      nsExec(node, ['ip', '-6', 'addr', 'add', `${NODE_IP6}/64`, 'dev', UPLINK, 'nodad']);
      nsExec(fabric, ['ip', '-6', 'addr', 'add', `${FABRIC_IP6}/64`, 'dev', UPLINK, 'nodad']);
      nsExec(fabric, ['ip', '-6', 'addr', 'add', `${FABRIC_LL6}/64`, 'dev', UPLINK, 'nodad']);
      nsExec(node, ['ip', '-6', 'route', 'add', 'default', 'via', FABRIC_LL6, 'dev', UPLINK]);
      nsExec(fabric, ['ip', '-6', 'route', 'add', this.podCidr6, 'via', NODE_IP6, 'dev', UPLINK]);
    }
    this.nsg.install();
  }

  // ---- commands -------------------------------------------------------------------

  /** Run argv inside a lab namespace; throws on non-zero exit unless check: false. */
  exec(ns: NsRef, argv: string[], opts?: ExecOptions): ExecResult {
    return nsExec(nsOf(ns), argv, opts);
  }

  execAsync(ns: NsRef, argv: string[], opts?: ExecOptions): Promise<ExecResult> {
    return nsExecAsync(nsOf(ns), argv, opts);
  }

  /** State of the node namespace (or another), for before/after comparisons. */
  snapshot(ns: NsRef = this.ns.node): Snapshot {
    return snapshot(nsOf(ns));
  }

  // ---- CNI ------------------------------------------------------------------------

  /** The main-plugin conflist this lab uses for ptp or bridge pods; `chain` plugins are appended. */
  conflist(kind: PluginKind, opts: { name?: string; cniVersion?: string; chain?: NetConf[] } = {}): Conflist {
    const v4 = kind === 'ptp' ? this.subnets.ptp : this.subnets.bridge;
    const v6 = kind === 'ptp' ? this.subnets.ptp6 : this.subnets.bridge6;
    const ranges: Record<string, string>[][] = [[{ subnet: v4 }]];
    const routes: { dst: string }[] = [{ dst: '0.0.0.0/0' }];
    if (this.ipv6) {
      ranges.push([{ subnet: v6 }]);
      routes.push({ dst: '::/0' });
    }
    // Gateway = first address of the subnet; host-local picks it when unset, bridge puts it on cni0.
    const ipam = { type: 'host-local', ranges, routes, dataDir: join(this.dir, 'ipam') };
    const main: NetConf =
      kind === 'ptp'
        ? { type: 'ptp', ipMasq: false, ipam }
        : { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false, hairpinMode: true, ipam };
    return {
      cniVersion: opts.cniVersion ?? '1.0.0',
      name: opts.name ?? `mrlab-${kind}`,
      plugins: [main, ...(opts.chain ?? [])],
    };
  }

  private runtimeConf(pod: Pod, o: CniCallOptions & AddPodOptions = {}): RuntimeConf {
    const capabilityArgs = { ...o.capabilityArgs };
    if (o.annotations) capabilityArgs['io.kubernetes.cri.pod-annotations'] = o.annotations;
    return {
      containerId: pod.containerId,
      netns: o.netns ?? pod.netnsPath,
      ifname: pod.ifname,
      args: cniArgs(pod),
      capabilityArgs,
      cniPath: this.cniPath,
      hostNs: this.ns.node,
      env: o.env,
    };
  }

  /** Make a pod's namespace without running any plugin. */
  createPodNs(name: string, opts: AddPodOptions = {}): Pod {
    if (name === 'node' || name === 'fabric' || this.pods.has(name)) throw new Error(`pod name ${name} taken`);
    const ns = `${this.prefix}${name}`;
    run(['ip', 'netns', 'add', ns]);
    nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    sysctl(ns, { 'net.ipv6.conf.all.accept_dad': 0, 'net.ipv6.conf.default.accept_dad': 0 });
    const pod: Pod = {
      name,
      ns,
      netnsPath: `/run/netns/${ns}`,
      containerId: randomBytes(32).toString('hex'),
      ifname: opts.ifname ?? 'eth0',
      k8s: { namespace: opts.k8sNamespace ?? 'default', name, uid: randomUUID() },
      conflist: this.conflist('ptp'),
    };
    this.pods.set(name, pod);
    return pod;
  }

  /** Create a pod namespace and run ADD for `what` (a plugin kind or a whole conflist). */
  async addPod(name: string, what: PluginKind | Conflist, opts: AddPodOptions = {}): Promise<Pod> {
    const pod = this.createPodNs(name, opts);
    pod.conflist = typeof what === 'string' ? this.conflist(what) : what;
    const add = await this.cni('ADD', pod, opts);
    if (!add.ok && !opts.allowFailure) throw new Error(`ADD ${name}: ${describeFailure(add)}`);
    return pod;
  }

  /**
   * Run a conflist command for a pod, as libcni would. ADD caches the result on the pod
   * and fills ip4/ip6/hostIf/bridge; DEL/CHECK send the cached result unless told otherwise.
   */
  async cni(command: 'ADD' | 'DEL' | 'CHECK', pod: Pod, o: CniCallOptions & AddPodOptions = {}): Promise<ListRun> {
    const list = o.conflist ?? pod.conflist;
    const rt = this.runtimeConf(pod, o);
    const prev = o.prevResult === null ? undefined : (o.prevResult ?? pod.result);
    if (command === 'ADD') {
      const standIn = o.standIn;
      const add = await addNetworkList(list, rt, standIn && ((i, result) => (i === 0 ? this.standIn(standIn, pod, result) : result)));
      pod.add = add;
      if (add.ok) {
        pod.result = add.result;
        this.describePod(pod);
      }
      return add;
    }
    if (command === 'DEL') return delNetworkList(list, rt, prev);
    return checkNetworkList(list, rt, prev);
  }

  /** A ptp result made into `plugin`'s: the host veth renamed (the kernel allows it while up) and the result reshaped. */
  private standIn(plugin: MainPlugin, pod: Pod, ptpResult: unknown): unknown {
    const hostVeth = (ptpResult as { interfaces: { name: string; sandbox?: string }[] }).interfaces.find((i) => !i.sandbox)!.name;
    const hostIf = hostVethName(plugin, { namespace: pod.k8s.namespace, name: pod.k8s.name, containerId: pod.containerId });
    nsExec(this.ns.node, ['ip', 'link', 'set', 'dev', hostVeth, 'name', hostIf]);
    return reshapeResult(plugin, ptpResult, { hostIf, ifName: pod.ifname, netns: pod.netnsPath });
  }

  /** Run one plugin (any command, e.g. VERSION or GC) with a netconf built like libcni's. */
  invoke(command: CniCommand, netconf: Record<string, unknown>, pod?: Pod, o: CniCallOptions = {}): Promise<PluginRun> {
    const rt = pod
      ? this.runtimeConf(pod, o)
      : { containerId: '', netns: o.netns ?? '', ifname: '', args: [], cniPath: this.cniPath, hostNs: this.ns.node, env: o.env };
    return invokePlugin(command, netconf, rt);
  }

  /** DEL (StopPodSandbox) and then remove the pod namespace unless keepNs. */
  async delPod(pod: Pod, o: CniCallOptions & { keepNs?: boolean } = {}): Promise<ListRun> {
    const res = await this.cni('DEL', pod, o);
    if (!o.keepNs) this.removePodNs(pod);
    return res;
  }

  /**
   * Removes the pod's namespace as the runtime does after RemovePodSandbox, and waits until the
   * kernel has destroyed its veth's node side too: that happens asynchronously (the namespace's
   * cleanup work), and a snapshot taken before it would still list the interface.
   */
  removePodNs(pod: Pod): void {
    removeNamespace(pod.ns);
    this.pods.delete(pod.name);
    const gone = () => !pod.hostIf || nsExec(this.ns.node, ['ip', 'link', 'show', 'dev', pod.hostIf], { check: false }).code !== 0;
    for (const until = Date.now() + 10_000; !gone(); ) {
      if (Date.now() > until) throw new Error(`${pod.hostIf} still exists 10 s after its pod's namespace ${pod.ns} was removed`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }

  private describePod(pod: Pod): void {
    const ips: { address: string }[] = pod.result?.ips ?? [];
    pod.ip4 = ips.map((i) => i.address.split('/')[0]!).find((a) => !a.includes(':'));
    pod.ip6 = ips.map((i) => i.address.split('/')[0]!).find((a) => a.includes(':'));
    // The pod's eth0 names its peer's ifindex in the node namespace.
    const [link] = JSON.parse(nsExec(pod.ns, ['ip', '-j', 'link', 'show', pod.ifname]).stdout) as { link_index?: number }[];
    const nodeLinks = JSON.parse(nsExec(this.ns.node, ['ip', '-j', 'link', 'show']).stdout) as { ifindex: number; ifname: string; master?: string }[];
    const peer = nodeLinks.find((l) => l.ifindex === link?.link_index);
    pod.hostIf = peer?.ifname;
    pod.bridge = peer?.master;
  }

  // ---- traffic --------------------------------------------------------------------

  /** Start a UDP or TCP echo server in a namespace; resolves once it listens. */
  serve(where: NsRef, proto: 'udp' | 'tcp', port: number): Promise<EchoServer> {
    const child = spawn('ip', inNs(nsOf(where), [process.execPath, NETPROBE, 'serve', proto, String(port)]).slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.children.add(child);
    const stop = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      this.children.delete(child);
    };
    return new Promise((resolvePromise, reject) => {
      let err = '';
      const timer = setTimeout(() => {
        stop();
        reject(new Error(`echo server in ${nsOf(where)} not ready: ${err}`));
      }, 10_000);
      child.stderr.on('data', (d) => (err += d));
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolvePromise({ stop });
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`echo server exited ${code}: ${err}`));
      });
    });
  }

  /** Send count UDP datagrams (or TCP connections) from a namespace and collect the echoes. */
  async probe(from: NsRef, proto: 'udp' | 'tcp', host: string, port: number, o: { count?: number; timeoutMs?: number; fresh?: boolean } = {}): Promise<ProbeResult> {
    const argv = [process.execPath, NETPROBE, 'probe', proto, host, String(port), String(o.count ?? 1), String(o.timeoutMs ?? 1000)];
    if (o.fresh) argv.push('fresh');
    const r = await nsExecAsync(nsOf(from), argv, { timeoutMs: (o.timeoutMs ?? 1000) + 10_000 });
    return JSON.parse(r.stdout) as ProbeResult;
  }

  /**
   * `count` UDP datagrams from `from` (source address `fromIp`) to `toIp`:`port`: how many were
   * answered and crossed the fabric each way; then the same with the NSG denying the pair (which
   * is allowed again after).
   */
  async fabricRoundTrip(from: NsRef, fromIp: string, toIp: string, port: number, count: number):
    Promise<{ received: number; there: number; back: number; receivedWhileDenied: number }> {
    this.nsg.reset();
    const { received } = await this.probe(from, 'udp', toIp, port, { count });
    const [there, back] = [this.nsg.packets(fromIp, toIp), this.nsg.packets(toIp, fromIp)];
    this.nsg.deny(fromIp, toIp);
    try {
      const denied = await this.probe(from, 'udp', toIp, port, { count: 2, timeoutMs: 400 });
      return { received, there, back, receivedWhileDenied: denied.received };
    } finally {
      this.nsg.allow(fromIp, toIp);
    }
  }

  // ---- kube-proxy -----------------------------------------------------------------

  /** A ClusterIP in the node namespace, DNATed to a backend (iptables legacy by default). */
  addClusterIP(spec: ClusterIPSpec): { remove(): void } {
    return this.kubeProxy.add(spec);
  }

  // ---- teardown -------------------------------------------------------------------

  /** Remove every namespace, process and file of this lab. Safe to call twice. */
  async destroy(): Promise<void> {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    this.children.clear();
    // Pods first: their host veths live in the node namespace.
    for (const pod of this.pods.values()) removeNamespace(pod.ns);
    this.pods.clear();
    sweepNamespaces(this.prefix);
    if (!this.destroyed) rmSync(this.dir, { recursive: true, force: true });
    this.destroyed = true;
  }
}

/** Build a lab (node + fabric + NSG). Sweeps labs of dead test processes first. */
export async function createLab(opts: LabOptions = {}): Promise<Lab> {
  sweepStaleLabs();
  const lab = new Lab(opts);
  try {
    lab.setup();
  } catch (e) {
    await lab.destroy();
    throw e;
  }
  return lab;
}

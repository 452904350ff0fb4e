// containerd 1.6 with its CRI plugin, run as a child process in a lab's node namespace with
// everything of its own in one temp dir: root, state (pod netns mounts too), runc's root, its grpc
// socket, the CNI bin_dir (links to the plugins) and conf_dir. Started with
// `nsenter --net=/run/netns/<node>` (ip netns exec would remount /sys and hide the cgroup mounts),
// with restrict_oom_score_adj (the test process may not lower oom_score_adj). Pods go into a
// cgroup parent named after the temp dir. destroy() removes every pod, stops containerd, kills
// what is left (shims, pause processes), unmounts what is left under the temp dir, removes the
// cgroups and the temp dir, and the few files containerd keeps outside it (shim sockets under
// /run/containerd/s, libcni's result cache under /var/lib/cni/results).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { run, sleep } from '../lab/exec.ts';
import { CriClient, type PodSandboxConfig, type VersionResponse } from './client.ts';
import { PAUSE_IMAGE } from './pause-image.ts';

export const CRI_NAMESPACE = 'k8s.io';
const DIR_PREFIX = 'markroute-cri-p';
const DIR_RE = /^markroute-cri-p(\d+)-/;
const SHIM_SOCKETS = '/run/containerd/s';
const CNI_RESULTS = '/var/lib/cni/results';
const CGROUP_ROOT = '/sys/fs/cgroup';
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Why containerd cannot run here (a tool is missing), or undefined when it can. */
export function containerdMissing(): string | undefined {
  for (const tool of ['containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'nsenter', 'gcc', 'tar']) {
    if (run(['sh', '-c', `command -v ${tool}`], { check: false }).code !== 0) return `${tool} is not installed (Debian packages containerd, runc, gcc)`;
  }
  return undefined;
}

export function containerdVersion(): string {
  return run(['containerd', '--version']).stdout.trim();
}

/** One CNI call as the recording wrapper saw it. */
export interface RecordedCall {
  /** The executable called: a chain's plugin (its type), or an IPAM plugin a main plugin delegated to. */
  plugin: string;
  env: Record<string, string>;
  stdin: Record<string, any>;
  stdout: string;
  code: number;
}

export interface ContainerdOptions {
  /** The node namespace (a name under /run/netns). */
  netns: string;
  /** CNI plugins for bin_dir, by type: the path of each executable. */
  plugins: Record<string, string>;
  /**
   * Plugin types whose calls are recorded (CNI_* env, stdin, stdout, exit code) before answering as
   * the plugin did. Delegated calls too: a main plugin runs its IPAM from bin_dir (CNI_PATH).
   */
  record?: string[];
  sandboxImage?: string;
}

const processAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
};

/** Pids whose command line contains `needle` (not our own). */
function pidsWithArg(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').some((a) => a.includes(needle))) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

const kill = (pid: number, sig: NodeJS.Signals = 'SIGKILL') => {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
};

/** Mount points at or under dir, deepest first (from our mount namespace, the one containerd uses). */
export function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m)
    .map(unescape)
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

function unmountAll(dir: string): void {
  for (let round = 0; round < 3; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) return;
    for (const m of mounts) if (run(['umount', m], { check: false }).code !== 0) run(['umount', '-l', m], { check: false });
  }
}

/** Every cgroup directory named `name` at the top of a hierarchy, with its descendants, deepest first. */
function cgroupDirs(name: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    out.push(d);
  };
  if (!existsSync(CGROUP_ROOT)) return out;
  const hierarchies = readdirSync(CGROUP_ROOT).map((h) => join(CGROUP_ROOT, h)).filter((h) => {
    try {
      return statSync(h).isDirectory();
    } catch {
      return false;
    }
  });
  // cgroup v2 mounts its tree at /sys/fs/cgroup itself
  for (const h of [CGROUP_ROOT, ...hierarchies]) {
    const d = join(h, name);
    if (existsSync(join(d, 'cgroup.procs'))) walk(d);
  }
  return out.sort((a, b) => b.length - a.length);
}

async function removeCgroups(name: string): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const dirs = cgroupDirs(name);
    if (dirs.length === 0) return;
    for (const d of dirs) {
      let procs = '';
      try {
        procs = readFileSync(join(d, 'cgroup.procs'), 'utf8');
      } catch {
        /* removed meanwhile */
      }
      for (const pid of procs.split('\n').filter(Boolean)) kill(Number(pid));
    }
    for (const d of dirs) {
      try {
        rmdirSync(d);
      } catch {
        /* busy until its processes are reaped: next round */
      }
    }
    await sleep(100);
  }
}

/** Kill, unmount and remove what a containerd of this suite left in `dir` (its own, or a dead test process's). */
async function scrub(dir: string, socket: string): Promise<void> {
  // containerd itself and its shims (`-address <socket>`), then the pods' processes by cgroup
  for (const pid of pidsWithArg(dir)) kill(pid);
  await removeCgroups(basename(dir));
  // sandboxes whose shims may have left a socket: every id containerd still knew
  const ids = new Set<string>();
  for (const d of [join(dir, 'state', 'io.containerd.runtime.v2.task', CRI_NAMESPACE), join(dir, 'root', 'io.containerd.grpc.v1.cri', 'sandboxes')]) {
    if (existsSync(d)) for (const id of readdirSync(d)) ids.add(id);
  }
  for (const id of ids) {
    rmSync(join(SHIM_SOCKETS, createHash('sha256').update(`${socket}/${CRI_NAMESPACE}/${id}`).digest('hex')), { force: true });
    if (existsSync(CNI_RESULTS)) for (const f of readdirSync(CNI_RESULTS)) if (f.includes(`-${id}-`)) rmSync(join(CNI_RESULTS, f), { force: true });
  }
  unmountAll(dir);
  if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  // directories containerd and libcni make outside the temp dir, when empty (both recreate them when they need them)
  const rmdirIfEmpty = (d: string) => {
    try {
      rmdirSync(d);
    } catch {
      /* not empty or not there */
    }
  };
  for (const d of [SHIM_SOCKETS, '/run/containerd', CNI_RESULTS, '/var/lib/cni']) rmdirIfEmpty(d);
}

/** libcni's cached ADD results (under /var/lib/cni/results) of a sandbox: kept from a successful ADD until its DEL succeeds. */
export function cachedResults(id: string): string[] {
  return existsSync(CNI_RESULTS) ? readdirSync(CNI_RESULTS).filter((f) => f.includes(`-${id}-`)) : [];
}

/** Removes what containerd runs of test processes that died (a killed vitest worker) left behind. */
export async function sweepStaleContainerd(): Promise<void> {
  for (const d of readdirSync(tmpdir())) {
    const pid = DIR_RE.exec(d)?.[1];
    if (!pid || Number(pid) === process.pid || processAlive(Number(pid))) continue;
    const dir = join(tmpdir(), d);
    await scrub(dir, join(dir, 'containerd.sock'));
  }
}

function toml(s: string): string {
  return JSON.stringify(s); // a TOML basic string is a JSON string for the paths used here
}

/** Whether overlayfs can be mounted with its upper dir in `dir` (tried in a private mount namespace). */
function overlayWorks(dir: string): boolean {
  const t = join(dir, 'overlay-probe');
  for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(t, d), { recursive: true });
  const r = run(['unshare', '-m', 'mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${t}/lower,upperdir=${t}/upper,workdir=${t}/work`, `${t}/merged`], { check: false });
  rmSync(t, { recursive: true, force: true });
  return r.code === 0;
}

const conflistText = (list: object) => JSON.stringify(list, null, 2);

export class Containerd {
  readonly dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  readonly socket = join(this.dir, 'containerd.sock');
  readonly binDir = join(this.dir, 'cni-bin');
  readonly confDir = join(this.dir, 'cni-conf');
  readonly callsDir = join(this.dir, 'cni-calls');
  readonly logPath = join(this.dir, 'containerd.log');
  readonly configPath = join(this.dir, 'config.toml');
  /** The pods' cgroup parent: one per suite, removed with it. */
  readonly cgroupParent = `/${basename(this.dir)}`;
  readonly snapshotter: 'overlayfs' | 'native';
  readonly sandboxImage: string;
  private child?: ChildProcess;
  private exited?: Promise<void>;
  private client?: CriClient;

  constructor(readonly opts: ContainerdOptions) {
    this.sandboxImage = opts.sandboxImage ?? PAUSE_IMAGE;
    for (const d of [this.binDir, this.confDir, this.callsDir, join(this.dir, 'tmp')]) mkdirSync(d, { recursive: true });
    for (const [type, path] of Object.entries(opts.plugins)) {
      if (opts.record?.includes(type)) this.writeRecorder(type, path);
      else symlinkSync(path, join(this.binDir, type));
    }
    this.snapshotter = overlayWorks(this.dir) ? 'overlayfs' : 'native';
    writeFileSync(this.configPath, this.config());
  }

  /** Whether containerd was started and not stopped. */
  get running(): boolean {
    return !!this.client;
  }

  get cri(): CriClient {
    if (!this.client) throw new Error('containerd is not running');
    return this.client;
  }

  /** A shell wrapper that keeps each call's CNI_* env, stdin, stdout and status, then answers as the plugin did. */
  private writeRecorder(type: string, path: string): void {
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    const script = `#!/bin/sh
# Records one CNI call of ${type} (test/cri/containerd.ts), then answers exactly as the plugin did.
f=${q(this.callsDir)}/$(date +%s%N)-$$-${type}
env | grep '^CNI_' > "$f.env"
cat > "$f.stdin"
${q(path)} < "$f.stdin" > "$f.stdout"
rc=$?
echo "$rc" > "$f.code"
cat "$f.stdout"
exit "$rc"
`;
    writeFileSync(join(this.binDir, type), script);
    chmodSync(join(this.binDir, type), 0o755);
  }

  /** Recorded calls (of one plugin, or all), oldest started first; a call still running is not listed. */
  calls(plugin?: string): RecordedCall[] {
    const files = readdirSync(this.callsDir);
    const keys = [...new Set(files.filter((f) => f.endsWith('.code')).map((f) => f.slice(0, -'.code'.length)))].sort();
    return keys.map((k) => {
      const read = (ext: string) => readFileSync(join(this.callsDir, `${k}.${ext}`), 'utf8');
      const env = Object.fromEntries(read('env').split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      let stdin: Record<string, any>;
      try {
        stdin = JSON.parse(read('stdin'));
      } catch {
        stdin = { unparsable: read('stdin') };
      }
      return { plugin: k.replace(/^\d+-\d+-/, ''), env, stdin, stdout: read('stdout'), code: Number(read('code').trim()) };
    }).filter((c) => plugin === undefined || c.plugin === plugin);
  }

  clearCalls(): void {
    for (const f of readdirSync(this.callsDir)) rmSync(join(this.callsDir, f), { force: true });
  }

  private config(): string {
    const cri = 'plugins."io.containerd.grpc.v1.cri"';
    return `version = 2
root = ${toml(join(this.dir, 'root'))}
state = ${toml(join(this.dir, 'state'))}
temp = ${toml(join(this.dir, 'tmp'))}
# nothing of ours under /opt or on other snapshotters' paths
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = ${toml(this.socket)}

[debug]
  level = "info"

[${cri}]
  sandbox_image = ${toml(this.sandboxImage)}
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

  [${cri}.cni]
    bin_dir = ${toml(this.binDir)}
    conf_dir = ${toml(this.confDir)}
    max_conf_num = 1

  [${cri}.containerd]
    snapshotter = ${toml(this.snapshotter)}
    default_runtime_name = "runc"

    [${cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [${cri}.containerd.runtimes.runc.options]
        Root = ${toml(join(this.dir, 'runc'))}
        SystemdCgroup = false
`;
  }

  /** The one conflist of conf_dir (containerd reads it at start; call before start(), or see replaceConflist). */
  setConflist(file: string, list: object): void {
    for (const f of readdirSync(this.confDir)) rmSync(join(this.confDir, f));
    writeFileSync(join(this.confDir, file), conflistText(list));
  }

  /**
   * Replaces conf_dir's conflist while containerd runs, as an admin's edit would, and resolves once
   * containerd has loaded it (Status, verbose, shows what it holds). From then on every CNI call uses
   * it, a sandbox's teardown included. containerd 1.6's conf syncer reloads on write, remove and
   * rename events of conf_dir but ignores create events, so a file renamed in from elsewhere goes
   * unnoticed: the new text is written in conf_dir under a name libcni does not load, then renamed
   * over the conflist (that rename is an event it acts on, and it never reads half a file).
   */
  async replaceConflist(file: string, list: object, timeoutMs = 10_000): Promise<void> {
    const text = conflistText(list);
    const tmp = join(this.confDir, `.${file}.new`);
    writeFileSync(tmp, text);
    renameSync(tmp, join(this.confDir, file));
    for (const f of readdirSync(this.confDir)) if (f !== file) rmSync(join(this.confDir, f));
    const until = Date.now() + timeoutMs;
    for (;;) {
      const { info } = await this.cri.status(true);
      if (this.loadedConflists(info).includes(text)) return;
      if (Date.now() > until) throw new Error(`containerd did not load ${file} within ${timeoutMs} ms (last CNI load: ${info.lastCNILoadStatus})`);
      await sleep(50);
    }
  }

  /** The conflists (their text) containerd's CRI has loaded, from Status's verbose info. */
  private loadedConflists(info: Record<string, string>): string[] {
    const config = JSON.parse(info.cniconfig ?? '{}') as { Networks?: { Config?: { Source?: string } }[] | null };
    return (config.Networks ?? []).map((n) => n.Config?.Source ?? '');
  }

  /** Starts containerd in the node namespace; resolves to its CRI Version once it answers. */
  async start(): Promise<VersionResponse> {
    if (this.child) throw new Error('containerd already running');
    const log = openSync(this.logPath, 'a');
    const child = spawn('nsenter', [`--net=/run/netns/${this.opts.netns}`, 'containerd', '--config', this.configPath], {
      stdio: ['ignore', log, log],
      env: { PATH }, // as a service manager starts it: no proxy or CA variables for the plugins to inherit
    });
    closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const died = this.exited.then(() => {
      throw new Error(`containerd exited during start:\n${this.logTail()}`);
    });
    this.client = new CriClient(this.socket);
    try {
      return await Promise.race([this.client.waitReady(30_000), died]);
    } catch (e) {
      throw new Error(`containerd did not start: ${(e as Error).message}\n${this.logTail()}`);
    }
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Imports an OCI tarball into the CRI namespace, unpacked for the snapshotter CRI uses. */
  importImage(tarball: string): void {
    run(['ctr', '--address', this.socket, '-n', CRI_NAMESPACE, 'images', 'import', '--snapshotter', this.snapshotter, tarball], { timeoutMs: 120_000 });
  }

  /** RunPodSandbox with what kubelet sends for a plain pod: metadata, hostname, annotations, the cgroup parent. */
  runPod(name: string, annotations: Record<string, string> = {}, namespace = 'default'): Promise<string> {
    const uid = createHash('sha256').update(`${this.dir}/${namespace}/${name}`).digest('hex').slice(0, 32);
    const config: PodSandboxConfig = {
      metadata: { name, namespace, uid: `${uid.slice(0, 8)}-${uid.slice(8, 12)}-${uid.slice(12, 16)}-${uid.slice(16, 20)}-${uid.slice(20)}`, attempt: 0 },
      hostname: name,
      labels: { 'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': namespace },
      annotations,
      linux: { cgroupParent: `${this.cgroupParent}/pod${uid}`, securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    };
    return this.cri.runPodSandbox(config);
  }

  /** StopPodSandbox and RemovePodSandbox for every sandbox containerd has. */
  async removeAllPods(): Promise<void> {
    for (const p of await this.cri.listPodSandbox()) {
      await this.cri.stopPodSandbox(p.id);
      await this.cri.removePodSandbox(p.id);
    }
  }

  /** SIGTERM, then SIGKILL after timeoutMs. Shims and pods keep running, as with a real restart. */
  async stop(timeoutMs = 10_000): Promise<void> {
    this.client?.close();
    this.client = undefined;
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs));
    if ((await Promise.race([this.exited!.then(() => 'exited' as const), timer])) === 'timeout') {
      child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Removes every pod (when containerd still answers), stops containerd and removes all it left. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.client) {
      try {
        await Promise.race([this.removeAllPods(), sleep(60_000).then(() => { throw new Error('timeout'); })]);
      } catch {
        /* killed and cleaned up below */
      }
    }
    await this.stop();
    if (existsSync(this.dir)) await scrub(this.dir, this.socket);
  }
}

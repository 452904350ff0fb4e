// deploy/: the Kubernetes manifests parsed and checked field by field (nothing here reaches a
// cluster or a registry): the DaemonSet installs with the right command, mounts and privileges on
// every node; the ConfigMap's entry is a valid markroute netconf; the uninstall Job runs the same
// image with the same mounts; nothing needs RBAC; the Dockerfile puts the binary where they run it.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseListen } from '../../src/agent/http.ts';
import { parseConfig } from '../../src/config.ts';
import { install } from '../../src/install.ts';

const DEPLOY = join(import.meta.dirname, '../../deploy');
const IMAGE = 'registry.example.com/markroute:0.1.0';

type Obj = Record<string, any>;

function load(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8'));
  for (const d of docs) expect(d.errors, `${file}: ${d.errors.map((e) => e.message).join('; ')}`).toEqual([]);
  return docs.map((d) => d.toJS() as Obj).filter(Boolean);
}

const only = (file: string, kind: string): Obj => {
  const docs = load(file);
  expect(docs.map((d) => d.kind)).toEqual([kind]);
  return docs[0]!;
};

const daemonSet = () => only('daemonset.yaml', 'DaemonSet');
const configMap = () => only('configmap.yaml', 'ConfigMap');
const job = () => only('uninstall-job.yaml', 'Job');

/** The host paths a pod's container sees, by mount path: what "same mounts" means. */
function hostMounts(pod: Obj, container: Obj): Record<string, string> {
  const volumes = new Map<string, Obj>(pod.volumes.map((v: Obj) => [v.name, v]));
  return Object.fromEntries(container.volumeMounts.map((m: Obj) => {
    const v = volumes.get(m.name);
    expect(v, `volumeMount ${m.name} has no volume`).toBeDefined();
    return [m.mountPath, v!.hostPath?.path ?? `configMap:${v!.configMap?.name}`];
  }));
}

const HOST_MOUNTS = {
  '/host/opt/cni/bin': '/opt/cni/bin',
  '/host/etc/cni/net.d': '/etc/cni/net.d',
  '/var/lib/cni/markroute': '/var/lib/cni/markroute',
  '/var/log': '/var/log',
  '/run/xtables.lock': '/run/xtables.lock',
};

/** Node-level pod settings both workloads need. */
function expectNodeLevel(pod: Obj) {
  expect(pod.hostNetwork).toBe(true);
  expect(pod.hostPID).toBeUndefined();
  expect(pod.priorityClassName).toBe('system-node-critical');
  expect(pod.automountServiceAccountToken).toBe(false);
  expect(pod.serviceAccountName).toBeUndefined();
  // Every taint tolerated: an empty key with operator Exists.
  expect(pod.tolerations).toContainEqual({ operator: 'Exists' });
  for (const t of pod.tolerations) expect(t.key).toBeUndefined();
}

describe('deploy/daemonset.yaml', () => {
  test('a DaemonSet in kube-system whose selector matches its pods', () => {
    const ds = daemonSet();
    expect(ds.apiVersion).toBe('apps/v1');
    expect(ds.metadata).toMatchObject({ name: 'markroute', namespace: 'kube-system' });
    expect(ds.spec.template.metadata.labels).toMatchObject(ds.spec.selector.matchLabels);
    expect(ds.spec.updateStrategy.type).toBe('RollingUpdate');
  });

  test('host network, system-node-critical, every taint tolerated, no API access', () => {
    expectNodeLevel(daemonSet().spec.template.spec);
  });

  test('the init container runs `markroute install` into the host dirs, privileged, from the markroute image', () => {
    const pod = daemonSet().spec.template.spec;
    expect(pod.initContainers).toHaveLength(1);
    const init = pod.initContainers[0];
    expect(init.image).toBe(IMAGE);
    expect(init.command).toEqual([
      '/markroute', 'install', '--bin-dir', '/host/opt/cni/bin', '--conf-dir', '/host/etc/cni/net.d', '--entry-file', '/config/entry.json',
    ]);
    expect(init.args).toBeUndefined();
    expect(init.securityContext).toEqual({ privileged: true });
  });

  test('mounts: every volumeMount has its volume; host paths are the CNI and state dirs, /var/log and the xtables lock', () => {
    const pod = daemonSet().spec.template.spec;
    const init = pod.initContainers[0];
    expect(hostMounts(pod, init)).toEqual({ ...HOST_MOUNTS, '/config': 'configMap:markroute-config' });
    expect(init.volumeMounts.find((m: Obj) => m.mountPath === '/config').readOnly).toBe(true);
    const types = Object.fromEntries(pod.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => [v.hostPath.path, v.hostPath.type]));
    expect(types).toEqual({
      '/opt/cni/bin': 'DirectoryOrCreate', '/etc/cni/net.d': 'DirectoryOrCreate', '/var/lib/cni/markroute': 'DirectoryOrCreate',
      '/var/log': 'Directory', '/run/xtables.lock': 'FileOrCreate',
    });
    // No volume is left unused.
    const used = new Set(init.volumeMounts.map((m: Obj) => m.name));
    expect(pod.volumes.map((v: Obj) => v.name).filter((n: string) => !used.has(n))).toEqual([]);
  });

  test('then `markroute agent`: the same image, privileged, on the node address, probed on /healthz and /readyz, metrics port declared, resources bounded', () => {
    const pod = daemonSet().spec.template.spec;
    expect(pod.containers).toHaveLength(1);
    const agent = pod.containers[0];
    expect(agent.image).toBe(pod.initContainers[0].image);
    expect(agent.command).toEqual(['/markroute', 'agent', '--conf-dir', '/host/etc/cni/net.d', '--entry-file', '/config/entry.json', '--listen', '[$(NODE_IP)]:9743']);
    // kubelet substitutes the node's address, of whichever family is its primary: both are served
    const listen = agent.command.at(-1) as string;
    expect(parseListen(listen.replace('$(NODE_IP)', '10.224.0.5'))).toEqual({ host: '10.224.0.5', port: 9743 });
    expect(parseListen(listen.replace('$(NODE_IP)', 'fd00:10:224::5'))).toEqual({ host: 'fd00:10:224::5', port: 9743 });
    expect(agent.env).toEqual([{ name: 'NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } }]);
    expect(agent.securityContext).toEqual({ privileged: true });
    expect(agent.ports).toEqual([{ name: 'metrics', containerPort: 9743, protocol: 'TCP' }]);
    expect(agent.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(agent.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(Object.keys(agent.resources.requests).sort()).toEqual(['cpu', 'memory']);
    expect(agent.resources.limits.memory).toMatch(/^\d+Mi$/);
    expect(daemonSet().spec.template.metadata.annotations).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9743' });
  });

  test("the agent's mounts: the installer's, less the bin dir (it keeps the entry with the same code), the log read-only", () => {
    const pod = daemonSet().spec.template.spec;
    const agent = pod.containers[0];
    const { '/host/opt/cni/bin': _, ...installMounts } = hostMounts(pod, pod.initContainers[0]);
    expect(hostMounts(pod, agent)).toEqual(installMounts);
    expect(agent.volumeMounts.find((m: Obj) => m.mountPath === '/var/log').readOnly).toBe(true);
    // the CNI log it reads and the state it repairs are the entry's
    const c = parseConfig({ cniVersion: '1.0.0', name: 'pods', ...JSON.parse(configMap().data['entry.json']) });
    expect(c.stateDir).toBe('/var/lib/cni/markroute');
    expect(c.logFile).toBe('/var/log/markroute.log');
  });
});

describe('deploy/configmap.yaml', () => {
  test("holds entry.json, mounted where the init container's --entry-file reads it", () => {
    const cm = configMap();
    const pod = daemonSet().spec.template.spec;
    expect(cm.metadata).toMatchObject({ name: 'markroute-config', namespace: 'kube-system' });
    expect(pod.volumes.find((v: Obj) => v.name === 'config').configMap.name).toBe(cm.metadata.name);
    expect(Object.keys(cm.data)).toEqual(['entry.json']);
  });

  test('entry.json is a valid markroute netconf once the conflist gives it cniVersion and name: transparent-tunnel by default', () => {
    const entry = JSON.parse(configMap().data['entry.json']);
    expect(entry.type).toBe('markroute');
    const c = parseConfig({ cniVersion: '1.0.0', name: 'pods', ...entry });
    expect(c.mode).toBe('transparent-tunnel');
    expect(c.marks).toEqual([{ name: 'default', tag: '', mark: 0x10, mask: 0x10, routing: { table: 100, priority: 32765 } }]);
    expect(c.exemptCIDRs.map((e) => `${e.why} ${e.cidr.text}`)).toEqual(['service 10.96.0.0/12', 'exclude 168.63.129.16/32', 'exclude 169.254.169.254/32']);
    // The state directory and log are where the Job's mounts put them.
    expect(Object.keys(HOST_MOUNTS)).toContain(c.stateDir);
    expect(c.logFile.startsWith('/var/log/')).toBe(true);
    for (const version of ['0.3.1', '0.4.0', '1.1.0']) expect(() => parseConfig({ cniVersion: version, name: 'cbr0', ...entry })).not.toThrow();
  });

  test('entry.json goes into a conflist as `markroute install` would put it there', () => {
    const root = mkdtempSync(join(tmpdir(), 'mr-deploy-'));
    try {
      const confDir = join(root, 'net.d');
      const binDir = join(root, 'bin');
      mkdirSync(confDir);
      mkdirSync(binDir);
      writeFileSync(join(root, 'exe'), 'x');
      writeFileSync(join(confDir, '10-flannel.conflist'), JSON.stringify({ name: 'cbr0', cniVersion: '1.0.0', plugins: [{ type: 'flannel', delegate: {} }, { type: 'portmap' }] }));
      const entryFile = join(root, 'entry.json');
      writeFileSync(entryFile, configMap().data['entry.json']);
      install({ binDir, confDir, entry: JSON.parse(readFileSync(entryFile, 'utf8')), source: join(root, 'exe') });
      const list = JSON.parse(readFileSync(join(confDir, '10-flannel.conflist'), 'utf8'));
      expect(list.plugins.map((p: Obj) => p.type)).toEqual(['flannel', 'markroute', 'portmap']);
      expect(readdirSync(binDir)).toEqual(['markroute']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('deploy/uninstall-job.yaml', () => {
  test('a Job on one node (NODE_NAME placeholder) running `markroute uninstall` once', () => {
    const j = job();
    expect(j.apiVersion).toBe('batch/v1');
    expect(j.metadata).toMatchObject({ name: 'markroute-uninstall-NODE_NAME', namespace: 'kube-system' });
    const pod = j.spec.template.spec;
    expect(pod.nodeName).toBe('NODE_NAME');
    expect(pod.restartPolicy).toBe('Never');
    expect(j.spec.backoffLimit).toBeGreaterThan(0);
    expectNodeLevel(pod);
    expect(pod.containers).toHaveLength(1);
    const c = pod.containers[0];
    expect(c.image).toBe(IMAGE);
    expect(c.command).toEqual(['/markroute', 'uninstall', '--bin-dir', '/host/opt/cni/bin', '--conf-dir', '/host/etc/cni/net.d']);
    expect(c.securityContext).toEqual({ privileged: true });
  });

  test("the same image and host mounts as the DaemonSet's installer (less the ConfigMap)", () => {
    const dsPod = daemonSet().spec.template.spec;
    const jobPod = job().spec.template.spec;
    const { '/config': _, ...installMounts } = hostMounts(dsPod, dsPod.initContainers[0]);
    expect(hostMounts(jobPod, jobPod.containers[0])).toEqual(installMounts);
    expect(installMounts).toEqual(HOST_MOUNTS);
    expect(jobPod.containers[0].image).toBe(dsPod.initContainers[0].image);
  });
});

describe('deploy/', () => {
  test('no RBAC objects, and the manifests say why', () => {
    const files = readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml')).sort();
    expect(files).toEqual(['configmap.yaml', 'daemonset.yaml', 'uninstall-job.yaml']);
    const kinds = files.flatMap((f) => load(f).map((d) => d.kind));
    expect(kinds.filter((k) => /Role|ServiceAccount|Binding/.test(k))).toEqual([]);
    for (const f of ['daemonset.yaml', 'uninstall-job.yaml']) expect(readFileSync(join(DEPLOY, f), 'utf8')).toMatch(/No RBAC: nothing here talks to the API server/);
    // Namespace-free: kube-system exists on every cluster.
    expect(kinds).not.toContain('Namespace');
  });

  test('the Dockerfile puts dist/markroute where the manifests run it, with the tools teardown spawns', () => {
    const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^COPY dist\/markroute \/markroute$/m);
    for (const pkg of ['iproute2', 'iptables', 'ipset', 'nftables']) expect(dockerfile).toMatch(new RegExp(`install .*\\b${pkg}\\b`));
    expect(dockerfile).toMatch(/^FROM debian:bookworm-slim$/m);
  });
});

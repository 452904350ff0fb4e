// markroute chained after the main plugins clusters run, as their results are shaped in their
// sources (test/fixtures/main-plugins/, test/lab/main-plugins.ts): the real ptp makes the pod's
// veth, the lab renames the host side as the plugin names it and reshapes ptp's result as the
// plugin shapes its own, then markroute runs on it. Both backends, IPv4 and dual stack (AWS VPC
// CNI gives a pod one family). Asserted on the kernel: packets across the fabric's NSG, ClusterIP
// traffic kept local, markroute's objects, and the node as before after DEL (with and without netns).
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildOneConfig, findPlugin } from '../lab/cni.ts';
import {
  createLab, familyNumbers, hostVethName, loadPtpConflist, MAIN_PLUGINS, markrouteObjects, NO_MARKROUTE, NODE_IP, NODE_IP6,
  podElements, type Backend, type Conflist, type FamilyNumber, type IpFamily, type Lab, type MainPlugin, type Pod, type Snapshot,
} from '../lab/index.ts';

const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':');

const CLUSTER_IP = { 4: '10.96.0.10', 6: 'fd00:96::a' };
const KUBERNETES = { 4: { ip: '10.96.0.1', backend: NODE_IP }, 6: { ip: 'fd00:96::1', backend: NODE_IP6 } };

/** Which plugins give a pod both families (AWS VPC CNI: one, IPv4 or IPv6). */
const FAMILIES: Record<MainPlugin, IpFamily[]> = {
  'azure-vnet': ['ipv4', 'dual'], calico: ['ipv4', 'dual'], cilium: ['ipv4', 'dual'], 'aws-vpc-cni': ['ipv4'],
  'calico-3.30': ['ipv4', 'dual'], 'aws-vpc-cni-branch': ['ipv4'],
};
const CASES = MAIN_PLUGINS.flatMap((plugin) => (['nftables', 'iptables'] as Backend[]).flatMap((backend) => FAMILIES[plugin].map((family) => ({ plugin, backend, family }))));

const ip = (p: Pod, f: FamilyNumber): string => {
  const a = f === 4 ? p.ip4 : p.ip6;
  if (!a) throw new Error(`pod ${p.name} has no IPv${f} address`);
  return a;
};

/** markroute alone, as libcni runs it for this pod: the list's cached result as prevResult. */
const invokeMarkroute = (lab: Lab, list: Conflist, cmd: 'CHECK' | 'DEL', pod: Pod, netns?: string) =>
  lab.invoke(cmd, buildOneConfig(list, list.plugins[1]!, pod.result, { capabilityArgs: {} } as any), pod, netns === undefined ? {} : { netns });

describe.each(CASES.map((c) => [`${c.plugin}, ${c.backend}, ${c.family}`, c] as const))('after %s', (_, { plugin, backend, family }) => {
  const fams = familyNumbers(family);
  let lab: Lab;
  let list: Conflist;
  let before: Snapshot;
  let pod1: Pod;
  let pod2: Pod;

  beforeAll(async () => {
    lab = await createLab({ cniPath, ipv6: family !== 'ipv4' });
    list = loadPtpConflist(lab, backend, family);
    for (const f of fams) lab.addClusterIP({ ip: KUBERNETES[f].ip, port: 443, proto: 'tcp', backend: { ip: KUBERNETES[f].backend, port: 6443 }, iptables: 'nft' });
    before = lab.snapshot();
    pod1 = await lab.addPod('pod1', list, { standIn: plugin });
    pod2 = await lab.addPod('pod2', list, { standIn: plugin });
    await lab.serve(pod2, 'udp', 5353);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('the host veth is named as the plugin names it, markroute matches it, and passes prevResult through unchanged', () => {
    for (const pod of [pod1, pod2]) {
      expect(pod.hostIf).toBe(hostVethName(plugin, { namespace: pod.k8s.namespace, name: pod.k8s.name, containerId: pod.containerId }));
      const [, markroute] = pod.add!.runs;
      expect(markroute!.stdout).toEqual(markroute!.stdin.prevResult);
      expect(markroute!.stdout.cniVersion).toBe(list.cniVersion);
    }
    const elements = podElements(lab.snapshot());
    expect(elements).toHaveLength(2 * fams.length);
    for (const pod of [pod1, pod2]) for (const f of fams) expect(elements).toContainEqual(expect.objectContaining({ address: ip(pod, f), iface: pod.hostIf }));
  });

  test.each(fams)('pod1 -> pod2 over IPv%i crosses the fabric both ways; the NSG\'s deny stops it', async (f) => {
    expect(await lab.fabricRoundTrip(pod1, ip(pod1, f), ip(pod2, f), 5353, 3)).toEqual({ received: 3, there: 3, back: 3, receivedWhileDenied: 0 });
  });

  test.each(fams)('IPv%i ClusterIP traffic (kube-proxy DNAT) stays on the node', async (f) => {
    const [a, b, vip] = [ip(pod1, f), ip(pod2, f), CLUSTER_IP[f]];
    const svc = lab.addClusterIP({ ip: vip, port: 53, proto: 'udp', backend: { ip: b, port: 5353 }, iptables: 'nft' });
    try {
      lab.nsg.reset();
      const r = await lab.probe(pod1, 'udp', vip, 53, { count: 5, fresh: true });
      expect(r.received).toBe(5);
      expect(lab.nsg.packets(a, b) + lab.nsg.packets(a, vip)).toBe(0);
    } finally {
      svc.remove();
    }
  });

  test('CHECK passes with the cached result', async () => {
    for (const pod of [pod1, pod2]) {
      const r = await invokeMarkroute(lab, list, 'CHECK', pod);
      expect(r.code, r.rawStdout).toBe(0);
    }
  });

  test('DEL with the netns (StopPodSandbox) and without it (RemovePodSandbox, netns gone) leaves the node as it was', async () => {
    const del1 = await lab.delPod(pod1);
    expect(del1.ok, JSON.stringify(del1.runs.map((r) => [r.type, r.code, r.rawStdout]))).toBe(true);
    // pod2: its namespace is gone before markroute's DEL, as after RemovePodSandbox
    lab.removePodNs(pod2);
    const del2 = await invokeMarkroute(lab, list, 'DEL', pod2, '');
    expect(del2.code, del2.rawStdout).toBe(0);
    const after = lab.snapshot();
    expect(markrouteObjects(after)).toEqual(NO_MARKROUTE);
    expect(after).toEqual(before);
  });
});

describe('a Multus secondary interface (net1) and a /proc/<pid>/ns/net netns path, after azure-vnet', () => {
  let lab: Lab;
  let list: Conflist;
  let holder: ChildProcess;

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    list = loadPtpConflist(lab, 'nftables');
  });

  afterAll(async () => {
    holder?.kill('SIGKILL');
    await lab?.destroy();
  });

  test('ADD finds net1\'s peer through /proc/<pid>/ns/net; traffic from net1 crosses the fabric; DEL leaves nothing', async () => {
    const before = lab.snapshot();
    const peer = await lab.addPod('peer', list, { standIn: 'azure-vnet' });
    await lab.serve(peer, 'udp', 5353);
    const pod = lab.createPodNs('multus', { ifname: 'net1' });
    // A process holds the namespace, as a pod's infra container does; the runtime names it by pid.
    holder = spawn('ip', ['netns', 'exec', pod.ns, 'sleep', '600'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 200));
    pod.netnsPath = `/proc/${holder.pid}/ns/net`;
    pod.conflist = list;
    const add = await lab.cni('ADD', pod, { standIn: 'azure-vnet' });
    expect(add.ok, JSON.stringify(add.runs.map((r) => [r.type, r.code, r.rawStdout]))).toBe(true);
    expect(add.runs[1]!.stdin.prevResult).toMatchObject({ interfaces: [{ name: 'net1' }] });
    expect(podElements(lab.snapshot())).toContainEqual(expect.objectContaining({ address: pod.ip4, iface: pod.hostIf }));
    // `markroute plan` asks the kernel the same way, given the netns, and says why it cannot without
    const plan = (...args: string[]) => lab.exec(lab.ns.node, [findPlugin('markroute', lab.cniPath)!, 'plan', '--ifname', 'net1', ...args],
      { input: JSON.stringify(add.runs[1]!.stdin), check: false });
    expect(JSON.parse(plan('--netns', pod.netnsPath, '--json').stdout).hostMatch).toEqual({ iface: pod.hostIf, topology: 'routed', addresses: [{ family: 4, address: pod.ip4 }] });
    // for people: a summary of what would be shared and what is the pod's own
    const summary = plan('--netns', pod.netnsPath).stdout.trimEnd().split('\n');
    expect(summary.slice(0, 3)).toEqual([
      'an ADD would install (nothing is changed):',
      `attachment ${list.name}_plan_net1`,
      `  packets arrive on ${pod.hostIf} (routed) from ${pod.ip4}`,
    ]);
    expect(summary).toContain('shared by the network\'s pods (installed by the first, removed with the last):');
    expect(summary).toContain(`  ip -4 rule fwmark 0x10/0x10 lookup 100 priority 32765`);
    expect(summary).toContain('this pod\'s own:');
    expect(summary.at(-1)).toMatch(new RegExp(`^  nftables element ${pod.ip4!.replace(/\./g, '\\.')} \\. ${pod.hostIf} in set pods4 of markroute-[0-9a-f]{8}`));
    expect(plan().stderr).toContain('prevResult: it lists no host-side interface, and without CNI_NETNS the kernel cannot be asked');
    lab.nsg.reset();
    expect((await lab.probe(pod, 'udp', peer.ip4!, 5353, { count: 2 })).received).toBe(2);
    expect(lab.nsg.packets(pod.ip4!, peer.ip4!)).toBe(2);
    for (const p of [pod, peer]) expect((await lab.delPod(p)).ok).toBe(true);
    expect(lab.snapshot()).toEqual(before);
  });
});

// The marking backends side by side, in lab namespaces only (never the root one), with the real
// ptp plugin and the shipped ptp conflist:
// - `backend: "auto"` resolves to nftables on this node, and the choice is kept while pods are attached;
// - a conflist switched between backends while pods are attached: DEL removes what the pod's ADD
//   installed, whichever backend that was, and keeps the routing the remaining pod needs;
// - `linkGroup`: the pod's host veth gets the group; with nftables the group is matched by one
//   `iifgroup` rule instead of set elements; DEL puts the group back, or finds the veth gone.
// Every scenario ends with the node exactly as before it (iptables-save of both variants, ipset,
// nft ruleset, ip -4/-6 rule, routes of every table, rp_filter).
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  createLab, FABRIC_IP, findPlugin, fwmarkRules, ipsetAdds, loadPtpConflist, markChains, parseStatus, tableRoutes,
  type Backend, type Conflist, type Lab, type ListRun, type Pod, type Snapshot,
} from '../lab/index.ts';
import { markrouteNft, markrouteTables, nftChainRules, nftPodElements } from '../lab/nft.ts';
import { nftTableName, setName } from '../../src/plan.ts';

// MARKROUTE_CNI_PATH (colon-separated) points the suite at another build of the plugin.
const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':');
const NETWORK = 'pods'; // the shipped conflist's name
const TABLE = nftTableName(NETWORK);
const SET4 = setName(NETWORK, 4);
const PORT = 5353;

const describeRun = (r: ListRun) => JSON.stringify(r.runs.map((x) => [x.type, x.command, x.code, x.rawStdout.trim(), x.stderr.trim()]));
const expectOk = (r: ListRun, what: string) => expect(r.ok, `${what}: ${describeRun(r)}`).toBe(true);

/** The conflist with only the plugins of `type` (e.g. markroute's DEL alone, or ptp's). */
const only = (list: Conflist, type: string): Conflist => ({ ...list, plugins: list.plugins.filter((p) => p.type === type) });

/** The shipped ptp conflist with markroute's settings changed. */
function ptpList(lab: Lab, markroute: Record<string, unknown>): Conflist {
  const list = loadPtpConflist(lab, 'iptables');
  Object.assign(list.plugins.find((p) => p.type === 'markroute')!, markroute);
  return list;
}

/** A pod on the same ptp network without markroute: a destination that is never marked itself. */
async function addServer(lab: Lab, list: Conflist): Promise<Pod> {
  const server = await lab.addPod('server', only(list, 'ptp'));
  await lab.serve(server, 'udp', PORT);
  return server;
}

/** Where markroute's marking objects are: iptables chains (both variants), ipsets, nftables tables. */
function marking(s: Snapshot) {
  return {
    chains: Object.values(s.iptables).flatMap(markChains),
    ipsets: s.ipset.split('\n').filter((l) => l.startsWith('create ')).map((l) => l.split(' ')[1]),
    nftTables: markrouteTables(s),
  };
}

/** The node facts the ADDs keep while pods are attached (`backend`: what auto resolved to), as `markroute status --json` shows them. */
const statusFacts = (lab: Lab) =>
  parseStatus(lab.exec(lab.ns.node, [findPlugin('markroute', lab.cniPath)!, 'status', '--json', '--state-dir', join(lab.dir, 'state')], { check: false })).facts;
const records = (lab: Lab) => {
  try {
    return readdirSync(join(lab.dir, 'state', 'attachments'));
  } catch {
    return [];
  }
};

/** The group of a node interface as `ip -j link show` says it ("default" for 0); undefined when it does not exist. */
function linkGroup(lab: Lab, dev: string): string | undefined {
  const r = lab.exec(lab.ns.node, ['ip', '-j', 'link', 'show', 'dev', dev], { check: false });
  if (r.code !== 0) return undefined;
  return (JSON.parse(r.stdout) as { group?: string }[])[0]?.group;
}

/** UDP from a pod to the server (over IPv4 or IPv6): all answered, and every request crossed the fabric (or none did). */
async function expectThroughFabric(lab: Lab, from: Pod, server: Pod, crosses: boolean, family: 4 | 6 = 4): Promise<void> {
  const [src, dst] = family === 4 ? [from.ip4!, server.ip4!] : [from.ip6!, server.ip6!];
  lab.nsg.reset();
  const r = await lab.probe(from, 'udp', dst, PORT, { count: 5 });
  expect(r.received, `${from.name} -> server (IPv${family}) answered`).toBe(5);
  expect(lab.nsg.packets(src, dst), `${from.name} -> server (IPv${family}) through the fabric`).toBe(crosses ? 5 : 0);
  // The server is not marked: its answers go straight back on the node.
  expect(lab.nsg.packets(dst, src)).toBe(0);
}

// ---------------------------------------------------------------------------------------------

describe('backend "auto"', () => {
  let lab: Lab;
  let list: Conflist;
  let server: Pod;
  let before: Snapshot;
  const pods: Pod[] = [];
  /** PATH for a plugin run on a node where `nft list tables` (auto's probe) fails, and nft otherwise works. */
  let brokenNftPath: string;

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    list = ptpList(lab, { backend: 'auto' });
    server = await addServer(lab, list);
    before = lab.snapshot();
    const nft = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p))!;
    const bin = join(lab.dir, 'broken-nft');
    mkdirSync(bin);
    writeFileSync(join(bin, 'nft'), [
      '#!/bin/sh',
      '# markroute probes nftables with `nft list tables`: that alone fails here.',
      'if [ "$1" = list ] && [ "$2" = tables ]; then echo "Error: Could not process rule: Operation not supported" >&2; exit 1; fi',
      `exec ${nft} "$@"`,
      '',
    ].join('\n'));
    chmodSync(join(bin, 'nft'), 0o755);
    brokenNftPath = `${bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('resolves to nftables on this node: our table holds the pod, no MARKROUTE chain, no ipset', async () => {
    const a = await lab.addPod('a', list);
    pods.push(a);
    const s = lab.snapshot();
    expect(marking(s)).toEqual({ chains: [], ipsets: [], nftTables: [TABLE] });
    expect(nftPodElements(s)).toEqual([
      { table: TABLE, set: 'pods4', address: a.ip4, iface: a.hostIf, comment: `default/a ${a.containerId.slice(0, 12)} eth0` },
    ]);
    expect(fwmarkRules(s)).toEqual([expect.objectContaining({ priority: 32765, fwmark: '0x10', fwmask: '0x10', table: '100' })]);
    expect(tableRoutes(s, '100')).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP, dev: 'eth0' })]);
    expect(statusFacts(lab)).toMatchObject({ backend: 'nftables' });
    await expectThroughFabric(lab, a, server, true);
  });

  test('a second pod under the same auto netconf lands in the same table', async () => {
    const b = await lab.addPod('b', list);
    pods.push(b);
    const s = lab.snapshot();
    expect(marking(s)).toEqual({ chains: [], ipsets: [], nftTables: [TABLE] });
    expect(nftPodElements(s).map((e) => `${e.address},${e.iface}`).sort()).toEqual(pods.map((p) => `${p.ip4},${p.hostIf}`).sort());
    expect(fwmarkRules(s)).toHaveLength(1);
  });

  test('with pods attached, an ADD and its DEL run no nft process: the batch goes through libnftables in-process', async () => {
    // An nft first in PATH that notes every run, then runs the real one: the shipped executable must not need it.
    const nft = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p))!;
    const bin = join(lab.dir, 'noted-nft');
    const notes = join(lab.dir, 'nft-runs');
    mkdirSync(bin);
    writeFileSync(notes, '');
    writeFileSync(join(bin, 'nft'), ['#!/bin/sh', `echo "nft $*" >> ${notes}`, `exec ${nft} "$@"`, ''].join('\n'));
    chmodSync(join(bin, 'nft'), 0o755);
    const env = { PATH: `${bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
    // The drift check (which reads the table back with `nft -j list`) not due.
    const steady = ptpList(lab, { backend: 'auto', driftCheckSeconds: 86400 });
    const c = await lab.addPod('steady', steady, { env });
    expect(nftPodElements(lab.snapshot()).map((e) => e.address)).toContain(c.ip4);
    expectOk(await lab.delPod(c, { env }), 'DEL steady');
    expect(nftPodElements(lab.snapshot()).map((e) => e.address)).not.toContain(c.ip4);
    expect(readFileSync(notes, 'utf8')).toBe('');
    // The shim itself works: a run through it is noted.
    lab.exec(lab.ns.node, ['nft', 'list', 'tables'], { env });
    expect(readFileSync(notes, 'utf8')).toBe('nft list tables\n');
  });

  test('the choice is cached while pods are attached: with nft\'s probe failing, a third pod still lands in nftables', async () => {
    const c = await lab.addPod('c', list, { env: { PATH: brokenNftPath } });
    pods.push(c);
    const s = lab.snapshot();
    expect(marking(s)).toEqual({ chains: [], ipsets: [], nftTables: [TABLE] });
    expect(nftPodElements(s).map((e) => `${e.address},${e.iface}`).sort()).toEqual(pods.map((p) => `${p.ip4},${p.hostIf}`).sort());
    expect(statusFacts(lab)).toMatchObject({ backend: 'nftables' });
  });

  test('after the last pod the node is as before; the next auto ADD resolves afresh (iptables where nft\'s probe fails)', async () => {
    for (const p of pods.splice(0)) expectOk(await lab.delPod(p), `DEL ${p.name}`);
    expect(records(lab)).toEqual([]);
    expect(statusFacts(lab)).toBeUndefined();
    expect(lab.snapshot()).toEqual(before);

    const d = await lab.addPod('d', list, { env: { PATH: brokenNftPath } });
    const s = lab.snapshot();
    expect(marking(s).nftTables).toEqual([]);
    expect(marking(s).ipsets).toEqual([SET4]);
    expect(marking(s).chains).toHaveLength(1);
    expect(ipsetAdds(s)).toEqual([`add ${SET4} ${d.ip4},${d.hostIf} comment "default/d ${d.containerId.slice(0, 12)} eth0"`]);
    expect(statusFacts(lab)).toMatchObject({ backend: 'iptables' });
    await expectThroughFabric(lab, d, server, true);
    expectOk(await lab.delPod(d), 'DEL d');
    expect(lab.snapshot()).toEqual(before);
  });

  test('ipv6ProbeRewrite under auto on a node where nft does not work is refused (code 7), changing nothing', async () => {
    const pod = lab.createPodNs('probe6');
    // markroute alone, with a prevResult as ptp would give (the host veth need not exist: nothing is installed)
    const conf = {
      cniVersion: list.cniVersion, name: list.name, ...list.plugins[1], ipv6ProbeRewrite: { from: 'fe80::1234:5678:9abc', to: '2603:1062:0:1:fe80:1234:5678:9abc' },
      prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'vethprobe6' }, { name: 'eth0', sandbox: pod.netnsPath }], ips: [{ address: '10.244.0.200/24', interface: 1 }] },
    };
    const r = await lab.invoke('ADD', conf, pod, { env: { PATH: brokenNftPath } });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatchObject({ code: 7 });
    expect(r.stdout.msg).toContain('ipv6ProbeRewrite');
    expect(r.stdout.msg).toContain('iptables');
    expect(records(lab)).toEqual([]);
    expect(lab.snapshot()).toEqual(before);
    lab.removePodNs(pod);
  });

  // "Resolved at the first ADD and kept while any pod is attached": an ADD whose conflist names a
  // backend outright (a switch, or another network sharing the state directory) must not change
  // what auto resolved to for the pods still attached under auto.
  test('an ADD with an explicit backend does not change what auto resolved to', async () => {
    const a = await lab.addPod('a2', list);
    expect(marking(lab.snapshot()).nftTables).toEqual([TABLE]);
    // the conflist now names iptables for one pod ...
    const x = await lab.addPod('x', ptpList(lab, { backend: 'iptables' }));
    expect(ipsetAdds(lab.snapshot())).toHaveLength(1);
    // ... and says auto again: the next pod lands where auto's first pod is
    const b = await lab.addPod('b2', list);
    const s = lab.snapshot();
    try {
      expect({
        nftables: nftPodElements(s).map((e) => `${e.address},${e.iface}`).sort(),
        ipset: ipsetAdds(s).map((l) => l.split(' ')[2]),
        cached: statusFacts(lab)?.backend,
      }).toEqual({
        nftables: [a, b].map((p) => `${p.ip4},${p.hostIf}`).sort(),
        ipset: [`${x.ip4},${x.hostIf}`],
        cached: 'nftables',
      });
    } finally {
      for (const p of [a, x, b]) expectOk(await lab.delPod(p), `DEL ${p.name}`);
      expect(lab.snapshot()).toEqual(before);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe.each([
  ['iptables', 'nftables'],
  ['nftables', 'iptables'],
] as const)('the conflist switched from %s to %s while a pod is attached', (from, to) => {
  let lab: Lab;
  let listFrom: Conflist;
  let listTo: Conflist;
  let server: Pod;
  let before: Snapshot;

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    // The same network, IPAM and state directory; only `backend` differs.
    listFrom = ptpList(lab, { backend: from });
    listTo = ptpList(lab, { backend: to });
    server = await addServer(lab, listFrom);
    before = lab.snapshot();
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  /** The pod's marking objects in one backend: its ipset element, or its element in our table. */
  const elementsIn = (s: Snapshot, backend: Backend): string[] =>
    backend === 'iptables'
      ? ipsetAdds(s).map((l) => l.replace(/^add \S+ (\S+) .*$/, '$1'))
      : nftPodElements(s).map((e) => `${e.address},${e.iface}`);

  test(`pod1 (${from}), pod2 (${to}), DEL pod1 under the ${to} conflist, DEL pod2: exactly each pod's objects go`, async () => {
    const pod1 = await lab.addPod('pod1', listFrom);
    const s1 = lab.snapshot();
    expect(elementsIn(s1, from)).toEqual([`${pod1.ip4},${pod1.hostIf}`]);
    expect(elementsIn(s1, to)).toEqual([]);

    const pod2 = await lab.addPod('pod2', listTo);
    const s12 = lab.snapshot();
    // each pod where its ADD's backend put it; one ip rule, one policy route, both pods' traffic marked
    expect(elementsIn(s12, from)).toEqual([`${pod1.ip4},${pod1.hostIf}`]);
    expect(elementsIn(s12, to)).toEqual([`${pod2.ip4},${pod2.hostIf}`]);
    expect(marking(s12).chains).toHaveLength(1);
    expect(marking(s12).ipsets).toEqual([SET4]);
    expect(marking(s12).nftTables).toEqual([TABLE]);
    expect(fwmarkRules(s12)).toEqual([expect.objectContaining({ priority: 32765, fwmark: '0x10', fwmask: '0x10', table: '100' })]);
    expect(tableRoutes(s12, '100')).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP, dev: 'eth0' })]);
    expect(s12.rpFilter.eth0).toBe('2');
    await expectThroughFabric(lab, pod1, server, true);
    await expectThroughFabric(lab, pod2, server, true);
    // CHECK with the conflist as it is now finds each pod's objects, in its own backend
    expectOk(await lab.cni('CHECK', pod1, { conflist: listTo }), 'CHECK pod1');
    expectOk(await lab.cni('CHECK', pod2, { conflist: listTo }), 'CHECK pod2');

    // DEL pod1 as the runtime sends it now: with the conflist that says `to`.
    expectOk(await lab.delPod(pod1, { conflist: listTo }), 'DEL pod1');
    const s2 = lab.snapshot();
    // pod1's backend holds nothing any more ...
    if (from === 'iptables') {
      expect(s2.iptables).toEqual(before.iptables);
      expect(s2.ipset).toEqual(before.ipset);
      expect(markrouteNft(s2)).toEqual(markrouteNft(s12));
    } else {
      expect(markrouteNft(s2)).toEqual([]);
      expect(s2.iptables).toEqual(s12.iptables);
      expect(s2.ipset).toEqual(s12.ipset);
    }
    // ... while pod2's objects and the routing it needs are untouched, and it still crosses the fabric
    expect(elementsIn(s2, to)).toEqual([`${pod2.ip4},${pod2.hostIf}`]);
    // (pod1's veth, and its rp_filter entry, went with ptp's DEL)
    const { [pod1.hostIf!]: _gone, ...rp12 } = s12.rpFilter;
    expect({ rules4: s2.rules4, rules6: s2.rules6, table100: tableRoutes(s2, '100'), rp: s2.rpFilter })
      .toEqual({ rules4: s12.rules4, rules6: s12.rules6, table100: tableRoutes(s12, '100'), rp: rp12 });
    expect(records(lab)).toEqual([`${NETWORK}_${pod2.containerId}_eth0.json`]);
    await expectThroughFabric(lab, pod2, server, true);

    expectOk(await lab.delPod(pod2, { conflist: listTo }), 'DEL pod2');
    expect(records(lab)).toEqual([]);
    const after = lab.snapshot();
    expect(after).toEqual(before);
    expect(after.rpFilter.eth0).toBe('1');
    expect(marking(after)).toEqual({ chains: [], ipsets: [], nftTables: [] });
  });
});

// ---------------------------------------------------------------------------------------------

describe('linkGroup with nftables', () => {
  const GROUP = 8;
  let lab: Lab;
  let list: Conflist;
  let server: Pod;
  let before: Snapshot;
  let g1: Pod;
  let g2: Pod;

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    list = ptpList(lab, { backend: 'nftables', linkGroup: GROUP });
    server = await addServer(lab, list);
    before = lab.snapshot();
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('the pods\' host veths get the group; one iifgroup rule marks them; no element per pod', async () => {
    g1 = await lab.addPod('g1', list);
    g2 = await lab.addPod('g2', list);
    expect(linkGroup(lab, g1.hostIf!)).toBe(String(GROUP));
    expect(linkGroup(lab, g2.hostIf!)).toBe(String(GROUP));
    expect(linkGroup(lab, server.hostIf!)).toBe('default');
    expect(linkGroup(lab, 'eth0')).toBe('default');

    const s = lab.snapshot();
    expect(marking(s)).toEqual({ chains: [], ipsets: [], nftTables: [TABLE] });
    expect(nftPodElements(s)).toEqual([]);
    const rules = nftChainRules(lab.ns.node, TABLE);
    expect(rules.filter((r) => /\biifgroup\b/.test(r))).toEqual([expect.stringMatching(new RegExp(`^iifgroup ${GROUP} meta mark set `))]);
    expect(fwmarkRules(s)).toHaveLength(1);
    expectOk(await lab.cni('CHECK', g1), 'CHECK g1');
  });

  test('traffic from a pod in the group is marked and crosses the fabric', async () => {
    await expectThroughFabric(lab, g1, server, true);
    await expectThroughFabric(lab, g2, server, true);
  });

  test('DEL puts the group back to default; the rule stays while another pod of the group is attached', async () => {
    expectOk(await lab.cni('DEL', g1, { conflist: only(list, 'markroute') }), 'markroute DEL g1');
    expect(linkGroup(lab, g1.hostIf!)).toBe('default');
    expect(linkGroup(lab, g2.hostIf!)).toBe(String(GROUP));
    expect(nftChainRules(lab.ns.node, TABLE).filter((r) => /\biifgroup\b/.test(r))).toHaveLength(1);
    await expectThroughFabric(lab, g1, server, false); // no longer marked
    await expectThroughFabric(lab, g2, server, true);
    expectOk(await lab.delPod(g1, { conflist: only(list, 'ptp') }), 'ptp DEL g1');
  });

  test('with the veth already deleted (ptp DEL first), markroute\'s DEL still succeeds and leaves the node as before', async () => {
    const veth = g2.hostIf!;
    expectOk(await lab.cni('DEL', g2, { conflist: only(list, 'ptp') }), 'ptp DEL g2');
    expect(linkGroup(lab, veth)).toBeUndefined();
    const del = await lab.cni('DEL', g2, { conflist: only(list, 'markroute') });
    expectOk(del, 'markroute DEL g2');
    expect([del.runs[0]!.rawStdout, del.runs[0]!.stderr]).toEqual(['', '']);
    lab.removePodNs(g2);
    expect(records(lab)).toEqual([]);
    expect(lab.snapshot()).toEqual(before);
  });
});

// Pods in the group are matched by the table's one iifgroup rule and by nothing else. A later ADD
// whose conflist no longer sets linkGroup rewrites the shared table as it plans it now: the
// group's pods, still attached, must stay marked.
describe('linkGroup removed from the conflist while pods of the group are attached (nftables)', () => {
  const GROUP = 8;
  let lab: Lab;
  let grouped: Conflist;
  let plain: Conflist;
  let server: Pod;
  let before: Snapshot;

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    grouped = ptpList(lab, { backend: 'nftables', linkGroup: GROUP });
    plain = ptpList(lab, { backend: 'nftables' });
    server = await addServer(lab, plain);
    before = lab.snapshot();
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('a pod of the group stays marked (and CHECK agrees) after a pod without linkGroup is added', async () => {
    const g = await lab.addPod('g', grouped);
    await expectThroughFabric(lab, g, server, true);
    const p = await lab.addPod('p', plain);
    try {
      expect(linkGroup(lab, g.hostIf!)).toBe(String(GROUP));
      await expectThroughFabric(lab, p, server, true);
      // g is attached: its packets cross the fabric, and CHECK (which passes) is right to pass
      const check = await lab.cni('CHECK', g);
      lab.nsg.reset();
      const probe = await lab.probe(g, 'udp', server.ip4!, PORT, { count: 5 });
      const rules = nftChainRules(lab.ns.node, TABLE);
      expect({ answered: probe.received, throughFabric: lab.nsg.packets(g.ip4!, server.ip4!), check: check.ok }, `CHECK: ${describeRun(check)}; rules: ${rules.join(' | ')}`)
        .toEqual({ answered: 5, throughFabric: 5, check: true });
      // either the group rule is still there, or g got an element of its own
      const elements = nftPodElements(lab.snapshot()).map((e) => `${e.address},${e.iface}`);
      expect(rules.some((r) => r.startsWith(`iifgroup ${GROUP} `)) || elements.includes(`${g.ip4},${g.hostIf}`)).toBe(true);
    } finally {
      for (const pod of [g, p]) expectOk(await lab.delPod(pod, { conflist: plain }), `DEL ${pod.name}`);
      expect(lab.snapshot()).toEqual(before);
    }
  });
});

// The iifgroup rule is in an inet table: it marks a group pod's IPv6 packets as well, with no
// IPv6 element either.
describe('linkGroup with nftables, dual-stack pods', () => {
  const GROUP = 10;
  let lab: Lab;
  let list: Conflist;
  let server: Pod;
  let before: Snapshot;

  beforeAll(async () => {
    lab = await createLab({ cniPath, ipv6: true });
    list = loadPtpConflist(lab, 'nftables', 'dual');
    Object.assign(list.plugins.find((p) => p.type === 'markroute')!, { linkGroup: GROUP });
    server = await addServer(lab, list);
    before = lab.snapshot();
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('IPv4 and IPv6 from a pod of the group cross the fabric; no element in either family; DEL leaves the node as before', async () => {
    const g = await lab.addPod('g', list);
    expect(g.ip6).toBeDefined();
    expect(linkGroup(lab, g.hostIf!)).toBe(String(GROUP));
    const s = lab.snapshot();
    expect(nftPodElements(s)).toEqual([]);
    expect(fwmarkRules(s, 6)).toEqual([expect.objectContaining({ fwmark: '0x10', fwmask: '0x10', table: '100' })]);
    await expectThroughFabric(lab, g, server, true, 4);
    await expectThroughFabric(lab, g, server, true, 6);
    expectOk(await lab.cni('CHECK', g), 'CHECK g');
    expectOk(await lab.delPod(g), 'DEL g');
    expect(records(lab)).toEqual([]);
    expect(lab.snapshot()).toEqual(before);
  });
});

describe('linkGroup with iptables', () => {
  const GROUP = 9;
  let lab: Lab;
  let list: Conflist;
  let server: Pod;
  let before: Snapshot;

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    list = ptpList(lab, { backend: 'iptables', linkGroup: GROUP });
    server = await addServer(lab, list);
    before = lab.snapshot();
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('the group is set, the pod is matched by its ipset element, its traffic crosses the fabric; DEL puts the group back', async () => {
    const p = await lab.addPod('p', list);
    expect(linkGroup(lab, p.hostIf!)).toBe(String(GROUP));
    const s = lab.snapshot();
    expect(marking(s).nftTables).toEqual([]);
    expect(marking(s).chains).toHaveLength(1);
    expect(ipsetAdds(s)).toEqual([`add ${SET4} ${p.ip4},${p.hostIf} comment "default/p ${p.containerId.slice(0, 12)} eth0"`]);
    await expectThroughFabric(lab, p, server, true);
    expectOk(await lab.cni('CHECK', p), 'CHECK p');

    expectOk(await lab.cni('DEL', p, { conflist: only(list, 'markroute') }), 'markroute DEL p');
    expect(linkGroup(lab, p.hostIf!)).toBe('default');
    expect(ipsetAdds(lab.snapshot())).toEqual([]);
    await expectThroughFabric(lab, p, server, false);
    expectOk(await lab.delPod(p, { conflist: only(list, 'ptp') }), 'ptp DEL p');
    expect(records(lab)).toEqual([]);
    expect(lab.snapshot()).toEqual(before);
  });
});

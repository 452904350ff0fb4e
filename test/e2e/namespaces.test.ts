// Pods selected by their Kubernetes namespace (K8S_POD_NAMESPACE in CNI_ARGS, as containerd and
// CRI-O send it), both backends, real ptp pods:
// - annotated mode, the shipped conflists/50-ptp-team-vpn.conflist (entry `team-vpn` lists the
//   namespace team-vpn, routed to the VPN gateway behind vpn0) plus an entry `hairpin` listing
//   team-hairpin, routed by the node's default route (the fabric): a pod of team-vpn, a pod of
//   team-vpn whose annotation names `hairpin`, a pod of team-hairpin, a pod of default (no entry);
// - transparent-tunnel mode with excludeNamespaces: a pod of kube-system (excluded), one of default.
// Asserted on the kernel (set elements, ip rules, policy routes, packets where they leave the node:
// the gateway, the fabric's NSG), then what status, explain and the log say, then the DELs (one
// without CNI_ARGS) leave the node as it was.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  addGateway, addOutsideAddress, ArrivalCounter, createLab, FABRIC_IP, findPlugin, fwmarkRules, loadConflist, loadPtpConflist,
  markrouteLog, markrouteObjects, NO_MARKROUTE, OUTSIDE_IP, parseStatus, podElements, tableRoutes, VPN_GATEWAY_IP, VPN_IF,
  type Backend, type Conflist, type Gateway, type Lab, type Pod, type Snapshot,
} from '../lab/index.ts';
import { fnv1a } from '../../src/net/hash.ts';
import { nftSetName, nftTableName, setName } from '../../src/plan.ts';

const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':');
const ANNOTATION = 'cni.fwmark.net/name';
const PORT = 5353;

/** The set of one entry's IPv4 pods, as podElements names it for the backend. */
const setOf = (backend: Backend, network: string, entry: string) =>
  backend === 'nftables' ? `${nftTableName(network)}/${nftSetName(4, fnv1a(entry))}` : setName(network, 4, fnv1a(entry));

/** What `markroute status --json` and `explain` print in this lab. */
function cli(lab: Lab) {
  const bin = findPlugin('markroute', lab.cniPath)!;
  const stateDir = join(lab.dir, 'state');
  return {
    status: () => parseStatus(lab.exec(lab.ns.node, [bin, 'status', '--json', '--state-dir', stateDir], { check: false })),
    statusText: () => lab.exec(lab.ns.node, [bin, 'status', '--state-dir', stateDir]).stdout,
    explain: (pod: Pod, to: string) => lab.exec(lab.ns.node, [bin, 'explain', pod.containerId.slice(0, 12), '--to', to, '--state-dir', stateDir]).stdout,
  };
}

const selectionOf = (lab: Lab, pod: Pod) => cli(lab).status().attachments.find((a) => a.id.includes(pod.containerId))?.selection;

describe.each(['nftables', 'iptables'] as Backend[])('annotated mode: entries listing namespaces (%s backend)', (backend) => {
  let lab: Lab;
  let gw: Gateway;
  let fabric: ArrivalCounter;
  let list: Conflist;
  let before: Snapshot;
  let vpn: Pod; // team-vpn, no annotation
  let overridden: Pod; // team-vpn, annotated hairpin
  let hairpin: Pod; // team-hairpin, no annotation
  let plain: Pod; // default, no annotation

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    gw = addGateway(lab);
    addOutsideAddress(lab.ns.fabric);
    fabric = new ArrivalCounter(lab.ns.fabric);
    fabric.install();
    list = loadConflist(lab, '50-ptp-team-vpn.conflist', undefined, backend);
    const mr = list.plugins[1]! as Record<string, any>;
    mr.marks.hairpin = { mark: '0x20', mask: '0x20', table: 124, namespaces: ['team-hairpin'] };
    before = lab.snapshot();
    vpn = await lab.addPod('vpn', list, { k8sNamespace: 'team-vpn' });
    overridden = await lab.addPod('overridden', list, { k8sNamespace: 'team-vpn', annotations: { [ANNOTATION]: 'hairpin' } });
    hairpin = await lab.addPod('hairpin', list, { k8sNamespace: 'team-hairpin' });
    plain = await lab.addPod('plain', list, { k8sNamespace: 'default' });
    await lab.serve(gw.ns, 'udp', PORT);
    await lab.serve(lab.ns.fabric, 'udp', PORT);
    await lab.serve(plain, 'udp', PORT);
    await lab.serve(overridden, 'udp', PORT);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('each pod is in the set of the entry that selected it; the pod of no listed namespace is in none', () => {
    const elements = podElements(lab.snapshot()).map((e) => [e.set, e.address, e.iface]).sort();
    expect(elements).toEqual([
      [setOf(backend, list.name, 'team-vpn'), vpn.ip4, vpn.hostIf],
      [setOf(backend, list.name, 'hairpin'), overridden.ip4, overridden.hostIf],
      [setOf(backend, list.name, 'hairpin'), hairpin.ip4, hairpin.hostIf],
    ].sort());
  });

  test('rules and routes as the entries say: 0x10 to table 123 via the VPN gateway, 0x20 to table 124 via the node\'s default route', () => {
    const s = lab.snapshot();
    expect(fwmarkRules(s).map((r) => [r.fwmark, r.fwmask, r.table, r.priority]).sort()).toEqual([['0x10', '0x10', '123', 32765], ['0x20', '0x20', '124', 32765]]);
    expect(tableRoutes(s, '123')).toEqual([expect.objectContaining({ dst: 'default', gateway: VPN_GATEWAY_IP, dev: VPN_IF })]);
    expect(tableRoutes(s, '124')).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP, dev: 'eth0' })]);
  });

  test('traffic: the team-vpn pod leaves through the VPN; the others through the fabric, where the overridden and the team-hairpin pods hairpin to a pod of the node and the unselected pod does not', async () => {
    gw.counter.reset();
    fabric.reset();
    expect((await lab.probe(vpn, 'udp', OUTSIDE_IP, PORT, { count: 3 })).received).toBe(3);
    expect([gw.counter.packets(vpn.ip4!, OUTSIDE_IP), fabric.packets(vpn.ip4!, OUTSIDE_IP)]).toEqual([3, 0]);
    for (const p of [overridden, plain]) {
      expect((await lab.probe(p, 'udp', OUTSIDE_IP, PORT, { count: 2 })).received).toBe(2);
      expect([gw.counter.packets(p.ip4!, OUTSIDE_IP), fabric.packets(p.ip4!, OUTSIDE_IP)]).toEqual([0, 2]);
    }
    lab.nsg.reset();
    for (const p of [overridden, hairpin]) {
      expect((await lab.probe(p, 'udp', plain.ip4!, PORT, { count: 3 })).received).toBe(3);
      expect(lab.nsg.packets(p.ip4!, plain.ip4!)).toBe(3);
    }
    expect((await lab.probe(plain, 'udp', overridden.ip4!, PORT, { count: 3 })).received).toBe(3);
    expect(lab.nsg.packets(plain.ip4!, overridden.ip4!)).toBe(0);
  });

  test('status says what selected each pod; the record of the pod passed through holds nothing', () => {
    expect(selectionOf(lab, vpn)).toEqual({ by: 'namespace', mark: 'team-vpn', reason: 'its namespace team-vpn is listed by marks.team-vpn' });
    expect(selectionOf(lab, overridden)).toEqual({
      by: 'annotation', mark: 'hairpin', reason: `its annotation ${ANNOTATION}=hairpin names marks.hairpin (over marks.team-vpn, which lists its namespace team-vpn)`,
    });
    expect(selectionOf(lab, hairpin)).toMatchObject({ by: 'namespace', mark: 'hairpin' });
    const why = `the pod has no ${ANNOTATION} annotation, and its namespace default is listed by no entry of marks`;
    expect(selectionOf(lab, plain)).toEqual({ by: 'none', reason: why });
    const status = cli(lab).status();
    expect(status.attachments).toHaveLength(4);
    expect(status.objects.filter((o) => o.perPod).map((o) => o.key).filter((k) => k.includes(`${plain.ip4},`))).toEqual([]);
    expect(cli(lab).statusText()).toContain(`default/plain  via ${plain.hostIf}  ${plain.ip4}  since `);
    expect(cli(lab).statusText()).toContain(`    not marked (none): ${why}`);
    expect(cli(lab).statusText()).toContain('    marked "team-vpn" (by namespace): its namespace team-vpn is listed by marks.team-vpn');
  });

  test('CHECK passes for every pod, the one passed through included (its record holds nothing to check)', async () => {
    for (const p of [vpn, overridden, hairpin, plain]) {
      const check = await lab.cni('CHECK', p);
      expect(check.ok, JSON.stringify(check.runs.map((r) => r.rawStdout))).toBe(true);
    }
  });

  test('explain says why, for a marked and an unmarked pod', () => {
    const marked = cli(lab).explain(vpn, OUTSIDE_IP);
    expect(marked).toContain('  from pod team-vpn/vpn: marked "team-vpn" (by namespace): its namespace team-vpn is listed by marks.team-vpn');
    expect(marked).toMatch(/marked 0x10\/0x10 \(mark "team-vpn"\) by the set element/);
    expect(marked).toContain(`the kernel routes it via ${VPN_GATEWAY_IP} dev ${VPN_IF} (table 123)`);
    const unmarked = cli(lab).explain(plain, overridden.ip4!);
    expect(unmarked).toContain(`  from pod default/plain: not marked (none): the pod has no ${ANNOTATION} annotation`);
    expect(unmarked).toContain(`${plain.ip4} arriving on ${plain.hostIf} is in none of its sets: not marked\n`);
  });

  test('the log says why the unselected pod was passed through, and what selected the others', () => {
    const adds = markrouteLog(lab).filter((l) => l.command === 'ADD');
    const of = (p: Pod) => adds.find((l) => l.containerId === p.containerId);
    expect(of(plain)).toMatchObject({ level: 40, msg: `ADD ok: not marked: the pod has no ${ANNOTATION} annotation, and its namespace default is listed by no entry of marks`, selection: { by: 'none' } });
    expect(of(vpn)).toMatchObject({ level: 30, msg: 'ADD ok', selection: { by: 'namespace', mark: 'team-vpn' } });
  });

  test('`markroute plan --pod-namespace` says what a pod of that namespace would get, and changes nothing', () => {
    const bin = findPlugin('markroute', lab.cniPath)!;
    const netconf = JSON.stringify({ ...list.plugins[1], name: list.name, cniVersion: list.cniVersion, prevResult: hairpin.result });
    const unchanged = lab.snapshot();
    const plan = (namespace: string) => lab.exec(lab.ns.node, [bin, 'plan', '--container-id', 'planned', '--pod-namespace', namespace], { input: netconf }).stdout;
    expect(plan('team-hairpin')).toContain('an ADD would install (nothing is changed)');
    expect(plan('team-hairpin')).toContain('ip -4 rule fwmark 0x20/0x20 lookup 124 priority 32765');
    expect(plan('team-vpn')).toContain('ip -4 rule fwmark 0x10/0x10 lookup 123 priority 32765');
    expect(plan('default')).toBe(`nothing would be installed: not marked: the pod has no ${ANNOTATION} annotation, and its namespace default is listed by no entry of marks\n`);
    expect(lab.snapshot()).toEqual(unchanged);
  });

  test('DEL without CNI_ARGS removes what the record says; after the last DEL the node is as it was', async () => {
    expect((await lab.delPod(vpn, { env: { CNI_ARGS: '' } })).ok).toBe(true);
    let s = lab.snapshot();
    // team-vpn's rule and route went with its only pod; hairpin's stay
    expect(fwmarkRules(s).map((r) => r.table)).toEqual(['124']);
    expect(tableRoutes(s, '123')).toEqual([]);
    expect(podElements(s).map((e) => e.address).sort()).toEqual([overridden.ip4, hairpin.ip4].sort());
    // the pod passed through held nothing: its DEL takes nothing of markroute's
    expect((await lab.delPod(plain, { env: { CNI_ARGS: '' } })).ok).toBe(true);
    expect(markrouteObjects(lab.snapshot())).toEqual(markrouteObjects(s));
    expect(podElements(lab.snapshot())).toEqual(podElements(s));
    for (const p of [overridden, hairpin]) expect((await lab.delPod(p)).ok).toBe(true);
    s = lab.snapshot();
    expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);
    expect(s).toEqual(before);
    expect(cli(lab).status().attachments).toEqual([]);
  });
});

describe.each(['nftables', 'iptables'] as Backend[])('transparent-tunnel mode: excludeNamespaces (%s backend)', (backend) => {
  let lab: Lab;
  let list: Conflist;
  let before: Snapshot;
  let system: Pod; // kube-system: excluded
  let app: Pod; // default: marked

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    list = loadPtpConflist(lab, backend);
    (list.plugins[1]! as Record<string, unknown>).excludeNamespaces = ['kube-system', 'monitoring'];
    before = lab.snapshot();
    system = await lab.addPod('system', list, { k8sNamespace: 'kube-system' });
    app = await lab.addPod('app', list, { k8sNamespace: 'default' });
    await lab.serve(system, 'udp', PORT);
    await lab.serve(app, 'udp', PORT);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('the excluded namespace\'s pod is in no set; the other pod is, with the rule and route of the network', () => {
    const s = lab.snapshot();
    expect(podElements(s).map((e) => [e.address, e.iface])).toEqual([[app.ip4, app.hostIf]]);
    expect(fwmarkRules(s)).toEqual([expect.objectContaining({ fwmark: '0x10', fwmask: '0x10', table: '100' })]);
    expect(tableRoutes(s, '100')).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP, dev: 'eth0' })]);
  });

  test('traffic: the marked pod\'s packets to the excluded pod cross the fabric, the excluded pod\'s stay on the node', async () => {
    lab.nsg.reset();
    expect((await lab.probe(app, 'udp', system.ip4!, PORT, { count: 3 })).received).toBe(3);
    expect(lab.nsg.packets(app.ip4!, system.ip4!)).toBe(3);
    expect((await lab.probe(system, 'udp', app.ip4!, PORT, { count: 3 })).received).toBe(3);
    expect(lab.nsg.packets(system.ip4!, app.ip4!)).toBe(0);
  });

  test('the log, status and explain say why the excluded pod is not marked', () => {
    const add = markrouteLog(lab).find((l) => l.command === 'ADD' && l.containerId === system.containerId);
    expect(add).toMatchObject({ level: 40, msg: 'ADD ok: not marked: its namespace kube-system is in excludeNamespaces', selection: { by: 'excluded' } });
    expect(selectionOf(lab, system)).toEqual({ by: 'excluded', reason: 'its namespace kube-system is in excludeNamespaces' });
    expect(selectionOf(lab, app)).toEqual({ by: 'network', mark: 'default', reason: `transparent-tunnel marks every pod of network ${list.name}; its namespace default is not in excludeNamespaces` });
    expect(cli(lab).explain(system, app.ip4!)).toContain('  from pod kube-system/system: not marked (excluded): its namespace kube-system is in excludeNamespaces');
  });

  test('the DELs leave the node as it was', async () => {
    for (const p of [system, app]) expect((await lab.delPod(p)).ok).toBe(true);
    const s = lab.snapshot();
    expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);
    expect(s).toEqual(before);
  });
});

// markroute's lifecycle as runtimes drive it, for both backends: DEL in all the shapes containerd
// sends it, re-ADD, a conflist changed between ADD and DEL, ref-counted shared objects, CHECK and
// the CLI's status/reconcile after someone else's change, GC, and dual-stack pods. One lab per
// backend (a dual-stack node; IPv4 pods but for the dual-stack test); every test leaves the node as
// it found it (snapshot equality), so the tests are independent.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import {
  buildOneConfig, createLab, exemptCIDRs, FABRIC_IP, FABRIC_IP6, FABRIC_LL6, findPlugin, fwmarkRules, loadPtpConflist, markChains, markrouteObjects,
  NO_MARKROUTE, NODE_IP, nftRuleHandle, nftTable, podElements, SERVICE_CIDR6, tableRoutes,
  type Backend, type Conflist, type Lab, type Pod, type Snapshot,
} from '../lab/index.ts';

const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':');

/** `address,iface` of a pod's IPv4 element (how the iptables backend writes it). */
const elementOf = (p: Pod, address = p.ip4!) => `${address},${p.hostIf}`;
const elements = (s: Snapshot) => podElements(s).map((e) => `${e.address},${e.iface}`).sort();

/**
 * What "someone else" does to markroute's marking objects, per backend. `name` is the chain
 * (iptables, IPv4, iptables-nft since kube-proxy is there) or the table (nftables).
 */
interface Meddler {
  name(s: Snapshot): string;
  /** the key `markroute status` shows for that object */
  statusKey(name: string): string;
  /** all marking rules gone, e.g. a firewall reload */
  flush(name: string): void;
  /** the pod set (ipset or the table's pods4) gone too, after a flush */
  destroySet(s: Snapshot): void;
  delElement(s: Snapshot, p: Pod): void;
  dropDnatExemption(name: string): void;
  dropServiceExemption(name: string): void;
  /** how many PREROUTING hooks and MARK rules markroute has in the snapshot */
  hooksAndMarkRules(s: Snapshot): [number, number];
}

function meddler(lab: Lab, backend: Backend): Meddler {
  const node = (argv: string[]) => lab.exec(lab.ns.node, argv);
  if (backend === 'iptables') {
    return {
      name: (s) => markChains(s.iptables.nft4)[0]!,
      statusKey: (chain) => `markChain/4/nft/${chain}`,
      flush: (chain) => node(['iptables-nft', '-t', 'mangle', '-F', chain]),
      destroySet: (s) => node(['ipset', 'destroy', podElements(s)[0]!.set]),
      delElement: (s, p) => node(['ipset', 'del', podElements(s).find((e) => e.address === p.ip4)!.set, elementOf(p)]),
      dropDnatExemption: (chain) => node(['iptables-nft', '-t', 'mangle', '-D', chain, '-m', 'conntrack', '--ctstate', 'DNAT', '-m', 'comment', '--comment', 'markroute exempt kube-proxy DNAT', '-j', 'RETURN']),
      dropServiceExemption: (chain) => node(['iptables-nft', '-t', 'mangle', '-D', chain, '1']),
      hooksAndMarkRules: (s) => {
        const lines = s.iptables.nft4.split('\n');
        return [lines.filter((l) => /^-A PREROUTING -j MARKROUTE-/.test(l)).length, lines.filter((l) => l.startsWith('-A MARKROUTE-') && l.includes('-j MARK --set-xmark')).length];
      },
    };
  }
  return {
    name: (s) => markrouteObjects(s).nftTables[0]!,
    statusKey: (table) => `nftTable/${table}`,
    flush: (table) => node(['nft', 'flush', 'chain', 'inet', table, 'prerouting']),
    destroySet: (s) => node(['nft', 'delete', 'set', 'inet', markrouteObjects(s).nftTables[0]!, 'pods4']),
    delElement: (s, p) => node(['nft', 'delete', 'element', 'inet', markrouteObjects(s).nftTables[0]!, 'pods4', `{ ${p.ip4} . "${p.hostIf}" }`]),
    dropDnatExemption: (table) => node(['nft', 'delete', 'rule', 'inet', table, 'prerouting', 'handle', String(nftRuleHandle(lab, table, 'prerouting', 'ct status dnat return'))]),
    dropServiceExemption: (table) => node(['nft', 'delete', 'element', 'inet', table, 'exempt4', '{ 10.96.0.0/12 }']),
    hooksAndMarkRules: (s) => {
      const chains = markrouteObjects(s).nftTables.flatMap((t) => Object.values(nftTable(s, t)!.chains));
      return [chains.filter((c) => c.hook === 'prerouting').length, chains.flatMap((c) => c.rules).filter((r) => r.includes('meta mark set')).length];
    },
  };
}

describe.each(['iptables', 'nftables'] as const)('markroute lifecycle (10-ptp-markroute.conflist), %s backend', (backend) => {
  let lab: Lab;
  let list: Conflist;
  let stateDir: string;
  let baseline: Snapshot;
  let bin: string;
  let meddle: Meddler;
  /** MARK rules one network has: iptables one per family with pods (IPv4 here), nftables one per family always. */
  const MARK_RULES = backend === 'iptables' ? 1 : 2;

  const records = () => {
    try {
      return readdirSync(join(stateDir, 'attachments'));
    } catch {
      return [];
    }
  };
  /** markroute alone, as libcni would run it for this pod (prevResult = ptp's result). */
  const invokeMarkroute = (cmd: 'ADD' | 'DEL' | 'CHECK', pod: Pod, l: Conflist = list) =>
    lab.invoke(cmd, buildOneConfig(l, l.plugins[1]!, pod.add!.runs[0]!.stdout, { capabilityArgs: {} } as any), pod);
  const cli = (...args: string[]) => lab.exec(lab.ns.node, [bin, ...args, '--state-dir', stateDir], { check: false });
  const check = (pod: Pod) => lab.cni('CHECK', pod);
  const ok = (run: { ok: boolean; runs: { type: string; code: number; rawStdout: string; stderr: string }[] }) =>
    expect(run.ok, JSON.stringify(run.runs.map((r) => [r.type, r.code, r.rawStdout, r.stderr]))).toBe(true);

  beforeAll(async () => {
    lab = await createLab({ cniPath, ipv6: true });
    list = loadPtpConflist(lab, backend);
    stateDir = list.plugins[1]!.stateDir as string;
    bin = findPlugin('markroute', lab.cniPath)!;
    meddle = meddler(lab, backend);
    // kube-proxy (iptables-nft) with the `kubernetes` service, there before any pod as on a real node
    lab.addClusterIP({ ip: '10.96.0.1', port: 443, proto: 'tcp', backend: { ip: NODE_IP, port: 6443 }, iptables: 'nft' });
    baseline = lab.snapshot();
  });

  afterEach(async () => {
    // Whatever a test did, it must leave the node clean; a failed test's pods are removed here.
    for (const p of [...lab.pods.values()]) await lab.delPod(p);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  const expectClean = () => {
    expect(records()).toEqual([]);
    const s = lab.snapshot();
    expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);
    expect(s).toEqual(baseline);
  };

  /** The one marking object (chain or table) of the network, and nothing of the other backend. */
  const expectOneMarkingObject = (s: Snapshot) => {
    const o = markrouteObjects(s);
    if (backend === 'iptables') {
      expect(o.chains).toEqual({ legacy4: [], nft4: [expect.stringMatching(/^MARKROUTE-/)], legacy6: [], nft6: [] });
      expect(o.nftTables).toEqual([]);
    } else {
      expect(o.nftTables).toHaveLength(1);
      expect({ chains: o.chains, ipsets: o.ipsets }).toEqual({ chains: NO_MARKROUTE.chains, ipsets: [] });
    }
  };

  test('DEL twice succeeds with empty stdout; then containerd\'s RemovePodSandbox DEL (no netns, no prevResult) succeeds too', async () => {
    const p = await lab.addPod('twice', list);
    expect(elements(lab.snapshot())).toEqual([elementOf(p)]);
    const first = await lab.delPod(p, { keepNs: true });
    ok(first);
    expect(first.runs[0]!.type).toBe('markroute');
    expect(first.runs[0]!.rawStdout).toBe('');
    const second = await lab.cni('DEL', p);
    ok(second);
    expect(second.runs[0]!.rawStdout).toBe('');
    const remove = await lab.cni('DEL', p, { netns: '', prevResult: null });
    ok(remove);
    expect(remove.runs[0]!.stdin).not.toHaveProperty('prevResult');
    expect(remove.runs[0]!.rawStdout).toBe('');
    lab.removePodNs(p);
    expectClean();
  });

  test('a DEL without prevResult and netns as the only DEL removes everything ADD installed (from the record)', async () => {
    const p = await lab.addPod('blind', list);
    expect(records()).toHaveLength(1);
    const del = await lab.cni('DEL', p, { netns: '', prevResult: null });
    ok(del);
    expect(del.runs[0]!.stdin).not.toHaveProperty('prevResult');
    const s = lab.snapshot();
    expect(podElements(s)).toEqual([]);
    expect(s.ipset).toBe('');
    expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);
    expect(s.rpFilter.eth0).toBe('1');
    expect(records()).toEqual([]);
    lab.removePodNs(p); // the veth goes with the pod's namespace (ptp could not enter it without CNI_NETNS)
    expectClean();
  });

  test('re-ADD of the same attachment leaves no duplicate set element, rule, hook or ip rule', async () => {
    const p1 = await lab.addPod('readd1', list);
    const p2 = await lab.addPod('readd2', list);
    const once = lab.snapshot();
    for (let i = 0; i < 2; i++) {
      const again = await invokeMarkroute('ADD', p1);
      expect(again.code, again.rawStdout).toBe(0);
      expect(again.stdout).toEqual(p1.result);
    }
    const twice = lab.snapshot();
    expect(twice).toEqual(once);
    expect(elements(twice)).toEqual([elementOf(p1), elementOf(p2)].sort());
    expectOneMarkingObject(twice);
    expect(meddle.hooksAndMarkRules(twice)).toEqual([1, MARK_RULES]);
    expect(fwmarkRules(twice)).toHaveLength(1);
    expect(tableRoutes(twice, '100')).toHaveLength(1);
    expect(records()).toHaveLength(2);
    ok(await lab.delPod(p1));
    ok(await lab.delPod(p2));
    expectClean();
  });

  test('conflist changed between ADD and DEL (table 100 -> 200, other serviceCIDRs): DEL removes what the original ADD installed', async () => {
    const changed = structuredClone(list);
    Object.assign(changed.plugins[1]!, { table: 200, serviceCIDRs: ['10.0.0.0/16'] });
    const old = await lab.addPod('old', list);
    const neu = await lab.addPod('new', changed);
    let s = lab.snapshot();
    expect(fwmarkRules(s).map((r) => r.table).sort()).toEqual(['100', '200']);
    expect(tableRoutes(s, '100')).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP, dev: 'eth0' })]);
    expect(tableRoutes(s, '200')).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP, dev: 'eth0' })]);
    expect(podElements(s)).toHaveLength(2);

    // The runtime reads the conflist as it is now: the old pod's DEL comes with table 200.
    ok(await lab.delPod(old, { conflist: changed }));
    s = lab.snapshot();
    expect(fwmarkRules(s)).toEqual([expect.objectContaining({ priority: 32765, fwmark: '0x10', fwmask: '0x10', table: '200' })]);
    expect(tableRoutes(s, '100')).toEqual([]);
    expect(tableRoutes(s, '200')).toHaveLength(1);
    expect(elements(s)).toEqual([elementOf(neu)]);
    expectOneMarkingObject(s);
    expect(s.rpFilter.eth0).toBe('2');

    // ...and the new pod's DEL with the file changed back: the last DEL leaves the node clean.
    ok(await lab.delPod(neu, { conflist: list }));
    expectClean();
  });

  // The chain (table) is shared by the network: a pod ADDed with other serviceCIDRs rewrites it for
  // everyone (newest plan wins); when that pod goes, it must be as the remaining pods planned it,
  // or their ClusterIP traffic would be marked and hairpinned.
  test('conflist changed and rolled back: once the pod ADDed with other serviceCIDRs is gone, the remaining pods\' serviceCIDRs are exempt again', async () => {
    const changed = structuredClone(list);
    Object.assign(changed.plugins[1]!, { serviceCIDRs: ['10.0.0.0/16'] });
    const old = await lab.addPod('rb-old', list);
    const backendPod = await lab.addPod('rb-backend', list);
    await lab.serve(backendPod, 'udp', 5353);
    const neu = await lab.addPod('rb-new', changed);
    ok(await lab.delPod(neu, { conflist: list })); // the file was rolled back meanwhile
    const svc = lab.addClusterIP({ ip: '10.96.0.10', port: 53, proto: 'udp', backend: { ip: backendPod.ip4!, port: 5353 }, iptables: 'nft' });
    try {
      lab.nsg.reset();
      const r = await lab.probe(old, 'udp', '10.96.0.10', 53, { count: 10, fresh: true });
      expect(r.received).toBe(10);
      const exempt = exemptCIDRs(lab.snapshot(), 4);
      expect({
        // what the remaining pods' records planned, and what is in the kernel
        serviceExemption: exempt.includes('10.96.0.0/12'),
        departedPodsExemption: exempt.includes('10.0.0.0/16'),
        serviceFlowsOverTheFabric: lab.nsg.packets(old.ip4!, backendPod.ip4!),
        checkOfUntouchedPod: (await check(old)).ok,
      }).toEqual({ serviceExemption: true, departedPodsExemption: false, serviceFlowsOverTheFabric: 0, checkOfUntouchedPod: true });
    } finally {
      svc.remove();
    }
    ok(await lab.delPod(old));
    ok(await lab.delPod(backendPod));
    expectClean();
  });

  test('shared objects stay while any pod remains (its traffic still crosses the fabric) and go with the last one', async () => {
    const [p1, p2, p3] = [await lab.addPod('sh1', list), await lab.addPod('sh2', list), await lab.addPod('sh3', list)];
    await lab.serve(p3, 'udp', 5353);
    ok(await lab.delPod(p1));
    const s = lab.snapshot();
    expect(fwmarkRules(s)).toHaveLength(1);
    expect(tableRoutes(s, '100')).toHaveLength(1);
    expectOneMarkingObject(s);
    expect(meddle.hooksAndMarkRules(s)).toEqual([1, MARK_RULES]);
    expect(elements(s)).toEqual([elementOf(p2), elementOf(p3)].sort());
    expect(s.rpFilter.eth0).toBe('2');
    lab.nsg.reset();
    const r = await lab.probe(p2, 'udp', p3.ip4!, 5353, { count: 3 });
    expect(r.received).toBe(3);
    expect(lab.nsg.packets(p2.ip4!, p3.ip4!)).toBe(3);
    expect(lab.nsg.packets(p3.ip4!, p2.ip4!)).toBe(3);
    ok(await lab.delPod(p2));
    expect(fwmarkRules(lab.snapshot())).toHaveLength(1);
    ok(await lab.delPod(p3));
    expectClean();
  });

  test('CHECK passes on an attached pod, fails naming what was removed behind its back; status reports the drift and reconcile repairs it', async () => {
    const p = await lab.addPod('chk', list);
    ok(await check(p));

    // someone deletes the ip rule
    lab.exec(lab.ns.node, ['ip', 'rule', 'del', 'priority', '32765', 'fwmark', '0x10/0x10', 'lookup', '100']);
    let c = await check(p);
    expect(c.ok).toBe(false);
    const failed = c.runs.at(-1)!;
    expect(failed.type).toBe('markroute');
    expect(failed.code).not.toBe(0);
    expect(failed.stdout).toMatchObject({ code: expect.any(Number) });
    expect(failed.stdout.msg).toMatch(/rule/);
    expect(failed.stdout.msg).toMatch(/32765/);
    expect(failed.stdout.msg).toMatch(/lookup 100/);

    let status = cli('status');
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/rule\/4\/32765\/16\/16\/100 .*DRIFT/);
    expect(status.stdout).toMatch(/drift: 1 object/);
    const json = JSON.parse(cli('status', '--json').stdout);
    expect(json.objects.filter((o: any) => o.drift.length).map((o: any) => o.key)).toEqual(['rule/4/32765/16/16/100']);

    const rec = cli('reconcile');
    expect(rec.code, rec.stderr).toBe(0);
    expect(JSON.parse(rec.stdout).repaired.map((x: any) => x.key)).toEqual(['rule/4/32765/16/16/100']);
    expect(fwmarkRules(lab.snapshot())).toHaveLength(1);
    ok(await check(p));
    expect(cli('status').stdout).toMatch(/drift: none\nlast drift check by an ADD: \d{4}-\d\d-\d\dT[\d:.]+Z$/m);

    // someone flushes our chain
    const name = meddle.name(lab.snapshot());
    meddle.flush(name);
    c = await check(p);
    expect(c.ok).toBe(false);
    expect(c.runs.at(-1)!.stdout.msg).toContain(name);
    status = cli('status');
    expect(status.stdout).toContain(`${meddle.statusKey(name)}  refs=1  DRIFT`);
    expect(cli('reconcile').code).toBe(0);
    ok(await check(p));

    // someone deletes the pod's set element
    meddle.delElement(lab.snapshot(), p);
    expect(podElements(lab.snapshot())).toEqual([]);
    c = await check(p);
    expect(c.ok).toBe(false);
    expect(c.runs.at(-1)!.stdout.msg).toContain(p.ip4!);
    expect(c.runs.at(-1)!.stdout.msg).toContain(p.hostIf!);
    expect(cli('reconcile').code).toBe(0);
    expect(elements(lab.snapshot())).toEqual([elementOf(p)]);
    ok(await check(p));

    ok(await lab.delPod(p));
    expectClean();
  });

  // What keeps ClusterIP traffic on the node (docs/design.md#service-traffic-stays-on-the-node) must not vanish unnoticed: CHECK compares
  // the shared objects with what is meant to be installed now, exemptions included (with nftables:
  // the chain's rules and the exempt sets' elements, not only that the sets exist).
  test.each(['the kube-proxy DNAT exemption', 'the service CIDR exemption'])('CHECK fails when %s was taken out behind markroute\'s back; reconcile puts it back', async (what) => {
    const p = await lab.addPod('chk-ex', list);
    const intact = lab.snapshot();
    const name = meddle.name(intact);
    if (what.includes('DNAT')) meddle.dropDnatExemption(name);
    else meddle.dropServiceExemption(name);
    expect(lab.snapshot()).not.toEqual(intact);
    const c = await check(p);
    const status = cli('status');
    const rec = cli('reconcile');
    expect(lab.snapshot()).toEqual(intact);
    expect({
      check: [c.ok, c.runs.at(-1)!.stdout?.msg ?? ''],
      status: status.stdout.includes(`${meddle.statusKey(name)}  refs=1  DRIFT`),
      repaired: JSON.parse(rec.stdout).repaired.map((x: any) => x.key),
    }).toEqual({ check: [false, expect.stringContaining(name)], status: true, repaired: [meddle.statusKey(name)] });
    ok(await lab.delPod(p));
    expectClean();
  });

  test('DEL succeeds when the marking rules were flushed and the pod set destroyed behind markroute\'s back', async () => {
    const p = await lab.addPod('noset', list);
    const s = lab.snapshot();
    meddle.flush(meddle.name(s)); // e.g. a firewall reload
    meddle.destroySet(s);
    const del = await lab.delPod(p, { keepNs: true });
    expect(del.runs.map((r) => [r.type, r.code, r.rawStdout])).toEqual([
      ['markroute', 0, ''],
      ['ptp', 0, ''],
    ]);
    lab.removePodNs(p);
    expectClean();
  });

  test('GC with cni.dev/valid-attachments listing one of two pods removes the other\'s element and keeps the shared objects', async () => {
    const keep = await lab.addPod('gckeep', list);
    const gone = await lab.addPod('gcgone', list);
    const gc = await lab.invoke('GC', {
      ...list.plugins[1]!,
      name: list.name,
      cniVersion: '1.1.0',
      'cni.dev/valid-attachments': [{ containerID: keep.containerId, ifname: keep.ifname }],
    });
    expect(gc.code, gc.rawStdout).toBe(0);
    expect(gc.rawStdout).toBe('');
    const s = lab.snapshot();
    expect(elements(s)).toEqual([elementOf(keep)]);
    expect(fwmarkRules(s)).toHaveLength(1);
    expect(tableRoutes(s, '100')).toHaveLength(1);
    expectOneMarkingObject(s);
    expect(s.rpFilter.eth0).toBe('2');
    expect(records()).toHaveLength(1);
    ok(await check(keep));
    // the runtime's own DEL of the collected pod still succeeds
    ok(await lab.delPod(gone));
    ok(await lab.delPod(keep));
    expectClean();
  });

  test('dual-stack pods: an element per family, ip rules and routes per family (IPv6 via the link-local gateway), shared until the last DEL; CHECK sees an IPv6 rule gone', async () => {
    const dual = loadPtpConflist(lab, backend, 'dual');
    const [d1, d2] = [await lab.addPod('dual1', dual), await lab.addPod('dual2', dual)];
    await lab.serve(d2, 'udp', 5353);
    let s = lab.snapshot();
    expect(elements(s)).toEqual([d1, d2].flatMap((p) => [elementOf(p), elementOf(p, p.ip6!)]).sort());
    expect(exemptCIDRs(s, 6)).toEqual([SERVICE_CIDR6, 'fd00:ec2::254/128']);
    for (const f of [4, 6] as const) {
      expect(fwmarkRules(s, f), `IPv${f}`).toEqual([expect.objectContaining({ priority: 32765, fwmark: '0x10', fwmask: '0x10', table: '100' })]);
      expect(tableRoutes(s, '100', f), `IPv${f}`).toEqual([expect.objectContaining({ dst: 'default', gateway: f === 4 ? FABRIC_IP : FABRIC_LL6, dev: 'eth0' })]);
    }
    const o = markrouteObjects(s);
    if (backend === 'iptables') expect(o.chains).toEqual({ legacy4: [], nft4: [expect.any(String)], legacy6: [], nft6: [expect.any(String)] });
    else expect(o.nftTables).toHaveLength(1);
    ok(await check(d1));
    // re-ADD adds no second IPv6 rule (the kernel does not deduplicate them) nor element
    const again = await invokeMarkroute('ADD', d1, dual);
    expect(again.code, again.rawStdout).toBe(0);
    expect(lab.snapshot()).toEqual(s);
    // both families cross the fabric
    for (const [a, b] of [[d1.ip4!, d2.ip4!], [d1.ip6!, d2.ip6!]] as const) {
      lab.nsg.reset();
      expect((await lab.probe(d1, 'udp', b, 5353, { count: 2 })).received).toBe(2);
      expect(lab.nsg.packets(a, b)).toBe(2);
    }

    lab.exec(lab.ns.node, ['ip', '-6', 'rule', 'del', 'priority', '32765', 'fwmark', '0x10/0x10', 'lookup', '100']);
    const c = await check(d1);
    expect(c.ok).toBe(false);
    expect(c.runs.at(-1)!.stdout.msg).toMatch(/ip -6 rule 32765/);
    expect(cli('reconcile').code).toBe(0);
    expect(fwmarkRules(lab.snapshot(), 6)).toHaveLength(1);
    ok(await check(d1));

    // the first DEL (without prevResult) takes only d1's two elements; the second everything
    ok(await lab.cni('DEL', d1, { netns: '', prevResult: null }));
    s = lab.snapshot();
    expect(elements(s)).toEqual([elementOf(d2), elementOf(d2, d2.ip6!)].sort());
    for (const f of [4, 6] as const) expect(fwmarkRules(s, f), `IPv${f}`).toHaveLength(1);
    lab.removePodNs(d1);
    ok(await lab.delPod(d2));
    expectClean();
  });

  test('uplink and gateway6 from the netconf (a global address of the fabric) instead of the detected link-local one', async () => {
    const dual = loadPtpConflist(lab, backend, 'dual');
    Object.assign(dual.plugins[1]!, { uplink: 'eth0', gateway6: FABRIC_IP6 });
    const [g1, g2] = [await lab.addPod('gw1', dual), await lab.addPod('gw2', dual)];
    await lab.serve(g2, 'udp', 5353);
    const s = lab.snapshot();
    expect(tableRoutes(s, '100', 6)).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP6, dev: 'eth0' })]);
    expect(tableRoutes(s, '100', 4)).toEqual([expect.objectContaining({ dst: 'default', gateway: FABRIC_IP, dev: 'eth0' })]);
    lab.nsg.reset();
    expect((await lab.probe(g1, 'udp', g2.ip6!, 5353, { count: 2 })).received).toBe(2);
    expect(lab.nsg.packets(g1.ip6!, g2.ip6!)).toBe(2);
    ok(await check(g1));
    ok(await lab.delPod(g1));
    ok(await lab.delPod(g2));
    expectClean();
  });
});

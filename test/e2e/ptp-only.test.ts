// Proves the lab itself with the stock plugins only (no markroute): pods talk through
// the node, the fabric never sees that traffic (the problem markroute solves), and
// the fabric's NSG counts and drops what is routed through it.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLab, FABRIC_IP, FABRIC_LL6, NODE_IP, run, type Lab, type Pod } from '../lab/index.ts';

const labNamespaces = (lab: Lab): string[] =>
  run(['ip', 'netns', 'list']).stdout.split('\n').filter((l) => l.startsWith(lab.prefix));

describe('ptp pods', () => {
  let lab: Lab;
  let a: Pod;
  let b: Pod;

  beforeAll(async () => {
    lab = await createLab({ ipv6: true });
    a = await lab.addPod('a', 'ptp');
    b = await lab.addPod('b', 'ptp');
    await lab.serve(b, 'udp', 5353);
    await lab.serve(b, 'tcp', 8080);
  });

  afterAll(async () => {
    await lab?.destroy();
    await lab?.destroy(); // idempotent
    expect(labNamespaces(lab)).toEqual([]);
  });

  test('node and fabric are set up as the design asks', () => {
    const sys = (ns: string, k: string) => lab.exec(ns, ['sysctl', '-n', k]).stdout.trim();
    const { node, fabric } = lab.ns;
    expect(sys(node, 'net.ipv4.ip_forward')).toBe('1');
    expect(sys(node, 'net.ipv4.conf.all.rp_filter')).toBe('1');
    expect(sys(node, 'net.ipv4.conf.default.rp_filter')).toBe('1');
    expect(lab.snapshot().rpFilter).toMatchObject({ all: '1', default: '1', eth0: '1', [a.hostIf!]: '1' });
    expect(sys(fabric, 'net.ipv4.conf.all.send_redirects')).toBe('0');
    expect(sys(fabric, 'net.ipv4.conf.eth0.send_redirects')).toBe('0');
    expect(sys(fabric, 'net.ipv4.conf.eth0.rp_filter')).toBe('0');
    const [def] = JSON.parse(lab.exec(node, ['ip', '-j', 'route', 'show', 'default']).stdout);
    expect(def).toMatchObject({ gateway: FABRIC_IP, dev: 'eth0' });
    const [def6] = JSON.parse(lab.exec(node, ['ip', '-j', '-6', 'route', 'show', 'default']).stdout);
    expect(def6).toMatchObject({ gateway: FABRIC_LL6, dev: 'eth0' });
  });

  test('ptp ADD result names the pod addresses and host veth', () => {
    expect(a.ip4).toMatch(/^10\.244\.0\.\d+$/);
    expect(a.ip6).toMatch(/^fd00:244::/);
    expect(a.hostIf).toMatch(/^veth/);
    expect(a.bridge).toBeUndefined();
    expect(a.result.interfaces.find((i: any) => !i.sandbox).name).toBe(a.hostIf);
    // what the runner sent, as libcni would
    expect(a.add!.runs[0]!.stdin).toMatchObject({ name: 'mrlab-ptp', cniVersion: '1.0.0', type: 'ptp' });
  });

  test('pods exchange UDP and TCP over IPv4 and IPv6', async () => {
    for (const dst of [b.ip4!, b.ip6!]) {
      const udp = await lab.probe(a, 'udp', dst, 5353, { count: 5 });
      expect(udp.received).toBe(5);
      expect(udp.replies[0]).toEqual({ from: dst, seenAs: dst === b.ip4 ? a.ip4 : a.ip6 });
      const tcp = await lab.probe(a, 'tcp', dst, 8080, { count: 2 });
      expect(tcp.received).toBe(2);
    }
  });

  test('pod-to-pod traffic stays on the node: the fabric sees none of it', async () => {
    lab.nsg.reset();
    const r = await lab.probe(a, 'udp', b.ip4!, 5353, { count: 10 });
    expect(r.received).toBe(10);
    expect(lab.nsg.forwarded()).toBe(0);
    expect(lab.nsg.packets(a.ip4!, b.ip4!)).toBe(0);
  });

  test('policy-routed pod traffic hairpins through the fabric, which counts and denies it', async () => {
    const node = lab.ns.node;
    const before = lab.snapshot();
    // What markroute will automate, by hand: mark the pod's packets, route the mark via the fabric.
    lab.exec(node, ['nft', '-f', '-'], {
      input: `table inet handmark {
        chain pre { type filter hook prerouting priority mangle; iifname "${a.hostIf}" meta mark set meta mark | 0x10; }
      }`,
    });
    for (const [fam, gw] of [['-4', FABRIC_IP], ['-6', FABRIC_LL6]] as const) {
      lab.exec(node, ['ip', fam, 'rule', 'add', 'fwmark', '0x10/0x10', 'lookup', '100', 'pref', '100']);
      lab.exec(node, ['ip', fam, 'route', 'add', 'default', 'via', gw, 'dev', 'eth0', 'table', '100']);
    }
    try {
      // Strict rp_filter drops the hairpinned packet: its pod source routes via the veth, not eth0.
      lab.nsg.reset();
      let r = await lab.probe(a, 'udp', b.ip4!, 5353, { count: 3, timeoutMs: 500 });
      expect(r.received).toBe(0);
      expect(lab.nsg.packets(a.ip4!, b.ip4!)).toBe(3);

      // Loose on the uplink (max(all=1, eth0=2) = 2) lets it in.
      lab.exec(node, ['sysctl', '-w', 'net.ipv4.conf.eth0.rp_filter=2']);
      lab.nsg.reset();
      r = await lab.probe(a, 'udp', b.ip4!, 5353, { count: 5 });
      expect(r.received).toBe(5);
      expect(r.replies[0]!.seenAs).toBe(a.ip4);
      expect(lab.nsg.packets(a.ip4!, b.ip4!)).toBe(5);
      expect(lab.nsg.packets(b.ip4!, a.ip4!)).toBe(0); // b is not marked: replies go straight back
      expect(lab.nsg.forwarded()).toBe(5);

      // IPv6 has no rp_filter; the link-local gateway hairpins it the same way.
      r = await lab.probe(a, 'udp', b.ip6!, 5353, { count: 2 });
      expect(r.received).toBe(2);
      expect(lab.nsg.packets(a.ip6!, b.ip6!)).toBe(2);

      // The NSG's deny rule drops the pair; allow restores it.
      lab.nsg.deny(a.ip4!, b.ip4!);
      lab.nsg.deny(a.ip4!, b.ip4!); // idempotent
      r = await lab.probe(a, 'udp', b.ip4!, 5353, { count: 3, timeoutMs: 500 });
      expect(r.received).toBe(0);
      expect(lab.nsg.denied()).toBe(3);
      lab.nsg.deny(a.ip6!, b.ip6!);
      expect((await lab.probe(a, 'tcp', b.ip6!, 8080, { timeoutMs: 500 })).received).toBe(0);
      lab.nsg.allow(a.ip4!, b.ip4!);
      lab.nsg.allow(a.ip6!, b.ip6!);
      expect((await lab.probe(a, 'udp', b.ip4!, 5353, { count: 3 })).received).toBe(3);
      expect((await lab.probe(a, 'tcp', b.ip6!, 8080)).received).toBe(1);
    } finally {
      for (const fam of ['-4', '-6']) {
        lab.exec(node, ['ip', fam, 'rule', 'del', 'pref', '100']);
        lab.exec(node, ['ip', fam, 'route', 'flush', 'table', '100']);
      }
      lab.exec(node, ['nft', 'delete', 'table', 'inet', 'handmark']);
      lab.exec(node, ['sysctl', '-w', 'net.ipv4.conf.eth0.rp_filter=1']);
    }
    expect(lab.snapshot()).toEqual(before);
  });

  test('kernel fact: an `iif <veth>` rule makes strict rp_filter drop other pods\' replies to that pod', () => {
    // The reverse-path lookup runs with iif = the forward route's output device, so a rule
    // keyed on pod a's veth sends the check for b's reply to a through table 100 (the uplink).
    // Marks (without src_valid_mark) do not have this problem: why markroute uses fwmark rules.
    const node = lab.ns.node;
    const replyOk = () => lab.exec(node, ['ip', 'route', 'get', a.ip4!, 'from', b.ip4!, 'iif', b.hostIf!], { check: false }).code === 0;
    expect(replyOk()).toBe(true);
    lab.exec(node, ['ip', 'rule', 'add', 'iif', a.hostIf!, 'lookup', '100', 'pref', '100']);
    lab.exec(node, ['ip', 'route', 'add', 'default', 'via', FABRIC_IP, 'dev', 'eth0', 'table', '100']);
    try {
      expect(replyOk()).toBe(false);
    } finally {
      lab.exec(node, ['ip', 'rule', 'del', 'pref', '100']);
      lab.exec(node, ['ip', 'route', 'flush', 'table', '100']);
    }
    expect(replyOk()).toBe(true);
  });

  test.each(['legacy', 'nft'] as const)('a kube-proxy ClusterIP (iptables-%s) DNATs to the backend pod', async (variant) => {
    const before = lab.snapshot();
    lab.nsg.reset();
    const svc = lab.addClusterIP({ ip: '10.0.0.10', port: 53, proto: 'udp', backend: { ip: b.ip4!, port: 5353 }, iptables: variant });
    const save = lab.snapshot().iptables[variant === 'legacy' ? 'legacy4' : 'nft4'];
    expect(save).toContain(`-A KUBE-SEP-`);
    expect(save).toContain(`--to-destination ${b.ip4}:5353`);
    const r = await lab.probe(a, 'udp', '10.0.0.10', 53, { count: 5, fresh: true });
    expect(r.received).toBe(5);
    // the client sees the ClusterIP answer; the backend sees the client's own address
    expect(r.replies[0]).toEqual({ from: '10.0.0.10', seenAs: a.ip4 });
    // from the node itself (OUTPUT chain)
    expect((await lab.probe(lab.ns.node, 'udp', '10.0.0.10', 53)).received).toBe(1);
    expect(lab.nsg.packets(a.ip4!, b.ip4!)).toBe(0);
    svc.remove();
    svc.remove();
    expect((await lab.probe(a, 'udp', '10.0.0.10', 53, { timeoutMs: 300 })).received).toBe(0);
    const after = lab.snapshot();
    expect(after.iptables[variant === 'legacy' ? 'legacy4' : 'nft4']).not.toContain('KUBE-SEP-');
    expect(after.rules4).toEqual(before.rules4);
  });

  test('ADD then DEL of a pod leaves the node as it was, and a second DEL succeeds', async () => {
    const before = lab.snapshot();
    const c = await lab.addPod('c', 'ptp');
    expect(lab.snapshot().routes4).not.toEqual(before.routes4);
    const del = await lab.delPod(c, { keepNs: true });
    expect(del.ok).toBe(true);
    expect(del.runs[0]!.stdin.prevResult).toEqual(c.result);
    expect(lab.snapshot()).toEqual(before);
    // RemovePodSandbox: empty CNI_NETNS and no prevResult
    const again = await lab.cni('DEL', c, { netns: '', prevResult: null });
    expect(again.ok).toBe(true);
    expect(again.runs[0]!.stdin).not.toHaveProperty('prevResult');
    lab.removePodNs(c);
    expect(labNamespaces(lab)).not.toContain(c.ns);
  });

  test('snapshot ignores the empty tables iptables leaves behind, not a leftover chain or set', () => {
    const node = lab.ns.node;
    const before = lab.snapshot();
    for (const bin of ['iptables-legacy', 'iptables-nft', 'ip6tables-nft']) lab.exec(node, [bin, '-t', 'raw', '-N', 'MR-LEFTOVER']);
    lab.exec(node, ['ipset', 'create', 'mr-leftover', 'hash:net,iface']);
    const dirty = lab.snapshot();
    expect(dirty.iptables.legacy4).toContain(':MR-LEFTOVER');
    expect(dirty.iptables.nft6).toContain(':MR-LEFTOVER');
    expect(dirty.ipset).toContain('create mr-leftover hash:net,iface');
    expect(dirty.nft).not.toEqual(before.nft);
    for (const bin of ['iptables-legacy', 'iptables-nft', 'ip6tables-nft']) lab.exec(node, [bin, '-t', 'raw', '-X', 'MR-LEFTOVER']);
    lab.exec(node, ['ipset', 'destroy', 'mr-leftover']);
    // the raw tables stay in the kernel, empty: not a difference
    expect(lab.exec(node, ['iptables-legacy-save', '-t', 'raw']).stdout).toContain('*raw');
    expect(lab.snapshot()).toEqual(before);
  });

  test('the runner handles concurrent ADD and DEL, as containerd issues them', async () => {
    const pods = await Promise.all(['c1', 'c2', 'c3', 'c4'].map((n) => lab.addPod(n, 'ptp')));
    expect(new Set(pods.map((p) => p.ip4)).size).toBe(4);
    const dels = await Promise.all(pods.map((p) => lab.delPod(p)));
    expect(dels.every((d) => d.ok)).toBe(true);
    expect(labNamespaces(lab).filter((n) => /-c\d$/.test(n))).toEqual([]);
  });

  test('plugin failures come back as CNI errors, and the chain stops there', async () => {
    const bad = lab.conflist('ptp');
    (bad.plugins[0]!.ipam as any).ranges = [[{ subnet: 'not-a-cidr' }]];
    const d = await lab.addPod('d', bad, { allowFailure: true });
    expect(d.add!.ok).toBe(false);
    expect(d.add!.runs[0]!.code).not.toBe(0);
    expect(d.add!.runs[0]!.stdout).toMatchObject({ code: expect.any(Number), msg: expect.any(String) });

    const missing = lab.conflist('ptp', { chain: [{ type: 'no-such-plugin' }, { type: 'never-reached' }] });
    const e = await lab.addPod('e', missing, { allowFailure: true });
    expect(e.add!.runs.map((r) => [r.type, r.code])).toEqual([
      ['ptp', 0],
      ['no-such-plugin', -1],
    ]);
    // libcni's DEL runs in reverse and stops at the first error too, keeping ptp's IP
    const del = await lab.delPod(e, { prevResult: null, conflist: missing });
    expect(del.runs.map((r) => r.type)).toEqual(['never-reached']);
    lab.removePodNs(d);
  });

  test('runtimeConfig carries only the capabilities a plugin declares', async () => {
    const list = lab.conflist('ptp', { chain: [{ type: 'no-such-plugin', capabilities: { 'io.kubernetes.cri.pod-annotations': true } }] });
    const f = await lab.addPod('f', list, { allowFailure: true, annotations: { 'cni.fwmark.net/name': 'vpn' } });
    expect(f.add!.runs[0]!.stdin).not.toHaveProperty('runtimeConfig');
    expect(f.add!.runs[1]!.stdin).toMatchObject({
      runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'cni.fwmark.net/name': 'vpn' } },
      prevResult: f.add!.runs[0]!.stdout,
    });
  });
});

describe('bridge pods', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await createLab();
  });
  afterAll(async () => {
    await lab?.destroy();
    expect(labNamespaces(lab)).toEqual([]);
  });

  test('two bridge pods talk over cni0, switched, never reaching the fabric', async () => {
    const a = await lab.addPod('a', 'bridge');
    const b = await lab.addPod('b', 'bridge');
    expect(a.bridge).toBe('cni0');
    expect(a.hostIf).toMatch(/^veth/);
    const [cni0] = JSON.parse(lab.exec(lab.ns.node, ['ip', '-j', '-4', 'addr', 'show', 'cni0']).stdout);
    expect(cni0.addr_info[0]).toMatchObject({ local: '10.244.1.1', prefixlen: 24 });
    expect(a.ip4).toMatch(/^10\.244\.1\.\d+$/);
    await lab.serve(b, 'udp', 5353);
    lab.nsg.reset();
    const r = await lab.probe(a, 'udp', b.ip4!, 5353, { count: 5 });
    expect(r.received).toBe(5);
    expect(lab.nsg.forwarded()).toBe(0);
    // a bridge pod reaches the fabric side through the node's routing
    await lab.serve(lab.ns.fabric, 'udp', 7000);
    const up = await lab.probe(a, 'udp', FABRIC_IP, 7000);
    expect(up.replies).toEqual([{ from: FABRIC_IP, seenAs: a.ip4 }]);
    const node = await lab.probe(lab.ns.node, 'udp', FABRIC_IP, 7000);
    expect(node.replies).toEqual([{ from: FABRIC_IP, seenAs: NODE_IP }]);
    expect((await lab.delPod(a)).ok).toBe(true);
  });
});

test('destroy() removes every namespace and process of a lab, even with a server running', async () => {
  const lab = await createLab();
  const p = await lab.addPod('x', 'ptp');
  await lab.serve(p, 'tcp', 9000);
  expect(labNamespaces(lab).length).toBe(3);
  await lab.destroy();
  expect(labNamespaces(lab)).toEqual([]);
});

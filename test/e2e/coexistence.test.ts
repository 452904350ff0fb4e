// markroute next to the node's other packet owners, for both backends: kube-proxy in nftables
// mode (KEP-3866: DNAT in a table of its own), and another owner of mark bits (a CNI or a
// firewall that marks the same packets with its own bit before us). Its bits must survive our
// mark, and ClusterIP traffic must stay on the node in both directions.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLab, loadPtpConflist, type Backend, type Lab, type Pod } from '../lab/index.ts';

const CLUSTER_IP = '10.96.0.10';
const OTHER_BIT = 0x40000000;

describe.each(['iptables', 'nftables'] as Backend[])('coexistence (%s backend)', (backend) => {
  let lab: Lab;
  let client: Pod;
  let server: Pod;
  let before: ReturnType<Lab['snapshot']>;

  beforeAll(async () => {
    lab = await createLab();
    // kube-proxy in nftables mode, in miniature: its own table, DNAT at dstnat priority.
    // Another owner sets its bit on every forwarded packet before our hook (priority -200 < mangle).
    lab.exec(lab.ns.node, ['nft', '-f', '-'], {
      input: `
table ip kube-proxy {
  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }
}
table inet other-owner {
  counter both_bits {}
  chain early {
    type filter hook prerouting priority -200; policy accept;
    ip saddr 10.244.0.0/16 meta mark set meta mark or ${OTHER_BIT}
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    meta mark & ${OTHER_BIT | 0x10} == ${OTHER_BIT | 0x10} counter name both_bits
  }
}
`,
    });
    before = lab.snapshot();
    const list = loadPtpConflist(lab, backend);
    client = await lab.addPod('client', list);
    server = await lab.addPod('server', list);
    await lab.serve(server, 'udp', 5353);
    lab.exec(lab.ns.node, ['nft', 'add', 'rule', 'ip', 'kube-proxy', 'nat-prerouting', 'ip', 'daddr', CLUSTER_IP, 'udp', 'dport', '53', 'dnat', 'to', `${server.ip4}:5353`]);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('pod-to-pod traffic carries both our mark and the other owner\'s bit, and crosses the fabric', async () => {
    lab.nsg.reset();
    const r = await lab.probe(client, 'udp', server.ip4!, 5353, { count: 5 });
    expect(r.received).toBe(5);
    expect(lab.nsg.packets(client.ip4!, server.ip4!)).toBeGreaterThanOrEqual(5);
    const counter = JSON.parse(lab.exec(lab.ns.node, ['nft', '-j', 'list', 'counter', 'inet', 'other-owner', 'both_bits']).stdout);
    expect(counter.nftables[1].counter.packets).toBeGreaterThanOrEqual(5);
  });

  test('ClusterIP through kube-proxy\'s nftables DNAT: every flow answered, none crosses the fabric', async () => {
    lab.nsg.reset();
    const r = await lab.probe(client, 'udp', CLUSTER_IP, 53, { count: 30, fresh: true });
    expect(r.received).toBe(30);
    expect(r.replies.every((x) => x.seenAs === client.ip4)).toBe(true);
    expect(lab.nsg.forwarded()).toBe(0);
  });

  test('teardown leaves the other owners\' tables and the node as they were', async () => {
    for (const p of [client, server]) expect((await lab.delPod(p)).ok).toBe(true);
    // kube-proxy's DNAT rule came after the baseline: it goes as kube-proxy would remove it.
    lab.exec(lab.ns.node, ['nft', 'flush', 'chain', 'ip', 'kube-proxy', 'nat-prerouting']);
    expect(lab.snapshot()).toEqual(before);
  });
});

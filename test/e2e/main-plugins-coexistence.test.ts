// markroute next to the netfilter rules and ip rules main plugins install themselves, reproduced
// verbatim from their sources in the lab's node namespace, with pods the plugin's stand-in made
// (main-plugins.test.ts). What works, what does not, and what to set: README "Main plugins".
//
// - Calico's felix (projectcalico/calico 87c15906f20c, felix/rules/static.go
//   StaticManglePreroutingChain; felix/dataplane/linux/int_dataplane.go setUpIptablesNormal puts
//   its jump at the top of mangle PREROUTING and felix/iptables/table.go puts it back there at
//   every resync): ACCEPT for RELATED,ESTABLISHED in mangle PREROUTING ends that table's
//   traversal, so with the iptables backend a jump below felix's sees only a flow's first packet.
//   With `iptablesMangleAllowAction: Return` felix returns instead; the nftables backend's own base
//   chain is evaluated whatever another table or chain accepted.
// - AWS VPC CNI (aws/amazon-vpc-cni-k8s b52188387f2e, pkg/networkutils/network.go and
//   cmd/routed-eni-cni-plugin/driver/driver.go): `to <pod> lookup main` at 512 per pod and
//   `fwmark 0x80/0x80 lookup main` at 1024 decide before markroute's default 32765.
// - Cilium (cilium/cilium pkg/proxy/routes.go, pkg/datapath/linux/linux_defaults): proxy rules at
//   9 and 10 on mark bits 0xf00, the local table moved from 0 to 100.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLab, loadPtpConflist, type Backend, type Lab, type Pod } from '../lab/index.ts';

const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':');

const FELIX_HOOK = '-m comment --comment "cali:6gwbT8clXdHdC1b1" --jump cali-PREROUTING';
/** felix's mangle table on a node with workloads and no host endpoints, as iptables-restore input; `allow` is MangleAllowAction. */
const felixMangle = (allow: 'ACCEPT' | 'RETURN') => [
  '*mangle',
  ':cali-PREROUTING - [0:0]',
  ':cali-from-host-endpoint - [0:0]',
  `-I PREROUTING ${FELIX_HOOK}`,
  `-A cali-PREROUTING -m comment --comment "cali:${allow === 'ACCEPT' ? '6BJqBjBC7crtA-7-' : 'Wr3YEtmil9N6TPC4'}" -m conntrack --ctstate RELATED,ESTABLISHED --jump ${allow}`,
  `-A cali-PREROUTING -m comment --comment "cali:${allow === 'ACCEPT' ? 'KX7AGNd6rMcDUai6' : 'KrbSWCu2Ux7fTOrL'}" -m mark --mark 0x10000/0x10000 --jump ${allow}`,
  `-A cali-PREROUTING -m comment --comment "cali:${allow === 'ACCEPT' ? 'wNH7KsA3ILKJBsY9' : 'eBwxbN0iDWiWjR5e'}" --jump cali-from-host-endpoint`,
  `-A cali-PREROUTING -m comment --comment "cali:${allow === 'ACCEPT' ? 'Cg96MgVuoPm7UMRo' : 'TIsuIlT5Zof96VNA'}" -m comment --comment "Host endpoint policy accepted packet." -m mark --mark 0x10000/0x10000 --jump ${allow}`,
  'COMMIT',
  '',
].join('\n');

/** Two pods the plugin's stand-in made, pod2 answering on UDP 5353, in a lab prepared by `node` first. */
async function labWith(backend: Backend, plugin: 'calico' | 'aws-vpc-cni' | 'cilium', node: (lab: Lab) => void, entry: Record<string, unknown> = {}) {
  const lab = await createLab({ cniPath });
  node(lab);
  const list = loadPtpConflist(lab, backend);
  Object.assign(list.plugins[1]!, entry);
  const pod1 = await lab.addPod('pod1', list, { standIn: plugin });
  const pod2 = await lab.addPod('pod2', list, { standIn: plugin });
  await lab.serve(pod2, 'udp', 5353);
  await lab.serve(pod2, 'tcp', 8080);
  return { lab, pod1, pod2 };
}

/** 5 datagrams of one flow pod1 -> pod2: answered, and how many crossed the fabric each way. */
async function oneFlow(lab: Lab, pod1: Pod, pod2: Pod) {
  lab.nsg.reset();
  const r = await lab.probe(pod1, 'udp', pod2.ip4!, 5353, { count: 5 });
  return { received: r.received, there: lab.nsg.packets(pod1.ip4!, pod2.ip4!), back: lab.nsg.packets(pod2.ip4!, pod1.ip4!) };
}

const ALL_CROSS = { received: 5, there: 5, back: 5 };

/**
 * One TCP connection pod1 -> pod2 (the 5 datagrams above leave before any answer, so conntrack
 * calls them all NEW): answered, and how many of its packets crossed the fabric each way.
 */
async function oneConnection(lab: Lab, pod1: Pod, pod2: Pod) {
  lab.nsg.reset();
  const r = await lab.probe(pod1, 'tcp', pod2.ip4!, 8080);
  return { received: r.received, there: lab.nsg.packets(pod1.ip4!, pod2.ip4!), back: lab.nsg.packets(pod2.ip4!, pod1.ip4!) };
}
/** SYN, ACK, data, FIN, ACK one way; SYN-ACK, data, FIN, ACK the other, at least. */
const WHOLE_CONNECTION = { received: 1, there: expect.toBeOneOf([5, 6, 7, 8]), back: expect.toBeOneOf([4, 5, 6, 7, 8]) };

describe('Calico felix\'s mangle PREROUTING (iptables-nft, where felix and kube-proxy write today)', () => {
  const loadFelix = (lab: Lab, allow: 'ACCEPT' | 'RETURN') => lab.exec(lab.ns.node, ['iptables-nft-restore', '--noflush'], { input: felixMangle(allow) });
  /** felix's resync: its hook is not at index 0, so it deletes and re-inserts it at the top. */
  const felixResync = (lab: Lab) => {
    const hook = FELIX_HOOK.match(/"[^"]*"|\S+/g)!.map((w) => w.replace(/"/g, ''));
    lab.exec(lab.ns.node, ['iptables-nft', '-t', 'mangle', '-D', 'PREROUTING', ...hook]);
    lab.exec(lab.ns.node, ['iptables-nft', '-t', 'mangle', '-I', 'PREROUTING', '1', ...hook]);
  };
  const preroutingJumps = (lab: Lab) =>
    lab.exec(lab.ns.node, ['iptables-nft', '-t', 'mangle', '-S', 'PREROUTING']).stdout.split('\n').filter((l) => l.startsWith('-A')).map((l) => /-j (\S+)/.exec(l)?.[1]);

  describe('iptables backend', () => {
    let t: Awaited<ReturnType<typeof labWith>>;
    beforeAll(async () => (t = await labWith('iptables', 'calico', (lab) => loadFelix(lab, 'ACCEPT'))));
    afterAll(async () => t?.lab.destroy());

    test('our jump goes in above felix\'s: every packet is marked', async () => {
      expect(preroutingJumps(t.lab)).toEqual([expect.stringMatching(/^MARKROUTE-/), 'cali-PREROUTING']);
      expect(await oneConnection(t.lab, t.pod1, t.pod2)).toEqual(WHOLE_CONNECTION);
    });

    test('known limitation: once felix\'s resync puts its jump back on top, its ESTABLISHED ACCEPT leaves only a connection\'s first packet to us', async () => {
      felixResync(t.lab);
      expect(preroutingJumps(t.lab)).toEqual(['cali-PREROUTING', expect.stringMatching(/^MARKROUTE-/)]);
      // the SYN crosses the fabric; the answer and everything after go straight to the pods
      expect(await oneConnection(t.lab, t.pod1, t.pod2)).toEqual({ received: 1, there: 1, back: 0 });
    });

    test('with felix\'s iptablesMangleAllowAction: Return, every packet is marked again', async () => {
      t.lab.exec(t.lab.ns.node, ['iptables-nft', '-t', 'mangle', '-F', 'cali-PREROUTING']);
      t.lab.exec(t.lab.ns.node, ['iptables-nft', '-t', 'mangle', '-D', 'PREROUTING', '1']);
      loadFelix(t.lab, 'RETURN');
      expect(preroutingJumps(t.lab)).toEqual(['cali-PREROUTING', expect.stringMatching(/^MARKROUTE-/)]);
      expect(await oneConnection(t.lab, t.pod1, t.pod2)).toEqual(WHOLE_CONNECTION);
    });
  });

  describe('nftables backend', () => {
    let t: Awaited<ReturnType<typeof labWith>>;
    beforeAll(async () => (t = await labWith('nftables', 'calico', (lab) => loadFelix(lab, 'ACCEPT'))));
    afterAll(async () => t?.lab.destroy());

    test('felix\'s ACCEPT ends only its own chain: every packet is marked by our table\'s chain', async () => {
      expect(preroutingJumps(t.lab)).toEqual(['cali-PREROUTING']);
      expect(await oneConnection(t.lab, t.pod1, t.pod2)).toEqual(WHOLE_CONNECTION);
    });
  });
});

describe.each(['nftables', 'iptables'] as Backend[])('AWS VPC CNI\'s ip rules (%s backend)', (backend) => {
  /** What AWS's CNI installs for pods on the primary ENI: `to <pod> lookup main` at 512 (driver.go), and the node-wide connmark rule at 1024 (network.go). */
  const awsRules = (lab: Lab, pods: Pod[]) => {
    lab.exec(lab.ns.node, ['ip', 'rule', 'add', 'fwmark', '0x80/0x80', 'lookup', 'main', 'priority', '1024']);
    for (const p of pods) lab.exec(lab.ns.node, ['ip', 'rule', 'add', 'to', `${p.ip4}/32`, 'lookup', 'main', 'priority', '512']);
  };

  test('with the default rulePriority (32765) AWS\'s `to <pod> lookup main` decides first: same-node traffic stays on the node', async () => {
    const t = await labWith(backend, 'aws-vpc-cni', () => {});
    try {
      awsRules(t.lab, [t.pod1, t.pod2]);
      expect(await oneFlow(t.lab, t.pod1, t.pod2)).toEqual({ received: 5, there: 0, back: 0 });
    } finally {
      await t.lab.destroy();
    }
  });

  test('with rulePriority below 512 the mark decides: same-node traffic crosses the fabric', async () => {
    const t = await labWith(backend, 'aws-vpc-cni', () => {}, { rulePriority: 500 });
    try {
      awsRules(t.lab, [t.pod1, t.pod2]);
      expect(await oneFlow(t.lab, t.pod1, t.pod2)).toEqual(ALL_CROSS);
    } finally {
      await t.lab.destroy();
    }
  });
});

describe('Cilium\'s ip rules (legacy host routing; its eBPF host routing bypasses netfilter and cannot be reproduced here)', () => {
  test('proxy rules at 9 and 10 on mark bits 0xf00 and the local table moved to 100 leave mark 0x10 to us', async () => {
    const t = await labWith('nftables', 'cilium', (lab) => {
      for (const rule of [['fwmark', '0x200/0xf00', 'lookup', '2004', 'priority', '9'], ['fwmark', '0xa00/0xf00', 'lookup', '2005', 'priority', '10'], ['lookup', 'local', 'priority', '100']]) {
        lab.exec(lab.ns.node, ['ip', 'rule', 'add', ...rule]);
      }
      lab.exec(lab.ns.node, ['ip', 'rule', 'del', 'priority', '0', 'lookup', 'local']);
    });
    try {
      expect(await oneFlow(t.lab, t.pod1, t.pod2)).toEqual(ALL_CROSS);
    } finally {
      await t.lab.destroy();
    }
  });
});

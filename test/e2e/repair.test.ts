// Drift: what an ADD can re-write at no cost (the uplink's rp_filter) is re-written by every ADD;
// the rest (the nftables table or iptables chain, ip rules, routes) by `markroute reconcile`.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLab, findPlugin, loadPtpConflist, type Lab, type Pod } from '../lab/index.ts';

describe('drift is named by CHECK and repaired (nftables)', () => {
  let lab: Lab;
  let first: Pod;
  let server: Pod;
  const check = async (pod: Pod) => (await lab.cni('CHECK', pod)).ok;
  /** `markroute reconcile`; returns the keys it says it repaired. */
  const reconcile = (): string[] => {
    const out = lab.exec(lab.ns.node, [findPlugin('markroute', lab.cniPath)!, 'reconcile', '--state-dir', join(lab.dir, 'state')]);
    return JSON.parse(out.stdout).repaired.map((r: { key: string }) => r.key);
  };

  beforeAll(async () => {
    lab = await createLab();
    const list = loadPtpConflist(lab, 'nftables');
    first = await lab.addPod('first', list);
    server = await lab.addPod('server', list);
    await lab.serve(server, 'udp', 7000);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('a flushed table and a reset rp_filter: CHECK names them, the next ADD puts rp_filter back, reconcile the table', async () => {
    const tables = JSON.parse(lab.exec(lab.ns.node, ['nft', '-j', 'list', 'tables']).stdout).nftables as { table?: { name: string } }[];
    const table = tables.flatMap((i) => (i.table?.name.startsWith('markroute-') ? [i.table.name] : []))[0]!;
    lab.exec(lab.ns.node, ['nft', 'flush', 'chain', 'inet', table, 'prerouting']);
    lab.exec(lab.ns.node, ['sysctl', '-qw', 'net.ipv4.conf.eth0.rp_filter=1']);
    const broken = await lab.cni('CHECK', first);
    expect(broken.ok).toBe(false);
    const msg = JSON.stringify(broken.runs.at(-1)?.stdout);
    expect(msg).toContain(`chain prerouting of table inet ${table} does not hold the planned rules`);
    expect(msg).toContain('rp_filter of eth0 is 1, not 2 (loose)');

    await lab.addPod('next', loadPtpConflist(lab, 'nftables'));
    expect(lab.snapshot().rpFilter.eth0).toBe('2');
    const stillBroken = JSON.stringify((await lab.cni('CHECK', first)).runs.at(-1)?.stdout);
    expect(stillBroken).toContain(`chain prerouting of table inet ${table} does not hold the planned rules`);
    expect(stillBroken).not.toContain('rp_filter');
    reconcile();
    expect(await check(first)).toBe(true);
    lab.nsg.reset();
    const r = await lab.probe(first, 'udp', server.ip4!, 7000, { count: 3 });
    expect(r.received).toBe(3);
    expect(lab.nsg.packets(first.ip4!, server.ip4!)).toBeGreaterThanOrEqual(3);
  });

  test('a deleted ip rule is named by CHECK and put back by markroute reconcile', async () => {
    lab.exec(lab.ns.node, ['ip', 'rule', 'del', 'fwmark', '0x10/0x10', 'lookup', '100', 'priority', '32765']);
    expect(await check(first)).toBe(false);
    expect(reconcile()).toContain('rule/4/32765/16/16/100');
    expect(await check(first)).toBe(true);
  });
});

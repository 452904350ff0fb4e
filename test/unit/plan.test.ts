// The pure plan: the kernel objects one attachment needs (host matching: host-match.test.ts).
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { outermostCidrs, parseCidr } from '../../src/net/cidr.ts';
import {
  attachmentId, chainName, objectKey, planAttachment, setName, type Attachment, type HostMatch, type NodeFacts,
} from '../../src/plan.ts';
import { cniError } from './helpers.ts';

const config = (extra: Record<string, unknown> = {}) => parseConfig({ cniVersion: '1.0.0', name: 'mrnet', type: 'markroute', ...extra });

describe('planAttachment', () => {
  const att: Attachment = { network: 'mrnet', containerId: '7e84a9894ae7dbed813078e2f9d81cc1', ifName: 'eth0', podNamespace: 'team-a', podName: 'web-1' };
  const facts: NodeFacts = {
    backend: 'iptables',
    iptablesVariant: 'nft',
    uplinks: { 4: { dev: 'eth0', gateway: '10.224.0.1' }, 6: { dev: 'eth0', gateway: 'fe80::1' } },
  };
  const set4 = setName('mrnet', 4);
  const set6 = setName('mrnet', 6);
  const chain = chainName('mrnet');
  const routed4: HostMatch = { iface: 'veth6a1b2c3d', topology: 'routed', addresses: [{ family: 4, address: '10.244.0.5' }] };

  test('names are short, stable and per network', () => {
    expect(chain).toMatch(/^MARKROUTE-[0-9a-f]{8}$/);
    expect(set4).toMatch(/^mr4-[0-9a-f]{8}$/);
    expect(set6).toBe(`mr6-${set4.slice(4)}`);
    expect(chain.slice(-8)).toBe(set4.slice(-8));
    expect(chain.length).toBeLessThanOrEqual(28);
    expect(setName('a'.repeat(128), 6).length).toBeLessThanOrEqual(31);
    expect(chainName('other')).not.toBe(chain);
    expect(chainName('mrnet')).toBe(chain);
  });

  test('IPv4 routed pod with defaults: exact objects and keys', () => {
    const plan = planAttachment(config(), att, routed4, facts, (config()).marks[0]!);
    expect(plan.id).toBe('mrnet_7e84a9894ae7dbed813078e2f9d81cc1_eth0');
    expect(plan.id).toBe(attachmentId(att));
    expect(plan.attachment).toEqual(att);
    expect(plan.hostMatch).toEqual(routed4);
    expect(plan.objects).toEqual([
      { kind: 'ipset', family: 4, name: set4 },
      { kind: 'element', family: 4, set: set4, address: '10.244.0.5', iface: 'veth6a1b2c3d', comment: 'team-a/web-1 7e84a9894ae7 eth0' },
      { kind: 'markChain', family: 4, variant: 'nft', chain, network: 'mrnet', exempt: [], marks: [{ name: 'default', set: set4, mark: 16, mask: 16 }] },
      { kind: 'rule', family: 4, priority: 32765, mark: 16, mask: 16, table: 100 },
      { kind: 'route', family: 4, table: 100, gateway: '10.224.0.1', dev: 'eth0' },
      { kind: 'rpFilter', dev: 'eth0', value: 2 },
    ]);
    expect(plan.objects.map(objectKey)).toEqual([
      `ipset/${set4}`,
      `element/${set4}/10.244.0.5,veth6a1b2c3d`,
      `markChain/4/nft/${chain}`,
      'rule/4/32765/16/16/100',
      'route/4/100',
      'rpFilter/eth0',
    ]);
  });

  test('dual stack, bridged, exemptions per family, suppress rule one priority ahead, rp_filter for IPv4 only', () => {
    const c = config({
      mark: '0x10000', mask: '0xff0000', table: 7, rulePriority: 200, suppressMainPrefixLength: 0,
      serviceCIDRs: ['10.0.0.0/16', 'fd00:10::/108'], excludeCIDRs: ['168.63.129.16/32'],
    });
    const hm: HostMatch = { iface: 'cni0', topology: 'bridged', addresses: [{ family: 6, address: 'fd00:244:0:1::7' }, { family: 4, address: '10.244.1.7' }] };
    const plan = planAttachment(c, { network: 'mrnet', containerId: 'abc', ifName: 'eth0' }, hm, { ...facts, iptablesVariant: 'legacy' }, (c).marks[0]!);
    // Marking objects of every family first, then the routing objects of each.
    expect(plan.objects).toEqual([
      { kind: 'ipset', family: 4, name: set4 },
      { kind: 'element', family: 4, set: set4, address: '10.244.1.7', iface: 'cni0', comment: 'abc eth0' },
      { kind: 'markChain', family: 4, variant: 'legacy', chain, network: 'mrnet', exempt: ['10.0.0.0/16', '168.63.129.16/32'], marks: [{ name: 'default', set: set4, mark: 0x10000, mask: 0xff0000 }] },
      { kind: 'ipset', family: 6, name: set6 },
      { kind: 'element', family: 6, set: set6, address: 'fd00:244:0:1::7', iface: 'cni0', comment: 'abc eth0' },
      { kind: 'markChain', family: 6, variant: 'legacy', chain, network: 'mrnet', exempt: ['fd00:10::/108'], marks: [{ name: 'default', set: set6, mark: 0x10000, mask: 0xff0000 }] },
      { kind: 'rule', family: 4, priority: 200, mark: 0x10000, mask: 0xff0000, table: 7 },
      { kind: 'suppressRule', family: 4, priority: 199, prefixLength: 0 },
      { kind: 'route', family: 4, table: 7, gateway: '10.224.0.1', dev: 'eth0' },
      { kind: 'rpFilter', dev: 'eth0', value: 2 },
      { kind: 'rule', family: 6, priority: 200, mark: 0x10000, mask: 0xff0000, table: 7 },
      { kind: 'suppressRule', family: 6, priority: 199, prefixLength: 0 },
      { kind: 'route', family: 6, table: 7, gateway: 'fe80::1', dev: 'eth0' },
    ]);
    expect(plan.objects.map(objectKey)).toEqual([
      `ipset/${set4}`, `element/${set4}/10.244.1.7,cni0`, `markChain/4/legacy/${chain}`,
      `ipset/${set6}`, `element/${set6}/fd00:244:0:1::7,cni0`, `markChain/6/legacy/${chain}`,
      'rule/4/200/65536/16711680/7', 'suppressRule/4/199/0', 'route/4/7', 'rpFilter/eth0',
      'rule/6/200/65536/16711680/7', 'suppressRule/6/199/0', 'route/6/7',
    ]);
  });

  test('IPv6-only pod: IPv6 objects only, and no rp_filter', () => {
    const hm: HostMatch = { iface: 'vethX', topology: 'routed', addresses: [{ family: 6, address: 'fd00:244::9' }] };
    const kinds = planAttachment(config(), att, hm, facts, (config()).marks[0]!).objects.map((o) => `${o.kind}/${'family' in o ? o.family : '-'}`);
    expect(kinds).toEqual(['ipset/6', 'element/6', 'markChain/6', 'rule/6', 'route/6']);
  });

  test('rpFilter "unchanged" plans no rp_filter object', () => {
    const plan = planAttachment(config({ rpFilter: 'unchanged' }), att, routed4, facts, (config({ rpFilter: 'unchanged' })).marks[0]!);
    expect(plan.objects.map((o) => o.kind)).toEqual(['ipset', 'element', 'markChain', 'rule', 'route']);
  });

  test('the comment is pod namespace/name, container ID prefix and interface; without k8s names, the last two', () => {
    const { podNamespace: _ns, podName: _n, ...bare } = att;
    const el = (a: Attachment) => planAttachment(config(), a, routed4, facts, (config()).marks[0]!).objects.find((o) => o.kind === 'element');
    expect(el(att)).toMatchObject({ comment: 'team-a/web-1 7e84a9894ae7 eth0' });
    expect(el(bare)).toMatchObject({ comment: '7e84a9894ae7 eth0' });
    expect(el({ ...bare, podName: 'only-name' })).toMatchObject({ comment: '7e84a9894ae7 eth0' });
  });

  test('no uplink for a family is error 102 naming the netconf fields to set', () => {
    const noV4 = cniError(() => planAttachment(config(), att, routed4, { backend: 'iptables', iptablesVariant: 'nft', uplinks: {} }, (config()).marks[0]!));
    expect(noV4.code).toBe(102);
    expect(noV4.message).toBe('no IPv4 uplink: the main table has no default route with a gateway; set "uplink" and "gateway" in the netconf');
    const dual: HostMatch = { ...routed4, addresses: [...routed4.addresses, { family: 6, address: 'fd00:244::5' }] };
    const noV6 = cniError(() => planAttachment(config(), att, dual, { backend: 'iptables', iptablesVariant: 'nft', uplinks: { 4: facts.uplinks[4]! } }, (config()).marks[0]!));
    expect(noV6.code).toBe(102);
    expect(noV6.message).toBe('no IPv6 uplink: the main table has no default route with a gateway; set "uplink" and "gateway6" in the netconf');
  });

  test('shared objects have the same key for every pod of a network; pod elements do not', () => {
    const a = planAttachment(config(), att, routed4, facts, (config()).marks[0]!);
    const b = planAttachment(config(), { ...att, containerId: 'ffff0000', podName: 'web-2' },
      { iface: 'veth99', topology: 'routed', addresses: [{ family: 4, address: '10.244.0.9' }] }, facts, (config()).marks[0]!);
    const keysA = a.objects.map(objectKey);
    const keysB = b.objects.map(objectKey);
    expect(keysA.filter((k) => keysB.includes(k))).toEqual([`ipset/${set4}`, `markChain/4/nft/${chain}`, 'rule/4/32765/16/16/100', 'route/4/100', 'rpFilter/eth0']);
    expect(a.id).not.toBe(b.id);
  });

  test('object keys follow what identifies the kernel object', () => {
    const keys = (extra: Record<string, unknown>, network = 'mrnet') =>
      planAttachment(config({ ...extra, name: network }), { ...att, network }, routed4, facts, (config({ ...extra, name: network })).marks[0]!).objects.map(objectKey);
    const plain = keys({});
    // another network: its own set and chain, but the same routing objects
    const other = keys({}, 'other');
    expect(other.filter((k) => plain.includes(k))).toEqual(['rule/4/32765/16/16/100', 'route/4/100', 'rpFilter/eth0']);
    // another mark: another rule; the chain keeps its key (and is rewritten since its object differs)
    expect(keys({ mark: 0x20, mask: 0x20 })).toContain('rule/4/32765/32/32/100');
    expect(keys({ mark: 0x20, mask: 0x20 })).toContain(`markChain/4/nft/${chain}`);
    // another table: another rule and route
    expect(keys({ table: 101 })).toEqual(expect.arrayContaining(['rule/4/32765/16/16/101', 'route/4/101']));
  });

  test('planning is pure: same input, same output; inputs untouched', () => {
    const c = config({ serviceCIDRs: ['10.0.0.0/16'] });
    const snapshot = JSON.stringify([c, att, routed4, facts]);
    expect(planAttachment(c, att, routed4, facts, (c).marks[0]!)).toEqual(planAttachment(c, att, routed4, facts, (c).marks[0]!));
    expect(JSON.stringify([c, att, routed4, facts])).toBe(snapshot);
  });
});

describe('nftables exemptions', () => {
  test('an interval set takes no overlaps: CIDRs covered by another (or repeated) are left out', () => {
    const c = parseConfig({
      cniVersion: '1.0.0', name: 'mrnet', type: 'markroute',
      serviceCIDRs: ['10.96.0.0/12', 'fd00:96::/108', 'fd00:96::1/128'], excludeCIDRs: ['10.96.0.10/32', '168.63.129.16/32', '10.96.0.0/12'],
    });
    const hm: HostMatch = { iface: 'veth1', topology: 'routed', addresses: [{ family: 4, address: '10.244.0.5' }] };
    const plan = planAttachment(c, { network: 'mrnet', containerId: 'c', ifName: 'eth0' }, hm, { backend: 'nftables', uplinks: { 4: { dev: 'eth0', gateway: '10.224.0.1' } } }, c.marks[0]!);
    const table = plan.objects.find((o) => o.kind === 'nftTable');
    expect(table && table.kind === 'nftTable' && [table.exempt4, table.exempt6]).toEqual([['10.96.0.0/12', '168.63.129.16/32'], ['fd00:96::/108']]);
  });
});

// The overlap filter was O(n^2) (1000 exempt CIDRs: 1.07 s per nftables ADD); outermostCidrs sorts
// and sweeps. Same answer as the pairwise definition it replaced, on inputs dense in overlaps.
describe('outermostCidrs', () => {
  /** The pairwise definition it replaced: drop what another covers, and repeats after the first. */
  const pairwise = (cidrs: string[]) => {
    const covers = (outer: string, inner: string) => {
      const [, outerLen = '0'] = outer.split('/');
      const [address = '', innerLen = '0'] = inner.split('/');
      return Number(outerLen) <= Number(innerLen) && parseCidr(`${address}/${outerLen}`).text === outer;
    };
    return cidrs.filter((c, i, all) => !all.some((o, j) => j !== i && covers(o, c) && (o !== c || j < i)));
  };
  // Few distinct values per word, so that nested, equal and adjacent CIDRs are common.
  const cidr4 = fc.tuple(fc.constantFrom(0, 10, 11, 255), fc.constantFrom(0, 1, 96, 255), fc.constantFrom(0, 7, 128), fc.constantFrom(0, 1, 16, 255), fc.integer({ min: 0, max: 32 }))
    .map(([a, b, c, d, len]) => parseCidr(`${a}.${b}.${c}.${d}/${len}`).text);
  const group = fc.constantFrom(0, 1, 0x10, 0xfd00, 0xffff);
  const cidr6 = fc.tuple(fc.array(group, { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 128 }))
    .map(([gs, len]) => parseCidr(`${gs.map((g) => g.toString(16)).join(':')}/${len}`).text);

  test('equals the pairwise definition on random lists (IPv4 and IPv6), order kept', () => {
    fc.assert(fc.property(fc.array(cidr4, { maxLength: 40 }), (cidrs) => {
      expect(outermostCidrs(cidrs)).toEqual(pairwise(cidrs));
    }), { numRuns: 2000 });
    fc.assert(fc.property(fc.array(cidr6, { maxLength: 40 }), (cidrs) => {
      expect(outermostCidrs(cidrs)).toEqual(pairwise(cidrs));
    }), { numRuns: 2000 });
  });

  test('examples: nested, repeated, adjacent, everything', () => {
    expect(outermostCidrs(['10.96.0.10/32', '10.96.0.0/12', '10.96.0.0/12', '10.112.0.0/12', '168.63.129.16/32']))
      .toEqual(['10.96.0.0/12', '10.112.0.0/12', '168.63.129.16/32']);
    expect(outermostCidrs(['10.0.0.0/8', '0.0.0.0/0', '255.255.255.255/32'])).toEqual(['0.0.0.0/0']);
    expect(outermostCidrs(['fd00:96::1/128', 'fd00:96::/108', '::/0', 'fd00::/8'])).toEqual(['::/0']);
    expect(outermostCidrs([])).toEqual([]);
  });

  test('2000 exempt CIDRs plan in well under 100 ms (nftables)', () => {
    const cidrs = Array.from({ length: 2000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`);
    // and some that nest in them, and a few /16s that cover many
    const nested = Array.from({ length: 200 }, (_, i) => `10.${i & 7}.${i}.${i & 127}/32`);
    const c = parseConfig({ cniVersion: '1.0.0', name: 'mrnet', type: 'markroute', serviceCIDRs: [...cidrs, '10.1.0.0/16'], excludeCIDRs: nested });
    const hm: HostMatch = { iface: 'veth1', topology: 'routed', addresses: [{ family: 4, address: '10.244.0.5' }] };
    const facts: NodeFacts = { backend: 'nftables', uplinks: { 4: { dev: 'eth0', gateway: '10.224.0.1' } } };
    const att: Attachment = { network: 'mrnet', containerId: 'c', ifName: 'eth0' };
    planAttachment(c, att, hm, facts, c.marks[0]!); // warm-up
    const started = performance.now();
    const plan = planAttachment(c, att, hm, facts, c.marks[0]!);
    const ms = performance.now() - started;
    const table = plan.objects.find((o) => o.kind === 'nftTable');
    expect(table?.kind === 'nftTable' && table.exempt4.length).toBe(2000 - 256 + 1);
    expect(ms).toBeLessThan(50);
  });
});

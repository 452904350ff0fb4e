// Annotated mode (the fwmark plugin's use): pods choose a mark by annotation; entries with a table
// get their own rule and route, entries without only mark.
import { describe, expect, test } from 'vitest';
import { selectPod } from '../../src/selection.ts';
import { parseConfig } from '../../src/config.ts';
import { objectKey, planAttachment, setName, type HostMatch, type NodeFacts } from '../../src/plan.ts';
import { cniError } from './helpers.ts';

const fwmarkNetconf = {
  cniVersion: '1.0.0', name: 'k3s', type: 'markroute',
  capabilities: { 'io.kubernetes.cri.pod-annotations': true },
  marks: { vpn: { mark: 16, mask: 16 } },
};
const annotated = (annotations: Record<string, string> | undefined, extra: Record<string, unknown> = {}) =>
  parseConfig({ ...fwmarkNetconf, ...extra, ...(annotations ? { runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations } } : {}) });

const routed: HostMatch = { iface: 'veth1', topology: 'routed', addresses: [{ family: 4, address: '10.42.0.5' }] };
const facts: NodeFacts = { backend: 'iptables', iptablesVariant: 'nft', uplinks: { 4: { dev: 'eth0', gateway: '10.0.0.1' } } };
const att = { network: 'k3s', containerId: 'c1', ifName: 'eth0' };

describe('annotated mode: config', () => {
  test("the fwmark plugin's netconf works unchanged apart from type: annotated, marks only", () => {
    const c = annotated(undefined);
    expect(c.mode).toBe('annotated');
    expect(c.annotation).toBe('cni.fwmark.net/name');
    expect(c.marks).toEqual([{ name: 'vpn', tag: expect.stringMatching(/^[0-9a-f]{8}$/), mark: 16, mask: 16 }]);
  });

  test('an entry without mask sets only its own bits (fwmark would take all 32)', () => {
    expect(annotated(undefined, { marks: { vpn: { mark: 0x100 } } }).marks[0]).toMatchObject({ mark: 0x100, mask: 0x100 });
  });

  test('an entry with a table routes: its rule priority, uplink and gateways', () => {
    const c = annotated(undefined, { marks: { vpn: { mark: 16, mask: 16, table: 123, gateway: '192.168.2.1', uplink: 'vpn0' }, raw: { mark: 32 } } });
    expect(c.marks[0]!.routing).toEqual({ table: 123, priority: 32765, uplink: 'vpn0', gateway: '192.168.2.1' });
    expect(c.marks[1]!.routing).toBeUndefined();
  });

  test('top-level mark, mask and table belong to transparent-tunnel', () => {
    for (const field of ['mark', 'mask', 'table']) {
      const err = cniError(() => annotated(undefined, { [field]: 16 }));
      expect([err.code, err.message]).toEqual([7, `invalid netconf: ${field}: belongs to mode "transparent-tunnel"; in annotated mode each entry of \`marks\` has its own`]);
    }
  });

  test('entries are validated like the transparent-tunnel mark, naming the entry', () => {
    expect(cniError(() => annotated(undefined, { marks: { vpn: { mark: 0x30, mask: 0x10 } } })).message)
      .toBe('invalid netconf: marks.vpn.mark: 0x30 has bits outside mask 0x10');
    expect(cniError(() => annotated(undefined, { marks: { vpn: { mark: 0x4000 } } })).message)
      .toMatch(/^invalid netconf: marks\.vpn\.mask: 0x4000 overlaps kube-proxy/);
    expect(cniError(() => annotated(undefined, { marks: { 'bad name!': { mark: 16 } } })).message).toMatch(/^invalid netconf: marks\.bad name!: names must be/);
    expect(cniError(() => annotated(undefined, { marks: {} })).message).toMatch(/^invalid netconf: marks: annotated mode needs at least one entry/);
    expect(cniError(() => annotated(undefined, { marks: { a: { mark: 16, table: 1 }, b: { mark: 16, table: 2 } } })).message)
      .toBe('invalid netconf: marks.b: has the mark 0x10/0x10 of marks.a but another table: one fwmark can lead to one table');
    expect(cniError(() => annotated(undefined, { linkGroup: 8 })).message).toMatch(/^invalid netconf: linkGroup: /);
  });

  test('marks in transparent-tunnel mode is an error', () => {
    expect(cniError(() => parseConfig({ ...fwmarkNetconf, mode: 'transparent-tunnel' })).message).toMatch(/^invalid netconf: marks: belongs to mode "annotated"/);
  });
});

describe('annotated mode: which pods are marked', () => {
  test('a pod without the annotation passes through', () => {
    expect(selectPod(annotated(undefined), undefined).mark).toBeUndefined();
    expect(selectPod(annotated({ 'other/annotation': 'vpn' }), undefined).mark).toBeUndefined();
  });

  test('a pod naming an entry gets it; another annotation key can be configured', () => {
    expect(selectPod(annotated({ 'cni.fwmark.net/name': 'vpn' }), undefined).mark?.name).toBe('vpn');
    expect(selectPod(annotated({ 'example.com/egress': 'vpn' }, { annotation: 'example.com/egress' }), undefined).mark?.name).toBe('vpn');
  });

  test('an unknown name is error 7 naming it and the known ones', () => {
    const err = cniError(() => selectPod(annotated({ 'cni.fwmark.net/name': 'nope' }, { marks: { vpn: { mark: 16 }, tor: { mark: 32 } } }), undefined).mark);
    expect([err.code, err.message]).toEqual([7, 'invalid netconf: marks: the pod\'s annotation cni.fwmark.net/name="nope" names no entry of marks; known: vpn, tor']);
  });
});

describe('annotated mode: plan', () => {
  const c = annotated({ 'cni.fwmark.net/name': 'vpn' }, { marks: { vpn: { mark: 16, mask: 16, table: 123, gateway: '192.168.2.1', uplink: 'vpn0' }, raw: { mark: 32 } } });

  test('the chain serves every entry; the pod is in its entry\'s set; its entry\'s rule and route only', () => {
    const vpn = c.marks[0]!;
    const plan = planAttachment(c, att, routed, { ...facts, uplinks: { 4: { dev: 'vpn0', gateway: '192.168.2.1' } } }, vpn);
    const chain = plan.objects.find((o) => o.kind === 'markChain');
    expect(chain && chain.kind === 'markChain' && chain.marks.map((m) => [m.name, m.mark, m.mask])).toEqual([['vpn', 16, 16], ['raw', 32, 32]]);
    const element = plan.objects.find((o) => o.kind === 'element');
    expect(element).toMatchObject({ set: setName('k3s', 4, vpn.tag) });
    expect(plan.objects.map(objectKey).filter((k) => /^(rule|route|rpFilter)/.test(k))).toEqual(['rule/4/32765/16/16/123', 'route/4/123', 'rpFilter/vpn0']);
  });

  test('an entry without a table only marks: no rule, no route', () => {
    const raw = c.marks[1]!;
    const kinds = planAttachment(c, att, routed, facts, raw).objects.map((o) => o.kind);
    expect(kinds).toEqual(['ipset', 'ipset', 'element', 'markChain']);
  });

  test('with nftables the table has a set pair per entry and the element goes into the pod\'s', () => {
    const plan = planAttachment(c, att, routed, { backend: 'nftables', uplinks: facts.uplinks }, c.marks[1]!);
    const table = plan.objects.find((o) => o.kind === 'nftTable');
    expect(table && table.kind === 'nftTable' && table.marks.map((m) => m.set)).toEqual([c.marks[0]!.tag, c.marks[1]!.tag]);
    expect(plan.objects.find((o) => o.kind === 'nftElement')).toMatchObject({ set: c.marks[1]!.tag, address: '10.42.0.5' });
  });

  test('a VPN uplink without a gateway gets a device route', () => {
    const dev = annotated({ 'cni.fwmark.net/name': 'vpn' }, { marks: { vpn: { mark: 16, table: 123, uplink: 'vpn0' } } });
    const plan = planAttachment(dev, att, routed, { ...facts, uplinks: { 4: { dev: 'vpn0' } } }, dev.marks[0]!);
    expect(plan.objects.find((o) => o.kind === 'route')).toEqual({ kind: 'route', family: 4, table: 123, dev: 'vpn0' });
  });
});

// Golden batches: the exact text each kernel tool receives, rendered by the backends' pure
// `render*` functions from the planned objects, for every object kind, both families, both marking
// backends (and iptables' legacy and nft variants), install and remove. Then applyChange, the one
// place that runs them, through a fake ToolRunner: which batches it runs, in which order.
import { afterEach, describe, expect, it } from 'vitest';
import { applyChange } from '../../src/backend/apply.ts';
import { renderRouteBatch, renderLinkGroups, renderRouteGet, renderRoutingRead, type RouteBatch } from '../../src/backend/iproute.ts';
import { MangleTable, renderChains, renderDestroySets, renderSets } from '../../src/backend/iptables.ts';
import { renderNft } from '../../src/backend/nftables.ts';
import { useToolRunner, type ToolCall, type ToolOutput, type ToolRunner } from '../../src/kernel/exec.ts';
import { MemoryStore, emptyIndex } from '../../src/state/store.ts';
import { StateView } from '../../src/state/view.ts';
import type {
  LinkGroup, MarkChain, NftElement, NftTable, PodSet, PolicyRoute, PolicyRule, SetElement, SuppressRule,
} from '../../src/plan.ts';

/** A call as a person reads it: the command line, then the batch on stdin. */
const show = (call: ToolCall | undefined) => (call ? `$ ${call.argv.join(' ')}\n${call.input ?? ''}` : '(nothing to run)');

const set4: PodSet = { kind: 'ipset', family: 4, name: 'mr4-3f2a9c1d' };
const set6: PodSet = { kind: 'ipset', family: 6, name: 'mr6-3f2a9c1d' };
const el4: SetElement = { kind: 'element', family: 4, set: set4.name, address: '10.244.1.5', iface: 'veth1a2b', comment: 'default/web-0 eth0' };
const el6: SetElement = { kind: 'element', family: 6, set: set6.name, address: 'fd00:10:244::5', iface: 'veth1a2b', comment: 'default/web-0 eth0' };
const chain = (family: 4 | 6, variant: 'legacy' | 'nft'): MarkChain => ({
  kind: 'markChain', family, variant, chain: 'MARKROUTE-3F2A9C1D', network: 'egress',
  exempt: family === 4 ? ['10.96.0.0/12', '10.244.0.0/16'] : ['fd00:10:96::/108'],
  marks: [
    { name: 'default', set: family === 4 ? set4.name : set6.name, mark: 0x10, mask: 0x10 },
    { name: 'vpn', set: `${family === 4 ? set4.name : set6.name}-vpn`, mark: 0x20, mask: 0xf0 },
  ],
});
const table: NftTable = {
  kind: 'nftTable', table: 'markroute-3f2a9c1d', network: 'egress',
  exempt4: ['10.96.0.0/12', '10.244.0.0/16'], exempt6: [],
  marks: [{ name: 'default', set: '', mark: 0x10, mask: 0x10 }],
};
const tableFull: NftTable = {
  ...table, exempt6: ['fd00:10:96::/108'],
  marks: [...table.marks, { name: 'vpn', set: 'vpn', mark: 0x20, mask: 0xf0 }],
  linkGroup: 7,
  probeRewrite: { uplink: 'eth0', from: 'fe80::1', to: 'fd00:ff::1' },
};
const nftEl4: NftElement = { kind: 'nftElement', family: 4, table: table.table, set: '', address: '10.244.1.5', iface: 'veth1a2b', comment: 'default/web-0 eth0' };
const nftEl6: NftElement = { kind: 'nftElement', family: 6, table: table.table, set: '', address: 'fd00:10:244::5', iface: 'veth1a2b', comment: 'default/web-0 eth0' };
const group: LinkGroup = { kind: 'linkGroup', dev: 'veth1a2b', group: 7 };
const rule = (family: 4 | 6): PolicyRule => ({ kind: 'rule', family, priority: 32000, mark: 0x10, mask: 0x10, table: 123 });
const suppress = (family: 4 | 6): SuppressRule => ({ kind: 'suppressRule', family, priority: 31999, prefixLength: 0 });
const route4: PolicyRoute = { kind: 'route', family: 4, table: 123, gateway: '192.0.2.1', dev: 'eth0' };
const route6: PolicyRoute = { kind: 'route', family: 6, table: 123, gateway: 'fe80::1', dev: 'eth0' };
/** An annotated entry with an uplink and no gateway (a VPN's point-to-point interface): a device route. */
const deviceRoute: PolicyRoute = { kind: 'route', family: 4, table: 123, dev: 'vpn0' };

describe('ipset', () => {
  it('creates sets of both families and adds their elements', () => {
    expect(show(renderSets([set4, set6], [el4, el6], []))).toMatchInlineSnapshot(`
      "$ ipset -exist restore
      create mr4-3f2a9c1d hash:net,iface family inet comment
      create mr6-3f2a9c1d hash:net,iface family inet6 comment
      add mr4-3f2a9c1d 10.244.1.5,veth1a2b comment "default/web-0 eth0"
      add mr6-3f2a9c1d fd00:10:244::5,veth1a2b comment "default/web-0 eth0"
      "
    `);
  });
  it('deletes elements', () => {
    expect(show(renderSets([], [], [el4, el6]))).toMatchInlineSnapshot(`
      "$ ipset -exist restore
      del mr4-3f2a9c1d 10.244.1.5,veth1a2b
      del mr6-3f2a9c1d fd00:10:244::5,veth1a2b
      "
    `);
  });
  it('destroys the sets that exist, and runs nothing when none does', () => {
    expect(show(renderDestroySets([set4, set6], new Set([set4.name, set6.name])))).toMatchInlineSnapshot(`
      "$ ipset restore
      destroy mr4-3f2a9c1d
      destroy mr6-3f2a9c1d
      "
    `);
    expect(show(renderDestroySets([set4], new Set()))).toBe('(nothing to run)');
    expect(show(renderSets([], [], []))).toBe('(nothing to run)');
  });
});

describe('iptables-restore', () => {
  const empty = MangleTable.parse('*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n');
  const holding = (c: MarkChain) => MangleTable.parse(`*mangle\n:PREROUTING ACCEPT [0:0]\n:${c.chain} - [0:0]\n-A PREROUTING -j ${c.chain}\nCOMMIT\n`);

  it('IPv4, legacy: installs the chain whole and the jump to it', () => {
    expect(show(renderChains(4, 'legacy', [chain(4, 'legacy')], [], empty))).toMatchInlineSnapshot(`
      "$ iptables-legacy-restore --noflush --wait 5
      *mangle
      :MARKROUTE-3F2A9C1D - [0:0]
      -A MARKROUTE-3F2A9C1D -d 10.96.0.0/12 -m comment --comment "markroute exempt" -j RETURN
      -A MARKROUTE-3F2A9C1D -d 10.244.0.0/16 -m comment --comment "markroute exempt" -j RETURN
      -A MARKROUTE-3F2A9C1D -m conntrack --ctstate DNAT -m comment --comment "markroute exempt kube-proxy DNAT" -j RETURN
      -A MARKROUTE-3F2A9C1D -m set --match-set mr4-3f2a9c1d src,src -m comment --comment "markroute mark pods of egress" -j MARK --set-xmark 0x10/0x10
      -A MARKROUTE-3F2A9C1D -m set --match-set mr4-3f2a9c1d-vpn src,src -m comment --comment "markroute mark vpn pods of egress" -j MARK --set-xmark 0x20/0xf0
      -I PREROUTING 1 -j MARKROUTE-3F2A9C1D
      COMMIT
      "
    `);
  });
  it('IPv6, nft: the same through ip6tables-nft; the jump that exists is not added again', () => {
    expect(show(renderChains(6, 'nft', [chain(6, 'nft')], [], holding(chain(6, 'nft'))))).toMatchInlineSnapshot(`
      "$ ip6tables-nft-restore --noflush --wait 5
      *mangle
      :MARKROUTE-3F2A9C1D - [0:0]
      -A MARKROUTE-3F2A9C1D -d fd00:10:96::/108 -m comment --comment "markroute exempt" -j RETURN
      -A MARKROUTE-3F2A9C1D -m conntrack --ctstate DNAT -m comment --comment "markroute exempt kube-proxy DNAT" -j RETURN
      -A MARKROUTE-3F2A9C1D -m set --match-set mr6-3f2a9c1d src,src -m comment --comment "markroute mark pods of egress" -j MARK --set-xmark 0x10/0x10
      -A MARKROUTE-3F2A9C1D -m set --match-set mr6-3f2a9c1d-vpn src,src -m comment --comment "markroute mark vpn pods of egress" -j MARK --set-xmark 0x20/0xf0
      COMMIT
      "
    `);
  });
  it('the variant and family pick the tool, and nothing else', () => {
    const tools = (['legacy', 'nft'] as const).flatMap((v) => ([4, 6] as const).map((f) => renderChains(f, v, [chain(f, v)], [], empty)!));
    expect(tools.map((t) => t.argv.join(' '))).toEqual([
      'iptables-legacy-restore --noflush --wait 5', 'ip6tables-legacy-restore --noflush --wait 5',
      'iptables-nft-restore --noflush --wait 5', 'ip6tables-nft-restore --noflush --wait 5',
    ]);
    expect(tools[0]!.input).toBe(tools[2]!.input);
    expect(tools[1]!.input).toBe(tools[3]!.input);
  });
  it('removes the jump and the chain that exist, and runs nothing for a chain already gone', () => {
    expect(show(renderChains(4, 'nft', [], [chain(4, 'nft')], holding(chain(4, 'nft'))))).toMatchInlineSnapshot(`
      "$ iptables-nft-restore --noflush --wait 5
      *mangle
      -D PREROUTING -j MARKROUTE-3F2A9C1D
      :MARKROUTE-3F2A9C1D - [0:0]
      -X MARKROUTE-3F2A9C1D
      COMMIT
      "
    `);
    expect(show(renderChains(4, 'nft', [], [chain(4, 'nft')], empty))).toBe('(nothing to run)');
  });
});

describe('nft -f', () => {
  it('installs a table: sets of both families, exemptions, the prerouting chain', () => {
    expect(show(renderNft([table], [], [], []))).toMatchInlineSnapshot(`
      "$ nft -f -
      add table inet markroute-3f2a9c1d
      add set inet markroute-3f2a9c1d pods4 { type ipv4_addr . ifname; }
      add set inet markroute-3f2a9c1d exempt4 { type ipv4_addr; flags interval; }
      flush set inet markroute-3f2a9c1d exempt4
      add element inet markroute-3f2a9c1d exempt4 { 10.96.0.0/12, 10.244.0.0/16 }
      add set inet markroute-3f2a9c1d pods6 { type ipv6_addr . ifname; }
      add set inet markroute-3f2a9c1d exempt6 { type ipv6_addr; flags interval; }
      flush set inet markroute-3f2a9c1d exempt6
      add chain inet markroute-3f2a9c1d prerouting { type filter hook prerouting priority mangle; policy accept; }
      flush chain inet markroute-3f2a9c1d prerouting
      add rule inet markroute-3f2a9c1d prerouting ip daddr @exempt4 return
      add rule inet markroute-3f2a9c1d prerouting ip6 daddr @exempt6 return
      add rule inet markroute-3f2a9c1d prerouting ct status dnat return
      add rule inet markroute-3f2a9c1d prerouting ip saddr . iifname @pods4 meta mark set meta mark and 0xffffffef or 0x10
      add rule inet markroute-3f2a9c1d prerouting ip6 saddr . iifname @pods6 meta mark set meta mark and 0xffffffef or 0x10 comment "markroute v=d51efaa8"
      add chain inet markroute-3f2a9c1d probe-in
      delete chain inet markroute-3f2a9c1d probe-in
      add chain inet markroute-3f2a9c1d probe-out
      delete chain inet markroute-3f2a9c1d probe-out
      "
    `);
  });
  it('a table with two marks, a link group and the IPv6 probe rewrite: what differs from the one above', () => {
    const lines = (t: NftTable) => renderNft([t], [], [], [])!.input!.trimEnd().split('\n');
    const [basic, full] = [lines(table), lines(tableFull)];
    const diff = [...basic.filter((l) => !full.includes(l)).map((l) => `- ${l}`), ...full.filter((l) => !basic.includes(l)).map((l) => `+ ${l}`)];
    expect(diff.join('\n').replaceAll('inet markroute-3f2a9c1d', 'T')).toMatchInlineSnapshot(`
      "- add rule T prerouting ip6 saddr . iifname @pods6 meta mark set meta mark and 0xffffffef or 0x10 comment "markroute v=d51efaa8"
      - add chain T probe-in
      - delete chain T probe-in
      - add chain T probe-out
      - delete chain T probe-out
      + add set T pods4_vpn { type ipv4_addr . ifname; }
      + add set T pods6_vpn { type ipv6_addr . ifname; }
      + add element T exempt6 { fd00:10:96::/108 }
      + add rule T prerouting ip6 saddr . iifname @pods6 meta mark set meta mark and 0xffffffef or 0x10
      + add rule T prerouting ip saddr . iifname @pods4_vpn meta mark set meta mark and 0xffffff0f or 0x20
      + add rule T prerouting ip6 saddr . iifname @pods6_vpn meta mark set meta mark and 0xffffff0f or 0x20
      + add rule T prerouting iifgroup 7 meta mark set meta mark and 0xffffffef or 0x10 comment "markroute v=751e12b5"
      + add chain T probe-in { type filter hook prerouting priority -300; policy accept; }
      + flush chain T probe-in
      + add rule T probe-in iifname "eth0" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
      + add rule T probe-in iifname "eth0" ip6 saddr fe80::1 ip6 saddr set fd00:ff::1 comment "markroute v=751e12b5"
      + add chain T probe-out { type filter hook postrouting priority -300; policy accept; }
      + flush chain T probe-out
      + add rule T probe-out oifname "eth0" ip6 daddr fd00:ff::1 ip6 daddr set fe80::1 comment "markroute v=751e12b5""
    `);
  });
  it('adds and deletes elements of both families', () => {
    expect(show(renderNft([], [nftEl4, nftEl6], [], []))).toMatchInlineSnapshot(`
      "$ nft -f -
      add element inet markroute-3f2a9c1d pods4 { 10.244.1.5 . "veth1a2b" comment "default/web-0 eth0" }
      add element inet markroute-3f2a9c1d pods6 { fd00:10:244::5 . "veth1a2b" comment "default/web-0 eth0" }
      "
    `);
    expect(show(renderNft([], [], [nftEl4, nftEl6], []))).toMatchInlineSnapshot(`
      "$ nft -f -
      add table inet markroute-3f2a9c1d
      add set inet markroute-3f2a9c1d pods4 { type ipv4_addr . ifname; }
      add element inet markroute-3f2a9c1d pods4 { 10.244.1.5 . "veth1a2b" }
      delete element inet markroute-3f2a9c1d pods4 { 10.244.1.5 . "veth1a2b" }
      add table inet markroute-3f2a9c1d
      add set inet markroute-3f2a9c1d pods6 { type ipv6_addr . ifname; }
      add element inet markroute-3f2a9c1d pods6 { fd00:10:244::5 . "veth1a2b" }
      delete element inet markroute-3f2a9c1d pods6 { fd00:10:244::5 . "veth1a2b" }
      "
    `);
  });
  it('removes a table; its elements need no delete of their own', () => {
    expect(show(renderNft([], [], [nftEl4], [table]))).toMatchInlineSnapshot(`
      "$ nft -f -
      add table inet markroute-3f2a9c1d
      delete table inet markroute-3f2a9c1d
      "
    `);
    expect(show(renderNft([], [], [], []))).toBe('(nothing to run)');
  });
});

const batch = (over: Partial<RouteBatch>): RouteBatch =>
  ({ addRules: [], delRules: [], addSuppress: [], delSuppress: [], replaceRoutes: [], delRoutes: [], ...over });

describe('ip -batch', () => {
  it('IPv4 install: the route first, then the rules', () => {
    expect(show(renderRouteBatch(4, batch({ replaceRoutes: [route4], addRules: [rule(4)], addSuppress: [suppress(4)] })))).toMatchInlineSnapshot(`
      "$ ip -4 -batch -
      route replace default via 192.0.2.1 dev eth0 table 123
      rule add fwmark 0x10/0x10 lookup 123 priority 32000
      rule add from all lookup main suppress_prefixlength 0 priority 31999
      "
    `);
  });
  it('IPv6 install', () => {
    expect(show(renderRouteBatch(6, batch({ replaceRoutes: [route6], addRules: [rule(6)], addSuppress: [suppress(6)] })))).toMatchInlineSnapshot(`
      "$ ip -6 -batch -
      route replace default via fe80::1 dev eth0 table 123
      rule add fwmark 0x10/0x10 lookup 123 priority 32000
      rule add from all lookup main suppress_prefixlength 0 priority 31999
      "
    `);
  });
  it('a policy route without a gateway is a device route: no "via"', () => {
    expect(show(renderRouteBatch(4, batch({ replaceRoutes: [deviceRoute] })))).toMatchInlineSnapshot(`
      "$ ip -4 -batch -
      route replace default dev vpn0 table 123
      "
    `);
  });
  it('remove, both families', () => {
    expect(show(renderRouteBatch(4, batch({ delRules: [rule(4)], delSuppress: [suppress(4)], delRoutes: [route4] })))).toMatchInlineSnapshot(`
      "$ ip -4 -batch -
      rule del fwmark 0x10/0x10 lookup 123 priority 32000
      rule del from all lookup main suppress_prefixlength 0 priority 31999
      route del default table 123
      "
    `);
    // IPv6: the same lines, given to ip -6.
    const remove4 = renderRouteBatch(4, batch({ delRules: [rule(4)], delSuppress: [suppress(4)], delRoutes: [route4] }))!;
    const remove6 = renderRouteBatch(6, batch({ delRules: [rule(6)], delSuppress: [suppress(6)], delRoutes: [route6] }))!;
    expect(remove6).toEqual({ argv: ['ip', '-6', '-batch', '-'], input: remove4.input });
    expect(show(renderRouteBatch(4, batch({})))).toBe('(nothing to run)');
  });
  it('link groups: set, and put back to default', () => {
    expect(show(renderLinkGroups([group], [{ ...group, dev: 'veth9z8y' }]))).toMatchInlineSnapshot(`
      "$ ip -batch -
      link set dev veth1a2b group 7
      link set dev veth9z8y group default
      "
    `);
    expect(show(renderLinkGroups([], []))).toBe('(nothing to run)');
  });
  it('reads: rules and policy tables in one batch; one packet\'s route for explain', () => {
    expect(show(renderRoutingRead(6, [123, 124]))).toMatchInlineSnapshot(`
      "$ ip -j -6 -force -batch -
      rule show
      route show table 123
      route show table 124
      "
    `);
    expect(show(renderRouteGet(4, { from: '10.244.1.5', to: '1.1.1.1', iif: 'veth1a2b' }, 0x10))).toMatchInlineSnapshot(`
      "$ ip -j -4 route get 1.1.1.1 from 10.244.1.5 iif veth1a2b mark 0x10
      "
    `);
  });
});

// applyChange through a fake runner whose kernel holds nothing of ours (install) or all of it (remove).
describe('applyChange runs the rendered batches, one per tool, in dependency order', () => {
  let previous: ToolRunner | undefined;
  afterEach(() => {
    if (previous) useToolRunner(previous);
    previous = undefined;
  });
  const ok = (stdout = ''): ToolOutput => ({ status: 0, stdout, stderr: '' });
  /** Records every run; answers reads from a kernel that holds everything (`installed`) or nothing. */
  function kernel(installed: boolean): ToolCall[] {
    const calls: ToolCall[] = [];
    const was = useToolRunner({
      run(argv, input) {
        calls.push({ argv: [...argv], ...(input === undefined ? {} : { input }) });
        const cmd = argv.join(' ');
        if (cmd === 'ipset list -n') return ok(installed ? `${set4.name}\n${set6.name}\n` : '');
        if (/^ip6?tables-(legacy|nft)-save -t mangle$/.test(cmd)) {
          const c = chain(4, 'legacy').chain;
          return ok(installed ? `*mangle\n:PREROUTING ACCEPT [0:0]\n:${c} - [0:0]\n-A PREROUTING -j ${c}\nCOMMIT\n` : '*mangle\nCOMMIT\n');
        }
        if (cmd === 'ip -j link show') return ok(JSON.stringify(installed ? [{ ifname: 'veth1a2b', group: '7' }] : []));
        if (/^ip -j -[46] -force -batch -$/.test(cmd)) {
          const f = argv[2] === '-4' ? 4 : 6;
          const rules = installed
            ? [{ priority: 31999, src: 'all', table: 'main', suppress_prefixlen: 0 }, { priority: 32000, src: 'all', fwmark: '0x10', fwmask: '0x10', table: '123' }]
            : [];
          const routes = installed ? [{ dst: 'default', gateway: f === 4 ? route4.gateway : route6.gateway, dev: 'eth0' }] : [];
          const tables = (input ?? '').split('\n').filter((l) => l.startsWith('route show')).length;
          return ok([rules, ...Array(tables).fill(routes)].map((x) => `${JSON.stringify(x)}\n`).join(''));
        }
        if (/^(ipset|ip6?tables-\w+-restore|nft -f|ip( -[46])? -batch)/.test(cmd)) return ok();
        throw new Error(`unexpected tool run: ${cmd}`);
      },
    });
    previous ??= was;
    return calls;
  }
  const routing = [rule(4), suppress(4), route4, rule(6), suppress(6), route6];
  const iptablesObjects = [set4, el4, chain(4, 'legacy'), set6, el6, chain(6, 'legacy')];
  const nftObjects = [table, nftEl4, nftEl6, group];

  /** The runs in order, each batch by its first line and size: the text itself is the renderers' (above). */
  const summary = (calls: ToolCall[]) =>
    calls.map((c) => `$ ${c.argv.join(' ')}${c.input ? `  <${c.input.split('\n')[0]} … (${c.input.trimEnd().split('\n').length} lines)` : ''}`).join('\n');
  const empty = MangleTable.parse('*mangle\nCOMMIT\n');

  it('iptables backend, install', () => {
    const calls = kernel(false);
    applyChange(iptablesObjects, []);
    expect(summary(calls)).toMatchInlineSnapshot(`
      "$ ipset -exist restore  <create mr4-3f2a9c1d hash:net,iface family inet comment … (4 lines)
      $ iptables-legacy-save -t mangle
      $ iptables-legacy-restore --noflush --wait 5  <*mangle … (9 lines)
      $ ip6tables-legacy-save -t mangle
      $ ip6tables-legacy-restore --noflush --wait 5  <*mangle … (8 lines)"
    `);
    expect(calls).toContainEqual(renderSets([set4, set6], [el4, el6], []));
    expect(calls).toContainEqual(renderChains(6, 'legacy', [chain(6, 'legacy')], [], empty));
  });
  it('iptables backend, remove: the elements go with their sets', () => {
    const calls = kernel(true);
    applyChange([], iptablesObjects.map((object) => ({ object })));
    expect(summary(calls)).toMatchInlineSnapshot(`
      "$ iptables-legacy-save -t mangle
      $ iptables-legacy-restore --noflush --wait 5  <*mangle … (5 lines)
      $ ip6tables-legacy-save -t mangle
      $ ip6tables-legacy-restore --noflush --wait 5  <*mangle … (5 lines)
      $ ipset list -n
      $ ipset restore  <destroy mr4-3f2a9c1d … (2 lines)"
    `);
    expect(calls).toContainEqual(renderDestroySets([set4, set6], new Set([set4.name, set6.name])));
  });
  it('nftables backend, install: table and elements in one transaction', () => {
    const calls = kernel(false);
    applyChange(nftObjects, []);
    expect(summary(calls)).toMatchInlineSnapshot(`
      "$ nft -f -  <add table inet markroute-3f2a9c1d … (21 lines)
      $ ip -batch -  <link set dev veth1a2b group 7 … (1 lines)"
    `);
    expect(calls).toContainEqual(renderNft([table], [nftEl4, nftEl6], [], []));
    expect(calls).toContainEqual(renderLinkGroups([group], []));
  });
  it('nftables backend, remove: the elements go with their table', () => {
    const calls = kernel(true);
    applyChange([], nftObjects.map((object) => ({ object })));
    expect(summary(calls)).toMatchInlineSnapshot(`
      "$ nft -f -  <add table inet markroute-3f2a9c1d … (2 lines)
      $ ip -j link show
      $ ip -batch -  <link set dev veth1a2b group default … (1 lines)"
    `);
    expect(calls).toContainEqual(renderNft([], [], [], [table]));
    expect(calls).toContainEqual(renderLinkGroups([], [group]));
  });
  it('routing objects (either backend): only the absent are added, only the present removed', () => {
    const install = kernel(false);
    applyChange(routing, []);
    const remove = kernel(true);
    applyChange([], routing.map((object) => ({ object })));
    expect(summary([...install, ...remove])).toMatchInlineSnapshot(`
      "$ ip -j -4 -force -batch -  <rule show … (1 lines)
      $ ip -4 -batch -  <route replace default via 192.0.2.1 dev eth0 table 123 … (3 lines)
      $ ip -j -6 -force -batch -  <rule show … (1 lines)
      $ ip -6 -batch -  <route replace default via fe80::1 dev eth0 table 123 … (3 lines)
      $ ip -j -4 -force -batch -  <rule show … (2 lines)
      $ ip -4 -batch -  <rule del fwmark 0x10/0x10 lookup 123 priority 32000 … (3 lines)
      $ ip -j -6 -force -batch -  <rule show … (2 lines)
      $ ip -6 -batch -  <rule del fwmark 0x10/0x10 lookup 123 priority 32000 … (3 lines)"
    `);
    for (const f of [4, 6] as const) {
      const fam = <T extends { family: number }>(xs: T[]) => xs.filter((x) => x.family === f);
      expect(install).toContainEqual(renderRouteBatch(f, batch({ replaceRoutes: fam([route4, route6]), addRules: [rule(f)], addSuppress: [suppress(f)] })));
      expect(remove).toContainEqual(renderRouteBatch(f, batch({ delRoutes: fam([route4, route6]), delRules: [rule(f)], delSuppress: [suppress(f)] })));
    }
  });
  it('a refused device route names the uplink field', () => {
    const calls = kernel(false);
    useToolRunner({
      run(argv, input) {
        calls.push({ argv: [...argv], input });
        if (argv.includes('-force')) return ok('[]\n[]\n');
        return { status: 2, stdout: '', stderr: 'Cannot find device "vpn0"\nCommand failed -:1\n' };
      },
    });
    expect(() => applyChange([deviceRoute], [])).toThrow('uplink vpn0 does not exist on this node (netconf field "uplink")');
    expect(calls.at(-1)!.input).toBe('route replace default dev vpn0 table 123\n');
  });
});

// explain asks the kernel through the same runner: its rules, then `ip route get` for the packet.
describe('explain runs its tools through the runner', () => {
  it('reads the rules and the route of the packet', async () => {
    const { explain } = await import('../../src/explain.ts');
    const calls: string[] = [];
    const previous = useToolRunner({
      run(argv) {
        calls.push(argv.join(' '));
        if (argv.includes('rule')) return { status: 0, stdout: '[{"priority":32766,"src":"all","table":"main"}]', stderr: '' };
        return { status: 0, stdout: '[{"dst":"1.1.1.1","gateway":"192.0.2.1","dev":"eth0"}]', stderr: '' };
      },
    });
    try {
      const view = new StateView(new MemoryStore(), emptyIndex('boot/ns'), () => new Map());
      expect(explain(view, { from: '10.244.1.5', to: '1.1.1.1', iif: 'veth1a2b' }).at(-1)).toBe('  the kernel routes it via 192.0.2.1 dev eth0');
      expect(calls).toEqual(['ip -j -4 rule show', 'ip -j -4 route get 1.1.1.1 from 10.244.1.5 iif veth1a2b mark 0x0']);
    } finally {
      useToolRunner(previous);
    }
  });
});

// The annotated-mode conflists shipped in conflists/, read as libcni reads them: each plugin entry
// gets the list's name and cniVersion (and runtimeConfig for the capabilities it declares), then
// markroute's entry goes through parseConfig. 30-flannel-vpn.conflist cannot run here (flannel
// needs its daemon), so this is where it is exercised; 20-ptp-annotated.conflist and
// 50-ptp-team-vpn.conflist also run under containerd in test/e2e/containerd.test.ts (and the latter
// in test/e2e/namespaces.test.ts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { selectPod } from '../../src/selection.ts';
import { parseConfig } from '../../src/config.ts';
import { cniError } from './helpers.ts';

const POD_ANNOTATIONS = 'io.kubernetes.cri.pod-annotations';
const load = (file: string) =>
  JSON.parse(readFileSync(join(import.meta.dirname, '../../conflists', file), 'utf8')) as {
    cniVersion: string; name: string; plugins: Record<string, any>[];
  };

/** markroute's netconf as libcni builds it from the list, with the pod's annotations when given. */
function markrouteNetconf(file: string, annotations?: Record<string, string>) {
  const list = load(file);
  const entry = list.plugins.find((p) => p.type === 'markroute')!;
  const wantsAnnotations = entry.capabilities?.[POD_ANNOTATIONS] === true;
  return {
    ...entry,
    name: list.name,
    cniVersion: list.cniVersion,
    ...(annotations && wantsAnnotations ? { runtimeConfig: { [POD_ANNOTATIONS]: annotations } } : {}),
  };
}

describe.each(['20-ptp-annotated.conflist', '30-flannel-vpn.conflist'])('%s', (file) => {
  test('markroute is the last plugin and declares the pod-annotations capability', () => {
    const list = load(file);
    expect(list.plugins.at(-1)!.type).toBe('markroute');
    expect(list.plugins.at(-1)!.capabilities).toEqual({ [POD_ANNOTATIONS]: true });
  });

  test("markroute's entry parses: annotated mode, a `vpn` entry with its table, uplink vpn0 and gateway", () => {
    const c = parseConfig(markrouteNetconf(file));
    expect(c.mode).toBe('annotated');
    expect(c.annotation).toBe('cni.fwmark.net/name');
    expect(c.marks).toEqual([{
      name: 'vpn', tag: expect.stringMatching(/^[0-9a-f]{8}$/), mark: 0x10, mask: 0x10,
      routing: { table: 123, priority: 32765, uplink: 'vpn0', gateway: '192.168.2.1' },
    }]);
    expect(c.backend).toBe('auto');
    expect(c.rpFilter).toBe('loose');
    expect(c.stateDir).toBe('/var/lib/cni/markroute');
  });

  test('a pod annotated vpn gets the entry, an unannotated pod none, an unknown name is error 7', () => {
    expect(selectPod(parseConfig(markrouteNetconf(file, { 'cni.fwmark.net/name': 'vpn' })), undefined).mark?.name).toBe('vpn');
    expect(selectPod(parseConfig(markrouteNetconf(file, { 'other/annotation': 'x' })), undefined).mark).toBeUndefined();
    expect(selectPod(parseConfig(markrouteNetconf(file)), undefined).mark).toBeUndefined();
    const err = cniError(() => selectPod(parseConfig(markrouteNetconf(file, { 'cni.fwmark.net/name': 'nosuch' })), undefined).mark);
    expect([err.code, err.message]).toEqual([7, 'invalid netconf: marks: the pod\'s annotation cni.fwmark.net/name="nosuch" names no entry of marks; known: vpn']);
  });
});

describe('30-flannel-vpn.conflist is a k3s/flannel chain', () => {
  const list = load('30-flannel-vpn.conflist');

  test("flannel first, with k3s's delegate (hairpin, default gateway), then portmap and bandwidth with their capabilities", () => {
    expect(list).toMatchObject({ cniVersion: '1.0.0', name: 'cbr0' });
    expect(list.plugins.map((p) => p.type)).toEqual(['flannel', 'portmap', 'bandwidth', 'markroute']);
    expect(list.plugins[0]).toEqual({ type: 'flannel', delegate: { hairpinMode: true, forceAddress: true, isDefaultGateway: true } });
    expect(list.plugins[1]).toEqual({ type: 'portmap', capabilities: { portMappings: true } });
    expect(list.plugins[2]).toEqual({ type: 'bandwidth', capabilities: { bandwidth: true } });
  });

  test("k3s's service CIDR is exempt", () => {
    const c = parseConfig(markrouteNetconf('30-flannel-vpn.conflist'));
    expect(c.exemptCIDRs.map((e) => [e.cidr.text, e.why])).toEqual([['10.43.0.0/16', 'service'], ['169.254.169.254/32', 'exclude']]);
  });
});

describe('40-azure-vnet-transparent.conflist is AKS\'s azure-vnet chain in transparent mode (NodeSubnet)', () => {
  const list = load('40-azure-vnet-transparent.conflist');

  test('azure-vnet first, as AKS writes it (azure-container-networking cni/azure-linux.conflist with mode transparent), then portmap, then markroute', () => {
    expect(list).toMatchObject({ cniVersion: '0.3.0', name: 'azure' });
    expect(list.plugins.map((p) => p.type)).toEqual(['azure-vnet', 'portmap', 'markroute']);
    expect(list.plugins[0]).toEqual({ type: 'azure-vnet', mode: 'transparent', ipsToRouteViaHost: ['169.254.20.10'], ipam: { type: 'azure-vnet-ipam' } });
  });

  test("markroute's entry: transparent tunnel; AKS's default service CIDR, Azure's wireserver, IMDS and node-local DNS exempt", () => {
    const c = parseConfig(markrouteNetconf('40-azure-vnet-transparent.conflist'));
    expect(c.mode).toBe('transparent-tunnel');
    expect(c.marks).toEqual([{ name: 'default', tag: '', mark: 0x10, mask: 0x10, routing: { table: 100, priority: 32765 } }]);
    expect(c.exemptCIDRs.map((e) => [e.cidr.text, e.why])).toEqual([
      ['10.0.0.0/16', 'service'], ['168.63.129.16/32', 'exclude'], ['169.254.169.254/32', 'exclude'], ['169.254.20.10/32', 'exclude'],
    ]);
  });
});

describe('50-ptp-team-vpn.conflist: a VPN for one team\'s namespace', () => {
  const file = '50-ptp-team-vpn.conflist';

  test('ptp, then markroute in annotated mode with the pod-annotations capability', () => {
    const list = load(file);
    expect(list).toMatchObject({ cniVersion: '1.0.0', name: 'pods-team-vpn' });
    expect(list.plugins.map((p) => p.type)).toEqual(['ptp', 'markroute']);
    expect(list.plugins[1]!.capabilities).toEqual({ [POD_ANNOTATIONS]: true });
  });

  test("markroute's entry parses: one entry, team-vpn, routed to the VPN gateway on vpn0, listing the namespace team-vpn", () => {
    const c = parseConfig(markrouteNetconf(file));
    expect(c.mode).toBe('annotated');
    expect(c.marks).toEqual([{
      name: 'team-vpn', tag: expect.stringMatching(/^[0-9a-f]{8}$/), mark: 0x10, mask: 0x10,
      routing: { table: 123, priority: 32765, uplink: 'vpn0', gateway: '192.168.2.1' },
      namespaces: ['team-vpn'],
    }]);
    expect(c.exemptCIDRs.map((e) => e.cidr.text)).toEqual(['10.96.0.0/12', '168.63.129.16/32', '169.254.169.254/32']);
  });

  test('a pod of team-vpn gets the entry without an annotation; a pod of another namespace none; an annotation still selects', () => {
    const c = parseConfig(markrouteNetconf(file));
    expect(selectPod(c, 'team-vpn')).toMatchObject({ by: 'namespace', mark: { name: 'team-vpn' } });
    expect(selectPod(c, 'default')).toEqual({ by: 'none', reason: expect.stringContaining('its namespace default is listed by no entry of marks') });
    expect(selectPod(parseConfig(markrouteNetconf(file, { 'cni.fwmark.net/name': 'team-vpn' })), 'default')).toMatchObject({ by: 'annotation', mark: { name: 'team-vpn' } });
  });
});

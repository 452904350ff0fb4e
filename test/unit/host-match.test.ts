// Host matching: prevResult where it names the host side, the kernel (through the fake probe) where it does not.
import { describe, expect, test } from 'vitest';
import type { PrevResult } from '../../src/config.ts';
import { readResult, resolveHostMatch } from '../../src/host-match.ts';
import { fakeProbe } from '../../src/kernel/probe-fake.ts';
import type { HostLink, PodInterface } from '../../src/kernel/probe.ts';
import { cniError } from './helpers.ts';

const prev = (p: Partial<PrevResult>): PrevResult => ({ interfaces: [], ips: [], ...p });
const NETNS = '/var/run/netns/cni-1234';
const pod = { ifName: 'eth0', netns: NETNS };

// What the ptp plugin returns: host veth first, then the container's interface.
const ptpPrev = prev({
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'veth6a1b2c3d', mac: '6e:1f:00:00:00:01' },
    { name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: NETNS },
  ],
  ips: [
    { address: '10.244.0.5/24', gateway: '10.244.0.1', interface: 1 },
    { address: 'FD00:244::5/64', gateway: 'fd00:244::1', interface: 1 },
  ],
});

// What the bridge plugin returns: the bridge, the host veth, the container's interface.
const bridgePrev = prev({
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'cni0', mac: '1e:a1:3c:75:09:44' },
    { name: 'veth615a6f01', mac: '86:2d:75:11:7b:5e' },
    { name: 'eth0', mac: 'ba:98:ce:8e:d2:ff', sandbox: NETNS },
  ],
  ips: [{ address: '10.244.1.7/24', gateway: '10.244.1.1', interface: 2 }],
});

const veth = (extra: Partial<PodInterface> = {}): PodInterface =>
  ({ ifName: 'eth0', ifindex: 2, kind: 'veth', peerIndex: 17, addresses: [{ family: 4, address: '10.244.0.9' }], ...extra });

/** A node whose pod namespace NETNS holds `iface`, peered with `peer` on the node. */
const nodeWith = (iface: PodInterface, peer?: HostLink) => fakeProbe({ pods: { [NETNS]: [{ iface, ...(peer ? { peer } : {}) }] } });

const V4 = [{ family: 4, address: '10.244.0.5' }];

describe('prevResult that names the host side: no kernel lookup', () => {
  test('ptp: the one host-side interface, routed, nothing asked of the kernel', () => {
    const probe = fakeProbe();
    expect(resolveHostMatch(ptpPrev, pod, probe)).toEqual({
      iface: 'veth6a1b2c3d', topology: 'routed',
      addresses: [{ family: 4, address: '10.244.0.5' }, { family: 6, address: 'fd00:244::5' }],
    });
    expect(probe.asked).toEqual([]);
  });

  test('bridge: the bridge the host veth is enslaved to, bridged, whatever the order', () => {
    const probe = fakeProbe({ masters: { veth615a6f01: 'cni0' } });
    const want = { iface: 'cni0', topology: 'bridged', addresses: [{ family: 4, address: '10.244.1.7' }] };
    expect(resolveHostMatch(bridgePrev, pod, probe)).toEqual(want);
    const reordered = prev({ interfaces: [...bridgePrev.interfaces].reverse(), ips: [{ address: '10.244.1.7/24', interface: 0 }] });
    expect(resolveHostMatch(reordered, pod, probe)).toEqual(want);
    expect(probe.asked.some((q) => q.startsWith('podInterface'))).toBe(false);
  });

  test('Calico: only the host veth listed, ips without interface: routed on it', () => {
    const calico = prev({ interfaces: [{ name: 'cali1a2b3c4d5e6' }], ips: [{ address: '10.244.0.5/32' }] });
    const probe = fakeProbe();
    expect(resolveHostMatch(calico, pod, probe)).toEqual({ iface: 'cali1a2b3c4d5e6', topology: 'routed', addresses: V4 });
    expect(probe.asked).toEqual([]);
  });

  test('ips without an interface index belong to the container interface; those of other interfaces do not', () => {
    const p = prev({
      interfaces: [{ name: 'vethA' }, { name: 'eth0', sandbox: '/ns' }, { name: 'vethB' }, { name: 'net1', sandbox: '/ns' }],
      ips: [{ address: '10.244.0.5/24' }, { address: '10.9.0.5/24', interface: 3 }, { address: '10.244.0.6/24', interface: 1 }],
    });
    const masterOf = (i: string) => (i === 'vethA' ? 'vethB' : undefined);
    expect(readResult(p, 'eth0', masterOf).addresses).toEqual([{ family: 4, address: '10.244.0.5' }, { family: 4, address: '10.244.0.6' }]);
    expect(readResult(p, 'net1', masterOf).addresses).toEqual([{ family: 4, address: '10.244.0.5' }, { family: 4, address: '10.9.0.5' }]);
  });
});

describe('prevResult that does not name the host side: the container interface\'s peer', () => {
  test('azure-vnet: eth0 listed without a sandbox is the container interface, never the node\'s eth0', () => {
    const azure = prev({ interfaces: [{ name: 'eth0', mac: '00:0d:3a:00:00:01' }], ips: [{ address: '10.244.0.5/24', gateway: '10.244.0.1' }] });
    const probe = nodeWith(veth(), { name: 'azv8e2f1b0c2d1' });
    expect(resolveHostMatch(azure, pod, probe)).toEqual({ iface: 'azv8e2f1b0c2d1', topology: 'routed', addresses: V4 });
    expect(probe.asked).toEqual([`podInterface ${NETNS} eth0`, 'hostPeer eth0']);
  });

  test('Cilium: only the container interface, ips[].interface 0; a netkit peer works as a veth does', () => {
    const cilium = prev({ interfaces: [{ name: 'eth0', sandbox: NETNS }], ips: [{ address: '10.244.0.5/32', interface: 0 }] });
    expect(resolveHostMatch(cilium, pod, nodeWith(veth(), { name: 'lxc12ab34cd56ef' })).iface).toBe('lxc12ab34cd56ef');
    expect(resolveHostMatch(cilium, pod, nodeWith(veth({ kind: 'netkit' }), { name: 'lxc12ab34cd56ef' }))).toEqual(
      { iface: 'lxc12ab34cd56ef', topology: 'routed', addresses: V4 });
  });

  test('AWS VPC CNI: host veth, container interface and a dummy entry: the kernel settles it', () => {
    const aws = prev({
      interfaces: [{ name: 'eni4a5b6c7d8e9', mac: '' }, { name: 'eth0', mac: '0', sandbox: NETNS }, { name: 'dummy4a5b6c7d8e', mac: '0' }],
      ips: [{ address: '10.244.0.5/32', interface: 1 }],
    });
    expect(resolveHostMatch(aws, pod, nodeWith(veth(), { name: 'eni4a5b6c7d8e9' }))).toEqual({ iface: 'eni4a5b6c7d8e9', topology: 'routed', addresses: V4 });
  });

  test('a host peer enslaved to a bridge means the bridged topology', () => {
    const azureBridge = prev({ interfaces: [{ name: 'eth0' }], ips: [{ address: '10.244.0.5/24' }] });
    expect(resolveHostMatch(azureBridge, pod, nodeWith(veth(), { name: 'azv1', bridge: 'azure0' }))).toEqual(
      { iface: 'azure0', topology: 'bridged', addresses: V4 });
  });

  test('no address in prevResult for CNI_IFNAME: the interface\'s global addresses', () => {
    const bare = prev({ interfaces: [{ name: 'net1', sandbox: NETNS }] });
    const iface = veth({ ifName: 'net1', addresses: [{ family: 4, address: '10.9.0.5' }, { family: 6, address: 'fd00:9::5' }] });
    expect(resolveHostMatch(bare, { ifName: 'net1', netns: NETNS }, nodeWith(iface, { name: 'veth9' }))).toEqual({
      iface: 'veth9', topology: 'routed', addresses: [{ family: 4, address: '10.9.0.5' }, { family: 6, address: 'fd00:9::5' }],
    });
  });

  test('a host side named but no address for CNI_IFNAME: the host side stays prevResult\'s, the addresses come from the netns', () => {
    const probe = nodeWith(veth());
    expect(resolveHostMatch(prev({ interfaces: [{ name: 'cali1' }] }), pod, probe)).toEqual(
      { iface: 'cali1', topology: 'routed', addresses: [{ family: 4, address: '10.244.0.9' }] });
    expect(probe.asked).toEqual([`podInterface ${NETNS} eth0`]);
  });
});

describe('what cannot be matched is error 7, saying why', () => {
  const azure = prev({ interfaces: [{ name: 'eth0' }], ips: [{ address: '10.244.0.5/24' }] });

  test.each([
    ['macvlan', veth({ kind: 'macvlan', peerIndex: 2 }), 'eth0 in CNI_NETNS is a macvlan device'],
    ['ipvlan', veth({ kind: 'ipvlan', peerIndex: 2 }), 'eth0 in CNI_NETNS is a ipvlan device'],
    ['SR-IOV VF', veth({ kind: '', peerIndex: undefined }), 'a device without a peer (a physical NIC or SR-IOV VF)'],
    ['veth whose peer is in the pod itself', veth({ peerIndex: undefined }), 'is a veth device'],
  ])('%s: no host peer', (_, iface, why) => {
    const err = cniError(() => resolveHostMatch(azure, pod, nodeWith(iface)));
    expect(err.code).toBe(7);
    expect(err.message).toContain(why);
    expect(err.message).toContain('no host-side interface whose packets markroute could mark');
  });

  test('a peer not found on the node', () => {
    const err = cniError(() => resolveHostMatch(azure, pod, nodeWith(veth())));
    expect(err.code).toBe(7);
    expect(err.message).toBe("invalid netconf: prevResult: the host-side peer of eth0 (ifindex 17) is not an interface of the node's network namespace that is up");
  });

  test('a peer enslaved to something that is not a bridge', () => {
    const err = cniError(() => resolveHostMatch(azure, pod, nodeWith(veth(), { name: 'veth1', otherMaster: 'ovs-system' })));
    expect(err.message).toContain('enslaved to ovs-system, which is not a Linux bridge');
  });

  test('no CNI_IFNAME in the netns', () => {
    const azureNet1 = prev({ interfaces: [{ name: 'net1' }], ips: [{ address: '10.244.0.5/24' }] });
    expect(cniError(() => resolveHostMatch(azureNet1, { ifName: 'net1', netns: NETNS }, nodeWith(veth()))).message)
      .toBe(`invalid netconf: prevResult: no interface net1 in CNI_NETNS ${NETNS}`);
  });

  test('no address anywhere', () => {
    const err = cniError(() => resolveHostMatch(prev({ interfaces: [{ name: 'eth0', sandbox: NETNS }] }), pod, nodeWith(veth({ addresses: [] }), { name: 'v' })));
    expect(err.message).toBe('invalid netconf: prevResult: no IP address for eth0: none in prevResult.ips and none of global scope on the interface in CNI_NETNS');
  });

  test('the kernel would be needed but there is no netns to ask (the CLI\'s plan without --netns)', () => {
    const err = cniError(() => resolveHostMatch(azure, { ifName: 'eth0', netns: '' }, fakeProbe()));
    expect(err.message).toBe('invalid netconf: prevResult: it lists no host-side interface, and without CNI_NETNS the kernel cannot be asked');
    expect(cniError(() => resolveHostMatch(bridgePrev, { ifName: 'eth0', netns: '' }, fakeProbe())).message)
      .toBe('invalid netconf: prevResult: none of cni0, veth615a6f01 is the bridge of another, and without CNI_NETNS the kernel cannot be asked');
  });
});

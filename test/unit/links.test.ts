// The parsers behind the kernel lookup of a pod's host side (src/kernel/links.ts), over what the
// tools print on this kind of machine (iproute2 6.1, kernel 6.18).
import { describe, expect, test } from 'vitest';
import { parseIgmp, parsePodInterface } from '../../src/kernel/links.ts';
import { cniError } from './helpers.ts';

// `ip -j -d addr show dev eth0` inside a pod namespace whose eth0 is a veth to the node (trimmed
// of fields markroute does not read).
const VETH = JSON.stringify([{
  ifindex: 2, link_index: 17, ifname: 'eth0', link_netnsid: 0, linkinfo: { info_kind: 'veth' },
  addr_info: [
    { family: 'inet', local: '10.9.0.5', prefixlen: 24, scope: 'global', label: 'eth0' },
    { family: 'inet6', local: 'FD00::5', prefixlen: 64, scope: 'global', nodad: true },
    { family: 'inet6', local: 'fe80::e46a:20ff:fe85:25d', prefixlen: 64, scope: 'link' },
  ],
}]);

describe('parsePodInterface', () => {
  test('a veth to the node: its kind, its index, its peer\'s index, its global addresses only (canonical)', () => {
    expect(parsePodInterface(VETH, 'eth0')).toEqual({
      ifName: 'eth0', ifindex: 2, kind: 'veth', peerIndex: 17,
      addresses: [{ family: 4, address: '10.9.0.5' }, { family: 6, address: 'fd00::5' }],
    });
  });

  test('a peer in the pod\'s own namespace (no link_netnsid) is no peer on the node', () => {
    const [link] = JSON.parse(VETH);
    delete link.link_netnsid;
    expect(parsePodInterface(JSON.stringify([link]), 'eth0')).not.toHaveProperty('peerIndex');
  });

  test('a macvlan keeps its kind (its link_index is its parent, not a peer: host-match refuses it); a VF has no kind', () => {
    const [link] = JSON.parse(VETH);
    expect(parsePodInterface(JSON.stringify([{ ...link, linkinfo: { info_kind: 'macvlan' } }]), 'eth0').kind).toBe('macvlan');
    const { linkinfo: _k, link_index: _i, link_netnsid: _n, ...vf } = link;
    expect(parsePodInterface(JSON.stringify([vf]), 'eth0')).toMatchObject({ kind: '' });
    expect(parsePodInterface(JSON.stringify([vf]), 'eth0')).not.toHaveProperty('peerIndex');
  });

  test('nothing printed: code 7 naming the interface', () => {
    expect(cniError(() => parsePodInterface('[]', 'net1')).message).toBe('invalid netconf: prevResult: no interface net1 in CNI_NETNS');
  });
});

test('parseIgmp: ifindex to name from /proc/net/igmp, group lines ignored', () => {
  const igmp = [
    'Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter',
    '1\tlo        :     1      V3',
    '\t\t\t\t010000E0     1 0:00000000\t\t0',
    '2\tvethhost  :     1      V3',
    '\t\t\t\t010000E0     1 0:00000000\t\t0',
    '17\tazv8e2f1b0c2d1:     1      V3',
    '',
  ].join('\n');
  expect(parseIgmp(igmp)).toEqual(new Map([[1, 'lo'], [2, 'vethhost'], [17, 'azv8e2f1b0c2d1']]));
});

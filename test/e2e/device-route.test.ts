// An annotated entry whose `uplink` has no gateway (README: "gets a device route"): a VPN-like
// point-to-point link to a gateway namespace that owns OUTSIDE_IP. This kernel has no ipip or tun
// module to spare, so the link is a veth made point-to-point: ARP off at both ends (no link-layer
// neighbours, as on a tun or WireGuard device) and one MAC for both (a NOARP device sends to its
// own link-layer address, which the peer then takes as its own). The policy table must hold
// `default dev vpn0`, with no `via` (iproute2 refuses "via  dev"), and the annotated pod's packets
// must leave through it; an unannotated pod's through the fabric as ever. Both backends.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  addGateway, addOutsideAddress, ArrivalCounter, createLab, loadPtpConflist, markrouteObjects, NO_MARKROUTE, nsExec, OUTSIDE_IP, tableRoutes,
  type Backend, type Conflist, type Gateway, type Lab, type Pod, type Snapshot,
} from '../lab/index.ts';

const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':');
const ANNOTATION = 'cni.fwmark.net/name';

describe.each(['nftables', 'iptables'] as Backend[])('a point-to-point uplink without gateway (%s backend)', (backend) => {
  let lab: Lab;
  let gw: Gateway;
  let fabric: ArrivalCounter;
  let list: Conflist;
  let before: Snapshot;
  let vpnPod: Pod;
  let plainPod: Pod;

  beforeAll(async () => {
    lab = await createLab({ cniPath });
    gw = addGateway(lab);
    // point-to-point: no ARP on either end, so a device route sends straight to the peer
    const mac = (JSON.parse(nsExec(lab.ns.node, ['ip', '-j', 'link', 'show', gw.nodeIf]).stdout) as { address: string }[])[0]!.address;
    nsExec(gw.ns, ['ip', 'link', 'set', 'eth0', 'address', mac]);
    nsExec(lab.ns.node, ['ip', 'link', 'set', gw.nodeIf, 'arp', 'off']);
    nsExec(gw.ns, ['ip', 'link', 'set', 'eth0', 'arp', 'off']);
    addOutsideAddress(lab.ns.fabric);
    fabric = new ArrivalCounter(lab.ns.fabric);
    fabric.install();
    list = loadPtpConflist(lab, backend);
    const { mark: _m, mask: _k, table: _t, ...entry } = list.plugins[1]!;
    list.plugins[1] = {
      ...entry, mode: 'annotated', capabilities: { 'io.kubernetes.cri.pod-annotations': true },
      marks: { vpn: { mark: '0x20', mask: '0x20', table: 124, uplink: gw.nodeIf } },
    };
    before = lab.snapshot();
    vpnPod = await lab.addPod('vpnpod', list, { annotations: { [ANNOTATION]: 'vpn' } });
    plainPod = await lab.addPod('plainpod', list);
    await lab.serve(gw.ns, 'udp', 5353);
    await lab.serve(lab.ns.fabric, 'udp', 5353);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('the policy table holds a device route, without a gateway', () => {
    expect(tableRoutes(lab.snapshot(), '124', 4)).toEqual([expect.objectContaining({ dst: 'default', dev: gw.nodeIf })]);
    expect(tableRoutes(lab.snapshot(), '124', 4)[0]).not.toHaveProperty('gateway');
  });

  test('the annotated pod\'s packets leave through the point-to-point uplink; the other pod\'s do not', async () => {
    gw.counter.reset();
    fabric.reset();
    expect((await lab.probe(vpnPod, 'udp', OUTSIDE_IP, 5353, { count: 3 })).received).toBe(3);
    expect(gw.counter.packets(vpnPod.ip4!, OUTSIDE_IP)).toBe(3);
    expect(fabric.packets(vpnPod.ip4!, OUTSIDE_IP)).toBe(0);
    expect((await lab.probe(plainPod, 'udp', OUTSIDE_IP, 5353, { count: 2 })).received).toBe(2);
    expect(fabric.packets(plainPod.ip4!, OUTSIDE_IP)).toBe(2);
    expect(gw.counter.packets(plainPod.ip4!, OUTSIDE_IP)).toBe(0);
  });

  test('DEL leaves the node as it was', async () => {
    for (const p of [vpnPod, plainPod]) expect((await lab.delPod(p)).ok).toBe(true);
    const after = lab.snapshot();
    expect(markrouteObjects(after)).toEqual(NO_MARKROUTE);
    expect(after).toEqual(before);
  });
});

// A second way out of the node, for policy routing by mark: a namespace standing in for a VPN or
// egress gateway, wired to the node by a veth (`vpn0` in the node, 192.168.2.2/24, gateway
// 192.168.2.1). It owns an address outside the node (OUTSIDE_IP, on lo) and routes the pod CIDR
// back via the node. `ArrivalCounter` counts what a namespace receives per (source, destination):
// put one in the gateway and one in the fabric (with OUTSIDE_IP on its lo too, `addOutsideAddress`)
// and a pod's packets to OUTSIDE_IP show which way they left the node.
import { nsExec, run, sysctl } from './exec.ts';
import type { Lab } from './lab.ts';

/** An address outside the node and its networks (TEST-NET-3). */
export const OUTSIDE_IP = '203.0.113.10';
export const VPN_IF = 'vpn0';
export const VPN_NODE_IP = '192.168.2.2';
export const VPN_GATEWAY_IP = '192.168.2.1';

/** Counts packets delivered to a namespace (input hook), in total and per (src, dst), in a table of its own. */
export class ArrivalCounter {
  constructor(
    readonly ns: string,
    readonly table = 'arrivals',
  ) {}

  install(): void {
    nsExec(this.ns, ['nft', '-f', '-'], {
      input: `table inet ${this.table} {
        counter received { }
        set pairs4 { type ipv4_addr . ipv4_addr; flags dynamic; counter; }
        chain input {
          type filter hook input priority 0; policy accept;
          meta nfproto ipv4 counter name "received"
          meta nfproto ipv4 update @pairs4 { ip saddr . ip daddr }
        }
      }`,
    });
  }

  /** IPv4 packets received from src to dst (0 when the pair was never seen). */
  packets(src: string, dst: string): number {
    const items = JSON.parse(nsExec(this.ns, ['nft', '-j', 'list', 'set', 'inet', this.table, 'pairs4']).stdout).nftables as Record<string, any>[];
    for (const el of items.find((i) => i.set)?.set.elem ?? []) {
      const e = el.elem ?? el;
      const [s, d] = (e.val?.concat ?? []) as string[];
      if (s === src && d === dst) return Number(e.counter?.packets ?? 0);
    }
    return 0;
  }

  reset(): void {
    nsExec(this.ns, ['nft', 'reset', 'counters', 'table', 'inet', this.table]);
    nsExec(this.ns, ['nft', 'flush', 'set', 'inet', this.table, 'pairs4']);
  }
}

/** Give a namespace OUTSIDE_IP (or another /32) on its lo, so it answers for it. */
export function addOutsideAddress(ns: string, ip = OUTSIDE_IP): void {
  nsExec(ns, ['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
}

export interface Gateway {
  /** The gateway's namespace (under the lab's prefix, so lab.destroy() removes it). */
  ns: string;
  /** The node's interface towards it, its address, and the gateway's address. */
  nodeIf: string;
  nodeIp: string;
  ip: string;
  counter: ArrivalCounter;
}

/**
 * Creates the gateway namespace `<lab prefix><name>` and the node's `vpn0` link to it. The node's
 * main table gets only the connected /24: nothing leaves through vpn0 unless policy routing says so.
 */
export function addGateway(lab: Lab, o: { name?: string; nodeIf?: string; nodeIp?: string; ip?: string } = {}): Gateway {
  const ns = `${lab.prefix}${o.name ?? 'vpngw'}`;
  const gw: Gateway = { ns, nodeIf: o.nodeIf ?? VPN_IF, nodeIp: o.nodeIp ?? VPN_NODE_IP, ip: o.ip ?? VPN_GATEWAY_IP, counter: new ArrivalCounter(ns) };
  run(['ip', 'netns', 'add', ns]);
  sysctl(ns, { 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0 });
  nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
  nsExec(lab.ns.node, ['ip', 'link', 'add', gw.nodeIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  nsExec(lab.ns.node, ['ip', 'addr', 'add', `${gw.nodeIp}/24`, 'dev', gw.nodeIf]);
  nsExec(ns, ['ip', 'addr', 'add', `${gw.ip}/24`, 'dev', 'eth0']);
  nsExec(lab.ns.node, ['ip', 'link', 'set', gw.nodeIf, 'up']);
  nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
  nsExec(ns, ['ip', 'route', 'add', lab.podCidr, 'via', gw.nodeIp, 'dev', 'eth0']);
  addOutsideAddress(ns);
  gw.counter.install();
  return gw;
}

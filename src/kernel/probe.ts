// The kernel facts an ADD reads before it plans, behind one interface: the Linux probe asks the
// kernel; the tests run the same pipeline over a fake (probe-fake.ts).
import { detectVariant } from "../backend/iptables.js";
import { nftWorks } from "../backend/nftables.js";
import { detectUplink, linkMasters } from "../backend/iproute.js";
import type { Family } from "../net/cidr.js";
import type { IptablesVariant, Uplink } from "../plan.js";
import { findHostPeer, linkNames, readPodInterface, type HostLink, type PodInterface } from "./links.js";

export type { HostLink, PodInterface } from "./links.js";

export interface NodeProbe {
  /** The main table's default route with a gateway, lowest metric first. */
  defaultUplink(family: Family): Uplink | undefined;
  /** Whether nftables works here (backend `auto`). */
  nftWorks(): boolean;
  /** The iptables variant kube-proxy would use. */
  iptablesVariant(): IptablesVariant;
  /** The bridge `iface` is enslaved to (asked only when prevResult lists several host-side interfaces). */
  masterOf(iface: string): string | undefined;
  /** The container interface inside the pod's network namespace. */
  podInterface(netns: string, ifName: string): PodInterface;
  /** Its peer in the node's namespace, if it has one there. */
  hostPeer(pod: PodInterface): HostLink | undefined;
  /** Whether an interface of this name exists in the node's namespace (up or down). */
  linkExists(dev: string): boolean;
}

export function linuxProbe(): NodeProbe {
  let masters: Map<string, string> | undefined;
  let links: Set<string> | undefined;
  return {
    defaultUplink: detectUplink,
    nftWorks,
    iptablesVariant: detectVariant,
    // One `ip link` read, however many interfaces are asked about.
    masterOf: (iface) => (masters ??= linkMasters()).get(iface),
    podInterface: readPodInterface,
    hostPeer: findHostPeer,
    // One read of /proc/net/dev, however many interfaces are asked about.
    linkExists: (dev) => (links ??= linkNames()).has(dev),
  };
}

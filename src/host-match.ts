// Where the pod's packets reach IP routing on the node, and with which source addresses. Main
// plugins shape their results differently (test/fixtures/main-plugins/): prevResult is trusted
// where it names the host side unambiguously (ptp, bridge, Calico, Cilium ≥ 1.14, AWS VPC CNI: no
// tool run); otherwise (azure-vnet; Cilium before 1.14 lists eth0 alone) the kernel, the source of
// truth, is asked: the container interface in CNI_NETNS and its peer on the node.
import { CniError, ErrorCode } from "./cni/errors.js";
import { IFNAME, type PrevResult } from "./config.js";
import type { NodeProbe } from "./kernel/probe.js";
import { hostAddress, type Family } from "./net/cidr.js";
import type { HostMatch } from "./plan.js";

function invalidPrevResult(reason: string): never {
  throw new CniError(ErrorCode.invalidConfig, `invalid netconf: prevResult: ${reason}`);
}

/** Interface kinds whose other end is the pod's host side. */
const PEERED_KINDS = ["veth", "netkit"];

/** What prevResult alone says: the host side when it is unambiguous, else why not; the pod's addresses it lists. */
export interface ResultReading {
  host?: { iface: string; topology: HostMatch["topology"] };
  /** Why prevResult does not name the host side (the kernel is asked instead). */
  ambiguity?: string;
  addresses: { family: Family; address: string }[];
}

/**
 * Reads prevResult. The container interface is CNI_IFNAME, listed with a sandbox (ptp, bridge,
 * Calico, Cilium, AWS VPC CNI), without one (azure-vnet), or not at all (Calico before 3.31 lists
 * only `cali…`); `ips` entries without `interface` belong to it. Interfaces
 * without a sandbox, not named CNI_IFNAME, are the host side: one is the pod's own (ptp, Calico,
 * Cilium); of several, a bridge another is enslaved to (bridge); anything else is for the kernel
 * to settle. A name no interface can have (AWS VPC CNI's `dummy…` entry) is none of them.
 */
export function readResult(prev: PrevResult, ifName: string, masterOf: (iface: string) => string | undefined): ResultReading {
  const containerIndex = [prev.interfaces.findIndex((i) => i.sandbox && i.name === ifName), prev.interfaces.findIndex((i) => i.name === ifName)]
    .find((i) => i >= 0);
  const addresses = prev.ips
    .filter((ip) => ip.interface === undefined || ip.interface === containerIndex)
    .map((ip) => hostAddress(ip.address));
  // A name no interface can have (AWS VPC CNI's 16-character `dummy…` entry) is not the host side.
  const hostSide = prev.interfaces.filter((i) => !i.sandbox && i.name !== ifName && IFNAME.test(i.name)).map((i) => i.name);
  if (hostSide.length === 0) return { addresses, ambiguity: "it lists no host-side interface" };
  if (hostSide.length === 1) return { addresses, host: { iface: hostSide[0]!, topology: "routed" } };
  const bridge = hostSide.find((candidate) => hostSide.some((other) => masterOf(other) === candidate));
  if (bridge) return { addresses, host: { iface: bridge, topology: "bridged" } };
  return { addresses, ambiguity: `none of ${hostSide.join(", ")} is the bridge of another` };
}

export interface PodRef {
  ifName: string;
  /** CNI_NETNS; empty where the caller has none (the CLI's plan without --netns). */
  netns: string;
}

/**
 * The host match for an ADD. Costs no tool run when prevResult settles it (the bridge case reads
 * `ip link` once); otherwise one, inside the pod's namespace, plus in-process reads on the node.
 */
export function resolveHostMatch(prev: PrevResult, pod: PodRef, probe: NodeProbe): HostMatch {
  const reading = readResult(prev, pod.ifName, (iface) => probe.masterOf(iface));
  if (reading.host && reading.addresses.length) return { ...reading.host, addresses: reading.addresses };
  const why = reading.ambiguity ?? `it lists no IP address for ${pod.ifName}`;
  if (!pod.netns) invalidPrevResult(`${why}, and without CNI_NETNS the kernel cannot be asked`);
  const iface = probe.podInterface(pod.netns, pod.ifName);
  const addresses = reading.addresses.length ? reading.addresses : iface.addresses;
  if (addresses.length === 0) invalidPrevResult(`no IP address for ${pod.ifName}: none in prevResult.ips and none of global scope on the interface in CNI_NETNS`);
  if (reading.host) return { ...reading.host, addresses };
  if (!PEERED_KINDS.includes(iface.kind) || iface.peerIndex === undefined) {
    invalidPrevResult(`${pod.ifName} in CNI_NETNS is ${iface.kind ? `a ${iface.kind} device` : "a device without a peer (a physical NIC or SR-IOV VF)"}: ` +
      "it has no host-side interface whose packets markroute could mark (macvlan, ipvlan and SR-IOV pods are not supported)");
  }
  const peer = probe.hostPeer(iface);
  if (!peer) invalidPrevResult(`the host-side peer of ${pod.ifName} (ifindex ${iface.peerIndex}) is not an interface of the node's network namespace that is up`);
  // The name goes into set elements and rule text: only what an interface name of ours may hold.
  if (![peer.name, peer.bridge ?? peer.name].every((n) => IFNAME.test(n))) {
    invalidPrevResult(`the host-side peer of ${pod.ifName} is named ${JSON.stringify(peer.bridge ?? peer.name)}: markroute matches only names of letters, digits, _ . @ -`);
  }
  if (peer.otherMaster) {
    invalidPrevResult(`the host-side peer ${peer.name} of ${pod.ifName} is enslaved to ${peer.otherMaster}, which is not a Linux bridge: its packets do not reach IP routing as the pod's`);
  }
  return peer.bridge ? { iface: peer.bridge, topology: "bridged", addresses } : { iface: peer.name, topology: "routed", addresses };
}

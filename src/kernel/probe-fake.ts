// A node on paper for the pipeline: the tests give it the facts a Linux probe would read. Anything not given is absent, as on a bare node.
import { CniError, ErrorCode } from "../cni/errors.js";
import type { Family } from "../net/cidr.js";
import type { IptablesVariant, Uplink } from "../plan.js";
import type { HostLink, NodeProbe, PodInterface } from "./probe.js";

export interface FakeNode {
  uplinks?: Partial<Record<Family, Uplink>>;
  nft?: boolean;
  iptablesVariant?: IptablesVariant;
  /** interface → the bridge it is enslaved to */
  masters?: Record<string, string>;
  /** netns path → its interfaces, each with its peer on the node (if any) */
  pods?: Record<string, { iface: PodInterface; peer?: HostLink }[]>;
  /** Interfaces of the node besides those named above (uplinks, masters, pods' peers exist). */
  links?: string[];
}

/** A probe answering from `node`, and the questions it was asked (to show what an ADD read). */
export function fakeProbe(node: FakeNode = {}): NodeProbe & { asked: string[] } {
  const asked: string[] = [];
  const podsIn = (netns: string) => node.pods?.[netns] ?? [];
  return {
    asked,
    defaultUplink: (family) => (asked.push(`defaultUplink ${family}`), node.uplinks?.[family]),
    nftWorks: () => (asked.push("nftWorks"), node.nft ?? false),
    iptablesVariant: () => (asked.push("iptablesVariant"), node.iptablesVariant ?? "nft"),
    masterOf: (iface) => (asked.push(`masterOf ${iface}`), node.masters?.[iface]),
    podInterface: (netns, ifName) => {
      asked.push(`podInterface ${netns} ${ifName}`);
      const found = podsIn(netns).find((p) => p.iface.ifName === ifName);
      if (!found) throw new CniError(ErrorCode.invalidConfig, `invalid netconf: prevResult: no interface ${ifName} in CNI_NETNS ${netns}`);
      return found.iface;
    },
    linkExists: (dev) => {
      asked.push(`linkExists ${dev}`);
      const named = [
        ...(node.links ?? []), ...Object.values(node.uplinks ?? {}).map((u) => u.dev),
        ...Object.entries(node.masters ?? {}).flat(), ...Object.values(node.pods ?? {}).flat().flatMap((p) => (p.peer ? [p.peer.name] : [])),
      ];
      return named.includes(dev);
    },
    hostPeer: (pod) => {
      asked.push(`hostPeer ${pod.ifName}`);
      return Object.values(node.pods ?? {}).flat().find((p) => p.iface === pod)?.peer;
    },
  };
}

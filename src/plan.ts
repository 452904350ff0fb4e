// The pure plan: which kernel objects one attachment needs, as data. No effects here.
import type { Config, MarkSpec } from "./config.js";
import { CniError, ErrorCode } from "./cni/errors.js";
import { outermostCidrs, type Family } from "./net/cidr.js";
import { fnv1a } from "./net/hash.js";
import type { PodSelection } from "./selection.js";

export type IptablesVariant = "nft" | "legacy";

/** An ipset of (pod address, host interface) pairs for one network and family. */
export interface PodSet { kind: "ipset"; family: Family; name: string }
/** One pod address as seen arriving from its host interface. */
export interface SetElement { kind: "element"; family: Family; set: string; address: string; iface: string; comment: string }
/** One mark a marking chain or table sets, on the pods in its set. */
export interface MarkRule { name: string; set: string; mark: number; mask: number }
/** Our mangle chain: exemptions, then one MARK rule per mark over its pod set; jumped to from PREROUTING. */
export interface MarkChain {
  kind: "markChain"; family: Family; variant: IptablesVariant; chain: string; network: string;
  exempt: string[]; marks: MarkRule[];
}
/**
 * Our nftables table for one network (both families): sets of (pod address, host interface) and
 * of exempt CIDRs, a prerouting chain at mangle priority with the exemptions and the mark, and
 * optionally the IPv6 probe rewrite. Elements are separate objects: they come and go with pods.
 */
export interface NftTable {
  kind: "nftTable"; table: string; network: string;
  exempt4: string[]; exempt6: string[];
  /** `set` is the suffix of this mark's sets (pods4<set>, pods6<set>). */
  marks: MarkRule[];
  /** Pods on interfaces of this group get the first mark by one rule, without elements. */
  linkGroup?: number;
  probeRewrite?: ProbeRewrite;
}
export interface ProbeRewrite { uplink: string; from: string; to: string }
export interface NftElement { kind: "nftElement"; family: Family; table: string; set: string; address: string; iface: string; comment: string }
/** The interface group set on a pod's host interface (config `linkGroup`). */
export interface LinkGroup { kind: "linkGroup"; dev: string; group: number }
export interface PolicyRule { kind: "rule"; family: Family; priority: number; mark: number; mask: number; table: number }
/** `from all lookup main suppress_prefixlength N`, one priority ahead of the policy rule. */
export interface SuppressRule { kind: "suppressRule"; family: Family; priority: number; prefixLength: number }
/** The policy table's default route; without a gateway, a device route (a point-to-point uplink such as a VPN's). */
export interface PolicyRoute { kind: "route"; family: Family; table: number; gateway?: string; dev: string }
export interface RpFilter { kind: "rpFilter"; dev: string; value: 2 }

export type KernelObject =
  | PodSet | SetElement | MarkChain | NftTable | NftElement | LinkGroup | PolicyRule | SuppressRule | PolicyRoute | RpFilter;

/** Objects of one pod; every other kind is shared by the pods of a network (or of a node). */
export const isPerPod = (o: KernelObject) => o.kind === "element" || o.kind === "nftElement" || o.kind === "linkGroup";

/**
 * What to install when one attachment plans `planned` and others still hold `held` (an older
 * version of the same object, from before the conflist changed). Newest wins, except where that
 * would silently drop what held pods rely on: pods matched by a link group have no elements, so
 * the group's rule stays while any of them may be attached.
 */
export function mergeShared(planned: KernelObject, held: KernelObject): KernelObject {
  if (planned.kind === "nftTable" && held.kind === "nftTable" && planned.linkGroup === undefined && held.linkGroup !== undefined) {
    return { ...planned, linkGroup: held.linkGroup };
  }
  return planned;
}

/** Identity of a kernel object: two plans that produce the same key share (and ref-count) one object. */
export function objectKey(o: KernelObject): string {
  switch (o.kind) {
    case "ipset": return `ipset/${o.name}`;
    case "element": return `element/${o.set}/${o.address},${o.iface}`;
    case "markChain": return `markChain/${o.family}/${o.variant}/${o.chain}`;
    case "nftTable": return `nftTable/${o.table}`;
    case "nftElement": return `nftElement/${o.table}/${o.set}/${o.address},${o.iface}`;
    case "linkGroup": return `linkGroup/${o.dev}`;
    case "rule": return `rule/${o.family}/${o.priority}/${o.mark}/${o.mask}/${o.table}`;
    case "suppressRule": return `suppressRule/${o.family}/${o.priority}/${o.prefixLength}`;
    case "route": return `route/${o.family}/${o.table}`;
    case "rpFilter": return `rpFilter/${o.dev}`;
  }
}

export interface Attachment {
  network: string;
  containerId: string;
  ifName: string;
  podNamespace?: string;
  podName?: string;
}

export const attachmentId = (a: Attachment) => `${a.network}_${a.containerId}_${a.ifName}`;

/** Where the pod's packets reach IP routing on the node, and with which source addresses. */
export interface HostMatch {
  iface: string;
  /** "routed": the pod's own veth (ptp); "bridged": the bridge, shared with other pods (bridge plugin). */
  topology: "routed" | "bridged";
  addresses: { family: Family; address: string }[];
}

/** The node's way out for one family: from the netconf or the main table's default route. */
export interface Uplink { dev: string; gateway?: string }

export type MarkBackend = "iptables" | "nftables";

export interface NodeFacts {
  /** Which backend marks, once `auto` is resolved. */
  backend: MarkBackend;
  /** Detected only where the iptables backend marks. */
  iptablesVariant?: IptablesVariant;
  uplinks: Partial<Record<Family, Uplink>>;
}

export interface AttachmentPlan {
  id: string;
  attachment: Attachment;
  hostMatch: HostMatch;
  objects: KernelObject[];
  /** What selected the pod (src/selection.ts), recorded with it; ADD adds it to what planAttachment returns. */
  selection?: PodSelection;
}

const networkHash = (network: string) => fnv1a(network);
export const chainName = (network: string) => `MARKROUTE-${networkHash(network)}`;
/** The ipset of one mark's pods: the transparent-tunnel mark's keeps the network's plain name. */
export const setName = (network: string, family: Family, tag = "") => `mr${family}-${networkHash(tag ? `${network}/${tag}` : network)}`;
/** The nftables set of one mark's pods, in the network's table. */
export const nftSetName = (family: Family, tag: string) => `pods${family}${tag ? `_${tag}` : ""}`;
export const nftTableName = (network: string) => `markroute-${networkHash(network)}`;

/**
 * The kernel objects an attachment needs for the mark `selected`: its own (set elements, link group)
 * and the shared ones they depend on. The network's marking chain or table serves all its marks.
 */
export function planAttachment(config: Config, attachment: Attachment, hostMatch: HostMatch, facts: NodeFacts, selected: MarkSpec): AttachmentPlan {
  const families = [...new Set(hostMatch.addresses.map((a) => a.family))].sort();
  const comment = [
    attachment.podNamespace && attachment.podName ? `${attachment.podNamespace}/${attachment.podName}` : undefined,
    attachment.containerId.slice(0, 12),
    attachment.ifName,
  ].filter(Boolean).join(" ").slice(0, 255); // ipset's and nft's limit for a comment
  const uplinkOf = (family: Family): Uplink => {
    const uplink = facts.uplinks[family];
    if (uplink) return uplink;
    throw new CniError(ErrorCode.nodeNotReady,
      `no IPv${family} uplink: the main table has no default route with a gateway; set "${family === 4 ? "uplink\" and \"gateway" : "uplink\" and \"gateway6"}" in the netconf`);
  };
  // A routed pod in a link group is matched by the group: one rule for all such pods, no elements.
  const byGroup = config.linkGroup !== undefined && hostMatch.topology === "routed";
  const objects: KernelObject[] = config.linkGroup !== undefined && byGroup
    ? [{ kind: "linkGroup", dev: hostMatch.iface, group: config.linkGroup }]
    : [];
  const exempt = (f: Family) => config.exemptCIDRs.filter((e) => e.cidr.family === f).map((e) => e.cidr.text);
  if (facts.backend === "nftables") {
    const table = nftTableName(config.name);
    // An interval set refuses overlapping elements: keep only CIDRs no other one covers.
    const outermost = (f: Family) => outermostCidrs(exempt(f));
    objects.push({
      kind: "nftTable", table, network: config.name, exempt4: outermost(4), exempt6: outermost(6),
      marks: config.marks.map((m) => ({ name: m.name, set: m.tag, mark: m.mark, mask: m.mask })),
      ...(config.linkGroup !== undefined ? { linkGroup: config.linkGroup } : {}),
      ...(config.ipv6ProbeRewrite ? { probeRewrite: { uplink: uplinkOf(6).dev, ...config.ipv6ProbeRewrite } } : {}),
    });
    if (!byGroup) {
      objects.push(...hostMatch.addresses.map((a): NftElement =>
        ({ kind: "nftElement", family: a.family, table, set: selected.tag, address: a.address, iface: hostMatch.iface, comment })));
    }
  } else {
    if (config.ipv6ProbeRewrite) {
      throw new CniError(ErrorCode.invalidConfig, "invalid netconf: ipv6ProbeRewrite: needs the nftables backend (a stateless rewrite before conntrack), but this node uses iptables");
    }
    const variant = facts.iptablesVariant;
    if (!variant) throw new Error("planAttachment: the iptables backend needs the iptables variant in the node facts");
    for (const family of families) {
      const marks = config.marks.map((m) => ({ name: m.name, set: setName(config.name, family, m.tag), mark: m.mark, mask: m.mask }));
      const own = setName(config.name, family, selected.tag);
      objects.push(
        ...marks.map((m): PodSet => ({ kind: "ipset", family, name: m.set })),
        ...hostMatch.addresses.filter((a) => a.family === family).map((a): SetElement =>
          ({ kind: "element", family, set: own, address: a.address, iface: hostMatch.iface, comment })),
        { kind: "markChain", family, variant, chain: chainName(config.name), network: config.name, exempt: exempt(family), marks },
      );
    }
  }
  const routing = selected.routing;
  if (routing) {
    for (const family of families) {
      const uplink = uplinkOf(family);
      const rule = { family, priority: routing.priority, mark: selected.mark, mask: selected.mask, table: routing.table };
      objects.push(
        { kind: "rule", ...rule },
        ...(config.suppressMainPrefixLength === undefined ? [] : [{
          kind: "suppressRule" as const, family, priority: routing.priority - 1, prefixLength: config.suppressMainPrefixLength,
        }]),
        { kind: "route", family, table: routing.table, ...(uplink.gateway ? { gateway: uplink.gateway } : {}), dev: uplink.dev },
      );
      if (family === 4 && config.rpFilter === "loose") objects.push({ kind: "rpFilter", dev: uplink.dev, value: 2 });
    }
  }
  return { id: attachmentId(attachment), attachment, hostMatch, objects };
}

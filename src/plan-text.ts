// Kernel objects and plans in words, for people (the CLI's `plan`); the JSON stays the machine's.
import { hex } from "./net/hex.js";
import { isPerPod, type AttachmentPlan, type KernelObject } from "./plan.js";

const family = (f: 4 | 6) => `IPv${f}`;

/** One line per object, as an operator would name it on the node. */
export function describeObject(o: KernelObject): string {
  switch (o.kind) {
    case "ipset": return `ipset ${o.name} (hash:net,iface, ${family(o.family)}): the pods of one mark`;
    case "element": return `ipset element ${o.address},${o.iface} in ${o.set} ("${o.comment}")`;
    case "markChain": {
      const marks = o.marks.map((m) => `${hex(m.mark)}/${hex(m.mask)} over ${m.set}`).join(", ");
      return `iptables-${o.variant} ${family(o.family)} mangle chain ${o.chain}, jumped to from PREROUTING: ` +
        `exempts ${o.exempt.length ? o.exempt.join(", ") : "no CIDR"} and DNATed connections, then marks ${marks}`;
    }
    case "nftTable": {
      const exempt = [...o.exempt4, ...o.exempt6];
      const marks = o.marks.map((m) => `${m.name} ${hex(m.mark)}/${hex(m.mask)}`).join(", ");
      return `nftables table inet ${o.table} (prerouting, mangle priority): exempts ${exempt.length ? exempt.join(", ") : "no CIDR"} ` +
        `and DNATed connections, then marks ${marks}` +
        (o.linkGroup !== undefined ? `; interfaces of group ${o.linkGroup} get the first mark` : "") +
        (o.probeRewrite ? `; rewrites ${o.probeRewrite.from} to ${o.probeRewrite.to} on ${o.probeRewrite.uplink}` : "");
    }
    case "nftElement": return `nftables element ${o.address} . ${o.iface} in set pods${o.family}${o.set ? `_${o.set}` : ""} of ${o.table} ("${o.comment}")`;
    case "linkGroup": return `interface ${o.dev} put in group ${o.group}`;
    case "rule": return `ip -${o.family} rule fwmark ${hex(o.mark)}/${hex(o.mask)} lookup ${o.table} priority ${o.priority}`;
    case "suppressRule": return `ip -${o.family} rule lookup main suppress_prefixlength ${o.prefixLength} priority ${o.priority}`;
    case "route": return `ip -${o.family} route default ${o.gateway ? `via ${o.gateway} ` : ""}dev ${o.dev} table ${o.table}`;
    case "rpFilter": return `rp_filter of ${o.dev} set to ${o.value} (loose), put back with the last pod`;
  }
}

/** What an ADD would install for one pod: the host match, then shared and per-pod objects. */
export function describePlan(plan: AttachmentPlan): string {
  const { attachment: a, hostMatch: h } = plan;
  const pod = a.podNamespace ? ` (pod ${a.podNamespace}/${a.podName})` : "";
  const lines = [
    `attachment ${plan.id}${pod}`,
    `  packets arrive on ${h.iface} (${h.topology}) from ${h.addresses.map((x) => x.address).join(", ")}`,
  ];
  const section = (title: string, objects: KernelObject[]) => {
    if (objects.length) lines.push(title, ...objects.map((o) => `  ${describeObject(o)}`));
  };
  section("shared by the network's pods (installed by the first, removed with the last):", plan.objects.filter((o) => !isPerPod(o)));
  section("this pod's own:", plan.objects.filter(isPerPod));
  return lines.join("\n");
}

// `markroute explain`: what happens to one packet, in words a person can act on. Which of our
// objects marks or exempts it is read from the state (what is installed); which ip rule it meets
// and the route it takes come from the kernel itself (`ip route get … mark …`).
import { readRules, renderRouteGet } from "./backend/iproute.js";
import { runTool } from "./kernel/exec.js";
import { familyOf, inCidr } from "./net/cidr.js";
import { hex } from "./net/hex.js";
import type { KernelObject, MarkChain, NftTable } from "./plan.js";
import { describeSelection } from "./selection.js";
import type { AttachmentRecord } from "./state/store.js";
import type { StateView } from "./state/view.js";

export interface Packet {
  from: string;
  iif: string;
  to: string;
}


/** The recorded attachment `id` (or the one whose container ID starts with it) as a packet source. */
export function packetOf(view: StateView, idOrContainer: string, to: string): Packet {
  const records = view.records();
  const record = records.find((r) => r.id === idOrContainer) ?? records.find((r) => r.attachment.containerId.startsWith(idOrContainer));
  if (!record) throw new Error(`no recorded attachment ${idOrContainer}; \`markroute status\` lists them`);
  const family = familyOf(to);
  const from = record.hostMatch.addresses.find((a) => a.family === family);
  if (!from) throw new Error(`attachment ${record.id} has no IPv${family} address to send to ${to} from`);
  return { from: from.address, iif: record.hostMatch.iface, to };
}

/** The recorded attachment the packet comes from: its address, arriving on its host interface. */
const sourceOf = (view: StateView, p: Packet): AttachmentRecord | undefined =>
  view.records().find((r) => r.hostMatch.iface === p.iif && r.hostMatch.addresses.some((a) => a.address === p.from));

/** The verdict of our marking objects on the packet, as installed now. */
function verdict(view: StateView, p: Packet, source: AttachmentRecord | undefined): { lines: string[]; mark?: { mark: number; mask: number } } {
  const family = familyOf(p.to);
  const installed = view.installed();
  const perPod = view.records().flatMap((r) => r.objects);
  const marking = installed.filter((o): o is MarkChain | NftTable =>
    (o.kind === "markChain" && o.family === family) || o.kind === "nftTable");
  if (marking.length === 0) return { lines: ["no markroute chain or table is installed: the packet is not marked"] };
  for (const m of marking) {
    const where = m.kind === "markChain" ? `iptables chain ${m.chain} (mangle, ${m.variant})` : `nftables table inet ${m.table}`;
    const exempt = m.kind === "markChain" ? m.exempt : family === 4 ? m.exempt4 : m.exempt6;
    const hit = exempt.find((cidr) => inCidr(p.to, cidr));
    if (hit) return { lines: [`${where}: ${p.to} is in the exempt CIDR ${hit} (serviceCIDRs/excludeCIDRs): not marked, routed by the main table`] };
    const elements = perPod.filter((o) => (o.kind === "element" || o.kind === "nftElement") && o.address === p.from && o.iface === p.iif);
    const grouped = m.kind === "nftTable" && m.linkGroup !== undefined && perPod.some((o) => o.kind === "linkGroup" && o.dev === p.iif);
    for (const rule of m.marks) {
      const inSet = elements.find((e) => "set" in e && e.set === rule.set);
      if (inSet || (grouped && rule === m.marks[0])) {
        const by = inSet ? `the set element ${p.from},${p.iif} (${(inSet as KernelObject & { comment: string }).comment})` : `interface group ${(m as NftTable).linkGroup}`;
        return {
          lines: [
            `${where}: marked ${hex(rule.mark)}/${hex(rule.mask)} (mark "${rule.name}") by ${by}`,
            "  unless the connection was DNATed by kube-proxy (a ClusterIP), whose packets are exempt in both directions",
          ],
          mark: { mark: rule.mark, mask: rule.mask },
        };
      }
    }
    const why = source ? "" : " (is the pod attached? `markroute status`)";
    return { lines: [`${where}: ${p.from} arriving on ${p.iif} is in none of its sets: not marked${why}`] };
  }
  return { lines: [] };
}

/** The whole explanation. */
export function explain(view: StateView, p: Packet): string[] {
  const family = familyOf(p.to);
  if (!family || familyOf(p.from) !== family) throw new Error(`--from ${p.from} and --to ${p.to} must be addresses of one family`);
  const lines = [`packet ${p.from} -> ${p.to} arriving on ${p.iif}:`];
  const source = sourceOf(view, p);
  if (source?.selection) {
    const a = source.attachment;
    lines.push(`  from ${a.podNamespace ? `pod ${a.podNamespace}/${a.podName}` : `attachment ${source.id}`}: ${describeSelection(source.selection)}`);
  }
  const { lines: said, mark } = verdict(view, p, source);
  lines.push(...said.map((l) => `  ${l}`));
  const fwmark = mark?.mark ?? 0;
  // The local table answers only for the node's own addresses, and a suppress rule only for specific
  // routes: the first other rule that matches the mark is the one that decides.
  const rule = readRules(family).find((r) => {
    if (r.table === "local" || r.suppress_prefixlen !== undefined) return false;
    if (r.fwmark === undefined) return r.src === "all";
    return ((fwmark & Number(r.fwmask ?? "0xffffffff")) >>> 0) === Number(r.fwmark);
  });
  if (rule) lines.push(`  ip rule ${rule.priority}: ${rule.fwmark ? `fwmark ${rule.fwmark}/${rule.fwmask ?? "0xffffffff"} ` : ""}lookup ${rule.table} decides`);
  const route = runTool(renderRouteGet(family, p, fwmark).argv);
  if (route.status !== 0) {
    lines.push(`  the kernel cannot route it: ${route.stderr.trim()} (does ${p.iif} exist here, with ${p.from} behind it?)`);
  } else {
    const [r] = JSON.parse(route.stdout) as { dev?: string; gateway?: string; table?: string; type?: string }[];
    const via = r?.gateway ? `via ${r.gateway} ` : "";
    lines.push(`  the kernel routes it ${via}dev ${r?.dev ?? "?"}${r?.table ? ` (table ${r.table})` : ""}${r?.type && r.type !== "unicast" ? ` [${r.type}]` : ""}`);
  }
  return lines;
}

// The nftables marking backend: one `inet` table of ours per network, changed in one `nft -f`
// transaction (all of it or nothing). Every statement in the batch is idempotent, so no kernel
// read is needed before a change: `add` of what exists is a no-op, and a removal is written as
// `add` then `delete`, which succeeds whether or not the object was there. The batch is rendered
// here (pure, `renderNft`) and run by src/backend/apply.ts; reads run here.
import { runTool, toolFailure, type ToolCall } from "../kernel/exec.js";
import type { Family } from "../net/cidr.js";
import { fnv1a } from "../net/hash.js";
import { hex } from "../net/hex.js";
import { nftSetName, type MarkRule, type NftElement, type NftTable } from "../plan.js";

const podSetSpec = (f: Family) => `{ type ${f === 4 ? "ipv4_addr" : "ipv6_addr"} . ifname; }`;
const exemptSetSpec = (f: Family) => `{ type ${f === 4 ? "ipv4_addr" : "ipv6_addr"}; flags interval; }`;
const FAMILIES: Family[] = [4, 6];

/** The comment on the last rule of each of our chains: which plan the chain was written from. */
export const versionComment = (t: NftTable) => `markroute v=${fnv1a(JSON.stringify(t))}`;

/** The chains a table holds, each with its rules in order, as nft statements. */
function chains(t: NftTable): { name: string; spec: string; rules: string[] }[] {
  // Keep the owners' other bits: and with ~mask, or with the mark (iptables' --set-xmark).
  const setMark = (m: MarkRule) => `meta mark set meta mark and ${hex(~m.mask)} or ${hex(m.mark)}`;
  const version = `comment "${versionComment(t)}"`;
  const marking = [
    "ip daddr @exempt4 return",
    "ip6 daddr @exempt6 return",
    // kube-proxy DNATed this connection (a ClusterIP): keep both directions on the node.
    "ct status dnat return",
    ...t.marks.flatMap((m) => [
      `ip saddr . iifname @${nftSetName(4, m.set)} ${setMark(m)}`,
      `ip6 saddr . iifname @${nftSetName(6, m.set)} ${setMark(m)}`,
    ]),
    ...(t.linkGroup !== undefined ? [`iifgroup ${t.linkGroup} ${setMark(t.marks[0]!)}`] : []),
  ];
  marking.push(`${marking.pop()} ${version}`);
  const result = [{ name: "prerouting", spec: "{ type filter hook prerouting priority mangle; policy accept; }", rules: marking }];
  const p = t.probeRewrite;
  if (p) {
    // Before conntrack (raw priority), so the connection is tracked with the routable source and the
    // kernel, which never forwards link-local sources, forwards the probe; the reply is put back after routing.
    result.push(
      {
        name: "probe-in", spec: "{ type filter hook prerouting priority -300; policy accept; }",
        rules: [
          // The router's own neighbour discovery may come from the same link-local address: leave it alone.
          `iifname "${p.uplink}" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept`,
          `iifname "${p.uplink}" ip6 saddr ${p.from} ip6 saddr set ${p.to} ${version}`,
        ],
      },
      {
        name: "probe-out", spec: "{ type filter hook postrouting priority -300; policy accept; }",
        rules: [`oifname "${p.uplink}" ip6 daddr ${p.to} ip6 daddr set ${p.from} ${version}`],
      },
    );
  }
  return result;
}

const PROBE_CHAINS = ["probe-in", "probe-out"];

/** Statements that (re)write a table whole: sets, exemptions, chains. */
function installTable(t: NftTable): string[] {
  const T = `inet ${t.table}`;
  const lines = [`add table ${T}`];
  for (const f of FAMILIES) {
    const exempt = f === 4 ? t.exempt4 : t.exempt6;
    lines.push(
      ...t.marks.map((m) => `add set ${T} ${nftSetName(f, m.set)} ${podSetSpec(f)}`),
      `add set ${T} exempt${f} ${exemptSetSpec(f)}`,
      `flush set ${T} exempt${f}`,
      ...(exempt.length ? [`add element ${T} exempt${f} { ${exempt.join(", ")} }`] : []),
    );
  }
  const wanted = chains(t);
  for (const c of wanted) lines.push(`add chain ${T} ${c.name} ${c.spec}`, `flush chain ${T} ${c.name}`, ...c.rules.map((r) => `add rule ${T} ${c.name} ${r}`));
  // A probe rewrite the netconf no longer asks for goes.
  for (const name of PROBE_CHAINS.filter((n) => !wanted.some((c) => c.name === n))) lines.push(`add chain ${T} ${name}`, `delete chain ${T} ${name}`);
  return lines;
}

const elementValue = (e: NftElement) => `${e.address} . "${e.iface}"`;

/**
 * One transaction: tables written, elements added and deleted, tables removed. Deleting an element
 * or a table that is gone succeeds (add-then-delete), so a retried or crashed operation can run again.
 */
export function renderNft(installTables: NftTable[], addElements: NftElement[], delElements: NftElement[], removeTables: NftTable[]): ToolCall | undefined {
  const gone = new Set(removeTables.map((t) => t.table));
  const lines = installTables.flatMap(installTable);
  for (const e of addElements) lines.push(`add element inet ${e.table} ${nftSetName(e.family, e.set)} { ${elementValue(e)} comment "${e.comment}" }`);
  for (const e of delElements.filter((e) => !gone.has(e.table))) {
    const T = `inet ${e.table}`;
    const set = nftSetName(e.family, e.set);
    lines.push(
      `add table ${T}`,
      `add set ${T} ${set} ${podSetSpec(e.family)}`,
      `add element ${T} ${set} { ${elementValue(e)} }`,
      `delete element ${T} ${set} { ${elementValue(e)} }`,
    );
  }
  for (const t of removeTables) lines.push(`add table inet ${t.table}`, `delete table inet ${t.table}`);
  return lines.length ? { argv: ["nft", "-f", "-"], input: lines.join("\n") + "\n" } : undefined;
}

/** Whether nftables works on this node (backend `auto`). */
export function nftWorks(): boolean {
  try {
    return runTool(["nft", "list", "tables"]).status === 0;
  } catch {
    return false;
  }
}

interface NftJsonItem {
  set?: { name: string; elem?: unknown[] };
  chain?: { name: string };
  rule?: { chain: string; comment?: string };
}

/** One of our tables as the kernel has it, or undefined when it does not exist. */
export class NftTableState {
  private constructor(private readonly items: NftJsonItem[]) {}

  static read(table: string): NftTableState | undefined {
    const argv = ["nft", "-j", "list", "table", "inet", table];
    const out = runTool(argv);
    if (out.status !== 0 && /No such file or directory/.test(out.stderr)) return undefined;
    if (out.status !== 0) throw toolFailure(argv, out);
    return new NftTableState((JSON.parse(out.stdout) as { nftables: NftJsonItem[] }).nftables);
  }

  /** Empty when the table is as planned; otherwise what differs, in words. */
  drift(t: NftTable): string[] {
    const problems: string[] = [];
    const sets = new Set(this.items.flatMap((i) => (i.set ? [i.set.name] : [])));
    const wanted = ["exempt4", "exempt6", ...t.marks.flatMap((m) => FAMILIES.map((f) => nftSetName(f, m.set)))];
    for (const name of wanted) if (!sets.has(name)) problems.push(`set ${name} is missing from table inet ${t.table}`);
    for (const c of chains(t)) {
      const rules = this.items.filter((i) => i.rule?.chain === c.name);
      // The version comment says which plan wrote the chain; the count, that no rule was taken out.
      const written = rules.length === c.rules.length && rules.at(-1)?.rule?.comment === versionComment(t);
      if (!written) problems.push(`chain ${c.name} of table inet ${t.table} does not hold the planned rules`);
    }
    for (const f of FAMILIES) {
      const planned = (f === 4 ? t.exempt4 : t.exempt6).map((cidr) => cidr.replace(/\/(32|128)$/, "")).sort();
      const held = this.setElements(`exempt${f}`).sort();
      if (sets.has(`exempt${f}`) && held.join() !== planned.join()) {
        problems.push(`set exempt${f} of table inet ${t.table} holds ${held.join(", ") || "nothing"}, not ${planned.join(", ") || "nothing"}`);
      }
    }
    return problems;
  }

  /** A set's elements as text: an address, or address/length for a prefix. */
  private setElements(name: string): string[] {
    const set = this.items.find((i) => i.set?.name === name)?.set;
    return (set?.elem ?? []).map((raw) => {
      const e = raw as string | { prefix?: { addr: string; len: number } };
      return typeof e === "string" ? e : e.prefix ? `${e.prefix.addr}/${e.prefix.len}` : JSON.stringify(e);
    });
  }

  hasElement(e: NftElement): boolean {
    const set = this.items.find((i) => i.set?.name === nftSetName(e.family, e.set))?.set;
    return (set?.elem ?? []).some((raw) => {
      const item = raw as { elem?: { val?: unknown }; concat?: unknown };
      const value = (item.elem?.val ?? item) as { concat?: unknown[] };
      return value.concat?.[0] === e.address && value.concat?.[1] === e.iface;
    });
  }
}

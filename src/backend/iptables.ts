// The iptables marking backend: one chain of ours in mangle, jumped to from PREROUTING, and ipsets of pods.
// Batches are rendered here (pure, `render*`) and run by src/backend/apply.ts; reads run here.
import { mustRun, runTool, type ToolCall } from "../kernel/exec.js";
import type { Family } from "../net/cidr.js";
import { hex } from "../net/hex.js";
import type { IptablesVariant, MarkChain, PodSet, SetElement } from "../plan.js";

const tool = (family: Family, variant: IptablesVariant, verb: "save" | "restore") =>
  `${family === 4 ? "iptables" : "ip6tables"}-${variant}-${verb}`;

/** The rules of our chain, exactly as iptables-save prints them back. */
export function chainRules(c: MarkChain): string[] {
  return [
    ...c.exempt.map((cidr) => `-A ${c.chain} -d ${cidr} -m comment --comment "markroute exempt" -j RETURN`),
    `-A ${c.chain} -m conntrack --ctstate DNAT -m comment --comment "markroute exempt kube-proxy DNAT" -j RETURN`,
    ...c.marks.map((m) =>
      `-A ${c.chain} -m set --match-set ${m.set} src,src -m comment --comment "${markComment(c.network, m.name)}" -j MARK --set-xmark ${hex(m.mark)}/${hex(m.mask)}`),
  ];
}

/** Names the network, and the mark when it is one of annotated mode's. */
export const markComment = (network: string, mark: string) =>
  mark === "default" ? `markroute mark pods of ${network}` : `markroute mark ${mark} pods of ${network}`;

const jumpRule = (chain: string) => `-A PREROUTING -j ${chain}`;

/** What the mangle table of one family and variant holds, as iptables-save lines. */
export class MangleTable {
  private constructor(private readonly lines: string[]) {}

  static read(family: Family, variant: IptablesVariant): MangleTable {
    return MangleTable.parse(mustRun([tool(family, variant, "save"), "-t", "mangle"]));
  }

  /** The table from `iptables-save -t mangle` output. */
  static parse(save: string): MangleTable {
    return new MangleTable(save.split("\n"));
  }

  hasChain(chain: string): boolean {
    return this.lines.some((l) => l.startsWith(`:${chain} `));
  }

  hasJump(chain: string): boolean {
    return this.lines.includes(jumpRule(chain));
  }

  rulesOf(chain: string): string[] {
    return this.lines.filter((l) => l.startsWith(`-A ${chain} `));
  }

  /** Empty when the chain is installed as planned; otherwise what differs, in words. */
  drift(c: MarkChain): string[] {
    if (!this.hasChain(c.chain)) return [`chain ${c.chain} is missing from mangle`];
    const problems = this.hasJump(c.chain) ? [] : [`PREROUTING does not jump to ${c.chain}`];
    if (this.rulesOf(c.chain).join("\n") !== chainRules(c).join("\n")) problems.push(`chain ${c.chain} does not hold the planned rules`);
    return problems;
  }
}

/**
 * One iptables-restore --noflush batch that installs and removes chains of one family and variant,
 * given what the mangle table holds now (none when there is nothing to do). Declaring a chain in a
 * --noflush batch creates or flushes it, so installing rewrites it whole.
 */
export function renderChains(family: Family, variant: IptablesVariant, install: MarkChain[], remove: MarkChain[], current: MangleTable): ToolCall | undefined {
  const lines = ["*mangle"];
  for (const c of install) {
    lines.push(`:${c.chain} - [0:0]`, ...chainRules(c));
    if (!current.hasJump(c.chain)) lines.push(`-I PREROUTING 1 -j ${c.chain}`);
  }
  for (const c of remove) {
    if (current.hasJump(c.chain)) lines.push(`-D PREROUTING -j ${c.chain}`);
    if (current.hasChain(c.chain)) lines.push(`:${c.chain} - [0:0]`, `-X ${c.chain}`);
  }
  if (lines.length === 1) return undefined;
  lines.push("COMMIT", "");
  return { argv: [tool(family, variant, "restore"), "--noflush", "--wait", "5"], input: lines.join("\n") };
}

/**
 * The variant kube-proxy would use (kubernetes-sigs/iptables-wrappers): the one holding kubelet's
 * KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY chains, else the one with more rules, nft on a tie.
 */
export function detectVariant(): IptablesVariant {
  // Both families, as the wrappers read them: an IPv6-only node has its rules in ip6tables alone.
  const save = (variant: IptablesVariant) =>
    ["iptables", "ip6tables"].map((tool) => {
      const out = runTool([`${tool}-${variant}-save`]);
      return out.status === 0 ? out.stdout : "";
    }).join("\n");
  const nft = save("nft");
  const hint = /^:KUBE-(IPTABLES-HINT|KUBELET-CANARY) /m;
  if (hint.test(nft)) return "nft";
  const legacy = save("legacy");
  if (hint.test(legacy)) return "legacy";
  const ruleCount = (s: string) => s.split("\n").filter((l) => l.startsWith("-")).length;
  return ruleCount(legacy) > ruleCount(nft) ? "legacy" : "nft";
}

export function ipsetNames(): Set<string> {
  return new Set(mustRun(["ipset", "list", "-n"]).split("\n").filter(Boolean));
}

const elementText = (e: SetElement) => `${e.set} ${e.address},${e.iface}`;

/** The elements of a set as `set addr,iface` strings, or undefined when the set does not exist. */
export function setMembers(set: string): Set<string> | undefined {
  const out = runTool(["ipset", "save", set]);
  if (out.status !== 0) return undefined;
  return new Set(out.stdout.split("\n").filter((l) => l.startsWith("add ")).map((l) => l.split(" ").slice(1, 3).join(" ")));
}

export const elementPresent = (members: Set<string> | undefined, e: SetElement) => members?.has(elementText(e)) ?? false;

/** One `ipset restore` batch: create sets, add and delete elements. Idempotent thanks to -exist. */
export function renderSets(create: PodSet[], add: SetElement[], del: SetElement[]): ToolCall | undefined {
  const lines = [
    ...create.map((s) => `create ${s.name} hash:net,iface family ${s.family === 4 ? "inet" : "inet6"} comment`),
    ...add.map((e) => `add ${elementText(e)} comment "${e.comment}"`),
    ...del.map((e) => `del ${elementText(e)}`),
  ];
  return lines.length ? { argv: ["ipset", "-exist", "restore"], input: lines.join("\n") + "\n" } : undefined;
}

/** One `ipset restore` batch destroying the sets that exist; a set no rule references any more can go. */
export function renderDestroySets(sets: PodSet[], existing: Set<string>): ToolCall | undefined {
  const lines = sets.filter((s) => existing.has(s.name)).map((s) => `destroy ${s.name}`);
  return lines.length ? { argv: ["ipset", "restore"], input: lines.join("\n") + "\n" } : undefined;
}

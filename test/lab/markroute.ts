// markroute-specific lab helpers shared by the e2e suites: the conflists shipped in conflists/
// adapted to a lab, and readers that pick markroute's objects out of a Snapshot. The rest of the
// lab knows nothing about markroute (it also drives the stock plugins alone).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Conflist } from './cni.ts';
import { REPO_ROOT, type Lab } from './lab.ts';
import { markrouteTables, nftPodElements } from './nft.ts';
import type { Snapshot } from './snapshot.ts';

const markrouteLogFile = (lab: Lab) => join(lab.dir, 'markroute.log');

/** The JSON lines markroute logged in this lab (one per operation), oldest first. */
export const markrouteLog = (lab: Lab): any[] =>
  readFileSync(markrouteLogFile(lab), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

/**
 * A conflist from conflists/, as shipped except for what must live in the lab: IPAM's dataDir
 * and (when given) its range, markroute's stateDir and logFile. Everything else is what users
 * install, so the suites test the real conflists.
 */
export type Backend = 'iptables' | 'nftables';

/** The pods' address families: the shipped conflists are IPv4; the loaders adapt them for the others. */
export type IpFamily = 'ipv4' | 'ipv6' | 'dual';
export type FamilyNumber = 4 | 6;
export const familyNumbers = (f: IpFamily): FamilyNumber[] => (f === 'ipv4' ? [4] : f === 'ipv6' ? [6] : [4, 6]);

/** What the loaders put in an IPv6 (or dual-stack) network's serviceCIDRs/excludeCIDRs (a /108 as in docs/design.md#the-configuration-contract's example, AWS's IPv6 IMDS). */
export const SERVICE_CIDR6 = 'fd00:96::/108';
export const EXCLUDE_CIDRS6 = ['fd00:ec2::254/128'];

type Range = { subnet: string; gateway?: string };

export function loadConflist(lab: Lab, file: string, range?: Range | { v4?: Range; v6?: Range }, backend: Backend = 'iptables'): Conflist {
  const list = JSON.parse(readFileSync(join(REPO_ROOT, 'conflists', file), 'utf8')) as Conflist;
  const main = list.plugins[0]! as any;
  main.ipam.dataDir = join(lab.dir, 'ipam');
  const mr = list.plugins.find((p) => p.type === 'markroute')!;
  if (range && 'subnet' in range) main.ipam.ranges = [[range]];
  else if (range) {
    // One range set per family, and the default route of each: what host-local needs for dual stack.
    const { v4, v6 } = range as { v4?: Range; v6?: Range };
    main.ipam.ranges = [...(v4 ? [[v4]] : []), ...(v6 ? [[v6]] : [])];
    main.ipam.routes = [...(v4 ? [{ dst: '0.0.0.0/0' }] : []), ...(v6 ? [{ dst: '::/0' }] : [])];
    // An IPv6-only network has only IPv6 services; a dual-stack one both.
    const keep4 = (cidrs: unknown) => (v4 ? ((cidrs as string[] | undefined) ?? []) : []);
    if (v6) {
      mr.serviceCIDRs = [...keep4(mr.serviceCIDRs), SERVICE_CIDR6];
      mr.excludeCIDRs = [...keep4(mr.excludeCIDRs), ...EXCLUDE_CIDRS6];
    }
  }
  mr.stateDir = join(lab.dir, 'state');
  mr.logFile = markrouteLogFile(lab);
  // The shipped conflists say `auto`; a suite names the backend whose kernel objects it asserts.
  mr.backend = backend;
  return list;
}

const rangesFor = (family: IpFamily, v4: Range, v6: Range) =>
  family === 'ipv4' ? v4 : { ...(family !== 'ipv6' ? { v4 } : {}), v6 };

/**
 * 10-ptp-markroute.conflist on the lab's ptp subnet(s) (ptp, then markroute). For ipv6/dual the lab
 * must have been created with `ipv6: true`; the IPv6 subnet, route and service CIDR are added.
 */
export const loadPtpConflist = (lab: Lab, backend?: Backend, family: IpFamily = 'ipv4'): Conflist =>
  loadConflist(lab, '10-ptp-markroute.conflist', rangesFor(family, { subnet: lab.subnets.ptp }, { subnet: lab.subnets.ptp6 }), backend);

/** The bridge's gateway (cni0's address) per family: the first address of the lab's bridge subnets. */
export const BRIDGE_GATEWAY = { 4: '10.244.1.1', 6: 'fd00:244:0:1::1' } as const;

/** 10-bridge-markroute.conflist on the lab's bridge subnet(s), cni0 holding their first address. */
export const loadBridgeConflist = (lab: Lab, backend?: Backend, family: IpFamily = 'ipv4'): Conflist =>
  loadConflist(lab, '10-bridge-markroute.conflist', rangesFor(family,
    { subnet: lab.subnets.bridge, gateway: BRIDGE_GATEWAY[4] }, { subnet: lab.subnets.bridge6, gateway: BRIDGE_GATEWAY[6] }), backend);

// ---- markroute's objects in a Snapshot ------------------------------------------------

/** `add` lines of ipset save (one per attached pod), of one set or of all. */
export const ipsetAdds = (s: Snapshot, set?: string): string[] => s.ipset.split('\n').filter((l) => l.startsWith(`add ${set ?? ''}`));

/** ip rules of one family that match a fwmark (markroute's; the node has none of its own). */
export const fwmarkRules = (s: Snapshot, family: FamilyNumber = 4): any[] =>
  ((family === 4 ? s.rules4 : s.rules6) as any[]).filter((r) => r.fwmark !== undefined);

/** Routes of one routing table and family, e.g. markroute's table '100'. */
export const tableRoutes = (s: Snapshot, table: string, family: FamilyNumber = 4): any[] =>
  ((family === 4 ? s.routes4 : s.routes6) as any[]).filter((r) => r.table === table);

/** Names of markroute's chains (MARKROUTE-<8 hex>) declared in an iptables-save text. */
export const markChains = (save: string): string[] => [...save.matchAll(/^:(MARKROUTE-[0-9a-f]{8}) /gm)].map((m) => m[1]!);

/** Which iptables-save of a Snapshot holds a family's rules in a variant. */
export const saveKey = (variant: 'legacy' | 'nft', family: FamilyNumber) => `${variant}${family}` as const;

// ---- nftables ----------------------------------------------------------------------------

type NftItem = Record<string, any>;
const nftItems = (s: Snapshot) => s.nft as NftItem[];
const itemOf = (i: NftItem, kind: string) => i[kind] as Record<string, any> | undefined;

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

/** nft's JSON expression back in nft's own words, for the few expressions markroute writes. */
function exprText(e: unknown, numbers: (n: number) => string = String): string {
  if (typeof e === 'number') return numbers(e);
  if (typeof e === 'string') return e;
  if (Array.isArray(e)) return e.map((x) => exprText(x, numbers)).join(', ');
  if (e === null || typeof e !== 'object') return String(e);
  const [k, v] = Object.entries(e as Record<string, any>)[0]!;
  switch (k) {
    case 'payload': return `${v.protocol} ${v.field}`;
    case 'meta': return ['iifname', 'oifname', 'iifgroup', 'oifgroup', 'iif', 'oif'].includes(v.key) ? v.key : `meta ${v.key}`;
    case 'ct': return `ct ${v.key}`;
    case 'concat': return (v as unknown[]).map((x) => exprText(x, numbers)).join(' . ');
    case 'prefix': return `${v.addr}/${v.len}`;
    case 'range': return `${exprText(v[0], numbers)}-${exprText(v[1], numbers)}`;
    case 'set': return `{ ${(Array.isArray(v) ? v : [v]).map((x: unknown) => exprText(x, numbers)).join(', ')} }`;
    case '|': case '&': case '^': return `${exprText(v[0], hex)} ${k} ${exprText(v[1], hex)}`;
    case 'elem': return exprText(v.val, numbers);
    default: return JSON.stringify(e);
  }
}

/** One rule of nft -j as text, e.g. `ip saddr . iifname @pods4 meta mark set meta mark | 0x10` (comment left out). */
export function nftRuleText(rule: { expr: unknown[] }): string {
  return rule.expr.map((x) => {
    const [k, v] = Object.entries(x as Record<string, any>)[0]!;
    switch (k) {
      case 'match': {
        const numbers = v.left?.meta?.key === 'mark' ? hex : String;
        const op = v.op === '==' || v.op === 'in' ? '' : `${v.op} `;
        return `${exprText(v.left, numbers)} ${op}${exprText(v.right, numbers)}`;
      }
      case 'mangle': return `${exprText(v.key)} set ${exprText(v.value, hex)}`;
      case 'counter': return 'counter';
      case 'accept': case 'drop': case 'return': case 'continue': return k;
      case 'jump': case 'goto': return `${k} ${v.target}`;
      default: return JSON.stringify(x);
    }
  }).join(' ');
}

export interface NftTableView {
  name: string;
  /** Sets by name: their type and elements (pod sets: `addr . iface`; interval sets: CIDRs). */
  sets: Record<string, { type: unknown; flags: string[]; elements: string[]; comments: Record<string, string> }>;
  /** Chains by name, with their hook and the rules as text in order. */
  chains: Record<string, { type?: string; hook?: string; prio?: number; policy?: string; rules: string[]; comments: (string | undefined)[] }>;
}

/** One of markroute's tables in a Snapshot, sets and chains read back; undefined when absent. */
export function nftTable(s: Snapshot, name: string): NftTableView | undefined {
  const of = (kind: string) => nftItems(s).map((i) => itemOf(i, kind)).filter((o): o is Record<string, any> => !!o && o.family === 'inet' && (o.table ?? o.name) === name);
  if (of('table').length === 0) return undefined;
  const view: NftTableView = { name, sets: {}, chains: {} };
  for (const set of of('set')) {
    const elements: string[] = [];
    const comments: Record<string, string> = {};
    for (const raw of set.elem ?? []) {
      // `{"elem": {"val": ..., "comment": ...}}` when it has a comment, the bare value otherwise;
      // a host prefix of an interval set is printed as the address alone: give it its length back.
      const e = raw && typeof raw === 'object' && 'elem' in raw ? raw.elem : { val: raw };
      let text = exprText(e.val);
      if (set.flags?.includes('interval') && !text.includes('/')) text += text.includes(':') ? '/128' : '/32';
      elements.push(text);
      if (e.comment !== undefined) comments[text] = e.comment;
    }
    view.sets[set.name] = { type: set.type, flags: set.flags ?? [], elements, comments };
  }
  for (const c of of('chain')) view.chains[c.name] = { type: c.type, hook: c.hook, prio: c.prio, policy: c.policy, rules: [], comments: [] };
  for (const r of of('rule')) {
    view.chains[r.chain]?.rules.push(nftRuleText(r as { expr: unknown[] }));
    view.chains[r.chain]?.comments.push(r.comment);
  }
  return view;
}

/** Handle of the first rule of a chain whose text (nftRuleText) is `text`, read from the node now. */
export function nftRuleHandle(lab: Lab, table: string, chain: string, text: string): number | undefined {
  const items = JSON.parse(lab.exec(lab.ns.node, ['nft', '-j', '-a', 'list', 'chain', 'inet', table, chain]).stdout).nftables as NftItem[];
  return items.map((i) => itemOf(i, 'rule')).find((r) => r && nftRuleText(r as { expr: unknown[] }) === text)?.handle;
}

// ---- either backend ------------------------------------------------------------------------

/** One pod element, whichever backend holds it: the (address, host interface) pair and its comment. */
export interface PodElement {
  family: FamilyNumber;
  /** ipset name, or `<table>/pods4|pods6`. */
  set: string;
  address: string;
  iface: string;
  comment?: string;
}

/** Every pod element markroute keeps, in ipsets (mr4-/mr6-) and in its nftables tables' pod sets (nft.ts reads those). */
export function podElements(s: Snapshot): PodElement[] {
  const out: PodElement[] = [];
  for (const l of ipsetAdds(s)) {
    const m = /^add (mr([46])-[0-9a-f]{8}) (\S+),(\S+)(?: comment "(.*)")?$/.exec(l);
    if (m) out.push({ family: Number(m[2]) as FamilyNumber, set: m[1]!, address: m[3]!, iface: m[4]!, ...(m[5] !== undefined ? { comment: m[5] } : {}) });
  }
  for (const e of nftPodElements(s)) {
    out.push({ family: e.set.startsWith('pods6') ? 6 : 4, set: `${e.table}/${e.set}`, address: e.address, iface: e.iface, ...(e.comment !== undefined ? { comment: e.comment } : {}) });
  }
  return out;
}

/** `address,iface` of each pod element (the iptables backend's own notation), for compact assertions. */
export const elementKeys = (s: Snapshot): string[] => podElements(s).map((e) => `${e.address},${e.iface}`).sort();

/**
 * The CIDRs markroute exempts from marking for one family: the destinations its iptables chain(s)
 * RETURN for, or the elements of its nftables tables' exempt set, in order.
 */
export function exemptCIDRs(s: Snapshot, family: FamilyNumber): string[] {
  const out: string[] = [];
  for (const variant of ['legacy', 'nft'] as const) {
    for (const l of s.iptables[saveKey(variant, family)].split('\n')) {
      const m = /^-A MARKROUTE-[0-9a-f]{8} -d (\S+) .*-j RETURN$/.exec(l);
      if (m) out.push(m[1]!);
    }
  }
  for (const name of markrouteTables(s)) out.push(...(nftTable(s, name)!.sets[`exempt${family}`]?.elements ?? []));
  return out;
}

/**
 * Every kind of object markroute may leave on a node, by where it lives. All empty (NO_MARKROUTE)
 * when no pod is attached: `expect(markrouteObjects(s)).toEqual(NO_MARKROUTE)`.
 */
export function markrouteObjects(s: Snapshot) {
  const policyTable = (r: any) => r.table !== undefined && !['main', 'local', 'default'].includes(r.table);
  return {
    chains: {
      legacy4: markChains(s.iptables.legacy4), nft4: markChains(s.iptables.nft4),
      legacy6: markChains(s.iptables.legacy6), nft6: markChains(s.iptables.nft6),
    },
    jumps: Object.values(s.iptables).flatMap((save) => save.split('\n').filter((l) => /-j MARKROUTE-/.test(l) && !l.startsWith('-A MARKROUTE-'))),
    ipsets: s.ipset.split('\n').filter((l) => l.startsWith('create ')).map((l) => l.split(' ')[1]!),
    nftTables: markrouteTables(s),
    rules4: fwmarkRules(s, 4),
    rules6: fwmarkRules(s, 6),
    routes4: (s.routes4 as any[]).filter(policyTable),
    routes6: (s.routes6 as any[]).filter(policyTable),
  };
}

export const NO_MARKROUTE: ReturnType<typeof markrouteObjects> = {
  chains: { legacy4: [], nft4: [], legacy6: [], nft6: [] },
  jumps: [], ipsets: [], nftTables: [], rules4: [], rules6: [], routes4: [], routes6: [],
};

/** What `markroute status --json` prints (StatusReport in src/cli.ts): how tests read the state. */
export interface StatusJson {
  indexNeedsRecovery: boolean;
  driftCheckedAt?: string;
  facts?: { backend?: Backend; iptablesVariant?: 'nft' | 'legacy'; uplinks?: Record<string, { dev: string; gateway?: string }> };
  attachments: { id: string; pod?: string; iface: string; topology: string; addresses: string[]; createdAt: string; selection?: { by: string; mark?: string; reason: string } }[];
  objects: { key: string; perPod: boolean; refs: number; drift: string[] }[];
}

export function parseStatus(out: { code: number | null; stdout: string; stderr: string }): StatusJson {
  if (out.code !== 0) throw new Error(`markroute status --json: exit ${out.code}: ${out.stderr}`);
  return JSON.parse(out.stdout) as StatusJson;
}

// Everything a chained plugin could leave behind in a node namespace, normalised so
// that two snapshots taken before the first pod and after the last DEL compare equal
// when teardown is complete (counters, handles, dates and hash seeds removed).
// iptables tables holding nothing but empty built-in chains with policy ACCEPT are left
// out: iptables creates them on first use and never removes them (legacy cannot), so
// they say nothing about a plugin's teardown.
import { nsExec } from './exec.ts';

export interface Snapshot {
  iptables: { legacy4: string; legacy6: string; nft4: string; nft6: string };
  ipset: string;
  rules4: unknown[];
  rules6: unknown[];
  routes4: unknown[];
  routes6: unknown[];
  nft: unknown[];
  /** rp_filter of all, default and every interface, e.g. {"all": "1", "eth0": "2"}. */
  rpFilter: Record<string, string>;
  /**
   * The other routing sysctls a plugin could change, by key (e.g. "net.ipv4.ip_forward",
   * "net.ipv6.conf.eth0.forwarding", "net.ipv4.conf.all.src_valid_mark"), of every interface.
   */
  sysctls: Record<string, string>;
}

const out = (ns: string, argv: string[]): string => nsExec(ns, argv, { check: false }).stdout;

/** iptables-save without "# Generated/Completed ... on <date>" lines, with counters zeroed and empty tables dropped. */
export function normalizeIptablesSave(text: string): string {
  const lines = text
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'));
  const kept: string[] = [];
  let table: string[] = [];
  for (const l of lines) {
    table.push(l);
    if (l !== 'COMMIT') continue;
    const empty = table.slice(1, -1).every((x) => / ACCEPT \[0:0\]$/.test(x));
    if (!empty) kept.push(...table);
    table = [];
  }
  return [...kept, ...table].join('\n');
}

/** ipset save, sorted, without the random initval. */
export function normalizeIpset(text: string): string {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.replace(/ initval 0x[0-9a-f]+/, ''))
    .sort()
    .join('\n');
}

/** nft -j output minus metainfo, handles and counter values. */
export function normalizeNft(json: string): unknown[] {
  if (!json.trim()) return [];
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === 'handle' || k === 'packets' || k === 'bytes') continue;
        o[k] = strip(x);
      }
      return o;
    }
    return v;
  };
  const items = ((JSON.parse(json).nftables ?? []) as Record<string, any>[]).filter((i) => !('metainfo' in i));
  // iptables-nft's tables (ip/ip6 filter, mangle, ...) that hold only base chains with policy accept
  const key = (o: any) => `${o.family} ${o.table ?? o.name}`;
  const iptablesNames = new Set(['filter', 'mangle', 'nat', 'raw', 'security']);
  const busy = new Set<string>();
  for (const i of items) {
    const [kind, o] = Object.entries(i)[0]!;
    if (kind === 'table') continue;
    if (kind === 'chain' && o.hook && o.policy === 'accept') continue;
    busy.add(key(o));
  }
  const emptyIptables = (i: Record<string, any>) => {
    const o = Object.values(i)[0];
    return ['ip', 'ip6'].includes(o.family) && iptablesNames.has(o.table ?? o.name) && !busy.has(key(o));
  };
  return items.filter((i) => !emptyIptables(i)).map(strip);
}

/** The sysctls a snapshot holds: forwarding, reverse-path and redirect handling, marks in routing, per interface. */
const SYSCTLS =
  '^net\\.(ipv4\\.(ip_forward|conf\\..+\\.(rp_filter|src_valid_mark|forwarding|accept_local|send_redirects|accept_redirects|route_localnet|proxy_arp))' +
  '|ipv6\\.conf\\..+\\.(forwarding|accept_ra|accept_redirects|disable_ipv6|proxy_ndp))$';

const json = (text: string): unknown[] => (text.trim() ? (JSON.parse(text) as unknown[]) : []);

export function snapshot(ns: string): Snapshot {
  const rpFilter: Record<string, string> = {};
  const sysctls: Record<string, string> = {};
  // `sysctl -a` style listing, read inside the namespace: rp_filter apart, the rest by key
  for (const line of out(ns, ['sysctl', '-a', '-r', SYSCTLS]).split('\n')) {
    const kv = /^(\S+) = (.*)$/.exec(line.trim());
    if (!kv) continue;
    const rp = /^net\.ipv4\.conf\.(.+)\.rp_filter$/.exec(kv[1]!);
    if (rp) rpFilter[rp[1]!] = kv[2]!;
    else sysctls[kv[1]!] = kv[2]!;
  }
  return {
    iptables: {
      legacy4: normalizeIptablesSave(out(ns, ['iptables-legacy-save'])),
      legacy6: normalizeIptablesSave(out(ns, ['ip6tables-legacy-save'])),
      nft4: normalizeIptablesSave(out(ns, ['iptables-nft-save'])),
      nft6: normalizeIptablesSave(out(ns, ['ip6tables-nft-save'])),
    },
    ipset: normalizeIpset(out(ns, ['ipset', 'save'])),
    rules4: json(out(ns, ['ip', '-j', '-4', 'rule', 'show'])),
    rules6: json(out(ns, ['ip', '-j', '-6', 'rule', 'show'])),
    routes4: json(out(ns, ['ip', '-j', '-4', 'route', 'show', 'table', 'all'])),
    routes6: json(out(ns, ['ip', '-j', '-6', 'route', 'show', 'table', 'all'])),
    nft: normalizeNft(out(ns, ['nft', '-j', 'list', 'ruleset'])),
    rpFilter,
    sysctls,
  };
}

// Readers of markroute's nftables objects in a Snapshot, and one view of a pod's set element
// whichever backend holds it (ipset `hash:net,iface` or the nftables table's pods4/pods6 sets),
// so that a suite can assert the same thing for both backends.
import { nsExec } from './exec.ts';
import type { Backend } from './markroute.ts';
import type { Snapshot } from './snapshot.ts';

/** Names of markroute's nftables tables (`inet markroute-<8 hex>`) in a snapshot. */
export const markrouteTables = (s: Snapshot): string[] =>
  (s.nft as any[]).filter((i) => i.table?.family === 'inet' && /^markroute-[0-9a-f]{8}$/.test(i.table.name)).map((i) => i.table.name as string);

/** Everything (sets, chains, rules) of markroute's nftables tables in a snapshot. */
export const markrouteNft = (s: Snapshot): unknown[] =>
  (s.nft as any[]).filter((i) => {
    const o = Object.values(i)[0] as any;
    return o?.family === 'inet' && /^markroute-[0-9a-f]{8}$/.test(o.table ?? o.name ?? '');
  });

/** The snapshot's nft ruleset without markroute's tables. */
export const nftWithoutMarkroute = (s: Snapshot): unknown[] => {
  const ours = new Set(markrouteNft(s));
  return (s.nft as unknown[]).filter((i) => !ours.has(i));
};

export interface NftPodElement { table: string; set: string; address: string; iface: string; comment?: string }

/** Elements of markroute's pod sets (pods4, pods6) in a snapshot, of one table or of all. */
export function nftPodElements(s: Snapshot, table?: string): NftPodElement[] {
  const out: NftPodElement[] = [];
  for (const i of s.nft as any[]) {
    const set = i.set;
    if (!set || !/^markroute-[0-9a-f]{8}$/.test(set.table) || !/^pods[46]$/.test(set.name)) continue;
    if (table && set.table !== table) continue;
    for (const raw of set.elem ?? []) {
      // {"elem": {"val": {"concat": [addr, iface]}, "comment": "..."}} or, without a comment, {"concat": [...]}
      const val = raw.elem?.val ?? raw;
      const [address, iface] = (val.concat ?? []) as string[];
      out.push({ table: set.table, set: set.name, address: address!, iface: iface!, ...(raw.elem?.comment !== undefined ? { comment: raw.elem.comment } : {}) });
    }
  }
  return out;
}

/**
 * The pods' set elements as `address,iface comment "..."`, sorted, read from the backend's own
 * objects: ipset save's `add` lines (set name dropped) or the nftables pod sets.
 */
export function podElementTexts(s: Snapshot, backend: Backend): string[] {
  if (backend === 'iptables') {
    return s.ipset.split('\n').filter((l) => l.startsWith('add ')).map((l) => l.replace(/^add \S+ /, '')).sort();
  }
  return nftPodElements(s).map((e) => `${e.address},${e.iface}${e.comment !== undefined ? ` comment "${e.comment}"` : ''}`).sort();
}

/** The rules of one chain of a markroute table as `nft list` prints them (trimmed), or [] when absent. */
export function nftChainRules(ns: string, table: string, chain = 'prerouting'): string[] {
  const r = nsExec(ns, ['nft', 'list', 'chain', 'inet', table, chain], { check: false });
  if (r.code !== 0) return [];
  const lines = r.stdout.split('\n').map((l) => l.trim());
  const start = lines.findIndex((l) => l.startsWith('type '));
  return lines.slice(start + 1).filter((l) => l !== '' && l !== '}');
}

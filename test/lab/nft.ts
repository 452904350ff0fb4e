// Readers of markroute's nftables objects: its tables and their pod sets in a Snapshot, and a
// chain's rules as `nft list` prints them. (markroute.ts builds its readers for both backends on these.)
import { nsExec } from './exec.ts';
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

export interface NftPodElement { table: string; set: string; address: string; iface: string; comment?: string }

/** Elements of markroute's pod sets (pods4, pods6; annotated mode's pods4_<tag>, pods6_<tag>) in a snapshot, of one table or of all. */
export function nftPodElements(s: Snapshot, table?: string): NftPodElement[] {
  const out: NftPodElement[] = [];
  for (const i of s.nft as any[]) {
    const set = i.set;
    if (!set || !/^markroute-[0-9a-f]{8}$/.test(set.table) || !/^pods[46](_[0-9a-f]{8})?$/.test(set.name)) continue;
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

/** The rules of one chain of a markroute table as `nft list` prints them (trimmed), or [] when absent. */
export function nftChainRules(ns: string, table: string, chain = 'prerouting'): string[] {
  const r = nsExec(ns, ['nft', 'list', 'chain', 'inet', table, chain], { check: false });
  if (r.code !== 0) return [];
  const lines = r.stdout.split('\n').map((l) => l.trim());
  const start = lines.findIndex((l) => l.startsWith('type '));
  return lines.slice(start + 1).filter((l) => l !== '' && l !== '}');
}

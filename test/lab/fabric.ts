// The fabric's "NSG": an nftables forward chain in the fabric namespace that counts
// every packet it hairpins (in total and per source/destination pair) and can drop
// chosen pairs — the cloud security group that markroute must make pod traffic cross.
import { isIPv6 } from 'node:net';
import { nsExec } from './exec.ts';

const TABLE = 'nsg';

// Counting comes first so denied packets are counted too; deny rules are appended after.
export const NSG_RULESET = `
table inet ${TABLE} {
  counter forwarded { }
  counter denied { }
  set pairs4 { type ipv4_addr . ipv4_addr; flags dynamic; counter; }
  set pairs6 { type ipv6_addr . ipv6_addr; flags dynamic; counter; }
  chain forward {
    type filter hook forward priority 0; policy accept;
    counter name "forwarded"
    meta nfproto ipv4 update @pairs4 { ip saddr . ip daddr }
    meta nfproto ipv6 update @pairs6 { ip6 saddr . ip6 daddr }
  }
}
`;

export interface PairCount {
  src: string;
  dst: string;
  packets: number;
}

export class Nsg {
  constructor(readonly ns: string) {}

  install(): void {
    nsExec(this.ns, ['nft', '-f', '-'], { input: NSG_RULESET });
  }

  private listJson(...what: string[]): Record<string, any>[] {
    const text = nsExec(this.ns, ['nft', '-j', 'list', ...what]).stdout;
    return JSON.parse(text).nftables as Record<string, any>[];
  }

  private counter(name: string): number {
    const c = this.listJson('counter', 'inet', TABLE, name).find((i) => i.counter)?.counter;
    return Number(c?.packets ?? 0);
  }

  /** Packets the fabric forwarded (hairpinned), denied ones included. */
  forwarded(): number {
    return this.counter('forwarded');
  }

  /** Packets dropped by deny rules. */
  denied(): number {
    return this.counter('denied');
  }

  /** Per (src, dst) packet counts of everything forwarded. */
  pairs(): PairCount[] {
    const res: PairCount[] = [];
    for (const set of ['pairs4', 'pairs6']) {
      const s = this.listJson('set', 'inet', TABLE, set).find((i) => i.set)?.set;
      for (const el of s?.elem ?? []) {
        // dynamic set elements with counters: {"elem": {"val": {"concat": [src, dst]}, "counter": {...}}}
        const e = el.elem ?? el;
        const [src, dst] = (e.val?.concat ?? []) as string[];
        if (src && dst) res.push({ src, dst, packets: Number(e.counter?.packets ?? 0) });
      }
    }
    return res;
  }

  /** Packets forwarded from src to dst (0 when the pair was never seen). */
  packets(src: string, dst: string): number {
    return this.pairs().find((p) => p.src === src && p.dst === dst)?.packets ?? 0;
  }

  private ruleHandles(comment: string): number[] {
    return this.listJson('chain', 'inet', TABLE, 'forward')
      .filter((i) => i.rule?.comment === comment)
      .map((i) => Number(i.rule.handle));
  }

  /** Drop forwarded packets from src to dst (idempotent). */
  deny(src: string, dst: string): void {
    const comment = `deny ${src}>${dst}`;
    if (this.ruleHandles(comment).length) return;
    const fam = isIPv6(src) ? 'ip6' : 'ip';
    nsExec(this.ns, ['nft', 'add', 'rule', 'inet', TABLE, 'forward', fam, 'saddr', src, fam, 'daddr', dst, 'counter', 'name', 'denied', 'drop', 'comment', `"${comment}"`]);
  }

  /** Remove the deny rule for src to dst, if any. */
  allow(src: string, dst: string): void {
    for (const h of this.ruleHandles(`deny ${src}>${dst}`)) {
      nsExec(this.ns, ['nft', 'delete', 'rule', 'inet', TABLE, 'forward', 'handle', String(h)]);
    }
  }

  /** Zero the counters and forget the pairs seen so far. */
  reset(): void {
    nsExec(this.ns, ['nft', 'reset', 'counters', 'table', 'inet', TABLE]);
    nsExec(this.ns, ['nft', 'flush', 'set', 'inet', TABLE, 'pairs4']);
    nsExec(this.ns, ['nft', 'flush', 'set', 'inet', TABLE, 'pairs6']);
  }
}

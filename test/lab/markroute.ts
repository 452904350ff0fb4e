// markroute-specific lab helpers shared by the e2e suites: the conflists shipped in conflists/
// adapted to a lab, and readers that pick markroute's objects out of a Snapshot. The rest of the
// lab knows nothing about markroute (it also drives the stock plugins alone).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Conflist } from './cni.ts';
import { REPO_ROOT, type Lab } from './lab.ts';
import type { Snapshot } from './snapshot.ts';

/**
 * A conflist from conflists/, as shipped except for what must live in the lab: IPAM's dataDir
 * and (when given) its range, markroute's stateDir and logFile. Everything else is what users
 * install, so the suites test the real conflists.
 */
export type Backend = 'iptables' | 'nftables';

export function loadConflist(lab: Lab, file: string, range?: { subnet: string; gateway?: string }, backend: Backend = 'iptables'): Conflist {
  const list = JSON.parse(readFileSync(join(REPO_ROOT, 'conflists', file), 'utf8')) as Conflist;
  const main = list.plugins[0]! as any;
  main.ipam.dataDir = join(lab.dir, 'ipam');
  if (range) main.ipam.ranges = [[range]];
  const mr = list.plugins.find((p) => p.type === 'markroute')!;
  mr.stateDir = join(lab.dir, 'state');
  mr.logFile = join(lab.dir, 'markroute.log');
  // The shipped conflists say `auto`; a suite names the backend whose kernel objects it asserts.
  mr.backend = backend;
  return list;
}

/** 10-ptp-markroute.conflist on the lab's ptp subnet (ptp, then markroute). */
export const loadPtpConflist = (lab: Lab, backend?: Backend): Conflist =>
  loadConflist(lab, '10-ptp-markroute.conflist', { subnet: lab.subnets.ptp }, backend);

/** 10-bridge-markroute.conflist on the lab's bridge subnet, cni0 holding its first address. */
export const loadBridgeConflist = (lab: Lab, backend?: Backend): Conflist =>
  loadConflist(lab, '10-bridge-markroute.conflist', { subnet: lab.subnets.bridge, gateway: '10.244.1.1' }, backend);

// ---- markroute's objects in a Snapshot ------------------------------------------------

/** `add` lines of ipset save (one per attached pod), of one set or of all. */
export const ipsetAdds = (s: Snapshot, set?: string): string[] => s.ipset.split('\n').filter((l) => l.startsWith(`add ${set ?? ''}`));

/** IPv4 ip rules that match a fwmark (markroute's; the node has none of its own). */
export const fwmarkRules = (s: Snapshot): any[] => (s.rules4 as any[]).filter((r) => r.fwmark !== undefined);

/** IPv4 routes of one routing table, e.g. markroute's table '100'. */
export const tableRoutes = (s: Snapshot, table: string): any[] => (s.routes4 as any[]).filter((r) => r.table === table);

/** Names of markroute's chains (MARKROUTE-<8 hex>) declared in an iptables-save text. */
export const markChains = (save: string): string[] => [...save.matchAll(/^:(MARKROUTE-[0-9a-f]{8}) /gm)].map((m) => m[1]!);

// What one agent pass does: the kernel (every object the records need, read back, and re-applied
// under the lock, as `markroute reconcile` would, when one is not as recorded) and the conflist
// entry (put back by the same code as `markroute install`). A pass that repairs is one operation:
// the lock is held for it alone; one that finds nothing never takes it.
import { existsSync } from "node:fs";
import { LOCK_TIMEOUT_MS, linuxKernel, withState, type Kernel, type Repair } from "../engine.js";
import { installEntry, type EntryInstalled } from "../install/conf-dir.js";
import { readEntry } from "../install/entry.js";
import type { KernelObject } from "../plan.js";
import { acquireLockInBackground } from "../state/lock.js";
import { stateExists, unlockedView } from "../state/records.js";

export interface KernelPass {
  /** What the read-back found not as planned (each then repaired by re-applying every record). */
  repaired: Repair[];
  /** A predecessor (a CNI operation or an agent) died midway, and this pass healed the state from the records. */
  recovered: boolean;
  /** Why healing failed, when it did (the index stays dirty; the next pass or operation retries). */
  recoveryError?: string;
  /** How many of the objects the records need the kernel does not report changes of now (see `unobservable`). */
  unobservable: number;
  /** How long the pass waited for the lock (CNI operations held it). */
  lockWaitMs: number;
  /** The pass took the lock: the read without it found drift, or a state to heal. */
  locked: boolean;
}

/**
 * Objects whose changes no kernel event announces: ipsets and their elements, and chains of
 * iptables-legacy (ip rules, routes, links and rp_filter have rtnetlink's events); nftables' own
 * objects and iptables-nft's chains too while `nft monitor` does not run (nft not installed, or
 * the monitor died): their events come only through it. The agent polls these.
 */
export const unobservable = (nftEvents: boolean) => (o: KernelObject): boolean =>
  o.kind === "ipset" || o.kind === "element" || (o.kind === "markChain" && (o.variant === "legacy" || !nftEvents)) ||
  (!nftEvents && (o.kind === "nftTable" || o.kind === "nftElement"));

/**
 * A pod's link group on an interface that is gone (the pod went; the runtime's DEL has not come
 * yet) cannot be put back, and trying would fail every pass: it is left to the DEL.
 */
const repairable = (o: KernelObject): boolean => o.kind !== "linkGroup" || existsSync(`/proc/sys/net/ipv4/conf/${o.dev}`);

/** The kind of the object a repair names (the first part of its key), for the metrics. */
export const repairKind = (r: Repair): string => r.key.slice(0, r.key.indexOf("/"));

/**
 * One pass over the kernel: every object, or with `pollOnly` those `polled` selects (what has no
 * events now). Most passes find nothing (the agent wakes on every link, route and nftables change
 * of the node, other pods' and kube-proxy's included), so the records are first read back without
 * the lock; only drift, or a state that needs healing, takes the lock, and the pass then reads
 * again under it before it repairs anything. A read racing a CNI operation may see drift that is
 * not there (then the locked read finds none) or miss one in the objects that operation is
 * installing (its own events wake the agent again). A state directory that does not exist yet (no
 * pod was ever attached with it) is left alone: there is nothing to repair, and nothing to create.
 */
export async function repairKernel(stateDir: string, polled: (o: KernelObject) => boolean, pollOnly: boolean, kernel: Kernel = linuxKernel): Promise<KernelPass> {
  const only = (o: KernelObject) => repairable(o) && (!pollOnly || polled(o));
  if (!stateExists(stateDir)) return { repaired: [], recovered: false, unobservable: 0, lockWaitMs: 0, locked: false };
  const view = unlockedView(stateDir, (objects) => kernel.drift(objects));
  const wanted = view?.wanted() ?? [];
  if (view && ![...view.drift(wanted.filter(only)).values()].some((problems) => problems.length > 0)) {
    return { repaired: [], recovered: false, unobservable: wanted.filter(polled).length, lockWaitMs: 0, locked: false };
  }
  // Waited for off the event loop, then handed to the engine's operation.
  const lock = await acquireLockInBackground(stateDir, LOCK_TIMEOUT_MS);
  try {
    return await withState(stateDir, (session) => {
      const repaired = session.repair(only);
      const { recovered, recoveryError } = session.summary;
      return {
        repaired, recovered, ...(recoveryError ? { recoveryError } : {}),
        unobservable: session.view.wanted().filter(polled).length, lockWaitMs: lock.waitedMs, locked: true,
      };
    }, { kernel, heldLock: lock });
  } finally {
    await lock.release();
  }
}

/** markroute's entry in the conflist the runtime uses, put back if someone rewrote the file without it. */
export function keepEntry(confDir: string, entryFile: string): EntryInstalled {
  return installEntry(confDir, readEntry({ entryFile }));
}

// Diffs planned objects against the kernel and applies the difference in one batch per tool: the
// one place where rendered batches (the backends' pure `render*` functions) are run.
import { CniError, ErrorCode } from "../cni/errors.js";
import { runCall, runTool } from "../kernel/exec.js";
import type { Family } from "../net/cidr.js";
import {
  objectKey, type IptablesVariant, type KernelObject, type MarkChain, type PolicyRoute, type PolicyRule,
  type LinkGroup, type RpFilter, type SuppressRule,
} from "../plan.js";
import { MangleTable, elementPresent, ipsetNames, renderChains, renderDestroySets, renderSets, setMembers } from "./iptables.js";
import {
  linkGroups, readRouting, readRpFilter, readTableRoutes, renderLinkGroups, renderRouteBatch, routeBatchError,
  routeMatches, ruleMatches, suppressMatches, writeRpFilter, type Routing,
} from "./iproute.js";
import { NftTableState, renderNft } from "./nftables.js";

type Of<K extends KernelObject["kind"]> = Extract<KernelObject, { kind: K }>;
const ofKind = <K extends KernelObject["kind"]>(objects: KernelObject[], kind: K) =>
  objects.filter((o): o is Of<K> => o.kind === kind);
const families = (objects: { family: Family }[]) => [...new Set(objects.map((o) => o.family))];
/** The policy tables of the routes among `objects`, per family. */
function routeTables(objects: KernelObject[]): Map<Family, number[]> {
  const routes = ofKind(objects, "route");
  return new Map(families(routes).map((f) => [f, routes.filter((r) => r.family === f).map((r) => r.table)]));
}

/** Reads kernel state lazily, once per source, for the duration of one operation. */
class KernelView {
  private mangle = new Map<string, MangleTable>();
  private routing = new Map<Family, Routing>();

  /** @param tables per family, the policy tables whose routes are read along with the rules */
  constructor(private readonly tables: Map<Family, number[]>) {}

  private members = new Map<string, ReturnType<typeof setMembers>>();
  private sets?: Set<string>;
  private nft = new Map<string, NftTableState | undefined>();
  private groups?: Map<string, string>;

  mangleOf(family: Family, variant: IptablesVariant): MangleTable {
    const k = `${family}/${variant}`;
    if (!this.mangle.has(k)) this.mangle.set(k, MangleTable.read(family, variant));
    return this.mangle.get(k)!;
  }
  private routingOf(family: Family): Routing {
    if (!this.routing.has(family)) this.routing.set(family, readRouting(family, this.tables.get(family) ?? []));
    return this.routing.get(family)!;
  }
  rulesOf(family: Family) {
    return this.routingOf(family).rules;
  }
  routesOf(family: Family, table: number) {
    // a table not named up front is read on its own
    return this.routingOf(family).routes.get(table) ?? readTableRoutes(family, table);
  }
  setNames(): Set<string> {
    return (this.sets ??= ipsetNames());
  }
  nftTable(table: string): NftTableState | undefined {
    if (!this.nft.has(table)) this.nft.set(table, NftTableState.read(table));
    return this.nft.get(table);
  }
  groupsOf(): Map<string, string> {
    return (this.groups ??= linkGroups());
  }
  membersOf(set: string) {
    if (!this.members.has(set)) this.members.set(set, setMembers(set));
    return this.members.get(set);
  }

  /** Empty when the object is installed as planned; otherwise what is wrong, in words. */
  drift(o: KernelObject): string[] {
    const missing = (what: string) => [`${what} is missing`];
    switch (o.kind) {
      case "ipset": return this.setNames().has(o.name) ? [] : missing(`ipset ${o.name}`);
      case "element": return elementPresent(this.membersOf(o.set), o) ? [] : missing(`ipset element ${o.address},${o.iface} in ${o.set}`);
      case "markChain": return this.mangleOf(o.family, o.variant).drift(o);
      case "nftTable": return this.nftTable(o.table)?.drift(o) ?? missing(`nftables table inet ${o.table}`);
      case "nftElement": return this.nftTable(o.table)?.hasElement(o) ? [] : missing(`element ${o.address} . ${o.iface} in table inet ${o.table}`);
      case "linkGroup": {
        const group = this.groupsOf().get(o.dev);
        return group === String(o.group) ? [] : [`interface ${o.dev} is in group ${group ?? "(no such interface)"}, not ${o.group}`];
      }
      case "rule": return this.rulesOf(o.family).some((e) => ruleMatches(e, o)) ? [] : missing(`ip -${o.family} rule ${o.priority}: fwmark 0x${o.mark.toString(16)}/0x${o.mask.toString(16)} lookup ${o.table}`);
      case "suppressRule": return this.rulesOf(o.family).some((e) => suppressMatches(e, o)) ? [] : missing(`ip -${o.family} rule ${o.priority}: lookup main suppress_prefixlength ${o.prefixLength}`);
      case "route": return this.routesOf(o.family, o.table).some((e) => routeMatches(e, o)) ? [] : missing(`default ${o.gateway ? `via ${o.gateway} ` : ""}dev ${o.dev} in table ${o.table} (IPv${o.family})`);
      case "rpFilter": {
        const value = readRpFilter(o.dev);
        return value === o.value ? [] : [`rp_filter of ${o.dev} is ${value ?? "unreadable (no such interface)"}, not ${o.value} (loose)`];
      }
    }
  }
}

/** For each object, what differs from the plan (an empty list: installed as planned). */
export function driftOf(objects: KernelObject[]): Map<string, string[]> {
  const view = new KernelView(routeTables(objects));
  return new Map(objects.map((o) => [objectKey(o), view.drift(o)]));
}

export interface Removal { object: KernelObject; /** rp_filter value to put back */ previous?: number }

/**
 * Installs `install` and removes `remove`, batching per tool, in dependency order: sets before the
 * rules that match them, chains gone before their sets are destroyed. Installing is idempotent and
 * removing tolerates absence, so a retried or crashed operation can simply run again.
 */
export interface ApplyOptions {
  /**
   * Every record re-applied (a recovery, a drift repair, the agent's pass): a pod's link group on
   * an interface already gone is left to that pod's DEL, so that one vanished veth cannot fail the
   * repair of everything else. An ADD's own link group on a missing interface stays its error.
   */
  reapply?: boolean;
}

export function applyChange(install: KernelObject[], remove: Removal[], { reapply = false }: ApplyOptions = {}): void {
  const view = new KernelView(routeTables(remove.map((r) => r.object)));
  const removed = remove.map((r) => r.object);

  // Elements of a set that goes anyway need no del; a del from a set that is already gone (a crash
  // before the set was made) is as good as done.
  const setsOut = ofKind(removed, "ipset");
  const dels = ofKind(removed, "element").filter((e) => !setsOut.some((s) => s.name === e.set));
  try {
    runCall(renderSets(ofKind(install, "ipset"), ofKind(install, "element"), dels));
  } catch (err) {
    if (!(err instanceof CniError && /set with the given name does not exist/.test(err.message))) throw err;
    const existing = view.setNames();
    runCall(renderSets(ofKind(install, "ipset"), ofKind(install, "element"), dels.filter((e) => existing.has(e.set))));
  }

  const chainsIn = ofKind(install, "markChain");
  const chainsOut = ofKind(removed, "markChain");
  const variants = new Set([...chainsIn, ...chainsOut].map((c) => `${c.family}/${c.variant}`));
  for (const v of variants) {
    const match = (c: MarkChain) => `${c.family}/${c.variant}` === v;
    const [family, variant] = v.split("/") as [string, IptablesVariant];
    runCall(renderChains(Number(family) as Family, variant, chainsIn.filter(match), chainsOut.filter(match), view.mangleOf(Number(family) as Family, variant)));
  }

  if (setsOut.length) runCall(renderDestroySets(setsOut, view.setNames()));

  runCall(renderNft(ofKind(install, "nftTable"), ofKind(install, "nftElement"), ofKind(removed, "nftElement"), ofKind(removed, "nftTable")));
  // An interface already gone (with its pod; its DEL comes later) is left alone when removing, and
  // when re-applying (see ApplyOptions). Looked up only when the batch is refused.
  const groupsIn = ofKind(install, "linkGroup");
  const groupsOut = ofKind(removed, "linkGroup");
  try {
    runCall(renderLinkGroups(groupsIn, groupsOut.length ? groupsOut.filter((g) => view.groupsOf().has(g.dev)) : []));
  } catch (err) {
    if (!(reapply && err instanceof CniError && /Cannot find device/.test(err.message))) throw err;
    const present = (g: LinkGroup) => view.groupsOf().has(g.dev);
    runCall(renderLinkGroups(groupsIn.filter(present), groupsOut.filter(present)));
  }

  const routing = [...ofKind(install, "rule"), ...ofKind(install, "suppressRule"), ...ofKind(install, "route"),
    ...ofKind(removed, "rule"), ...ofKind(removed, "suppressRule"), ...ofKind(removed, "route")];
  for (const family of families(routing)) {
    const fam = <T extends { family: Family }>(xs: T[]) => xs.filter((x) => x.family === family);
    const absent = <T extends PolicyRule | SuppressRule>(xs: T[]) => fam(xs).filter((x) => view.drift(x).length > 0);
    const present = <T extends PolicyRule | SuppressRule | PolicyRoute>(xs: T[]) => fam(xs).filter((x) => view.drift(x).length === 0);
    const batch = {
      replaceRoutes: fam(ofKind(install, "route")),
      addRules: absent(ofKind(install, "rule")),
      addSuppress: absent(ofKind(install, "suppressRule")),
      delRules: present(ofKind(removed, "rule")),
      delSuppress: present(ofKind(removed, "suppressRule")),
      delRoutes: fam(ofKind(removed, "route")).filter((r) => view.routesOf(family, r.table).some((e) => e.dst === "default")),
    };
    const call = renderRouteBatch(family, batch);
    if (!call) continue;
    const out = runTool(call.argv, call.input);
    if (out.status !== 0) throw routeBatchError(family, batch, call, out);
  }

  for (const rp of ofKind(install, "rpFilter")) {
    const value = readRpFilter(rp.dev);
    if (value === undefined) throw new CniError(ErrorCode.nodeNotReady, `uplink ${rp.dev} does not exist`);
    if (value !== rp.value) writeRpFilter(rp.dev, rp.value);
  }
  for (const { object, previous: before } of remove) {
    const rp = object as RpFilter;
    // Put back what was there, unless someone changed it since we loosened it.
    if (object.kind === "rpFilter" && before !== undefined && readRpFilter(rp.dev) === rp.value) writeRpFilter(rp.dev, before);
  }
}

/**
 * The values installing `objects` will overwrite and removing them must put back (rp_filter), by
 * key: read before anything changes, so that they are recorded even if the change is cut short.
 */
export function valuesBefore(objects: KernelObject[]): Map<string, number> {
  const values = new Map<string, number>();
  for (const rp of ofKind(objects, "rpFilter")) {
    const value = readRpFilter(rp.dev);
    if (value === undefined) throw new CniError(ErrorCode.nodeNotReady, `uplink ${rp.dev} does not exist`);
    values.set(objectKey(rp), value);
  }
  return values;
}


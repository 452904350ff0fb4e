// Routing objects, whatever marks the packets: ip rules, the policy table's default route, rp_filter.
// Batches are rendered here (pure, `render*`) and run by src/backend/apply.ts; reads run here.
import { readFileSync, writeFileSync } from "node:fs";
import { CniError, ErrorCode } from "../cni/errors.js";
import { mustRun, runTool, toolFailure, type ToolCall, type ToolOutput } from "../kernel/exec.js";
import type { Family } from "../net/cidr.js";
import { hex } from "../net/hex.js";
import type { LinkGroup, PolicyRoute, PolicyRule, SuppressRule, Uplink } from "../plan.js";

interface IpRuleEntry { priority: number; fwmark?: string; fwmask?: string; table?: string; suppress_prefixlen?: number; src?: string }
interface IpRouteEntry { dst: string; gateway?: string; dev?: string; metric?: number }

const ipJson = <T>(family: Family, args: string[]): T[] =>
  JSON.parse(mustRun(["ip", "-j", `-${family}`, ...args]) || "[]") as T[];

export const readRules = (family: Family) => ipJson<IpRuleEntry>(family, ["rule", "show"]);
/** The routes of a policy table; a table the kernel never had (or dropped with its last route) is empty. */
export function readTableRoutes(family: Family, table: number): IpRouteEntry[] {
  const argv = ["ip", "-j", `-${family}`, "route", "show", "table", String(table)];
  const out = runTool(argv);
  if (out.status !== 0 && /FIB table does not exist/.test(out.stderr)) return [];
  if (out.status !== 0) throw toolFailure(argv, out);
  return JSON.parse(out.stdout || "[]") as IpRouteEntry[];
}

/** A family's ip rules, and the routes of some policy tables by table. */
export interface Routing { rules: IpRuleEntry[]; routes: Map<number, IpRouteEntry[]> }

/** The read of a family's ip rules and the routes of `tables`, as one `ip -batch` (one output line per command). */
export const renderRoutingRead = (family: Family, tables: number[]): ToolCall =>
  ({ argv: ["ip", "-j", `-${family}`, "-force", "-batch", "-"], input: ["rule show", ...tables.map((t) => `route show table ${t}`)].join("\n") + "\n" });

/** A family's ip rules and the routes of `tables`, in one `ip -batch`. */
export function readRouting(family: Family, tables: number[]): Routing {
  const call = renderRoutingRead(family, tables);
  const out = runTool(call.argv, call.input);
  const lines = out.stdout.split("\n").filter(Boolean);
  // Where listing a table the kernel never had fails (an error, and a "[" left open on stdout), read one by one.
  if (out.status !== 0 || lines.length !== tables.length + 1) {
    return { rules: readRules(family), routes: new Map(tables.map((t) => [t, readTableRoutes(family, t)])) };
  }
  return { rules: JSON.parse(lines[0]!) as IpRuleEntry[], routes: new Map(tables.map((t, i) => [t, JSON.parse(lines[i + 1]!) as IpRouteEntry[]])) };
}

// `ip -j rule` prints the table by name for the kernel's own (main) and by number otherwise.
const tableName = (t: number | string) => (String(t) === "254" ? "main" : String(t));

export const ruleMatches = (entry: IpRuleEntry, r: PolicyRule) =>
  entry.priority === r.priority && entry.fwmark === hex(r.mark) && (entry.fwmask ?? "0xffffffff") === hex(r.mask) &&
  entry.table === tableName(r.table);

export const suppressMatches = (entry: IpRuleEntry, r: SuppressRule) =>
  entry.priority === r.priority && entry.table === "main" && entry.suppress_prefixlen === r.prefixLength;

export const routeMatches = (entry: IpRouteEntry, r: PolicyRoute) => entry.dst === "default" && entry.gateway === r.gateway && entry.dev === r.dev;

const ruleArgs = (r: PolicyRule) => ["fwmark", `${hex(r.mark)}/${hex(r.mask)}`, "lookup", String(r.table), "priority", String(r.priority)];
const suppressArgs = (r: SuppressRule) => ["lookup", "main", "suppress_prefixlength", String(r.prefixLength), "priority", String(r.priority)];
/** The policy route as `ip route` words; without a gateway, a device route (a point-to-point uplink): no "via" at all. */
export const routeArgs = (r: PolicyRoute) => ["default", ...(r.gateway ? ["via", r.gateway] : []), "dev", r.dev, "table", String(r.table)];

export interface RouteBatch {
  addRules: PolicyRule[]; delRules: PolicyRule[];
  addSuppress: SuppressRule[]; delSuppress: SuppressRule[];
  replaceRoutes: PolicyRoute[]; delRoutes: PolicyRoute[];
}

/**
 * One `ip -batch` per family (none when there is nothing to do): routes replaced first, so that a
 * refused one is line N of the batch. Callers pass only what is absent (adds) or present (deletes),
 * so no line fails on state.
 */
export function renderRouteBatch(family: Family, b: RouteBatch): ToolCall | undefined {
  const lines = [
    ...b.replaceRoutes.map((r) => ["route", "replace", ...routeArgs(r)]),
    ...b.addRules.map((r) => ["rule", "add", ...ruleArgs(r)]),
    ...b.addSuppress.map((r) => ["rule", "add", "from", "all", ...suppressArgs(r)]),
    ...b.delRules.map((r) => ["rule", "del", ...ruleArgs(r)]),
    ...b.delSuppress.map((r) => ["rule", "del", "from", "all", ...suppressArgs(r)]),
    ...b.delRoutes.map((r) => ["route", "del", "default", "table", String(r.table)]),
  ];
  if (!lines.length) return undefined;
  return { argv: ["ip", `-${family}`, "-batch", "-"], input: lines.map((l) => l.join(" ")).join("\n") + "\n" };
}

/** The error of a route batch the tool refused: the policy route's, naming the field, when a route line failed. */
export function routeBatchError(family: Family, b: RouteBatch, call: ToolCall, out: ToolOutput): CniError {
  // `ip -batch` stops at the first line the kernel refuses and says which ("Command failed -:N").
  const failed = Number(/Command failed -:(\d+)/.exec(out.stderr)?.[1] ?? 0);
  const route = failed >= 1 && failed <= b.replaceRoutes.length ? b.replaceRoutes[failed - 1] : undefined;
  return (route && routeRefusal(family, route, out.stderr)) ?? toolFailure(call.argv, out, call.input);
}

/**
 * A policy route the kernel refuses for what the netconf (or the node) gave it, as an error naming
 * the field: the gateway is not reachable through the uplink, or the uplink does not exist. The
 * tool's own words and the batch stay in `details`.
 */
export function routeRefusal(family: Family, r: PolicyRoute, stderr: string): CniError | undefined {
  const said = stderr.replace(/\s*Command failed -:\d+\s*$/, "").trim();
  const details = `ip -${family} route replace ${routeArgs(r).join(" ")}: ${said}`;
  const gw = family === 4 ? "gateway" : "gateway6";
  if (/Cannot find device/.test(stderr)) {
    return new CniError(ErrorCode.nodeNotReady, `uplink ${r.dev} does not exist on this node (netconf field "uplink"): the policy route of table ${r.table} needs it`, details);
  }
  if (/Nexthop has invalid gateway|No route to host|Network is unreachable|Invalid gateway address|Gateway can not be a local address|Nexthop device is not up/.test(stderr)) {
    return new CniError(ErrorCode.invalidConfig,
      `invalid netconf: ${gw}: the kernel refuses ${r.gateway} as the next hop on uplink ${r.dev} for table ${r.table} (${said}); ` +
      `set "${gw}" to a router on ${r.dev}'s network (not the node's own address), or "uplink" to the interface that reaches it, and check that ${r.dev} is up`,
      details);
  }
  return undefined;
}

/** What the kernel would do with one packet (`markroute explain`): `ip route get` with its source, interface and mark. */
export const renderRouteGet = (family: Family, p: { from: string; to: string; iif: string }, mark: number): ToolCall =>
  ({ argv: ["ip", "-j", `-${family}`, "route", "get", p.to, "from", p.from, "iif", p.iif, "mark", hex(mark)] });

/** The main table's default route with a gateway (never "via 0.0.0.0"), lowest metric first. */
export function detectUplink(family: Family): Uplink | undefined {
  const best = ipJson<IpRouteEntry>(family, ["route", "show", "default", "table", "main"])
    .filter((r) => r.gateway && r.dev)
    .sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0];
  return best && { dev: best.dev!, gateway: best.gateway! };
}

interface IpLink { ifname: string; master?: string; group?: string }
const readLinks = () => JSON.parse(mustRun(["ip", "-j", "link", "show"]) || "[]") as IpLink[];

/** interface name → the bridge it is enslaved to. */
export function linkMasters(): Map<string, string> {
  return new Map(readLinks().filter((l) => l.master).map((l) => [l.ifname, l.master!]));
}

/** interface name → its group as `ip` prints it ("default" for 0). */
export const linkGroups = () => new Map(readLinks().map((l) => [l.ifname, l.group ?? "default"]));

/**
 * One `ip -batch` that sets pods' host interfaces into their group and puts back the default group
 * on `reset` (the caller passes only interfaces that still exist).
 */
export function renderLinkGroups(set: LinkGroup[], reset: LinkGroup[]): ToolCall | undefined {
  const lines = [
    ...set.map((g) => `link set dev ${g.dev} group ${g.group}`),
    ...reset.map((g) => `link set dev ${g.dev} group default`),
  ];
  return lines.length ? { argv: ["ip", "-batch", "-"], input: lines.join("\n") + "\n" } : undefined;
}

const rpFilterPath = (dev: string) => `/proc/sys/net/ipv4/conf/${dev}/rp_filter`;

/** The uplink's rp_filter, or undefined when the interface does not exist. */
export function readRpFilter(dev: string): number | undefined {
  try {
    return Number(readFileSync(rpFilterPath(dev), "utf8").trim());
  } catch {
    return undefined;
  }
}

export function writeRpFilter(dev: string, value: number): void {
  writeFileSync(rpFilterPath(dev), `${value}\n`);
}

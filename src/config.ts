// The netconf contract: the schema, its cross-field checks, and the Config they yield. Over ~250
// lines on purpose: every field's rule and its code-7 message sit together, and splitting the schema
// from its checks would put a field's validation in two places.
import * as z from "zod/mini";
import { en } from "zod/locales";
import { CniError, ErrorCode } from "./cni/errors.js";
import { parseCidr, familyOf, canonicalAddress, hasZone, inCidr, type Cidr } from "./net/cidr.js";
import { fnv1a } from "./net/hash.js";
import { hex } from "./net/hex.js";

export const DEFAULT_STATE_DIR = "/var/lib/cni/markroute";
export const DEFAULT_LOG_FILE = "/var/log/markroute.log";

z.config(en());

const SAFE_PATH_RULE = "must be an absolute path of letters, digits, _ . - below / (no . or .. component)";
/** An absolute path of safe characters, not `/` itself, without `.` or `..` components (which could climb out of where it seems to be). */
export const isSafePath = (path: string) =>
  /^(\/[A-Za-z0-9_.-]+)+\/?$/.test(path) && !path.split("/").some((c) => c === "." || c === "..") && path.length <= 1024;
/** A logFile value: a safe path, or "stderr". */
const isLogFile = (value: string) => value === "stderr" || isSafePath(value);

export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
/** The version markroute answers in when the caller's is missing or one it does not speak. */
export const LATEST_VERSION: string = SUPPORTED_VERSIONS.at(-1)!;
/** Whether markroute speaks `version` (a netconf's or a caller's cniVersion, which may be anything). */
export const isSupportedVersion = (version: unknown): version is string =>
  typeof version === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(version);

// Linux IFNAMSIZ is 16 with the NUL; only characters that are safe in file names, ipset comments and argv.
export const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}$/;
// libcni's rule for network names and container IDs.
export const CNI_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

const u32 = (what: string) =>
  z.union([
    z.number().check(z.int(), z.minimum(0), z.maximum(0xffffffff)),
    z.string().check(z.regex(/^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})$/, `${what} must be a decimal or 0x-hex 32-bit number`)),
  ]);
const toU32 = (v: number | string) => (typeof v === "number" ? v : Number(v));

// An IPv6 zone (fe80::1%eth0) is refused wherever an address is taken: the tools take none, and
// the device of a link-local next hop is the netconf's `uplink`.
const NO_ZONE = "must not carry an IPv6 zone (%...): give the address alone; a link-local gateway's device is `uplink`";
const noZone = z.refine<string>((s) => !hasZone(s), NO_ZONE);

const ifname = z.string().check(z.regex(IFNAME, "must be an interface name: 1-15 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit"));
// "all" and "default" name the kernel's per-family defaults (/proc/sys/net/ipv4/conf/all/...), never
// an interface (the kernel refuses to create one so named); `ip` reads any other word after `dev` as a name.
const RESERVED_IFNAMES = ["all", "default"];
const uplinkName = ifname.check(z.refine((s) => !RESERVED_IFNAMES.includes(s),
  `must name an interface; "all" and "default" are the kernel's sysctl defaults (net.ipv4.conf.all/default), not devices`));
const address = (family: 4 | 6) =>
  z.string().check(noZone, z.refine((s) => hasZone(s) || familyOf(s) === family, `must be an IPv${family} address`));
// A policy route's next hop: the kernel takes 0.0.0.0 as "no gateway" (a device route CHECK never
// finds as planned), and refuses loopback, multicast and broadcast ones.
const NOT_A_NEXT_HOP: Record<4 | 6, string[]> = {
  4: ["0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32"],
  6: ["::/128", "::1/128", "ff00::/8", "::ffff:0.0.0.0/96"],
};
const gatewayAddress = (family: 4 | 6) => address(family).check(z.refine((s) => !NOT_A_NEXT_HOP[family].some((p) => inCidr(s, p)),
  `must be a unicast next hop on the uplink's network: unspecified (${family === 4 ? "0.0.0.0" : "::"}), loopback, multicast and ${family === 4 ? "broadcast" : "IPv4-mapped"} addresses are not; leave it out for the main table's default route, or a device route with \`uplink\``));
const cidrList = z.array(z.string().check(noZone, z.refine((s) => { try { parseCidr(s); return true; } catch { return hasZone(s); } }, "must be an IPv4 or IPv6 CIDR such as 10.0.0.0/16")));

const prevResultSchema = z.looseObject({
  cniVersion: z.optional(z.string()),
  interfaces: z._default(z.optional(z.array(z.looseObject({
    // Safe characters, any length: entries that are no interface of the node (AWS VPC CNI's
    // 16-character `dummy…`) are listed too; host-match.ts matches only real interface names.
    name: z.string().check(z.regex(/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,254}$/, "must be an interface name of letters, digits, _ . @ -")),
    mac: z.optional(z.string()),
    sandbox: z.optional(z.string()),
  }))), []),
  ips: z._default(z.optional(z.array(z.looseObject({
    address: z.string().check(noZone, z.refine((s) => { try { return s.includes("/") && !!parseCidr(s); } catch { return hasZone(s); } }, "must be an address with prefix such as 10.244.0.5/24")),
    interface: z.optional(z.number().check(z.int(), z.minimum(0))),
  }))), []),
});
export type PrevResult = z.infer<typeof prevResultSchema>;

const attachmentRef = z.looseObject({ containerID: z.string(), ifname: z.string() });

// Fields the CNI spec and runtimes put in every netconf; accepted, used only where named.
const standardFields = {
  cniVersion: z.string(),
  // At most 64: the name goes into state file names (with the container ID, under 255 bytes) and rule comments.
  name: z.string().check(z.regex(CNI_NAME, "must be a CNI network name (letters, digits, _ . -)"), z.maxLength(64)),
  type: z.string(),
  capabilities: z.optional(z.record(z.string(), z.unknown())),
  runtimeConfig: z.optional(z.record(z.string(), z.unknown())),
  args: z.optional(z.record(z.string(), z.unknown())),
  ipam: z.optional(z.unknown()),
  dns: z.optional(z.unknown()),
  disableCheck: z.optional(z.boolean()),
  disableGC: z.optional(z.boolean()),
  prevResult: z.optional(prevResultSchema),
  // GC (CNI 1.1): the attachments the runtime still knows; the older spelling too.
  "cni.dev/valid-attachments": z.optional(z.array(attachmentRef)),
  "cni.dev/attachments": z.optional(z.array(attachmentRef)),
};

const tableNumber = z.number().check(z.int(), z.minimum(1), z.maximum(0xffffffff),
  z.refine((t) => t < 253 || t > 255, "253 (default), 254 (main) and 255 (local) are the kernel's own tables"));
const rulePriority = z.number().check(z.int(), z.minimum(2), z.maximum(32765));

// Kubernetes namespace names are RFC 1123 DNS labels.
export const NAMESPACE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const namespaceList = z.array(z.string().check(z.regex(NAMESPACE_NAME,
  "must be a Kubernetes namespace name: 1-63 of a-z 0-9 -, starting and ending with a letter or digit")));

/** One entry of `marks` (annotated mode); the fwmark plugin's {mark, mask} entries are valid ones. */
const markEntry = z.strictObject({
  mark: u32("mark"),
  mask: z.optional(u32("mask")),
  table: z.optional(tableNumber),
  rulePriority: z.optional(rulePriority),
  uplink: z.optional(uplinkName),
  gateway: z.optional(gatewayAddress(4)),
  gateway6: z.optional(gatewayAddress(6)),
  // Every pod of these namespaces gets this entry's mark, unless its annotation names another.
  namespaces: z.optional(namespaceList),
});
const MARK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
// Kubernetes annotation keys: an optional DNS prefix and a name.
const ANNOTATION_KEY = /^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;

const netconfSchema = z.strictObject({
  ...standardFields,
  mode: z.optional(z.enum(["transparent-tunnel", "annotated"])),
  annotation: z._default(z.optional(z.string().check(z.regex(ANNOTATION_KEY, "must be a Kubernetes annotation key"))), "cni.fwmark.net/name"),
  marks: z.optional(z.record(z.string().check(z.regex(MARK_NAME, "names must be 1-63 of letters, digits, _ . -")), markEntry)),
  mark: z._default(z.optional(u32("mark")), 0x10),
  mask: z._default(z.optional(u32("mask")), 0x10),
  table: z._default(z.optional(tableNumber), 100),
  rulePriority: z._default(z.optional(rulePriority), 32765),
  suppressMainPrefixLength: z.optional(z.number().check(z.int(), z.minimum(0), z.maximum(128))),
  uplink: z.optional(uplinkName),
  gateway: z.optional(gatewayAddress(4)),
  gateway6: z.optional(gatewayAddress(6)),
  serviceCIDRs: z._default(z.optional(cidrList), []),
  excludeCIDRs: z._default(z.optional(cidrList), []),
  excludeNamespaces: z._default(z.optional(namespaceList), []),
  backend: z._default(z.optional(z.enum(["auto", "iptables", "nftables"])), "auto"),
  // 0 is every interface's default group; iproute2 (6.1) takes groups up to 2^31-1 only.
  linkGroup: z.optional(z.number().check(z.int(), z.minimum(1), z.maximum(0x7fffffff))),
  ipv6ProbeRewrite: z.optional(z.strictObject({
    from: address(6).check(z.refine((a) => inCidr(a, "fe80::/10"), "must be a link-local (fe80::/10) address: the probe's source")),
    to: address(6).check(z.refine((a) => !["fe80::/10", "ff00::/8", "::1/128", "::/128", "::ffff:0.0.0.0/96"].some((p) => inCidr(a, p)),
      "must be a routable IPv6 address the node can forward (unicast: not link-local, multicast, loopback, unspecified or IPv4-mapped)")),
  })),
  rpFilter: z._default(z.optional(z.enum(["loose", "unchanged"])), "loose"),
  // 30 s, as kube-proxy resyncs: while a pod starts every second, one ADD in thirty pays the read-back (~10 ms).
  driftCheckSeconds: z._default(z.optional(z.number().check(z.int(), z.minimum(0), z.maximum(86400))), 30),
  stateDir: z._default(z.optional(z.string().check(z.refine(isSafePath, SAFE_PATH_RULE))), DEFAULT_STATE_DIR),
  logFile: z._default(z.optional(z.string().check(z.refine(isLogFile, `${SAFE_PATH_RULE}, or "stderr"`))), DEFAULT_LOG_FILE),
  logLevel: z._default(z.optional(z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"])), "info"),
});

// kube-proxy's masquerade (0x4000) and drop (0x8000) bits: sharing them would masquerade or drop pod traffic.
const KUBE_PROXY_MARK_BITS = 0xc000;

/** A mark markroute sets, and where marked packets go. */
export interface MarkSpec {
  /** "default" in transparent-tunnel mode; the `marks` key in annotated mode. */
  name: string;
  /** Distinguishes this mark's sets from the network's others; "" for the transparent-tunnel mark. */
  tag: string;
  mark: number;
  mask: number;
  /** Its own `ip rule` and policy table; absent: only marked (routing left to the admin). */
  routing?: { table: number; priority: number; uplink?: string; gateway?: string; gateway6?: string };
  /** Annotated mode: the Kubernetes namespaces whose pods get this mark without an annotation. */
  namespaces?: string[];
}

export interface Config {
  cniVersion: string;
  name: string;
  mode: "transparent-tunnel" | "annotated";
  /** The pod annotation naming an entry of `marks` (annotated mode). */
  annotation: string;
  /** transparent-tunnel: the one mark every pod gets; annotated: the entries pods choose from. */
  marks: MarkSpec[];
  /** Also `lookup main suppress_prefixlength N` one priority ahead of each mark's rule. */
  suppressMainPrefixLength?: number;
  /** transparent-tunnel: the Kubernetes namespaces whose pods are passed through unmarked. */
  excludeNamespaces: string[];
  /** Service and excluded CIDRs together: none of them is ever marked. */
  exemptCIDRs: { cidr: Cidr; why: "service" | "exclude" }[];
  backend: "auto" | "iptables" | "nftables";
  linkGroup?: number;
  ipv6ProbeRewrite?: { from: string; to: string };
  rpFilter: "loose" | "unchanged";
  /** How often an ADD reads the shared objects back and repairs them (0: every ADD). */
  driftCheckSeconds: number;
  stateDir: string;
  logFile: string;
  logLevel: string;
  prevResult?: PrevResult;
  /** prevResult exactly as the runtime sent it: ADD prints it back unchanged but for the version. */
  prevResultAsSent?: Record<string, unknown>;
  runtimeConfig?: Record<string, unknown>;
  /** GC: the attachments the runtime still has, when it said so. */
  validAttachments?: { containerID: string; ifname: string }[];
}


function invalid(field: string, reason: string): never {
  throw new CniError(ErrorCode.invalidConfig, `invalid netconf: ${field}: ${reason}`);
}

/** Where one mark's packets go; gateways canonical, as `ip -j route` prints them. */
function routingOf(table: number, priority: number, at: { uplink?: string; gateway?: string; gateway6?: string }): NonNullable<MarkSpec["routing"]> {
  return {
    table, priority,
    ...(at.uplink ? { uplink: at.uplink } : {}),
    ...(at.gateway ? { gateway: canonicalAddress(at.gateway) } : {}),
    ...(at.gateway6 ? { gateway6: canonicalAddress(at.gateway6) } : {}),
  };
}

/** A mark and mask that can be set safely; `prefix` names where they came from in the netconf. */
function checkedMark(prefix: string, rawMark: number | string, rawMask: number | string): { mark: number; mask: number } {
  const mark = toU32(rawMark);
  const mask = toU32(rawMask);
  if (mask > 0xffffffff) invalid(`${prefix}mask`, "must fit in 32 bits");
  if (mark > 0xffffffff) invalid(`${prefix}mark`, "must fit in 32 bits");
  if (mask === 0) invalid(`${prefix}mask`, "must not be 0: the mark would match every packet");
  if ((mark & ~mask) >>> 0 !== 0) invalid(`${prefix}mark`, `${hex(mark)} has bits outside mask ${hex(mask)}`);
  if (mark === 0) invalid(`${prefix}mark`, "must not be 0: `fwmark 0/mask` would route every unmarked packet of the node through the policy table");
  if ((mask & KUBE_PROXY_MARK_BITS) !== 0) invalid(`${prefix}mask`, `${hex(mask)} overlaps kube-proxy's masquerade/drop bits ${hex(KUBE_PROXY_MARK_BITS)}`);
  return { mark, mask };
}

/** A namespace named twice (by two entries of `marks`, or twice in one list) is refused, naming both places. */
function checkNamespacesOnce(listed: { ns: string; field: string }[], why: string): void {
  const first = new Map<string, string>();
  for (const { ns, field } of listed) {
    const earlier = first.get(ns);
    if (earlier) invalid(field, `namespace ${ns} is also listed by ${earlier}: ${why}`);
    first.set(ns, field);
  }
}

/** Validates a parsed netconf; every problem is CNI error 7 naming the field, raised before anything changes. */
export function parseConfig(raw: unknown): Config {
  const version = (raw as { cniVersion?: unknown } | null)?.cniVersion;
  if (typeof version === "string" && !isSupportedVersion(version)) {
    throw new CniError(ErrorCode.incompatibleVersion, `cniVersion ${version} is not supported; supported: ${SUPPORTED_VERSIONS.join(", ")}`);
  }
  const parsed = netconfSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    // A bad record key (a mark's name) carries the key's own issue inside.
    const inner = issue.code === "invalid_key" ? issue.issues[0]?.message : undefined;
    invalid(issue.path.join(".") || "netconf", inner ?? issue.message);
  }
  const c = parsed.data;
  // A record drops a "__proto__" key (JSON.parse makes it an own property): a mark so named would vanish silently.
  const rawMarks = (raw as { marks?: unknown }).marks;
  if (rawMarks && typeof rawMarks === "object" && Object.hasOwn(rawMarks, "__proto__")) {
    invalid("marks.__proto__", "names must be 1-63 of letters, digits, _ . -, starting with a letter or digit");
  }
  // fwmark's netconf has `marks` and no `mode`: it works unchanged.
  const mode = c.mode ?? (c.marks ? "annotated" : "transparent-tunnel");
  const given = (field: string) => Object.hasOwn(raw as object, field);
  let marks: MarkSpec[];
  if (mode === "transparent-tunnel") {
    if (c.marks) invalid("marks", "belongs to mode \"annotated\"; transparent-tunnel marks every pod with `mark`/`mask`");
    const { mark, mask } = checkedMark("", c.mark, c.mask);
    marks = [{
      name: "default", tag: "", mark, mask,
      routing: routingOf(c.table, c.rulePriority, c),
    }];
  } else {
    for (const f of ["mark", "mask", "table"]) if (given(f)) invalid(f, "belongs to mode \"transparent-tunnel\"; in annotated mode each entry of `marks` has its own");
    const entries = Object.entries(c.marks ?? {});
    if (entries.length === 0) invalid("marks", "annotated mode needs at least one entry, e.g. {\"vpn\": {\"mark\": 16, \"mask\": 16}}");
    marks = entries.map(([name, e]) => {
      // fwmark's default mask is all bits; here only the mark's own, so other owners' bits survive.
      const { mark, mask } = checkedMark(`marks.${name}.`, e.mark, e.mask ?? e.mark);
      return {
        name, tag: fnv1a(name), mark, mask,
        ...(e.table === undefined ? {} : {
          routing: routingOf(e.table, e.rulePriority ?? c.rulePriority, e),
        }),
        ...(e.namespaces?.length ? { namespaces: e.namespaces } : {}),
      };
    });
    checkNamespacesOnce(entries.flatMap(([name, e]) => (e.namespaces ?? []).map((ns, i) => ({ ns, field: `marks.${name}.namespaces.${i}` }))),
      "a namespace's pods can get one entry's mark");
    for (const a of marks) {
      for (const b of marks) {
        if (a !== b && a.mark === b.mark && a.mask === b.mask && a.routing?.table !== b.routing?.table) {
          invalid(`marks.${b.name}`, `has the mark ${hex(a.mark)}/${hex(a.mask)} of marks.${a.name} but another table: one fwmark can lead to one table`);
        }
      }
    }
  }
  if (mode === "transparent-tunnel") {
    checkNamespacesOnce(c.excludeNamespaces.map((ns, i) => ({ ns, field: `excludeNamespaces.${i}` })), "list each namespace once");
  } else if (c.excludeNamespaces.length) {
    invalid("excludeNamespaces", "belongs to mode \"transparent-tunnel\"; in annotated mode only the pods an annotation or an entry's `namespaces` selects are marked");
  }
  if (c.linkGroup !== undefined && mode === "annotated") invalid("linkGroup", "matches every grouped pod with one mark: transparent-tunnel mode only");
  if (c.ipv6ProbeRewrite && c.backend === "iptables") invalid("ipv6ProbeRewrite", "needs the nftables backend (a stateless rewrite before conntrack); set \"backend\": \"nftables\" or \"auto\"");
  return {
    cniVersion: c.cniVersion,
    name: c.name,
    mode,
    annotation: c.annotation,
    marks,
    suppressMainPrefixLength: c.suppressMainPrefixLength,
    excludeNamespaces: c.excludeNamespaces,
    exemptCIDRs: [
      ...c.serviceCIDRs.map((s) => ({ cidr: parseCidr(s), why: "service" as const })),
      ...c.excludeCIDRs.map((s) => ({ cidr: parseCidr(s), why: "exclude" as const })),
    ],
    backend: c.backend,
    linkGroup: c.linkGroup,
    ipv6ProbeRewrite: c.ipv6ProbeRewrite && { from: canonicalAddress(c.ipv6ProbeRewrite.from), to: canonicalAddress(c.ipv6ProbeRewrite.to) },
    rpFilter: c.rpFilter,
    driftCheckSeconds: c.driftCheckSeconds,
    stateDir: c.stateDir,
    logFile: c.logFile,
    logLevel: c.logLevel,
    prevResult: c.prevResult,
    prevResultAsSent: (raw as { prevResult?: Record<string, unknown> }).prevResult,
    runtimeConfig: c.runtimeConfig,
    validAttachments: c["cni.dev/valid-attachments"] ?? c["cni.dev/attachments"],
  };
}

/**
 * What DEL needs of a netconf that does not validate: the network's name and the state directory
 * (DEL removes what the record says, whatever the netconf says now). Undefined when no ADD could
 * have recorded anything under them (an invalid name or stateDir was never accepted).
 */
export function delTargetOf(raw: unknown): { name: string; stateDir: string } | undefined {
  const r = (typeof raw === "object" && raw !== null ? raw : {}) as { name?: unknown; stateDir?: unknown };
  const stateDir = r.stateDir === undefined ? DEFAULT_STATE_DIR : r.stateDir;
  const name = r.name;
  if (typeof name !== "string" || !CNI_NAME.test(name) || name.length > 64) return undefined;
  if (typeof stateDir !== "string" || !isSafePath(stateDir)) return undefined;
  return { name, stateDir };
}

/** Where a netconf that does not validate asked to be logged: its logFile if that is a valid one, the default if it names none, else stderr. */
export function logFileOf(raw: unknown): string {
  const logFile = (typeof raw === "object" && raw !== null ? raw : {}) as { logFile?: unknown };
  if (logFile.logFile === undefined) return DEFAULT_LOG_FILE;
  return typeof logFile.logFile === "string" && isLogFile(logFile.logFile) ? logFile.logFile : "stderr";
}

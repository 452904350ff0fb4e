import * as z from "zod/mini";
import { en } from "zod/locales";
import { CniError, ErrorCode } from "./cni/errors.js";
import { parseCidr, familyOf, canonicalAddress, type Cidr } from "./net/cidr.js";

z.config(en());

export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;

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

const ifname = z.string().check(z.regex(IFNAME, "must be an interface name: 1-15 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit"));
const address = (family: 4 | 6) =>
  z.string().check(z.refine((s) => familyOf(s) === family, `must be an IPv${family} address`));
const cidrList = z.array(z.string().check(z.refine((s) => { try { parseCidr(s); return true; } catch { return false; } }, "must be an IPv4 or IPv6 CIDR such as 10.0.0.0/16")));

const prevResultSchema = z.looseObject({
  cniVersion: z.optional(z.string()),
  interfaces: z._default(z.optional(z.array(z.looseObject({
    name: z.string().check(z.regex(IFNAME, "must be an interface name of at most 15 safe characters")),
    mac: z.optional(z.string()),
    sandbox: z.optional(z.string()),
  }))), []),
  ips: z._default(z.optional(z.array(z.looseObject({
    address: z.string().check(z.refine((s) => { try { return s.includes("/") && !!parseCidr(s); } catch { return false; } }, "must be an address with prefix such as 10.244.0.5/24")),
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

const netconfSchema = z.strictObject({
  ...standardFields,
  mode: z._default(z.optional(z.literal("transparent-tunnel")), "transparent-tunnel"),
  mark: z._default(z.optional(u32("mark")), 0x10),
  mask: z._default(z.optional(u32("mask")), 0x10),
  table: z._default(z.optional(z.number().check(z.int(), z.minimum(1), z.maximum(0xffffffff),
    z.refine((t) => t < 253 || t > 255, "253 (default), 254 (main) and 255 (local) are the kernel's own tables"))), 100),
  rulePriority: z._default(z.optional(z.number().check(z.int(), z.minimum(2), z.maximum(32765))), 32765),
  suppressMainPrefixLength: z.optional(z.number().check(z.int(), z.minimum(0), z.maximum(128))),
  uplink: z.optional(ifname),
  gateway: z.optional(address(4)),
  gateway6: z.optional(address(6)),
  serviceCIDRs: z._default(z.optional(cidrList), []),
  excludeCIDRs: z._default(z.optional(cidrList), []),
  backend: z._default(z.optional(z.enum(["auto", "iptables", "nftables"])), "auto"),
  // Interface groups are 32-bit; 0 is every interface's default group.
  linkGroup: z.optional(z.number().check(z.int(), z.minimum(1), z.maximum(0xffffffff))),
  ipv6ProbeRewrite: z.optional(z.strictObject({
    from: address(6).check(z.refine((a) => /^fe80:/i.test(a), "must be a link-local (fe80::/10) address: the probe's source")),
    to: address(6).check(z.refine((a) => !/^fe80:/i.test(a), "must be a routable IPv6 address the node can forward")),
  })),
  rpFilter: z._default(z.optional(z.enum(["loose", "unchanged"])), "loose"),
  stateDir: z._default(z.optional(z.string().check(z.regex(/^\/[A-Za-z0-9_.\/-]*$/, "must be an absolute path of letters, digits, _ . / -"))), "/var/lib/cni/markroute"),
  logFile: z._default(z.optional(z.string().check(z.regex(/^(\/[A-Za-z0-9_.\/-]*|stderr)$/, "must be an absolute path or \"stderr\""))), "/var/log/markroute.log"),
  logLevel: z._default(z.optional(z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"])), "info"),
});

// kube-proxy's masquerade (0x4000) and drop (0x8000) bits: sharing them would masquerade or drop pod traffic.
const KUBE_PROXY_MARK_BITS = 0xc000;

export interface Config {
  cniVersion: string;
  name: string;
  mode: "transparent-tunnel";
  mark: number;
  mask: number;
  table: number;
  rulePriority: number;
  suppressMainPrefixLength?: number;
  uplink?: string;
  gateway?: string;
  gateway6?: string;
  /** Service and excluded CIDRs together: none of them is ever marked. */
  exemptCIDRs: { cidr: Cidr; why: "service" | "exclude" }[];
  backend: "auto" | "iptables" | "nftables";
  linkGroup?: number;
  ipv6ProbeRewrite?: { from: string; to: string };
  rpFilter: "loose" | "unchanged";
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

const hex = (n: number) => `0x${n.toString(16)}`;

function invalid(field: string, reason: string): never {
  throw new CniError(ErrorCode.invalidConfig, `invalid netconf: ${field}: ${reason}`);
}

/** Validates a parsed netconf; every problem is CNI error 7 naming the field, raised before anything changes. */
export function parseConfig(raw: unknown): Config {
  const version = (raw as { cniVersion?: unknown } | null)?.cniVersion;
  if (typeof version === "string" && !(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(ErrorCode.incompatibleVersion, `cniVersion ${version} is not supported; supported: ${SUPPORTED_VERSIONS.join(", ")}`);
  }
  const parsed = netconfSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    invalid(issue.path.join(".") || "netconf", issue.message);
  }
  const c = parsed.data;
  const mark = toU32(c.mark);
  const mask = toU32(c.mask);
  if (mask > 0xffffffff) invalid("mask", "must fit in 32 bits");
  if (mark > 0xffffffff) invalid("mark", "must fit in 32 bits");
  if (mask === 0) invalid("mask", "must not be 0: the mark would match every packet");
  if ((mark & ~mask) >>> 0 !== 0) invalid("mark", `${hex(mark)} has bits outside mask ${hex(mask)}`);
  if (mark === 0) invalid("mark", "must not be 0: `fwmark 0/mask` would route every unmarked packet of the node through the policy table");
  if ((mask & KUBE_PROXY_MARK_BITS) !== 0) invalid("mask", `${hex(mask)} overlaps kube-proxy's masquerade/drop bits ${hex(KUBE_PROXY_MARK_BITS)}`);
  if (c.ipv6ProbeRewrite && c.backend === "iptables") invalid("ipv6ProbeRewrite", "needs the nftables backend (a stateless rewrite before conntrack); set \"backend\": \"nftables\" or \"auto\"");
  return {
    cniVersion: c.cniVersion,
    name: c.name,
    mode: c.mode,
    mark,
    mask,
    table: c.table,
    rulePriority: c.rulePriority,
    suppressMainPrefixLength: c.suppressMainPrefixLength,
    uplink: c.uplink,
    gateway: c.gateway && canonicalAddress(c.gateway),
    gateway6: c.gateway6 && canonicalAddress(c.gateway6),
    exemptCIDRs: [
      ...c.serviceCIDRs.map((s) => ({ cidr: parseCidr(s), why: "service" as const })),
      ...c.excludeCIDRs.map((s) => ({ cidr: parseCidr(s), why: "exclude" as const })),
    ],
    backend: c.backend,
    linkGroup: c.linkGroup,
    ipv6ProbeRewrite: c.ipv6ProbeRewrite && { from: canonicalAddress(c.ipv6ProbeRewrite.from), to: canonicalAddress(c.ipv6ProbeRewrite.to) },
    rpFilter: c.rpFilter,
    stateDir: c.stateDir,
    logFile: c.logFile,
    logLevel: c.logLevel,
    prevResult: c.prevResult,
    prevResultAsSent: (raw as { prevResult?: Record<string, unknown> }).prevResult,
    runtimeConfig: c.runtimeConfig,
    validAttachments: c["cni.dev/valid-attachments"] ?? c["cni.dev/attachments"],
  };
}

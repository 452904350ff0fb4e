export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Canonical text, host bits cleared, as iptables-save and ip print it. */
  text: string;
}

const bitsOf = (family: Family) => (family === 4 ? 32 : 128);

// An address as words: 4 octets for IPv4, 8 groups of 16 bits for IPv6.
const wordBits = (family: Family) => (family === 4 ? 8 : 16);

function toWords(address: string, family: Family): number[] {
  if (family === 4) return address.split(".").map(Number);
  const [head = "", tail] = address.split("::");
  // An embedded IPv4 tail (::ffff:1.2.3.4) counts as two groups.
  const expand = (part: string) =>
    (part ? part.split(":") : []).flatMap((g) => {
      if (!g.includes(".")) return [parseInt(g, 16)];
      const [a = 0, b = 0, c = 0, d = 0] = toWords(g, 4);
      return [(a << 8) | b, (c << 8) | d];
    });
  const left = expand(head);
  const right = tail === undefined ? [] : expand(tail);
  return [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
}

function fromWords(groups: number[], family: Family): string {
  if (family === 4) return groups.join(".");
  // RFC 5952: compress the longest run (length >= 2) of zero groups, leftmost on ties.
  let best = { start: -1, len: 0 };
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len && j - i >= 2) best = { start: i, len: j - i };
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  // As inet_ntop (and so ip6tables-save, ip): IPv4-mapped and -compatible addresses end dotted.
  const g6 = groups[6]!, g7 = groups[7]!;
  if (best.start === 0 && (best.len === 6 || (best.len === 5 && groups[5] === 0xffff))) {
    const v4 = `${g6 >> 8}.${g6 & 0xff}.${g7 >> 8}.${g7 & 0xff}`;
    return best.len === 5 ? `::ffff:${v4}` : `::${v4}`;
  }
  if (best.start < 0) return hex.join(":");
  return `${hex.slice(0, best.start).join(":")}::${hex.slice(best.start + best.len).join(":")}`;
}

/** Clears the host bits after `prefix`. */
function maskWords(words: number[], family: Family, prefix: number): number[] {
  const wb = wordBits(family);
  return words.map((w, i) => {
    const kept = Math.min(Math.max(prefix - i * wb, 0), wb);
    return kept === 0 ? 0 : w & ~((1 << (wb - kept)) - 1) & ((1 << wb) - 1);
  });
}

// Address syntax as node:net's isIPv4 / isIPv6 have it (a test holds them to it), written here
// because loading node:net costs ~3 ms of every CNI call's start-up under Bun.
const OCTET = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]\\d|\\d)";
const IPV4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;

function isIPv6(text: string): boolean {
  // A dotted IPv4 tail stands for the last two groups.
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  const hexPart = tail.includes(".") ? (IPV4.test(tail) && lastColon > 0 ? `${text.slice(0, lastColon + 1)}0:0` : "") : text;
  const halves = hexPart.split("::");
  if (halves.length > 2) return false;
  const groups = halves.flatMap((h) => (h === "" ? [] : h.split(":")));
  if (!groups.every((g) => HEX_GROUP.test(g))) return false;
  return halves.length === 2 ? groups.length <= 7 : groups.length === 8;
}

/**
 * The family of a bare address, or undefined for anything else. An IPv6 zone (`fe80::1%eth0`),
 * which node:net accepts, is not an address here: no tool markroute feeds takes one (the words
 * would come out as `fe80::NaN`), and a link-local next hop goes with its device (`uplink`).
 */
export function familyOf(address: string): Family | undefined {
  if (hasZone(address)) return undefined;
  return IPV4.test(address) ? 4 : isIPv6(address) ? 6 : undefined;
}

/** Whether `text` carries an IPv6 zone suffix (`%eth0`, `%2`), which no address markroute takes may have. */
export const hasZone = (text: string): boolean => text.includes("%");

/**
 * Whether the bare address `address` lies in `cidr` ("fe80::/10"); false for another family or a
 * non-address. The one containment test (config, explain); outermostCidrs below drops covered CIDRs in bulk.
 */
export function inCidr(address: string, cidr: string): boolean {
  const [base = "", len = ""] = cidr.split("/");
  const family = familyOf(address);
  if (!family || familyOf(base) !== family) return false;
  return parseCidr(`${address}/${len}`).text === parseCidr(cidr).text;
}

/** The first and last address of a CIDR as words (octets or 16-bit groups), for ordering and containment without BigInt. */
export function cidrRange(cidr: string): { family: Family; prefix: number; first: number[]; last: number[] } {
  const { family, text } = parseCidr(cidr);
  const [address = "", len = ""] = text.split("/");
  const prefix = Number(len);
  const first = toWords(address, family);
  const wb = wordBits(family);
  const last = first.map((w, i) => {
    const kept = Math.min(Math.max(prefix - i * wb, 0), wb);
    return kept === wb ? w : w | ((1 << (wb - kept)) - 1);
  });
  return { family, prefix, first, last };
}

/** Orders word arrays of one family as the addresses they spell. */
export function compareWords(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/**
 * The CIDRs (canonical, one family) that no other one covers, duplicates once, in their given
 * order: an nftables interval set refuses overlapping elements. Two CIDRs are nested or disjoint,
 * so after sorting by first address (the larger of two with the same first address ahead), one is
 * covered exactly when it starts inside the last kept one: O(n log n), where comparing each pair
 * took 1 s per ADD for 1000 exempt CIDRs.
 */
export function outermostCidrs(cidrs: string[]): string[] {
  const ranges = cidrs.map((text, index) => ({ index, ...cidrRange(text) }));
  const order = [...ranges].sort((a, b) => compareWords(a.first, b.first) || a.prefix - b.prefix || a.index - b.index);
  const kept = new Set<number>();
  let last: number[] | undefined;
  for (const r of order) {
    if (last && compareWords(r.first, last) <= 0) continue;
    kept.add(r.index);
    last = r.last;
  }
  return cidrs.filter((_, i) => kept.has(i));
}

/** Canonical text of a bare address (IPv6 compressed as the kernel tools print it). */
export function canonicalAddress(address: string): string {
  const family = familyOf(address);
  if (!family) throw new Error(`"${address}" is not an IP address`);
  return fromWords(toWords(address, family), family);
}

/** Parses "addr/len" (len optional for a host); throws a message fit for a config error. */
export function parseCidr(text: string): Cidr {
  const [address = "", len, extra] = text.split("/");
  if (hasZone(address)) throw new Error(`"${text}" carries an IPv6 zone (%...): not allowed here`);
  const family = familyOf(address);
  if (!family || extra !== undefined) throw new Error(`"${text}" is not an IPv4 or IPv6 CIDR`);
  const max = bitsOf(family);
  const prefix = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
  if (!(prefix >= 0 && prefix <= max)) throw new Error(`"${text}" has a prefix length outside 0-${max}`);
  return { family, text: `${fromWords(maskWords(toWords(address, family), family, prefix), family)}/${prefix}` };
}

/** Splits an interface address as CNI results give it ("10.1.2.3/24") into its host address. */
export function hostAddress(cidrText: string): { family: Family; address: string } {
  const address = cidrText.split("/")[0] ?? "";
  const family = familyOf(address);
  if (!family) throw new Error(`"${cidrText}" is not an IP address`);
  return { family, address: canonicalAddress(address) };
}

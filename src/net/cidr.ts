import { isIPv4, isIPv6 } from "node:net";

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Canonical text, host bits cleared, as iptables-save and ip print it. */
  text: string;
}

const bitsOf = (family: Family) => (family === 4 ? 32 : 128);

function toBigInt(address: string, family: Family): bigint {
  if (family === 4) return address.split(".").reduce((acc, octet) => (acc << 8n) | BigInt(octet), 0n);
  const [head = "", tail] = address.split("::");
  const groups = (part: string) => (part ? part.split(":") : []);
  // An embedded IPv4 tail (::ffff:1.2.3.4) counts as two groups.
  const expand = (part: string) =>
    groups(part).flatMap((g) => {
      if (!g.includes(".")) return [g];
      const v = toBigInt(g, 4);
      return [(v >> 16n).toString(16), (v & 0xffffn).toString(16)];
    });
  const left = expand(head);
  const right = tail === undefined ? [] : expand(tail);
  const all = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  return all.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function fromBigInt(value: bigint, family: Family): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => ((value >> s) & 0xffn).toString()).join(".");
  const groups = [...Array(8).keys()].map((i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn));
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
  if (best.start < 0) return hex.join(":");
  return `${hex.slice(0, best.start).join(":")}::${hex.slice(best.start + best.len).join(":")}`;
}

export function familyOf(address: string): Family | undefined {
  return isIPv4(address) ? 4 : isIPv6(address) ? 6 : undefined;
}

/** Canonical text of a bare address (IPv6 compressed as the kernel tools print it). */
export function canonicalAddress(address: string): string {
  const family = familyOf(address);
  if (!family) throw new Error(`"${address}" is not an IP address`);
  return fromBigInt(toBigInt(address, family), family);
}

/** Parses "addr/len" (len optional for a host); throws a message fit for a config error. */
export function parseCidr(text: string): Cidr {
  const [address = "", len, extra] = text.split("/");
  const family = familyOf(address);
  if (!family || extra !== undefined) throw new Error(`"${text}" is not an IPv4 or IPv6 CIDR`);
  const max = bitsOf(family);
  const prefix = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
  if (!(prefix >= 0 && prefix <= max)) throw new Error(`"${text}" has a prefix length outside 0-${max}`);
  const hostBits = BigInt(max - prefix);
  const network = (toBigInt(address, family) >> hostBits) << hostBits;
  return { family, text: `${fromBigInt(network, family)}/${prefix}` };
}

/** Splits an interface address as CNI results give it ("10.1.2.3/24") into its host address. */
export function hostAddress(cidrText: string): { family: Family; address: string } {
  const address = cidrText.split("/")[0] ?? "";
  const family = familyOf(address);
  if (!family) throw new Error(`"${cidrText}" is not an IP address`);
  return { family, address: canonicalAddress(address) };
}

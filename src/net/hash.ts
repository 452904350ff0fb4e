/**
 * FNV-1a, 32 bits, as 8 hex digits: short stable names for kernel objects (chains are limited to
 * 28 characters, ipsets to 31). Not cryptographic; node:crypto's first use costs a pod start ~1 ms.
 */
export function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, "utf8")) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash.toString(16).padStart(8, "0");
}

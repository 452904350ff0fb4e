/**
 * FNV-1a, 32 bits, as 8 hex digits: short stable names for kernel objects (chains are limited to
 * 28 characters, ipsets to 31). Not cryptographic; node:crypto's first use costs a pod start ~1 ms.
 * Hashes UTF-16 code units (the names are ASCII).
 */
export function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return hash.toString(16).padStart(8, "0");
}

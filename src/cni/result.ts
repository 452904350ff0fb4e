// The CNI edge, outbound: results and errors on stdout in the netconf's version.
import { familyOf } from "../net/cidr.js";

type Json = Record<string, unknown>;

/**
 * prevResult re-printed in `cniVersion`, otherwise as the previous plugin sent it (fields, order):
 * 0.3.x/0.4.0 results carry `ips[].version`, 1.x results do not.
 */
export function resultInVersion(prev: Json, cniVersion: string): Json {
  const legacy = cniVersion.startsWith("0.");
  const ips = ((prev.ips as Json[] | undefined) ?? []).map(({ version, ...ip }) => {
    if (!legacy) return ip;
    const family = familyOf(String(ip.address ?? "").split("/")[0] ?? "");
    return { version: family ? String(family) : version, ...ip };
  });
  return { ...prev, cniVersion, ips };
}

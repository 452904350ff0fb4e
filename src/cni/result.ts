// The CNI edge, outbound: results and errors on stdout in the netconf's version.
import type { PrevResult } from "../config.js";
import { familyOf } from "../net/cidr.js";

/** prevResult re-printed in `cniVersion`: 0.3.x/0.4.0 carry `ips[].version`, 1.x does not. */
export function resultInVersion(prev: PrevResult, cniVersion: string): object {
  const legacy = cniVersion.startsWith("0.");
  const ips = prev.ips.map(({ version: _omit, ...ip }) =>
    legacy ? { version: String(familyOf(ip.address.split("/")[0] ?? "") ?? 4), ...ip } : ip);
  return { ...prev, cniVersion, ips };
}

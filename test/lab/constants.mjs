// The lab's addresses and sysctls, one copy for the test lab (lab.ts) and the bench
// (bench/lib/lab.mjs). Plain JavaScript (types in constants.d.mts): the bench runs under node,
// which cannot import TypeScript without a build.

export const NODE_IP = '10.224.0.10';
export const FABRIC_IP = '10.224.0.1';
export const UPLINK = 'eth0';
/** Routed back to the node by the fabric. */
export const POD_CIDR = '10.244.0.0/16';
/** The ptp pods' host-local subnet, in POD_CIDR. */
export const PTP_SUBNET = '10.244.0.0/24';

/** A node's IPv4 sysctls: forwarding, and strict rp_filter, as many distributions ship it (markroute must loosen its uplink itself). */
export const NODE_SYSCTLS4 = Object.freeze({
  'net.ipv4.ip_forward': 1,
  'net.ipv4.conf.all.rp_filter': 1,
  'net.ipv4.conf.default.rp_filter': 1,
});

/** The fabric's IPv4 sysctls: it forwards and hairpins pod traffic back to the node, without ICMP redirects (which would teach the node a shortcut). */
export const FABRIC_SYSCTLS4 = Object.freeze({
  'net.ipv4.ip_forward': 1,
  'net.ipv4.conf.all.send_redirects': 0,
  'net.ipv4.conf.default.send_redirects': 0,
  'net.ipv4.conf.all.rp_filter': 0,
  'net.ipv4.conf.default.rp_filter': 0,
});

/** The same for the fabric's end of the uplink, once it exists. */
export const FABRIC_UPLINK_SYSCTLS4 = Object.freeze({
  [`net.ipv4.conf.${UPLINK}.send_redirects`]: 0,
  [`net.ipv4.conf.${UPLINK}.rp_filter`]: 0,
});

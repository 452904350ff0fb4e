// The pod's interfaces as the kernel has them: the container interface in CNI_NETNS (one tool run)
// and its peer on the node (read in-process where /proc and /sys are this namespace's).
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { basename } from "node:path";
import { CniError, ErrorCode } from "../cni/errors.js";
import { canonicalAddress, type Family } from "../net/cidr.js";
import { mustRun, runTool } from "./exec.js";

/** The container interface, as the kernel shows it inside the pod's namespace. */
export interface PodInterface {
  ifName: string;
  ifindex: number;
  /** The link kind ("veth", "netkit", "macvlan", ...); "" for a device without one (a physical NIC, an SR-IOV VF). */
  kind: string;
  /** The peer's ifindex in its own namespace, when the peer lives in another one (a veth's or netkit's host side). */
  peerIndex?: number;
  /** Its addresses of global scope (a link-local one identifies nothing beyond the link). */
  addresses: { family: Family; address: string }[];
}

/** The pod's peer interface in the node's namespace. */
export interface HostLink {
  name: string;
  /** The bridge it is enslaved to, if any. */
  bridge?: string;
  /** A master that is not a Linux bridge (a VRF, Open vSwitch's datapath): packets do not reach IP routing as the pod's. */
  otherMaster?: string;
}

interface IpAddrShow {
  ifindex: number;
  ifname: string;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string; info_slave_kind?: string };
  master?: string;
  addr_info?: { family: string; local: string; scope: string }[];
}

/** `ip -j -d addr show dev X` of the container interface, as a PodInterface. */
export function parsePodInterface(json: string, ifName: string): PodInterface {
  const [link] = JSON.parse(json || "[]") as IpAddrShow[];
  if (!link) throw new CniError(ErrorCode.invalidConfig, `invalid netconf: prevResult: no interface ${ifName} in CNI_NETNS`);
  // A peer in the pod's own namespace (no link_netnsid) is not on the node.
  const peered = link.link_index !== undefined && link.link_netnsid !== undefined;
  return {
    ifName,
    ifindex: link.ifindex,
    kind: link.linkinfo?.info_kind ?? "",
    ...(peered ? { peerIndex: link.link_index } : {}),
    addresses: (link.addr_info ?? [])
      .filter((a) => a.scope === "global" && (a.family === "inet" || a.family === "inet6"))
      .map((a) => ({ family: a.family === "inet" ? 4 : 6, address: canonicalAddress(a.local) })),
  };
}

/** Reads the container interface inside the pod's network namespace (any path: /var/run/netns/…, /proc/<pid>/ns/net). */
export function readPodInterface(netns: string, ifName: string): PodInterface {
  const argv = ["nsenter", `--net=${netns}`, "ip", "-j", "-d", "addr", "show", "dev", ifName];
  const out = runTool(argv);
  if (out.status !== 0) {
    if (/does not exist/.test(out.stderr)) {
      throw new CniError(ErrorCode.invalidConfig, `invalid netconf: prevResult: no interface ${ifName} in CNI_NETNS ${netns}: is markroute chained after the main plugin that creates it?`);
    }
    if (/^nsenter:/m.test(out.stderr)) {
      throw new CniError(ErrorCode.invalidEnvironment, `CNI_NETNS ${netns} cannot be entered: ${out.stderr.trim()}`);
    }
    throw new CniError(ErrorCode.kernelOperation, `${argv.join(" ")} failed (exit ${out.status}): ${out.stderr.trim()}`);
  }
  return parsePodInterface(out.stdout, ifName);
}

/**
 * ifindex → name of this namespace's interfaces that are up, from /proc/net/igmp: one read, and
 * /proc/net is always the reading process's namespace (every interface that is up joins the
 * all-hosts group there). A pod's host side is up once its main plugin is done.
 */
export function parseIgmp(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split("\n")) {
    const m = /^(\d+)\s+(\S+?)\s*:/.exec(line);
    if (m) names.set(Number(m[1]), m[2]!);
  }
  return names;
}

/**
 * The names of this namespace's interfaces (up or down) from /proc/net/dev: one read, always the
 * reading process's namespace (/sys/class/net may be another's where /sys was not remounted).
 */
export function parseNetDev(text: string): Set<string> {
  const names = new Set<string>();
  // Two header lines, then "  name: counters..."; the kernel allows no ':' in a name.
  for (const line of text.split("\n").slice(2)) {
    const colon = line.indexOf(":");
    if (colon > 0) names.add(line.slice(0, colon).trim());
  }
  return names;
}

export const linkNames = (): Set<string> => parseNetDev(readFileSync("/proc/net/dev", "utf8"));

const sysNet = (name: string, file: string) => `/sys/class/net/${name}/${file}`;
const readNumber = (path: string): number | undefined => {
  try {
    return Number(readFileSync(path, "utf8").trim());
  } catch {
    return undefined;
  }
};
const readMaster = (name: string): string | undefined => {
  try {
    return basename(readlinkSync(sysNet(name, "master")));
  } catch {
    return undefined;
  }
};

/**
 * The pod interface's peer on the node, or undefined when no interface of this namespace is it.
 * /sys is read when it shows this namespace (a runtime that entered the namespace without
 * remounting /sys shows another's): the interface found there has the peer's index. Else `ip`
 * tells (one more tool run, in that setup only).
 */
export function findHostPeer(pod: PodInterface): HostLink | undefined {
  if (pod.peerIndex === undefined) return undefined;
  const name = parseIgmp(readFileSync("/proc/net/igmp", "utf8")).get(pod.peerIndex);
  if (!name) return undefined;
  if (readNumber(sysNet(name, "ifindex")) === pod.peerIndex) {
    // The peer's own peer must be the pod's interface: the same index may be another device's.
    if (readNumber(sysNet(name, "iflink")) !== pod.ifindex) return undefined;
    const master = readMaster(name);
    if (!master) return { name };
    return existsSync(sysNet(master, "bridge")) ? { name, bridge: master } : { name, otherMaster: master };
  }
  const [link] = JSON.parse(mustRun(["ip", "-j", "-d", "link", "show", "dev", name]) || "[]") as IpAddrShow[];
  if (!link || link.ifindex !== pod.peerIndex || link.link_index !== pod.ifindex) return undefined;
  if (!link.master) return { name };
  return link.linkinfo?.info_slave_kind === "bridge" ? { name, bridge: link.master } : { name, otherMaster: link.master };
}

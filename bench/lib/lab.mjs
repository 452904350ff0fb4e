// The bench's network namespaces. Nothing here touches the root namespace: namespaces are
// created with `ip netns add mr-bench-<pid>-<role>`, every link, address, route and sysctl is
// set by a command run inside one of them, and cleanup() deletes them all (links and
// netfilter state die with their namespace). Namespaces and temp dirs of a bench that died
// without cleaning up (SIGKILL) are swept at the next start, matched by the dead pid.
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  FABRIC_IP, FABRIC_SYSCTLS4, FABRIC_UPLINK_SYSCTLS4, NODE_IP, NODE_SYSCTLS4, POD_CIDR, PTP_SUBNET, UPLINK,
} from "../../test/lab/constants.mjs";
import { killChildren, run, runIn } from "./proc.mjs";

// The lab's addresses and sysctls are the test lab's (test/lab/constants.mjs): the fabric routes
// POD_CIDR back to the node; the ptp pods get PTP_SUBNET out of it.
export { FABRIC_IP, NODE_IP, POD_CIDR, PTP_SUBNET, UPLINK };
/** The address of a site's azure-vnet-shaped pod (addAzurePod): in POD_CIDR, outside PTP_SUBNET; /16 as azure-vnet's overlay gives it. */
export const AZURE_POD_ADDRESS = "10.244.128.5/16";

const PREFIX = "mr-bench-";
const OWNED = /^mr-bench-(\d+)-/;

const listNetns = () =>
  run(["ip", "netns", "list"], { check: false }).stdout.split("\n").map((l) => l.split(" ")[0]).filter(Boolean);

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}

/** Deletes one namespace after killing what still runs in it (only our own iperf3 servers can). */
function removeNamespace(ns) {
  const pids = run(["ip", "netns", "pids", ns], { check: false }).stdout.split(/\s+/).filter(Boolean);
  for (const pid of pids) {
    try { process.kill(Number(pid), "SIGKILL"); } catch { /* already gone */ }
  }
  run(["ip", "netns", "del", ns], { check: false });
}

/** Removes what earlier bench runs that no longer exist left behind. */
export function sweepStale() {
  const dead = (name) => {
    const m = OWNED.exec(name);
    return m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  };
  for (const ns of listNetns()) if (dead(ns)) removeNamespace(ns);
  for (const d of readdirSync(tmpdir())) if (dead(d)) rmSync(join(tmpdir(), d), { recursive: true, force: true });
}

const sysctl = (ns, values) =>
  runIn(ns, ["sysctl", "-q", "-w", ...Object.entries(values).map(([k, v]) => `${k}=${v}`)]);

export class Lab {
  constructor() {
    this.prefix = `${PREFIX}${process.pid}-`;
    this.dir = mkdtempSync(join(tmpdir(), this.prefix));
    this.created = [];
    this.cleaned = false;
  }

  nsName(role) {
    return `${this.prefix}${role}`;
  }

  addNs(role) {
    const ns = this.nsName(role);
    run(["ip", "netns", "add", ns]);
    this.created.push(ns);
    runIn(ns, ["ip", "link", "set", "lo", "up"]);
    return ns;
  }

  /**
   * Shared by all sites: fwnode, a node of the same kind for the Go firewall plugin, so its
   * iptables rules stay out of every data path; dummy, the CNI_NETNS of the made-up pods of the
   * latency runs (the firewall plugin opens it).
   */
  setup() {
    this.fwnode = this.addNs("fwnode");
    sysctl(this.fwnode, NODE_SYSCTLS4);
    this.dummy = this.addNs("dummy");
  }

  /**
   * A site: a node (where the plugins run) and its fabric (the cloud gateway, which forwards and
   * hairpins pod traffic back to the node without ICMP redirects, which would teach the node a
   * shortcut), each with its own markroute state. Identical sites, one per backend and number of
   * attached pods, let the bench measure them all interleaved, so a busy neighbour cannot bias one
   * side of a ratio.
   */
  addSite(tag) {
    const node = this.addNs(`${tag}-node`);
    const fabric = this.addNs(`${tag}-fabric`);
    // Strict rp_filter, as many distributions ship it: markroute must loosen its uplink itself.
    sysctl(node, NODE_SYSCTLS4);
    sysctl(fabric, FABRIC_SYSCTLS4);
    // Created from inside the node namespace, its peer moved straight into the fabric's.
    runIn(node, ["ip", "link", "add", UPLINK, "type", "veth", "peer", "name", UPLINK, "netns", fabric]);
    sysctl(fabric, FABRIC_UPLINK_SYSCTLS4);
    runIn(node, ["ip", "addr", "add", `${NODE_IP}/24`, "dev", UPLINK]);
    runIn(fabric, ["ip", "addr", "add", `${FABRIC_IP}/24`, "dev", UPLINK]);
    runIn(node, ["ip", "link", "set", UPLINK, "up"]);
    runIn(fabric, ["ip", "link", "set", UPLINK, "up"]);
    runIn(node, ["ip", "route", "add", "default", "via", FABRIC_IP, "dev", UPLINK]);
    runIn(fabric, ["ip", "route", "add", POD_CIDR, "via", NODE_IP, "dev", UPLINK]);
    const dir = join(this.dir, tag);
    mkdirSync(dir);
    return { tag, node, fabric, dir };
  }

  /** An empty pod namespace of a site (the ptp plugin gives it its eth0). */
  addPodNs(site, name) {
    const ns = this.addNs(`${site.tag}-pod-${name}`);
    return { name: `${site.tag}-${name}`, ns, netnsPath: `/run/netns/${ns}` };
  }

  /**
   * A pod as azure-vnet (transparent mode) leaves it, for markroute to find from the kernel: `ifName`
   * with AZURE_POD_ADDRESS in a namespace of its own, the veth's other end in the site's node
   * namespace named as azure-vnet names it (`azv` + the first 11 hex digits of sha1("<namespace>.<pod>")),
   * both up, and the node's host route to the pod through it. The veth is made from inside the pod
   * namespace, its peer moved straight into the node's; it goes with the pod namespace.
   */
  addAzurePod(site, name, ifName) {
    const pod = this.addPodNs(site, name);
    const hostIf = `azv${createHash("sha1").update(`bench.${pod.name}`).digest("hex").slice(0, 11)}`;
    const address = AZURE_POD_ADDRESS.split("/")[0];
    runIn(pod.ns, ["ip", "link", "add", ifName, "type", "veth", "peer", "name", hostIf, "netns", site.node]);
    runIn(pod.ns, ["ip", "addr", "add", AZURE_POD_ADDRESS, "dev", ifName]);
    runIn(pod.ns, ["ip", "link", "set", ifName, "up"]);
    runIn(site.node, ["ip", "link", "set", hostIf, "up"]);
    runIn(site.node, ["ip", "route", "add", `${address}/32`, "dev", hostIf]);
    return { ...pod, hostIf, address };
  }

  /** Idempotent; safe from a signal handler or an exit hook (synchronous). */
  cleanup() {
    if (this.cleaned) return;
    this.cleaned = true;
    killChildren();
    // Pods first: their veths' host ends live in the node namespace.
    for (const ns of [...this.created].reverse()) removeNamespace(ns);
    // Anything of ours a crash left between add and bookkeeping.
    for (const ns of listNetns()) if (ns.startsWith(this.prefix)) removeNamespace(ns);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

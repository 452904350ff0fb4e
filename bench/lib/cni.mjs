// CNI invocations the way libcni makes them: the plugin binary run in the node namespace with
// CNI_* in the environment and the netconf (with prevResult) on stdin.
import { chmodSync, copyFileSync, existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { inNs, run, runAsync, sleep } from "./proc.mjs";
import { AZURE_POD_ADDRESS, PTP_SUBNET } from "./lab.mjs";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const DIST_MARKROUTE = join(REPO, "dist/markroute");
/**
 * The executable the bench runs: a private copy of dist/markroute made at start (stageMarkroute),
 * so a rebuild while the bench runs (ETXTBSY, or a different binary halfway) cannot affect it.
 */
export let MARKROUTE = DIST_MARKROUTE;
export const CNI_DIR = "/usr/lib/cni";
export const CNI_VERSION = "1.0.0";
export const NETWORK = "mrbench";
/** kube-proxy's ClusterIP range in the netconf: one exemption rule, as on a real node. */
export const SERVICE_CIDR = "10.96.0.0/12";
export const POD_IFNAME = "eth0";

export function cniEnv(command, pod) {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: pod.containerId,
    CNI_NETNS: pod.netnsPath,
    CNI_IFNAME: POD_IFNAME,
    CNI_PATH: CNI_DIR,
    // containerd's keys: markroute names the pod in its ipset comments
    CNI_ARGS: `K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerId};IgnoreUnknown=1`,
  };
}

/** Runs one plugin for one pod inside `ns`; throws with the plugin's own error on failure. */
export function invoke(ns, binary, command, pod, netconf, { wrap = [] } = {}) {
  return run(inNs(ns, [...wrap, binary]), { input: JSON.stringify(netconf), env: cniEnv(command, pod) });
}

export function invokeAsync(ns, binary, command, pod, netconf) {
  return runAsync(inNs(ns, [binary]), { input: JSON.stringify(netconf), env: cniEnv(command, pod) });
}

export const BACKENDS = ["iptables", "nftables"];

/**
 * The netconf of a site's markroute. The backend is always explicit: the default, "auto",
 * resolves to nftables wherever `nft` works, so leaving it out would measure nftables silently.
 * driftCheckSeconds is markroute's default unless given.
 */
export function markrouteConf(site, prevResult, { driftCheckSeconds } = {}) {
  if (!BACKENDS.includes(site.backend)) throw new Error(`site ${site.tag}: backend ${site.backend} is not one of ${BACKENDS.join(", ")}`);
  const dir = site.dir;
  return {
    cniVersion: CNI_VERSION, name: NETWORK, type: "markroute",
    mode: "transparent-tunnel",
    backend: site.backend,
    serviceCIDRs: [SERVICE_CIDR],
    stateDir: join(dir, "markroute-state"),
    logFile: join(dir, "markroute.log"),
    ...(driftCheckSeconds === undefined ? {} : { driftCheckSeconds }),
    prevResult,
  };
}

/** The Go reference: containernetworking/plugins' firewall with its iptables backend (no D-Bus probe). */
export const firewallConf = (prevResult) =>
  ({ cniVersion: CNI_VERSION, name: NETWORK, type: "firewall", backend: "iptables", prevResult });

export const ptpConf = (dir) => ({
  cniVersion: CNI_VERSION, name: NETWORK, type: "ptp", ipMasq: false,
  ipam: { type: "host-local", ranges: [[{ subnet: PTP_SUBNET }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: join(dir, "ipam") },
});

// Made-up pods for the latency and scale runs. A routed (ptp-style) prevResult lists exactly one
// host-side interface, so markroute matches it without asking the kernel (plan.ts
// resolveHostMatch): the interface need not exist, and no veths have to be made for 1000 pods.
// Addresses come from 10.128.0.0/9, unique over the whole run, never routed anywhere.
let podSeq = 0;
const mac = (n) => `02:42:${[24, 16, 8, 0].map((s) => ((n >>> s) & 255).toString(16).padStart(2, "0")).join(":")}`;

export function fakePod(netnsPath, label = "fake") {
  const k = ++podSeq;
  const n = (10 << 24 | 128 << 16) + k; // 10.128.0.0 + k
  const address = [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
  const hostIf = `mrb${k.toString(36)}`;
  const containerId = `${label}${k.toString(16).padStart(8, "0")}`.padEnd(64, "0");
  const prevResult = {
    cniVersion: CNI_VERSION,
    interfaces: [{ name: hostIf, mac: mac(k) }, { name: POD_IFNAME, mac: mac(k + 0x1000000), sandbox: netnsPath }],
    ips: [{ address: `${address}/32`, gateway: "10.128.0.1", interface: 1 }],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: {},
  };
  return { name: `${label}-${k}`, containerId, netnsPath, address, hostIf, prevResult };
}

/**
 * A new attachment (container ID) of a site's azure-vnet-shaped pod (lab.addAzurePod), with
 * azure-vnet's result (test/fixtures/main-plugins/azure-vnet.json "ipv4", in CNI_VERSION's form):
 * one interface, CNI_IFNAME without a sandbox, `ips` without `interface`, the host veth (azv…) not
 * listed. markroute then asks the kernel (src/host-match.ts): one `nsenter … ip` run, then /proc and
 * /sys on the node. The pod and its veth stay; each round's ADD and DEL is another sandbox of it.
 */
export function azureShapePod(pod, label = "azure") {
  const k = ++podSeq;
  const gateway = "169.254.1.1";
  return {
    ...pod,
    containerId: `${label}${k.toString(16).padStart(8, "0")}`.padEnd(64, "0"),
    prevResult: {
      cniVersion: CNI_VERSION,
      interfaces: [{ name: POD_IFNAME }],
      ips: [{ address: AZURE_POD_ADDRESS, gateway }],
      routes: [{ dst: "0.0.0.0/0", gw: gateway }],
      dns: {},
    },
  };
}

/** Copies dist/markroute into `dir` once it is stable (not being rebuilt) and answers VERSION. */
export async function stageMarkroute(dir) {
  const target = join(dir, "markroute");
  for (let attempt = 0; attempt < 15; attempt++) {
    const before = statSync(DIST_MARKROUTE);
    copyFileSync(DIST_MARKROUTE, target);
    chmodSync(target, 0o755);
    const after = statSync(DIST_MARKROUTE);
    const stable = before.mtimeMs === after.mtimeMs && before.size === after.size && statSync(target).size === after.size;
    const ok = stable && run([target], { input: "{}", env: { CNI_COMMAND: "VERSION" }, check: false }).status === 0;
    if (ok) {
      MARKROUTE = target;
      return { path: target, size: after.size, mtime: after.mtime.toISOString() };
    }
    await sleep(2000); // a build is writing it
  }
  throw new Error(`${DIST_MARKROUTE} keeps changing or does not run: is a build running? Try again after it, or run \`npm run build\``);
}

export function assertBinaries() {
  if (!existsSync(DIST_MARKROUTE)) {
    throw new Error(`${DIST_MARKROUTE} is missing: run \`npm run build\` first`);
  }
  for (const p of ["firewall", "ptp", "host-local"]) {
    if (!existsSync(join(CNI_DIR, p))) throw new Error(`${join(CNI_DIR, p)} is missing: install containernetworking-plugins`);
  }
}

// An ADD and a DEL per backend through the pipeline a CNI call runs (edge, config, commands.add and
// del: host match, plan, lock, state directory; logger, one spawn) over a fake probe and a kernel
// that does nothing, run while the startup snapshot is built: V8 keeps the
// code it compiled, and Node the internals it loaded, so every pod start skips that work (the
// lock, state directory and tool runs are warm). Build-time only: the temporary state directory
// is removed and no handle outlives it. IPv4 only: node:net's isIPv6 run twice while the
// snapshot is built crashes Node 20's snapshot serializer (its regexp code is native).
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { add, del } from "./commands.js";
import { decodeNetconf, parseEnvironment, readStdin } from "./cni/request.js";
import { parseConfig } from "./config.js";
import type { Kernel } from "./engine.js";
import { runTool } from "./kernel/exec.js";
import { fakeProbe } from "./kernel/probe-fake.js";
import { openLog } from "./log.js";
import { objectKey } from "./plan.js";

const netconf = {
  cniVersion: "1.0.0", name: "rehearsal", type: "markroute", mark: "0x10", mask: 16,
  serviceCIDRs: ["10.96.0.0/12"], excludeCIDRs: ["168.63.129.16/32"], logFile: "stderr",
  runtimeConfig: { "io.kubernetes.cri.pod-annotations": { a: "b" } },
  // azure-vnet's shape (the container interface without a sandbox): the host side comes from the probe.
  prevResult: {
    cniVersion: "1.0.0",
    interfaces: [{ name: "eth0", mac: "00:00:00:00:00:01" }],
    ips: [{ address: "10.244.0.2/24", gateway: "10.244.0.1" }],
  },
};

const noKernel: Kernel = {
  valuesBefore: () => new Map(),
  apply: () => {},
  drift: (objects) => new Map(objects.map((o) => [objectKey(o), []])),
};

const NETNS = "/rehearsal";
const node = (nft: boolean) => fakeProbe({
  nft,
  uplinks: { 4: { dev: "eth0", gateway: "10.224.0.1" } },
  pods: { [NETNS]: [{ iface: { ifName: "eth0", ifindex: 2, kind: "veth", peerIndex: 7, addresses: [] }, peer: { name: "azv0rehearse" } }] },
});

export async function rehearse(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "markroute-rehearsal-"));
  try {
    const stdin = join(dir, "stdin.json");
    // One state directory per backend: the first ADD's backend is kept while pods are attached.
    for (const nft of [true, false]) {
      writeFileSync(stdin, JSON.stringify({ ...netconf, stateDir: join(dir, `state-${nft}`) }));
      for (const command of ["ADD", "DEL"]) {
        const req = parseEnvironment({
          CNI_COMMAND: command, CNI_CONTAINERID: "rehearsal", CNI_IFNAME: "eth0", CNI_NETNS: NETNS,
          CNI_ARGS: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;IgnoreUnknown=1",
        });
        const fd = openSync(stdin, "r");
        const config = parseConfig(decodeNetconf(readStdin(fd)));
        closeSync(fd);
        const outcome = command === "ADD" ? await add(config, req, { probe: node(nft), kernel: noKernel }) : await del(config, req, { kernel: noKernel });
        runTool(["true"]);
        openLog(join(dir, "log"), "info").info({ command, summary: outcome.summary }, "rehearsal");
        JSON.stringify(outcome.result);
      }
    }
  } finally {
    openLog("stderr", "info");
    rmSync(dir, { recursive: true, force: true });
  }
}

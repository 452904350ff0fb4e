// An ADD and a DEL through the real code (edge, config, plan, lock, state directory, logger, one
// spawn) with a kernel that does nothing, run while the startup snapshot is built: V8 keeps the
// code it compiled, and Node the internals it loaded, so every pod start skips that work (the
// lock's first listen alone costs 1.3 ms cold). Build-time only: the temporary state directory
// is removed and no handle outlives it. IPv4 only: node:net's isIPv6 run twice while the
// snapshot is built crashes Node 20's snapshot serializer (its regexp code is native).
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { attachmentOf, selectedMark } from "./commands.js";
import { decodeNetconf, parseEnvironment, readStdin } from "./cni/request.js";
import { resultInVersion } from "./cni/result.js";
import { parseConfig } from "./config.js";
import { withState, type Kernel } from "./engine.js";
import { runTool } from "./kernel/exec.js";
import { openLog } from "./log.js";
import { objectKey, planAttachment, resolveHostMatch } from "./plan.js";

const netconf = {
  cniVersion: "1.0.0", name: "rehearsal", type: "markroute", mark: "0x10", mask: 16,
  serviceCIDRs: ["10.96.0.0/12"], excludeCIDRs: ["168.63.129.16/32"], logFile: "stderr",
  runtimeConfig: { "io.kubernetes.cri.pod-annotations": { a: "b" } },
  prevResult: {
    cniVersion: "1.0.0",
    interfaces: [{ name: "veth0rehearse", mac: "00:00:00:00:00:01" }, { name: "eth0", sandbox: "/rehearsal" }],
    ips: [{ address: "10.244.0.2/24", gateway: "10.244.0.1", interface: 1 }],
  },
};

const noKernel: Kernel = {
  valuesBefore: () => new Map(),
  apply: () => {},
  drift: (objects) => new Map(objects.map((o) => [objectKey(o), []])),
};

export async function rehearse(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "markroute-rehearsal-"));
  try {
    const stdin = join(dir, "stdin.json");
    writeFileSync(stdin, JSON.stringify({ ...netconf, stateDir: join(dir, "state") }));
    for (const command of ["ADD", "DEL"]) {
      const req = parseEnvironment({
        CNI_COMMAND: command, CNI_CONTAINERID: "rehearsal", CNI_IFNAME: "eth0", CNI_NETNS: "/rehearsal",
        CNI_ARGS: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;IgnoreUnknown=1",
      });
      const fd = openSync(stdin, "r");
      const config = parseConfig(decodeNetconf(readStdin(fd)));
      closeSync(fd);
      const hostMatch = resolveHostMatch(config.prevResult!, req.ifName, () => undefined);
      const uplinks = { 4: { dev: "eth0", gateway: "10.224.0.1" } };
      const mark = selectedMark(config)!;
      planAttachment(config, attachmentOf(config, req), hostMatch, { backend: "nftables", uplinks }, mark);
      const plan = planAttachment(config, attachmentOf(config, req), hostMatch, { backend: "iptables", iptablesVariant: "nft", uplinks }, mark);
      const summary = await withState(config.stateDir, (tx) => {
        if (command === "ADD") tx.add(plan, config.driftCheckSeconds * 1000);
        else tx.remove(plan.id);
        return tx.summary;
      }, { kernel: noKernel });
      runTool(["true"]);
      openLog(join(dir, "log"), "info").info({ command, summary }, "rehearsal");
      JSON.stringify(resultInVersion(config.prevResultAsSent!, config.cniVersion));
    }
  } finally {
    openLog("stderr", "info");
    rmSync(dir, { recursive: true, force: true });
  }
}

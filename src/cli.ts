// The command line for people: what is installed, what an ADD would do, putting things right, and
// putting markroute on a node or taking it off (install.ts).
import { Command } from "commander";
import { isPerPod, objectKey, type NodeFacts } from "./plan.js";
import * as commands from "./commands.js";
import { CniError, ErrorCode } from "./cni/errors.js";
import { explain, packetOf } from "./explain.js";
import { decodeNetconf, parseEnvironment, readStdin } from "./cni/request.js";
import { DEFAULT_LOG_FILE, DEFAULT_STATE_DIR, SUPPORTED_VERSIONS, parseConfig } from "./config.js";
import { readState, repairsOf, withState } from "./engine.js";
import { install, uninstall } from "./install.js";
import { DEFAULT_BIN_DIR } from "./install/binary.js";
import { DEFAULT_CONF_DIR } from "./install/conf-dir.js";
import { readEntry } from "./install/entry.js";
import { describePlan } from "./plan-text.js";
import { stateExists } from "./state/records.js";
import type { StateView } from "./state/view.js";
import { describeSelection, type PodSelection } from "./selection.js";

export const VERSION = "0.1.0";
/** Loopback: the DaemonSet chooses what Prometheus can reach. */
export const DEFAULT_AGENT_LISTEN = "127.0.0.1:9743";

export async function cli(args: string[]): Promise<number> {
  const program = new Command("markroute")
    .description("Chained CNI plugin: marks pod traffic and routes the mark through a policy table.\nRun by the container runtime with CNI_COMMAND set; these subcommands are for people.")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program.command("version").description("print markroute's version and the CNI versions it speaks").action(() => {
    console.log(`markroute ${VERSION}\nCNI versions: ${SUPPORTED_VERSIONS.join(", ")}`);
  });

  program.command("status")
    .description("attachments, reference counts, installed objects and their drift from the kernel")
    .option("--state-dir <dir>", "state directory", DEFAULT_STATE_DIR)
    .option("--json", "machine-readable output")
    .action(async (opts: { stateDir: string; json?: boolean }) => {
      // A node that never attached a pod has no state directory yet: nothing attached, not an error.
      const report = stateExists(opts.stateDir)
        ? await readState(opts.stateDir, statusReport)
        : { indexNeedsRecovery: false, attachments: [], objects: [] };
      console.log(opts.json ? JSON.stringify(report, null, 2) : formatStatus(opts.stateDir, report));
    });

  program.command("plan")
    .description("read a netconf (with prevResult) on stdin and print the kernel objects an ADD would install; changes nothing")
    .option("--container-id <id>", "container ID to plan for", "plan")
    .option("--ifname <name>", "the container's interface name", "eth0")
    .option("--netns <path>", "the pod's network namespace, where prevResult does not name the host-side interface (azure-vnet)", "")
    .option("--pod-namespace <ns>", "the pod's Kubernetes namespace, as K8S_POD_NAMESPACE in CNI_ARGS (namespaces, excludeNamespaces)")
    .option("--json", "the raw plan (objects and their keys) instead of a summary")
    .action((opts: { containerId: string; ifname: string; netns: string; podNamespace?: string; json?: boolean }) => {
      // The same checks as the CNI_* variables these stand for.
      parseEnvironment({ CNI_COMMAND: "ADD", CNI_CONTAINERID: opts.containerId, CNI_IFNAME: opts.ifname, CNI_NETNS: opts.netns || "/" });
      const config = parseConfig(decodeNetconf(readStdin()));
      const args = new Map(opts.podNamespace ? [["K8S_POD_NAMESPACE", opts.podNamespace]] : []);
      const plan = commands.dryRun(config, { containerId: opts.containerId, ifName: opts.ifname, netns: opts.netns, args });
      if (opts.json) console.log(JSON.stringify(plan, null, 2));
      else console.log("reason" in plan ? `nothing would be installed: ${plan.reason}` : `an ADD would install (nothing is changed):\n${describePlan(plan)}`);
    });

  program.command("explain")
    .description("what happens to a packet: which rule marks or exempts it, which ip rule it meets, the route the kernel picks")
    .argument("[attachment]", "a recorded attachment id or container ID (prefix); its pod address and host interface are the packet's source")
    .option("--from <ip>", "source address (instead of an attachment)")
    .option("--iif <dev>", "interface the packet arrives on (with --from)")
    .requiredOption("--to <ip>", "destination address")
    .option("--state-dir <dir>", "state directory", DEFAULT_STATE_DIR)
    .action(async (attachment: string | undefined, opts: { from?: string; iif?: string; to: string; stateDir: string }) => {
      if (!attachment && !(opts.from && opts.iif)) throw new CniError(ErrorCode.invalidEnvironment, "name an attachment, or give --from and --iif");
      const lines = await readState(opts.stateDir, (view) =>
        explain(view, attachment ? packetOf(view, attachment, opts.to) : { from: opts.from!, iif: opts.iif!, to: opts.to }));
      console.log(lines.join("\n"));
    });

  program.command("reconcile")
    .description("re-apply every recorded attachment and remove what no record needs; prints what it fixed")
    .option("--state-dir <dir>", "state directory", DEFAULT_STATE_DIR)
    .action(async (opts: { stateDir: string }) => {
      // Reconcile writes (records, index), but only where markroute has attached pods: a mistyped
      // --state-dir must not be created, as status and explain refuse it.
      requireStateDir(opts.stateDir);
      const summary = await withState(opts.stateDir, (session) => {
        const repaired = repairsOf(session.sharedDrift());
        session.reconcile();
        return { ...session.summary, repaired };
      });
      console.log(JSON.stringify(summary, null, 2));
    });

  program.command("agent")
    .description("run in the foreground as the DaemonSet's long-running process: repair what someone changes in the kernel (and, with --entry-file, markroute's conflist entry) within seconds, without a CNI call; serve /metrics, /healthz and /readyz; exit on SIGTERM, leaving the kernel as it is")
    .option("--state-dir <dir>", `state directory (default: markroute's entry's stateDir, else ${DEFAULT_STATE_DIR})`)
    .option("--conf-dir <dir>", "CNI conf dir: /readyz's netconf, and where the entry is kept", DEFAULT_CONF_DIR)
    .option("--entry-file <path>", "markroute's conflist entry, in a JSON file: put back into the conflist whenever someone rewrites it without it")
    .option("--listen <addr:port>", "where to serve /metrics, /healthz and /readyz", DEFAULT_AGENT_LISTEN)
    .option("--resync <seconds>", "full read-back of the kernel and the conflist every this many seconds, events or not", "30")
    .option("--log-file <path>", `the CNI operations' log file, read for their metrics (default: markroute's entry's logFile, else ${DEFAULT_LOG_FILE})`)
    .action(async (opts: { stateDir?: string; confDir: string; entryFile?: string; listen: string; resync: string; logFile?: string }) => {
      const resyncSeconds = Number(opts.resync);
      if (!(resyncSeconds >= 1 && resyncSeconds <= 86_400)) throw new Error(`--resync ${opts.resync}: expected seconds, from 1 to 86400`);
      // Loaded here only: the CNI path (ADD, DEL...) never pays for the agent's modules.
      const { runAgent } = await import("./agent/agent.js");
      await runAgent({ ...opts, resyncSeconds });
    });

  program.command("install")
    .description("put markroute on this node: the binary into the CNI bin dir (write, then rename) and its entry into the conflist the runtime uses, after the main plugin; running it again changes nothing")
    .option("--bin-dir <dir>", "CNI bin dir", DEFAULT_BIN_DIR)
    .option("--conf-dir <dir>", "CNI conf dir", DEFAULT_CONF_DIR)
    .option("--entry <json>", "markroute's conflist entry, as JSON")
    .option("--entry-file <path>", "markroute's conflist entry, in a JSON file")
    .option("--source <file>", "the executable to install (default: this one)")
    .action((opts: { binDir: string; confDir: string; entry?: string; entryFile?: string; source?: string }) => {
      const report = install({ binDir: opts.binDir, confDir: opts.confDir, entry: readEntry(opts), ...(opts.source ? { source: opts.source } : {}) });
      const c = report.conflist;
      console.log([
        `binary ${report.binary.path}: ${report.binary.action}`,
        `conflist ${c.path}: markroute entry ${c.action}${c.convertedFrom ? ` (converted from ${c.convertedFrom})` : ""}`,
        ...(c.backup ? [`backup of the original: ${c.backup}`] : []),
      ].join("\n"));
    });

  program.command("uninstall")
    .description("take markroute off this node: its entry out of the conflists, every recorded attachment's kernel objects (as DEL would), then the binary")
    .option("--bin-dir <dir>", "CNI bin dir", DEFAULT_BIN_DIR)
    .option("--conf-dir <dir>", "CNI conf dir", DEFAULT_CONF_DIR)
    .option("--state-dir <dir>", `state directory (default: the conflist entry's stateDir, else ${DEFAULT_STATE_DIR})`)
    .action(async (opts: { binDir: string; confDir: string; stateDir?: string }) => {
      const report = await uninstall({ binDir: opts.binDir, confDir: opts.confDir, ...(opts.stateDir ? { stateDir: opts.stateDir } : {}) });
      console.log([
        ...(report.conflists.length ? report.conflists.map((c) => `conflist ${c.path}: markroute entry ${c.action}`) : [`conflists in ${opts.confDir}: no markroute entry`]),
        `state ${report.stateDir}: ${report.attachments.length} attachment(s) removed${report.attachments.length ? `: ${report.attachments.join(", ")}` : ""}`,
        ...(report.summary?.removed.length ? [`kernel objects removed: ${report.summary.removed.join(", ")}`] : []),
        ...(report.summary?.recoveryError ? [`warning: healing an earlier operation's leftovers failed: ${report.summary.recoveryError}`] : []),
        `binary ${report.binary.path}: ${report.binary.action}`,
      ].join("\n"));
    });

  try {
    await program.parseAsync(args, { from: "user" });
    return 0;
  } catch (err) {
    const code = (err as { exitCode?: number }).exitCode;
    if (code !== undefined) return code; // commander already printed help or the usage error
    process.stderr.write(`markroute: ${(err as Error).message}\n`);
    return 1;
  }
}

/** Refuses a state directory that does not exist (or holds no attachments directory), as `withState`'s readOnly does. */
function requireStateDir(stateDir: string): void {
  if (!stateExists(stateDir)) throw new Error(`state directory ${stateDir} does not exist (or holds no attachments directory): nothing was attached with it, nothing to reconcile`);
}

interface StatusReport {
  /** The index is dirty or missing (an operation died midway, or the node rebooted): shown as found, not healed. */
  indexNeedsRecovery: boolean;
  /** When an ADD last read the shared objects back (ISO time), if one has. */
  driftCheckedAt?: string;
  /** What the ADDs detected and keep while pods are attached: the backend `auto` resolved to, the iptables variant, the uplinks. */
  facts?: Partial<NodeFacts>;
  attachments: { id: string; pod?: string; iface: string; topology: string; addresses: string[]; createdAt: string; selection?: PodSelection }[];
  objects: { key: string; perPod: boolean; refs: number; drift: string[] }[];
}

function statusReport(view: StateView): StatusReport {
  const records = view.records();
  const objects = view.wanted(records);
  const drift = view.drift(objects);
  const checkedAt = view.driftCheckedAt();
  const facts = view.cachedFacts();
  return {
    indexNeedsRecovery: view.needsRecovery(records),
    ...(checkedAt ? { driftCheckedAt: new Date(checkedAt).toISOString() } : {}),
    ...(facts ? { facts } : {}),
    attachments: records.map((r) => ({
      id: r.id,
      pod: r.attachment.podNamespace && `${r.attachment.podNamespace}/${r.attachment.podName}`,
      iface: r.hostMatch.iface,
      topology: r.hostMatch.topology,
      addresses: r.hostMatch.addresses.map((a) => a.address),
      createdAt: r.createdAt,
      ...(r.selection ? { selection: r.selection } : {}),
    })),
    objects: objects.map((o) => {
      const key = objectKey(o);
      return { key, perPod: isPerPod(o), refs: view.refs(key), drift: drift.get(key) ?? [] };
    }),
  };
}

function formatStatus(stateDir: string, report: StatusReport): string {
  if (report.attachments.length === 0 && report.objects.length === 0 && !report.indexNeedsRecovery) {
    return `state directory: ${stateDir}\nnothing is attached on this node: no pod has been added with this state directory, or all were deleted`;
  }
  const lines = [`state directory: ${stateDir}`, `attachments: ${report.attachments.length}`];
  if (report.facts?.backend) {
    const variant = report.facts.backend === "iptables" && report.facts.iptablesVariant ? ` (iptables-${report.facts.iptablesVariant})` : "";
    lines.push(`backend: ${report.facts.backend}${variant}`);
  }
  if (report.indexNeedsRecovery) {
    lines.push("note: the index is dirty or missing (an operation died midway, or the node rebooted); the next CNI operation, or `markroute reconcile`, rebuilds it from the records");
  }
  for (const a of report.attachments) {
    lines.push(`  ${a.id}  ${a.pod ?? "-"}  via ${a.iface}  ${a.addresses.join(", ")}  since ${a.createdAt}`);
    if (a.selection) lines.push(`    ${describeSelection(a.selection)}`);
    if (a.topology === "bridged" && (!a.selection || a.selection.mark)) lines.push(`    note: ${commands.BRIDGED_WARNING}`);
  }
  const shared = report.objects.filter((o) => !o.perPod);
  lines.push(`shared objects: ${shared.length} (and ${report.objects.length - shared.length} of single pods)`);
  for (const o of shared) lines.push(`  ${o.key}  refs=${o.refs}  ${o.drift.length ? `DRIFT: ${o.drift.join("; ")}` : "ok"}`);
  const drifted = report.objects.filter((o) => o.drift.length);
  lines.push(drifted.length ? `drift: ${drifted.length} object(s) differ from the records; run \`markroute reconcile\`` : "drift: none");
  lines.push(`last drift check by an ADD: ${report.driftCheckedAt ?? "none yet"}`);
  return lines.join("\n");
}

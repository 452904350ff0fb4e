// The CNI verbs as plain functions over a validated config: ADD, DEL, CHECK, GC, STATUS, VERSION.
// A little over ~250 lines: the six verbs and ADD's two stages (decide before the lock, plan under
// it), which the CLI's plan and the tests share; each verb is short.
import { CniError, ErrorCode } from "./cni/errors.js";
import type { CniRequest } from "./cni/request.js";
import { resultInVersion } from "./cni/result.js";
import { LATEST_VERSION, SUPPORTED_VERSIONS, isSupportedVersion, type Config, type MarkSpec } from "./config.js";
import { resolveHostMatch, type PodRef } from "./host-match.js";
import { runTool } from "./kernel/exec.js";
import { linuxProbe, type NodeProbe } from "./kernel/probe.js";
import type { Family } from "./net/cidr.js";
import {
  attachmentId, objectKey, planAttachment, type Attachment, type AttachmentPlan, type HostMatch, type NodeFacts, type Uplink,
} from "./plan.js";
import { linuxKernel, withState, type ChangeSummary, type Kernel } from "./engine.js";
import { recordedSelection, selectPod, type PodSelection, type Selection } from "./selection.js";

/** Where the verbs meet the kernel: its facts (read before planning) and its changes. Tests pass fakes. */
export interface Effects {
  probe: NodeProbe;
  kernel: Kernel;
}

export const linuxEffects = (): Effects => ({ probe: linuxProbe(), kernel: linuxKernel });

export interface Outcome {
  /** What goes to stdout; undefined prints nothing (DEL, GC, STATUS succeed silently). */
  result?: object;
  summary?: ChangeSummary;
  /** Worth an operator's attention, though the operation succeeded. */
  warning?: string;
  /** ADD: what selected the pod (logged). */
  selection?: PodSelection;
}

export const BRIDGED_WARNING =
  "bridged pod: traffic to pods on the same bridge is switched, not routed, so it never reaches the fabric; only routed traffic is marked";

// Pod identity for rule comments, kept to the characters Kubernetes itself allows.
const K8S_NAME = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/** The CNI parameters that name a pod's attachment and where its interface is. */
export type PodRequest = Pick<CniRequest, "containerId" | "ifName" | "netns" | "args">;

export function attachmentOf(config: Pick<Config, "name">, req: PodRequest): Attachment {
  const podNamespace = req.args.get("K8S_POD_NAMESPACE");
  const podName = req.args.get("K8S_POD_NAME");
  const k8s = podNamespace && podName && K8S_NAME.test(podNamespace) && K8S_NAME.test(podName);
  return {
    network: config.name, containerId: req.containerId, ifName: req.ifName,
    ...(k8s ? { podNamespace, podName } : {}),
  };
}

export function hostMatchOf(config: Config, pod: PodRef, probe: NodeProbe): HostMatch {
  if (!config.prevResult) {
    throw new CniError(ErrorCode.invalidConfig, "invalid netconf: prevResult: missing; markroute is a chained plugin and must follow a main plugin (ptp, bridge, ...) in a conflist");
  }
  return resolveHostMatch(config.prevResult, pod, probe);
}

/**
 * The node facts a plan for `mark` needs: the netconf's uplink and gateway where given, else the
 * main table's default route (detected once and cached in the index while pods are attached).
 * `detected` holds only what came from the main table: that alone may be cached.
 */
export function nodeFacts(config: Config, mark: MarkSpec | undefined, families: Family[], probe: NodeProbe, cached: Partial<NodeFacts> = {}):
  { facts: NodeFacts; detected: Partial<Record<Family, Uplink>> } {
  const uplinks: Partial<Record<Family, Uplink>> = {};
  const detected: Partial<Record<Family, Uplink>> = {};
  for (const family of families) {
    const routing = mark?.routing;
    const gateway = family === 4 ? routing?.gateway : routing?.gateway6;
    const main = routing?.uplink && gateway ? undefined : (cached.uplinks?.[family] ?? probe.defaultUplink(family));
    if (main) detected[family] = main;
    const dev = routing?.uplink ?? main?.dev;
    // The main table's gateway serves only its own device; an uplink of the netconf's without a
    // gateway (a point-to-point VPN interface) gets a device route.
    const gw = gateway ?? (main && (!routing?.uplink || main.dev === routing.uplink) ? main.gateway : undefined);
    if (dev) uplinks[family] = gw ? { dev, gateway: gw } : { dev };
  }
  const backend = config.backend !== "auto" ? config.backend : (cached.backend ?? (probe.nftWorks() ? "nftables" : "iptables"));
  const iptablesVariant = backend === "iptables" ? (cached.iptablesVariant ?? probe.iptablesVariant()) : cached.iptablesVariant;
  return { facts: { backend, ...(iptablesVariant ? { iptablesVariant } : {}), uplinks }, detected };
}

/** The families a plan needs an uplink for: the pod's, and IPv6 for the probe rewrite. */
const familiesOf = (config: Config, m: HostMatch): Family[] =>
  [...new Set([...m.addresses.map((a) => a.family), ...(config.ipv6ProbeRewrite ? [6 as const] : [])])];

/** What an ADD decides before it takes the lock (from its inputs and the kernel, not the state): where the pod's packets arrive, and its mark. */
export interface AddDecision {
  attachment: Attachment;
  hostMatch: HostMatch;
  /** None: the pod passes through unmarked (`selection` says why). */
  mark?: MarkSpec;
  selection: Selection;
}

export const selectionOf = (config: Config, req: Pick<PodRequest, "args">): Selection => selectPod(config, req.args.get("K8S_POD_NAMESPACE"));

export function decideAdd(config: Config, req: PodRequest, probe: NodeProbe): AddDecision {
  const attachment = attachmentOf(config, req);
  const hostMatch = hostMatchOf(config, req, probe);
  const selection = selectionOf(config, req);
  return { attachment, hostMatch, ...(selection.mark ? { mark: selection.mark } : {}), selection };
}

/** A marked pod's plan, and the node facts it used (`cached`: those earlier ADDs detected, kept in the index). */
export function planAdd(config: Config, d: AddDecision & { mark: MarkSpec }, probe: NodeProbe, cached?: Partial<NodeFacts>):
  { plan: AttachmentPlan; facts: NodeFacts; detected: Partial<Record<Family, Uplink>> } {
  const { facts, detected } = nodeFacts(config, d.mark, familiesOf(config, d.hostMatch), probe, cached);
  const plan = { ...planAttachment(config, d.attachment, d.hostMatch, facts, d.mark), selection: recordedSelection(d.selection) };
  return { plan, facts, detected };
}

/** A pod passed through: nothing to install, but a record saying why (status, explain; DEL removes it). */
const passedThrough = (d: AddDecision): AttachmentPlan =>
  ({ id: attachmentId(d.attachment), attachment: d.attachment, hostMatch: d.hostMatch, objects: [], selection: recordedSelection(d.selection) });

/**
 * A pod passed through: its record (why it is not marked, for status and explain) is written if
 * the state directory lets it, but the pod starts either way: before namespaces could select pods,
 * such a pod never touched the state, and a full disk or a held lock must not stop every unmarked
 * pod of the node now. DEL of a pod without a record succeeds as it always did.
 */
async function passThrough(config: Config, decision: AddDecision, result: object, kernel?: Kernel): Promise<Outcome> {
  const warnings = [`not marked: ${decision.selection.reason}`];
  let summary: ChangeSummary | undefined;
  try {
    summary = await withState(config.stateDir, (session) => {
      session.attach(passedThrough(decision), config.driftCheckSeconds * 1000);
      return session.summary;
    }, { kernel });
  } catch (err) {
    warnings.push(`its record was not written (status and explain will not show it): ${(err as Error).message}`);
  }
  return { result, ...(summary ? { summary } : {}), selection: recordedSelection(decision.selection), warning: warnings.join(". ") };
}

export async function add(config: Config, req: CniRequest, { probe, kernel }: Effects = linuxEffects()): Promise<Outcome> {
  const result = () => resultInVersion(config.prevResultAsSent!, config.cniVersion);
  const decision = decideAdd(config, req, probe);
  const { mark, hostMatch, selection } = decision;
  if (!mark) return passThrough(config, decision, result(), kernel);
  const summary = await withState(config.stateDir, (session) => {
    const cached = session.view.cachedFacts();
    const { plan, facts, detected } = planAdd(config, { ...decision, mark }, probe, cached);
    session.attach(plan, config.driftCheckSeconds * 1000, {
      // What `auto` resolved to is kept; a netconf naming its backend does not change it.
      backend: config.backend === "auto" ? facts.backend : cached?.backend,
      iptablesVariant: facts.iptablesVariant ?? cached?.iptablesVariant,
      uplinks: { ...cached?.uplinks, ...detected },
    });
    return session.summary;
  }, { kernel });
  const warnings = [
    ...(summary.repaired ? [`repaired what someone changed in the kernel: ${summary.repaired.flatMap((r) => r.problems).join("; ")}`] : []),
    ...(summary.recoveryError ? [`healing the kernel from the records failed (the next operation tries again): ${summary.recoveryError}`] : []),
    ...(summary.driftCheckError ? [`could not read the shared objects back (the next due check tries again): ${summary.driftCheckError}`] : []),
    ...(hostMatch.topology === "bridged" && config.mode === "transparent-tunnel" ? [BRIDGED_WARNING] : []),
  ];
  return { result: result(), summary, selection: recordedSelection(selection), ...(warnings.length ? { warning: warnings.join(". ") } : {}) };
}

/**
 * DEL removes what ADD recorded, whatever the netconf says now: it needs only the network's name
 * and the state directory (config.delTargetOf), so that a netconf that no longer validates never
 * stops the runtime's cleanup. Nothing recorded is success.
 */
export async function del(config: Pick<Config, "name" | "stateDir">, req: PodRequest, { kernel }: Pick<Effects, "kernel"> = { kernel: linuxKernel }): Promise<Outcome> {
  const id = attachmentId(attachmentOf(config, req));
  const summary = await withState(config.stateDir, (session) => {
    session.detach(id);
    return session.summary;
  }, { kernel });
  return { summary };
}

export async function check(config: Config, req: CniRequest): Promise<Outcome> {
  if (!config.prevResult) throw new CniError(ErrorCode.invalidConfig, "invalid netconf: prevResult: CHECK needs the prevResult of ADD");
  const id = attachmentId(attachmentOf(config, req));
  const problems = await withState(config.stateDir, (session) => {
    const found = session.check(id);
    if (found) return found;
    if (!selectionOf(config, req).mark) return []; // a pod passed through (by a version that kept no record of it) has nothing to check
    throw new CniError(ErrorCode.unknownContainer, `no markroute attachment ${id}: it was never added, or was deleted`);
  });
  if (problems.length) throw new CniError(ErrorCode.checkFailed, `attachment ${id} is not fully installed: ${problems.join("; ")}`);
  return {};
}

/**
 * GC (CNI 1.1): removes this network's attachments that the runtime no longer lists. Without the
 * list there is nothing to tell valid from stale: refused, nothing removed (an empty list is the
 * runtime saying that none is valid).
 */
export async function gc(config: Config, { kernel }: Pick<Effects, "kernel"> = { kernel: linuxKernel }): Promise<Outcome> {
  if (!config.validAttachments) {
    throw new CniError(ErrorCode.invalidConfig,
      `invalid netconf: cni.dev/valid-attachments: missing; GC removes every attachment of network ${config.name} that this list does not name, so without it nothing is removed (an empty list means none is valid)`);
  }
  const valid = new Set(config.validAttachments.map((a) => `${a.containerID}/${a.ifname}`));
  const summary = await withState(config.stateDir, (session) => {
    for (const r of session.view.records()) {
      const a = r.attachment;
      if (a.network === config.name && !valid.has(`${a.containerId}/${a.ifName}`)) session.detach(r.id);
    }
    return session.summary;
  }, { kernel });
  return { summary };
}

/**
 * STATUS (CNI 1.1): code 50 with the reason when this node cannot serve ADD: what ADD would find,
 * each routed mark's way out (an uplink the netconf names must exist here), then the tools.
 */
export function status(config: Config, probe: NodeProbe = linuxProbe()): Outcome {
  const routed = config.marks.filter((m) => m.routing);
  const { facts, detected } = nodeFacts(config, routed[0], [4, 6], probe);
  for (const mark of routed) {
    // Backend and the main table's default routes as read once for the first mark.
    const { uplinks } = mark === routed[0] ? facts : nodeFacts(config, mark, [4, 6], probe, { ...facts, uplinks: detected }).facts;
    const field = config.mode === "transparent-tunnel" ? "uplink" : `marks.${mark.name}.uplink`;
    if (!uplinks[4] && !uplinks[6]) {
      throw new CniError(ErrorCode.pluginNotAvailable, "no uplink: the main table has no default route with a gateway, and the netconf sets none");
    }
    for (const dev of new Set(Object.values(uplinks).map((u) => u.dev))) {
      if (!probe.linkExists(dev)) {
        throw new CniError(ErrorCode.pluginNotAvailable, `${field}: uplink ${dev} does not exist on this node: an ADD would fail (code 102) until it does`);
      }
    }
  }
  const tools = facts.backend === "nftables"
    ? [["nft", "--version"]]
    : [["ipset", "version"], [`iptables-${facts.iptablesVariant}-restore`, "--version"]];
  for (const tool of [["ip", "-V"], ...tools]) {
    let works = false;
    try {
      works = runTool(tool).status === 0;
    } catch {
      // not installed: reported below
    }
    if (!works) throw new CniError(ErrorCode.pluginNotAvailable, `${tool[0]} is missing or broken on this node (backend ${facts.backend})`);
  }
  return {};
}

export function version(cniVersion: unknown): Outcome {
  return {
    result: {
      cniVersion: isSupportedVersion(cniVersion) ? cniVersion : LATEST_VERSION,
      supportedVersions: SUPPORTED_VERSIONS,
    },
  };
}

/** What an ADD would install for this netconf (the CLI's `plan`): nothing changes. */
export function dryRun(config: Config, req: PodRequest, probe: NodeProbe = linuxProbe()): (AttachmentPlan & { keys: string[] }) | { objects: []; reason: string } {
  const decision = decideAdd(config, req, probe);
  const { mark } = decision;
  if (!mark) return { objects: [], reason: `not marked: ${decision.selection.reason}` };
  const { plan } = planAdd(config, { ...decision, mark }, probe);
  return { ...plan, keys: plan.objects.map(objectKey) };
}

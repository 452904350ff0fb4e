// Which mark a pod gets, and why: a pure function of the validated config, the pod's annotations
// (runtimeConfig, when the runtime sends them) and its Kubernetes namespace (K8S_POD_NAMESPACE in
// CNI_ARGS, which containerd and CRI-O send on every call). No API server: the runtime says it all.
// The answer is recorded with the attachment, so that status and explain can say why later.
import { CniError, ErrorCode } from "./cni/errors.js";
import { NAMESPACE_NAME, type Config, type MarkSpec } from "./config.js";

/**
 * What decided: the pod's annotation, its namespace (annotated mode), the network itself
 * (transparent-tunnel marks every pod), its namespace's exclusion (transparent-tunnel), or nothing.
 */
export const SELECTED_BY = ["annotation", "namespace", "network", "excluded", "none"] as const;
export type SelectedBy = (typeof SELECTED_BY)[number];

/** The decision, recorded with the attachment: `mark` names the entry; absent, the pod passed through unmarked. */
export interface PodSelection {
  by: SelectedBy;
  mark?: string;
  /** Why, in words that follow "marked: " or "not marked: ". */
  reason: string;
}

export interface Selection extends Omit<PodSelection, "mark"> {
  mark?: MarkSpec;
}

export const POD_ANNOTATIONS = "io.kubernetes.cri.pod-annotations";

/** One line for people (status, explain): `marked "vpn" (by namespace): its namespace team-vpn is listed by marks.vpn`. */
export const describeSelection = (s: PodSelection) =>
  `${s.mark ? `marked "${s.mark}"` : "not marked"} (${s.by === "excluded" || s.by === "none" ? s.by : `by ${s.by}`}): ${s.reason}`;

/** The selection as its record keeps it: the entry by name. */
export const recordedSelection = ({ mark, ...rest }: Selection): PodSelection => ({ ...rest, ...(mark ? { mark: mark.name } : {}) });

/**
 * Transparent-tunnel: every pod but those of `excludeNamespaces`. Annotated: the entry the pod's
 * annotation names (an unknown name is code 7), else the entry listing its namespace, else none.
 * A namespace that is no Kubernetes name (CNI_ARGS are the runtime's to fill) selects nothing.
 */
export function selectPod(config: Config, rawNamespace: string | undefined): Selection {
  const namespace = rawNamespace !== undefined && NAMESPACE_NAME.test(rawNamespace) ? rawNamespace : undefined;
  if (config.mode === "transparent-tunnel") {
    if (namespace && config.excludeNamespaces.includes(namespace)) {
      return { by: "excluded", reason: `its namespace ${namespace} is in excludeNamespaces` };
    }
    return { by: "network", mark: config.marks[0]!, reason: `transparent-tunnel marks every pod of network ${config.name}${config.excludeNamespaces.length ? `; ${namespaceSaid(namespace)} not in excludeNamespaces` : ""}` };
  }
  const byNamespace = namespace ? config.marks.find((m) => m.namespaces?.includes(namespace)) : undefined;
  const annotated = annotatedMark(config);
  if (annotated) {
    const over = byNamespace && byNamespace !== annotated ? ` (over marks.${byNamespace.name}, which lists its namespace ${namespace})` : "";
    return { by: "annotation", mark: annotated, reason: `its annotation ${config.annotation}=${annotated.name} names marks.${annotated.name}${over}` };
  }
  if (byNamespace) return { by: "namespace", mark: byNamespace, reason: `its namespace ${namespace} is listed by marks.${byNamespace.name}` };
  const anyListed = config.marks.some((m) => m.namespaces);
  return { by: "none", reason: `the pod has no ${config.annotation} annotation${anyListed ? `, and ${namespaceSaid(namespace)} listed by no entry of marks` : ""}` };
}

const namespaceSaid = (namespace: string | undefined) =>
  namespace ? `its namespace ${namespace} is` : "CNI_ARGS name no Kubernetes namespace (K8S_POD_NAMESPACE), so none is";

/** The entry the pod's annotation names; none without the annotation. An unknown name is an error. */
function annotatedMark(config: Config): MarkSpec | undefined {
  const annotations = config.runtimeConfig?.[POD_ANNOTATIONS];
  // Go runtimes send a pod without annotations as null; anything but an object of strings is no runtime's.
  if (annotations === undefined || annotations === null) return undefined;
  const field = `runtimeConfig["${POD_ANNOTATIONS}"]`;
  if (typeof annotations !== "object" || Array.isArray(annotations)) {
    throw new CniError(ErrorCode.invalidConfig, `invalid netconf: ${field}: must be an object of pod annotations (name to string), got ${kindOf(annotations)}`);
  }
  // Own properties only: an annotation key such as "constructor" must not find Object's.
  const name = Object.hasOwn(annotations, config.annotation) ? (annotations as Record<string, unknown>)[config.annotation] : undefined;
  if (name === undefined) return undefined;
  if (typeof name !== "string") {
    throw new CniError(ErrorCode.invalidConfig, `invalid netconf: ${field}["${config.annotation}"]: the pod annotation must be a string naming an entry of marks, got ${kindOf(name)}`);
  }
  const mark = config.marks.find((m) => m.name === name);
  if (mark) return mark;
  throw new CniError(ErrorCode.invalidConfig,
    `invalid netconf: marks: the pod's annotation ${config.annotation}=${JSON.stringify(name.slice(0, 64))} names no entry of marks; known: ${config.marks.map((m) => m.name).join(", ")}`);
}

/** A JSON value's kind, for messages: "null", "an array", "a number"... */
const kindOf = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "an array" : typeof v === "object" ? "an object" : `a ${typeof v}`);

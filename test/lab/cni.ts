// A small libcni: runs the plugins of a conflist the way containerd's libcni does,
// so chained-plugin tests see the same stdin/env a runtime would give them.
// - ADD: plugins in order, each gets the previous plugin's result as prevResult.
// - DEL: plugins in reverse order, each gets the cached ADD result of the whole
//   list as prevResult (only for cniVersion >= 0.4.0, like libcni).
// - name and cniVersion come from the list; runtimeConfig carries only the
//   capabilities a plugin declares.
// - the chain stops at the first failing plugin (ADD and DEL alike).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { nsExecAsync } from './exec.ts';

export type NetConf = { type: string; capabilities?: Record<string, boolean> } & Record<string, unknown>;

export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: NetConf[];
  [k: string]: unknown;
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'GC' | 'STATUS';

export interface RuntimeConf {
  containerId: string;
  /** Path of the pod netns; '' reproduces RemovePodSandbox's second DEL. */
  netns: string;
  ifname: string;
  /** CNI_ARGS as ordered pairs (e.g. K8S_POD_NAME). */
  args: [string, string][];
  /** Values for runtimeConfig, keyed by capability (e.g. io.kubernetes.cri.pod-annotations). */
  capabilityArgs?: Record<string, unknown>;
  /** Directories searched for plugin binaries, also passed as CNI_PATH. */
  cniPath: string[];
  /** Namespace the plugin processes run in (the lab's node). */
  hostNs: string;
  /** Extra environment for the plugin processes. */
  env?: Record<string, string>;
}

export interface PluginRun {
  type: string;
  command: CniCommand;
  code: number;
  /** Parsed stdout (result or CNI error object); undefined if stdout was empty or not JSON. */
  stdout: any;
  rawStdout: string;
  stderr: string;
  /** The netconf exactly as sent on stdin. */
  stdin: Record<string, unknown>;
}

export interface ListRun {
  ok: boolean;
  runs: PluginRun[];
  /** ADD: the last plugin's result (what libcni caches). */
  result?: any;
}

const versionAtLeast = (v: string, min: string): boolean => {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
};

export function findPlugin(type: string, cniPath: string[]): string | undefined {
  return cniPath.map((d) => join(d, type)).find((p) => existsSync(p));
}

/** libcni's buildOneConfig + injectRuntimeConfig. */
export function buildOneConfig(list: Conflist, plugin: NetConf, prevResult: unknown, rt: RuntimeConf): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  const runtimeConfig: Record<string, unknown> = {};
  for (const [cap, on] of Object.entries(plugin.capabilities ?? {})) {
    if (on && rt.capabilityArgs && cap in rt.capabilityArgs) runtimeConfig[cap] = rt.capabilityArgs[cap];
  }
  if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
  return conf;
}

export function cniEnv(command: CniCommand, rt: RuntimeConf): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: rt.containerId,
    CNI_NETNS: rt.netns,
    CNI_IFNAME: rt.ifname,
    CNI_PATH: rt.cniPath.join(':'),
    CNI_ARGS: rt.args.map(([k, v]) => `${k}=${v}`).join(';'),
    ...rt.env,
  };
}

/** Run one plugin binary with a ready netconf. */
export async function invokePlugin(command: CniCommand, netconf: Record<string, unknown>, rt: RuntimeConf): Promise<PluginRun> {
  const type = String(netconf.type);
  const bin = findPlugin(type, rt.cniPath);
  if (!bin) {
    // libcni's error when a type is not on CNI_PATH
    return { type, command, code: -1, stdout: undefined, rawStdout: '', stderr: `failed to find plugin "${type}" in path [${rt.cniPath.join(' ')}]`, stdin: netconf };
  }
  const r = await nsExecAsync(rt.hostNs, [bin], { input: JSON.stringify(netconf), env: cniEnv(command, rt), check: false, timeoutMs: 60_000 });
  let parsed: unknown;
  try {
    parsed = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  } catch {
    parsed = undefined;
  }
  return { type, command, code: r.code, stdout: parsed, rawStdout: r.stdout, stderr: r.stderr, stdin: netconf };
}

/** `shape` may stand in for what a plugin did (by its index in the list) before the next one runs: see Lab's `standIn`. */
export async function addNetworkList(list: Conflist, rt: RuntimeConf, shape?: (index: number, result: unknown) => unknown): Promise<ListRun> {
  const runs: PluginRun[] = [];
  let prev: unknown;
  for (const [i, plugin] of list.plugins.entries()) {
    const run = await invokePlugin('ADD', buildOneConfig(list, plugin, prev, rt), rt);
    runs.push(run);
    if (run.code !== 0) return { ok: false, runs };
    prev = shape ? shape(i, run.stdout) : run.stdout;
  }
  return { ok: true, runs, result: prev };
}

/** cachedResult: what ADD returned; omit it to reproduce a DEL without prevResult. */
export async function delNetworkList(list: Conflist, rt: RuntimeConf, cachedResult?: unknown): Promise<ListRun> {
  const prev = versionAtLeast(list.cniVersion, '0.4.0') ? cachedResult : undefined;
  const runs: PluginRun[] = [];
  for (const plugin of [...list.plugins].reverse()) {
    const run = await invokePlugin('DEL', buildOneConfig(list, plugin, prev, rt), rt);
    runs.push(run);
    if (run.code !== 0) return { ok: false, runs };
  }
  return { ok: true, runs };
}

/** CHECK, like libcni: every plugin in order, with the cached result. */
export async function checkNetworkList(list: Conflist, rt: RuntimeConf, cachedResult: unknown): Promise<ListRun> {
  const runs: PluginRun[] = [];
  for (const plugin of list.plugins) {
    const run = await invokePlugin('CHECK', buildOneConfig(list, plugin, cachedResult, rt), rt);
    runs.push(run);
    if (run.code !== 0) return { ok: false, runs };
  }
  return { ok: true, runs };
}

/** One-line description of a failed list run, for assertion messages. */
export function describeFailure(run: ListRun): string {
  const bad = run.runs.find((r) => r.code !== 0);
  if (!bad) return 'ok';
  return `${bad.command} ${bad.type} exited ${bad.code}: ${bad.rawStdout.trim()} ${bad.stderr.trim()}`;
}

// Latency of whole process runs, as a container runtime sees them: every command is started the
// same way, `ip netns exec <node-ns> <binary>` from this process, so the netns entry cost is in
// every figure. Commands of one round run in a shuffled order and rounds alternate, so drift (a
// busy neighbour, CPU frequency) spreads over all of them instead of biasing one.
import { readFileSync } from "node:fs";
import { CNI_DIR, CNI_VERSION, MARKROUTE, fakePod, firewallConf, invoke, markrouteConf } from "./cni.mjs";
import { replay, retarget } from "./capture.mjs";
import { runIn, yieldToLoop } from "./proc.mjs";
import { rng, shuffle } from "./stats.mjs";

const FIREWALL = `${CNI_DIR}/firewall`;

/**
 * Runs `warmup + rounds` rounds. makeRound(i) returns { before, after }: lists of [name, () => ms]
 * or of groups (lists of such steps); `before` steps run in shuffled order, then `after` steps
 * (e.g. DELs of the round's ADDs). A group's steps run one after the other, in shuffled order: the
 * commands a ratio compares then run under the same momentary load of the machine.
 * Returns samples by name, warmup rounds left out.
 */
export async function rounds({ rounds: n, warmup, seed, makeRound }) {
  const random = rng(seed);
  const samples = {};
  const order = (steps) => shuffle(steps, random).flatMap((s) => (Array.isArray(s[0]) ? shuffle(s, random) : [s]));
  for (let i = 0; i < warmup + n; i++) {
    const { before, after = [] } = makeRound(i);
    for (const [name, step] of [...order(before), ...order(after)]) {
      const ms = step();
      if (i >= warmup) (samples[name] ??= []).push(ms);
    }
    await yieldToLoop(); // let a Ctrl-C handler run
  }
  return samples;
}

/** The commands measured, each returning its wall time in ms; `site` is where markroute runs. */
export function commands(lab) {
  const dummyNetns = `/run/netns/${lab.dummy}`;
  return {
    nsTrue: (site) => runIn(site.node, ["true"]).ms,
    nodeE0: (site) => runIn(site.node, [process.execPath, "-e", "0"]).ms,
    // The executable's floor: runtime start, env and stdin parsed, one line printed; no kernel work.
    mrVersion: (site) => runIn(site.node, [MARKROUTE], {
      input: JSON.stringify({ cniVersion: CNI_VERSION }), env: { CNI_COMMAND: "VERSION" },
    }).ms,
    newPod: (label) => fakePod(dummyNetns, label),
    mrAdd: (site, pod) => invoke(site.node, MARKROUTE, "ADD", pod, markrouteConf(site, pod.prevResult)).ms,
    // An ADD that reads the shared objects back (what every ADD of a node starting pods rarely does).
    mrAddChecked: (site, pod) => invoke(site.node, MARKROUTE, "ADD", pod, markrouteConf(site, pod.prevResult, { driftCheckSeconds: 0 })).ms,
    mrDel: (site, pod) => invoke(site.node, MARKROUTE, "DEL", pod, markrouteConf(site, pod.prevResult)).ms,
    // The kernel tools a steady-state ADD / DEL runs, alone: markroute's own invocations (captured
    // once per site, lib/capture.mjs) replayed for another made-up pod; each toolAdd has its toolDel.
    toolAdd: (site, pod) => replay(site, retarget(site.tools.ADD, site.tools.pod, pod)),
    toolDel: (site, pod) => replay(site, retarget(site.tools.DEL, site.tools.pod, pod)),
    // The Go reference runs in a node namespace of its own (lab.fwnode), started the same way.
    fwAdd: (pod) => invoke(lab.fwnode, FIREWALL, "ADD", pod, firewallConf(pod.prevResult)).ms,
    fwDel: (pod) => invoke(lab.fwnode, FIREWALL, "DEL", pod, firewallConf(pod.prevResult)).ms,
  };
}

/**
 * markroute's own view of its operations, from its log: durationMs (from the start of the CNI
 * handler to the result: excludes process and runtime start), lockWaitMs, and
 * how many read the shared objects back (driftChecked).
 */
export function inProcess(site, containerIds) {
  const wanted = new Set(containerIds);
  const byCommand = {};
  let text = "";
  try { text = readFileSync(markrouteConf(site).logFile, "utf8"); } catch { return byCommand; }
  for (const line of text.split("\n")) {
    if (!line) continue;
    const e = JSON.parse(line);
    if (!wanted.has(e.containerId) || e.outcome !== "ok") continue;
    const c = (byCommand[e.command] ??= { durationMs: [], lockWaitMs: [], driftChecked: 0 });
    c.durationMs.push(e.durationMs);
    c.lockWaitMs.push(e.lockWaitMs);
    if (e.driftChecked) c.driftChecked++;
  }
  return byCommand;
}

// `markroute agent`: the DaemonSet's long-running process. It keeps the node as the records say
// without waiting for a CNI call: kernel events (watch.ts) and a periodic read-back start passes
// (schedule.ts) that repair every object the records need and markroute's conflist entry
// (passes.ts), and it serves its metrics and probes (http.ts, metrics.ts). SIGTERM stops it at
// once and leaves the kernel as it is. Loaded only by this command: the CNI path never pays for it.
import type { Server } from "node:http";
import { status } from "../commands.js";
import { parseConfig } from "../config.js";
import { findConflist } from "../install/conf-dir.js";
import { readEntry } from "../install/entry.js";
import { openLog, type LogFields } from "../log.js";
import { countPods } from "../state/records.js";
import { parseListen, serve } from "./http.js";
import { agentPaths, currentEntry } from "./paths.js";
import { AgentMetrics, LogTail } from "./metrics.js";
import { keepEntry, repairKernel, repairKind, unobservable } from "./passes.js";
import { PassScheduler, RepairBrake, type Trigger } from "./schedule.js";
import { IP_MONITOR, NFT_MONITOR, monitor, watchDir, type EventSource } from "./watch.js";

export interface AgentOptions {
  /** Default: markroute's entry's (paths.ts). */
  stateDir?: string;
  /** The conf dir the runtime reads: /readyz's netconf, and where the entry is kept. */
  confDir: string;
  /** markroute's conflist entry: with it, the agent keeps the entry in the runtime's conflist. */
  entryFile?: string;
  listen: string;
  resyncSeconds: number;
  /** The CNI processes' log file (their netconf's logFile), read for the operations' metrics. Default: markroute's entry's. */
  logFile?: string;
}

/** How often objects without kernel events (ipsets, iptables-legacy chains) are read back, when the records hold any. */
const POLL_MS = 1000;
/** How often the CNI log is read between scrapes. */
const LOG_READ_MS = 5000;
/** Passes wanted this long without one ending (at least twice the resync): the agent is stuck, /healthz fails, and kubelet restarts it. */
const STUCK_MS = 60_000;
/** Put-backs of the conflist entry within a minute beyond which someone is fighting the agent, and how long it then leaves the file alone. */
const CONFLIST_REWRITES_PER_MINUTE = 5;
const CONFLIST_PAUSE_MS = 5 * 60_000;
/** A pass that waited this long for the lock is logged (CNI operations held it: a burst, or one that hangs). */
const LONG_LOCK_WAIT_MS = 1000;

export async function runAgent(given: AgentOptions): Promise<number> {
  parseListen(given.listen); // a typo is refused before anything starts
  const log = openLog("stderr", "info");
  const { warnings, ...paths } = agentPaths(given, currentEntry(given.confDir, given.entryFile));
  for (const w of warnings) log.warn({}, w);
  const opts = { ...given, ...paths };
  const metrics = new AgentMetrics(() => countPods(opts.stateDir));
  // an entry logging to the runtime's stderr leaves no file to read
  const tail = opts.logFile === "stderr" ? undefined : new LogTail(opts.logFile);
  const readLog = () => tail?.read().forEach((line) => metrics.countLogLine(line));
  let unobservableObjects = 0;
  const problems = new Map<string, string>();
  /** A problem is logged when it starts or changes, not at every pass. */
  const report = (target: string, message: string | undefined) => {
    if (message !== undefined && problems.get(target) !== message) log.error({ target }, message);
    if (message === undefined && problems.has(target)) log.info({ target }, `${target}: fine again`);
    if (message === undefined) problems.delete(target);
    else problems.set(target, message);
  };
  const repaired = (kinds: string[], fields: LogFields, what: string) => {
    for (const kind of kinds) metrics.repairs.inc({ kind });
    metrics.lastRepair.set(Date.now() / 1000);
    log.warn(fields, what);
  };

  const kernel = new PassScheduler(async (trigger: Trigger) => {
    const end = metrics.passSeconds.startTimer();
    metrics.passes.inc({ trigger });
    try {
      const pass = await repairKernel(opts.stateDir, unobservable(nft.running()), trigger === "poll");
      unobservableObjects = pass.unobservable;
      if (pass.lockWaitMs > LONG_LOCK_WAIT_MS) log.warn({ trigger, lockWaitMs: Math.round(pass.lockWaitMs) }, `a pass waited ${(pass.lockWaitMs / 1000).toFixed(1)} s for the state lock (CNI operations held it)`);
      const recovered = pass.recovered && !pass.recoveryError;
      if (pass.repaired.length || recovered) {
        repaired([...pass.repaired.map(repairKind), ...(recovered ? ["recovery"] : [])], { trigger, repaired: pass.repaired, recovered },
          `repaired what someone changed in the kernel: ${pass.repaired.flatMap((r) => r.problems).join("; ") || "an operation left midway, healed from the records"}`);
      }
      if (pass.recoveryError) metrics.failedRepairs.inc({ target: "kernel" });
      report("kernel", pass.recoveryError && `healing the kernel from the records failed (the next pass tries again): ${pass.recoveryError}`);
    } catch (err) {
      metrics.failedRepairs.inc({ target: "kernel" });
      report("kernel", `repair pass failed (the next pass tries again): ${(err as Error).message}`);
    } finally {
      end();
    }
  });

  const stuckMs = Math.max(STUCK_MS, 2 * opts.resyncSeconds * 1000);
  const entryFile = opts.entryFile;
  const brake = new RepairBrake(CONFLIST_REWRITES_PER_MINUTE, 60_000, CONFLIST_PAUSE_MS);
  const conflist = new PassScheduler(async () => {
    if (!entryFile || brake.pausedFor() > 0) return; // the resync after the pause tries again
    try {
      const kept = keepEntry(opts.confDir, entryFile);
      if (kept.action !== "unchanged") {
        repaired(["conflistEntry"], { conflist: kept }, `markroute's entry ${kept.action} in ${kept.path}`);
        if (brake.record()) {
          metrics.failedRepairs.inc({ target: "conflist" });
          log.error({ conflist: kept.path }, `someone keeps rewriting ${kept.path} without markroute's entry (over ${brake.limit} times in a minute; an installer that regenerates it, as Multus's does?): ` +
            `the agent stops putting it back for ${brake.pauseMs / 60_000} min rather than fight it; chain markroute in that installer's template`);
          return;
        }
      }
      report("conflist", undefined);
    } catch (err) {
      metrics.failedRepairs.inc({ target: "conflist" });
      report("conflist", `keeping markroute's entry in ${opts.confDir} failed (the next change or resync tries again): ${(err as Error).message}`);
    }
  });

  const onProblem = (message: string) => log.warn({}, message);
  const nft = monitor(NFT_MONITOR, () => kernel.request("event"), onProblem);
  const sources: EventSource[] = [monitor(IP_MONITOR, () => kernel.request("event"), onProblem), nft];
  if (entryFile) sources.push(watchDir(opts.confDir, () => conflist.request("event"), onProblem));
  kernel.request("start", 0);
  conflist.request("start", 0);
  const timers = [
    setInterval(() => {
      kernel.request("resync", 0);
      conflist.request("resync", 0);
    }, opts.resyncSeconds * 1000),
    setInterval(() => {
      if (unobservableObjects > 0 && !kernel.busy) kernel.request("poll", 0);
    }, POLL_MS),
    setInterval(readLog, LOG_READ_MS),
  ];

  let server: Server;
  try {
    server = await serve(opts.listen, {
      metrics: async () => {
        readLog();
        return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
      },
      unhealthy: () => {
        const stalled = kernel.stalledMs();
        return stalled > stuckMs ? `no repair pass has ended for ${Math.round(stalled / 1000)} s while passes were wanted (over ${stuckMs / 1000} s: stuck)` : undefined;
      },
      notReady: () => notReady(opts),
    });
  } catch (err) {
    stopAll();
    throw new Error(`cannot listen on ${opts.listen}: ${(err as Error).message}`);
  }
  log.info({ stateDir: opts.stateDir, confDir: opts.confDir, entryFile: opts.entryFile, logFile: opts.logFile, resyncSeconds: opts.resyncSeconds }, `agent running: metrics and probes on http://${opts.listen}`);

  function stopAll() {
    kernel.stop();
    conflist.stop();
    for (const t of timers) clearInterval(t);
    for (const s of sources) s.stop();
  }

  return new Promise((resolve) => {
    const stop = (signal: string) => {
      stopAll();
      server.closeAllConnections();
      server.close();
      log.info({ signal }, `${signal}: agent stopped; the kernel is left as it is`);
      resolve(0);
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}

/**
 * Why this node cannot serve ADD now, as CNI STATUS would say for the netconf the runtime uses
 * (its markroute entry, else the entry file's), or undefined when it can. STATUS's tool checks run
 * the tools on this container's PATH (the image's), not the host's that the CNI binary uses.
 */
function notReady(opts: Pick<AgentOptions, "confDir" | "entryFile">): string | undefined {
  try {
    const file = findConflist(opts.confDir);
    const entry = file.list.plugins.find((p) => p.type === "markroute") ?? (opts.entryFile ? readEntry({ entryFile: opts.entryFile }) : undefined);
    if (!entry) return `${file.path} has no markroute entry`;
    status(parseConfig({ cniVersion: file.list.cniVersion, name: file.list.name, ...entry, type: "markroute" }));
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

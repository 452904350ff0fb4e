// The agent's metrics (prom-client, its own registry) and where the CNI operations' figures come
// from: the CNI processes log one JSON line per operation (src/main.ts: command, outcome,
// durationMs) to the log file, which the agent reads as it grows.
import { closeSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { PodCounts } from "../state/records.js";

export class AgentMetrics {
  readonly registry = new Registry();
  readonly attachments: Gauge;
  readonly unmarked: Gauge;
  readonly repairs = new Counter({
    name: "markroute_repairs_total", labelNames: ["kind"], registers: [this.registry],
    help: "Objects the agent found not as recorded and put back, by kind (rule, route, nftTable, nftElement, element, markChain, ipset, linkGroup, rpFilter, suppressRule, conflistEntry; recovery: a state an operation left midway)",
  });
  readonly lastRepair = new Gauge({ name: "markroute_last_repair_timestamp_seconds", help: "When the agent last repaired something (Unix time; 0: never)", registers: [this.registry] });
  readonly failedRepairs = new Counter({
    name: "markroute_repair_failures_total", labelNames: ["target"], registers: [this.registry],
    help: "Agent passes that could not read back or repair their target (kernel, conflist)",
  });
  readonly passes = new Counter({ name: "markroute_agent_passes_total", labelNames: ["trigger"], registers: [this.registry], help: "Agent passes over the kernel, by what started them (event, poll, resync, start)" });
  readonly passSeconds = new Histogram({
    name: "markroute_agent_pass_duration_seconds", help: "One agent pass over the kernel, the lock wait included", registers: [this.registry],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  });
  readonly cniOperations = new Counter({
    name: "markroute_cni_operations_total", labelNames: ["command", "outcome"], registers: [this.registry],
    help: "CNI operations markroute ran on this node (from its log file, since the agent started), by command and outcome",
  });
  readonly cniSeconds = new Histogram({
    name: "markroute_cni_operation_duration_seconds", labelNames: ["command", "outcome"], registers: [this.registry],
    help: "CNI operations' durations as they logged them", buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
  });

  /** @param countPods read at each scrape (once for both gauges) */
  constructor(countPods: () => PodCounts) {
    let counted: PodCounts | undefined;
    // prom-client collects the gauges one after the other: the first reads, the second takes its reading
    this.attachments = new Gauge({
      name: "markroute_attachments", help: "Pods marked on this node (their attachments hold kernel objects)", registers: [this.registry],
      collect() {
        counted = countPods();
        this.set(counted.marked);
      },
    });
    this.unmarked = new Gauge({
      name: "markroute_pods_unmarked", help: "Pods passed through on this node, unmarked (excluded, or selected by nothing): recorded, holding no kernel object", registers: [this.registry],
      collect() {
        this.set((counted ?? countPods()).unmarked);
        counted = undefined;
      },
    });
    this.lastRepair.set(0);
    // Every target's failures from the start, at 0: an alert on their rate needs the series before the first failure.
    for (const target of ["kernel", "conflist"]) this.failedRepairs.inc({ target }, 0);
    collectDefaultMetrics({ register: this.registry, prefix: "markroute_agent_" });
  }

  /** One line of the CNI log, as src/main.ts writes it; other lines are ignored. */
  countLogLine(line: string): void {
    let entry: { command?: unknown; outcome?: unknown; durationMs?: unknown };
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    if (typeof entry.outcome !== "string" || typeof entry.durationMs !== "number") return;
    const labels = { command: typeof entry.command === "string" ? entry.command : "unknown", outcome: entry.outcome };
    this.cniOperations.inc(labels);
    this.cniSeconds.observe(labels, entry.durationMs / 1000);
  }
}

/** The most one `LogTail.read()` takes in; a log that grew more since is read over several calls. */
const MAX_READ = 8 << 20;

/**
 * Follows a log file from its end at start: each `read()` hands over the whole lines appended since.
 * A file rotated (another inode) or truncated is read from its start; one not there yet is waited for.
 */
export class LogTail {
  private offset: number | undefined;
  private inode: number | undefined;
  private partial = "";

  constructor(private readonly path: string) {
    const st = this.stat();
    if (st) [this.offset, this.inode] = [st.size, st.ino];
  }

  private stat() {
    try {
      return statSync(this.path);
    } catch {
      return undefined;
    }
  }

  read(): string[] {
    const st = this.stat();
    if (!st) return [];
    if (st.ino !== this.inode || st.size < (this.offset ?? 0)) [this.offset, this.inode, this.partial] = [0, st.ino, ""];
    if (st.size === this.offset) return [];
    let fd: number;
    try {
      fd = openSync(this.path, "r");
    } catch {
      return [];
    }
    try {
      const size = fstatSync(fd).size;
      // a log that grew a lot since is read over several calls
      const buf = Buffer.alloc(Math.min(Math.max(0, size - this.offset!), MAX_READ));
      const n = buf.length ? readSync(fd, buf, 0, buf.length, this.offset!) : 0;
      this.offset! += n;
      const lines = (this.partial + buf.subarray(0, n).toString("utf8")).split("\n");
      this.partial = lines.pop()!;
      return lines.filter(Boolean);
    } finally {
      closeSync(fd);
    }
  }
}

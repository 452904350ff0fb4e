// The agent's pieces that need no node: when passes run (bursts of events make one pass, never
// overlapping), --listen's forms, the CNI log read as it grows and counted into the metrics.
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parseListen } from "../../src/agent/http.ts";
import { AgentMetrics, LogTail } from "../../src/agent/metrics.ts";
import { repairKind, unobservable } from "../../src/agent/passes.ts";
import { agentPaths, currentEntry } from "../../src/agent/paths.ts";
import { countPods, stateExists } from "../../src/state/records.ts";
import { StateStore, type AttachmentRecord } from "../../src/state/store.ts";
import { MAX_DELAY_MS, PassScheduler, QUIET_MS, RepairBrake, type Trigger } from "../../src/agent/schedule.ts";
import { RESTART_BACKOFF, monitor, nextRestartMs } from "../../src/agent/watch.ts";

describe("agent: pass scheduling", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  /** A scheduler whose passes take `passMs` of fake time, and the triggers they ran with. */
  function scheduler(passMs = 0) {
    const runs: Trigger[] = [];
    let running = 0;
    let overlapped = false;
    const s = new PassScheduler(async (t) => {
      overlapped ||= running > 0;
      running++;
      runs.push(t);
      await new Promise((r) => setTimeout(r, passMs));
      running--;
    }, () => Date.now());
    return { s, runs, overlapped: () => overlapped };
  }

  it("a burst of events makes one pass, once they have been quiet", async () => {
    const { s, runs } = scheduler();
    for (let i = 0; i < 5; i++) {
      s.request("event");
      await vi.advanceTimersByTimeAsync(50);
    }
    expect(runs).toEqual([]);
    await vi.advanceTimersByTimeAsync(QUIET_MS);
    expect(runs).toEqual(["event"]);
  });

  it("events that never stop still get a pass within MAX_DELAY_MS of the first", async () => {
    const { s, runs } = scheduler();
    for (let t = 0; t < MAX_DELAY_MS; t += 50) {
      s.request("event");
      await vi.advanceTimersByTimeAsync(50);
    }
    expect(runs).toEqual(["event"]);
  });

  it("passes never overlap: a request during a pass gets one more pass after it", async () => {
    const { s, runs, overlapped } = scheduler(300);
    s.request("start", 0);
    await vi.advanceTimersByTimeAsync(10);
    s.request("event");
    s.request("event");
    await vi.advanceTimersByTimeAsync(1000);
    expect(runs).toEqual(["start", "event"]);
    expect(overlapped()).toBe(false);
  });

  it("a poll (what has no events) never narrows a full read-back already asked for; a full one widens a poll", async () => {
    const { s, runs } = scheduler();
    s.request("event");
    s.request("poll", 0);
    await vi.advanceTimersByTimeAsync(QUIET_MS);
    s.request("poll", 0);
    s.request("resync", 0);
    await vi.advanceTimersByTimeAsync(QUIET_MS);
    expect(runs).toEqual(["event", "resync"]);
  });

  it("stalledMs: how long passes have been wanted without one ending (a pass that hangs), 0 once one ends; idle time does not count", async () => {
    let finish = () => {};
    const s = new PassScheduler(() => new Promise<void>((r) => (finish = r)), () => Date.now());
    await vi.advanceTimersByTimeAsync(600_000); // idle: nothing wanted
    expect(s.stalledMs()).toBe(0);
    s.request("event");
    await vi.advanceTimersByTimeAsync(90_000); // the pass started after QUIET_MS and hangs
    expect(s.stalledMs()).toBe(90_000);
    s.request("event"); // wanted again meanwhile: still measured from the first request
    await vi.advanceTimersByTimeAsync(10_000);
    expect(s.stalledMs()).toBe(100_000);
    finish(); // it ends; the one wanted meanwhile starts at once and hangs in turn
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.stalledMs()).toBe(1000);
    finish();
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.stalledMs()).toBe(0);
  });

  it("stopped: no more passes", async () => {
    const { s, runs } = scheduler();
    s.request("event");
    s.stop();
    s.request("event");
    await vi.advanceTimersByTimeAsync(1000);
    expect(runs).toEqual([]);
  });
});

describe("agent: what it repairs and polls", () => {
  const chain = { kind: "markChain" as const, family: 4 as const, chain: "C", network: "n", exempt: [], marks: [] };
  const rule = { kind: "rule" as const, family: 4 as const, priority: 1, mark: 16, mask: 16, table: 100 };
  const rpFilter = { kind: "rpFilter" as const, dev: "eth0", value: 2 as const };
  const table = { kind: "nftTable" as const, table: "markroute-1", network: "n", exempt4: [], exempt6: [], marks: [] };
  const element = { kind: "nftElement" as const, family: 4 as const, table: "markroute-1", set: "", address: "10.0.0.2", iface: "v", comment: "" };

  it("names a repair by its object's kind", () => {
    expect(repairKind({ key: "rule/4/32765/16/16/100", problems: [] })).toBe("rule");
    expect(repairKind({ key: "nftElement/markroute-1/pods4/10.0.0.2,veth1", problems: [] })).toBe("nftElement");
  });

  it("polls only what the kernel announces no change of: ipsets, their elements, iptables-legacy chains", () => {
    const polled = unobservable(true);
    expect(polled({ kind: "ipset", family: 4, name: "s" })).toBe(true);
    expect(polled({ kind: "element", family: 4, set: "s", address: "10.0.0.2", iface: "v", comment: "" })).toBe(true);
    expect(polled({ ...chain, variant: "legacy" })).toBe(true);
    expect(polled({ ...chain, variant: "nft" })).toBe(false);
    for (const o of [table, element, rule, rpFilter]) expect(polled(o), o.kind).toBe(false);
  });

  it("without `nft monitor` (nft not installed, or the monitor died): iptables-nft chains and nftables' objects too, whose events come only through it", () => {
    const polled = unobservable(false);
    expect(polled({ ...chain, variant: "nft" })).toBe(true);
    expect(polled(table)).toBe(true);
    expect(polled(element)).toBe(true);
    expect(polled(rule)).toBe(false);
    expect(polled(rpFilter)).toBe(false);
  });
});

describe("agent: --listen", () => {
  it.each([
    ["127.0.0.1:9743", { host: "127.0.0.1", port: 9743 }],
    ["[::1]:80", { host: "::1", port: 80 }],
    // the DaemonSet's [$(NODE_IP)]:9743, on an IPv6-primary node and on an IPv4 one
    ["[fd00:10:224::5]:9743", { host: "fd00:10:224::5", port: 9743 }],
    ["[10.224.0.5]:9743", { host: "10.224.0.5", port: 9743 }],
    [":9743", { port: 9743 }],
    ["0.0.0.0:1", { host: "0.0.0.0", port: 1 }],
  ])("%s", (listen, expected) => expect(parseListen(listen)).toEqual(expected));

  it.each(["9743", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:80", "fd00:10:224::5:9743", "[]:80", "[node]:80", "[10.0.0.1:80", "a:b"])("%s is refused", (listen) =>
    expect(() => parseListen(listen)).toThrow(/--listen/));
});

describe("agent: the CNI log", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "mr-agent-unit-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("is read from its end at start, whole lines only; a truncated or rotated file from its start; a missing one waited for", () => {
    const path = join(dir, "markroute.log");
    const missing = new LogTail(path);
    expect(missing.read()).toEqual([]);
    writeFileSync(path, '{"old":1}\n');
    expect(missing.read()).toEqual(['{"old":1}']); // it appeared after the start: all of it is new
    const tail = new LogTail(path);
    expect(tail.read()).toEqual([]);
    appendFileSync(path, '{"a":1}\n{"b":');
    expect(tail.read()).toEqual(['{"a":1}']);
    appendFileSync(path, '2}\n');
    expect(tail.read()).toEqual(['{"b":2}']);
    writeFileSync(path, '{"c":3}\n');
    expect(tail.read()).toEqual(['{"c":3}']);
    renameSync(path, `${path}.1`); // as logrotate does
    writeFileSync(path, '{"d":4}\n{"e":5}\n');
    expect(tail.read()).toEqual(['{"d":4}', '{"e":5}']);
  });

  it("counts each operation's line by command and outcome with its duration; other lines are ignored", async () => {
    const m = new AgentMetrics(() => ({ marked: 7, unmarked: 2 }));
    m.countLogLine(JSON.stringify({ level: 30, command: "ADD", outcome: "ok", durationMs: 12.5, msg: "ADD ok" }));
    m.countLogLine(JSON.stringify({ level: 50, command: "DEL", outcome: "error", durationMs: 3, code: 11 }));
    m.countLogLine(JSON.stringify({ level: 50, outcome: "error", durationMs: 1 })); // failed before CNI_COMMAND was read
    m.countLogLine("markroute: logging to stderr: ...");
    m.countLogLine(JSON.stringify({ level: 30, msg: "something else" }));
    const text = await m.registry.metrics();
    expect(text).toContain('markroute_cni_operations_total{command="ADD",outcome="ok"} 1');
    expect(text).toContain('markroute_cni_operations_total{command="DEL",outcome="error"} 1');
    expect(text).toContain('markroute_cni_operations_total{command="unknown",outcome="error"} 1');
    expect(text).toContain('markroute_cni_operation_duration_seconds_sum{command="ADD",outcome="ok"} 0.0125');
    expect(text).toMatch(/^# TYPE markroute_attachments gauge$/m);
    expect(text).toMatch(/^markroute_attachments 7$/m);
    expect(text).toMatch(/^markroute_pods_unmarked 2$/m);
    expect(text).toMatch(/^# TYPE markroute_repairs_total counter$/m);
  });
});

describe("agent: the pods it counts, read from the records without the lock", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "mr-agent-unit-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const record = (id: string, objects: AttachmentRecord["objects"], by: "annotation" | "excluded" | "none"): AttachmentRecord => ({
    id, version: 1, createdAt: new Date(0).toISOString(), objects,
    attachment: { network: "pods", containerId: id, ifName: "eth0" } as AttachmentRecord["attachment"],
    hostMatch: { iface: `veth-${id}`, addresses: [] } as unknown as AttachmentRecord["hostMatch"],
    selection: { by, reason: "test", ...(by === "annotation" ? { mark: "vpn" } : {}) },
  });

  it("marked pods (records holding kernel objects) apart from pods passed through; a malformed record is neither; no state directory: none", () => {
    const stateDir = join(dir, "state");
    expect(stateExists(stateDir)).toBe(false);
    expect(countPods(stateDir)).toEqual({ marked: 0, unmarked: 0 });
    const store = new StateStore(stateDir);
    store.ensure(true);
    expect(stateExists(stateDir)).toBe(true);
    store.writeRecord(record("a", [{ kind: "rpFilter", dev: "eth0", value: 2 }], "annotation"));
    store.writeRecord(record("b", [], "excluded"));
    store.writeRecord(record("c", [], "none"));
    writeFileSync(join(stateDir, "attachments", "d.json"), JSON.stringify({ id: "another" }));
    writeFileSync(join(stateDir, "attachments", "e.json.tmp"), "{");
    expect(countPods(stateDir)).toEqual({ marked: 1, unmarked: 2 });
    expect(existsSync(join(stateDir, "attachments", "e.json.tmp")), "a writer's temporary file is left to the lock's holder").toBe(true);
  });
});

describe("agent: the state directory and log it follows are the CNI binary's", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "mr-agent-unit-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const entry = { type: "markroute", stateDir: "/run/mr-state", logFile: "/run/mr.log" };

  it("not given: the entry's; given: what is given, with a warning where it differs from the entry's", () => {
    expect(agentPaths({}, entry)).toEqual({ stateDir: "/run/mr-state", logFile: "/run/mr.log", warnings: [] });
    expect(agentPaths({ stateDir: "/run/mr-state" }, entry)).toEqual({ stateDir: "/run/mr-state", logFile: "/run/mr.log", warnings: [] });
    const differs = agentPaths({ stateDir: "/var/lib/cni/markroute", logFile: "/var/log/markroute.log" }, entry);
    expect(differs).toMatchObject({ stateDir: "/var/lib/cni/markroute", logFile: "/var/log/markroute.log" });
    expect(differs.warnings).toEqual([
      "--state-dir /var/lib/cni/markroute differs from markroute's entry's stateDir /run/mr-state: the CNI operations use the entry's, the agent follows /var/lib/cni/markroute",
      "--log-file /var/log/markroute.log differs from markroute's entry's logFile /run/mr.log: the CNI operations use the entry's, the agent follows /var/log/markroute.log",
    ]);
  });

  it("an entry naming neither, or no entry at all: the CNI binary's defaults, and nothing to warn about", () => {
    const defaults = { stateDir: "/var/lib/cni/markroute", logFile: "/var/log/markroute.log", warnings: [] };
    expect(agentPaths({}, { type: "markroute" })).toEqual(defaults);
    expect(agentPaths({}, undefined)).toEqual(defaults);
    expect(agentPaths({ stateDir: "/x" }, undefined)).toEqual({ ...defaults, stateDir: "/x" });
    expect(agentPaths({}, { type: "markroute", logFile: "stderr" }).logFile).toBe("stderr");
  });

  it("the entry: the conflist's markroute entry (what the CNI binary runs with), else --entry-file's, else none", () => {
    const confDir = join(dir, "net.d");
    const entryFile = join(dir, "entry.json");
    mkdirSync(confDir);
    writeFileSync(entryFile, JSON.stringify({ ...entry, stateDir: "/from-file" }));
    expect(currentEntry(confDir, undefined)).toBeUndefined();
    expect(currentEntry(confDir, entryFile)).toMatchObject({ stateDir: "/from-file" });
    writeFileSync(join(confDir, "10-pods.conflist"), JSON.stringify({ cniVersion: "1.0.0", name: "pods", plugins: [{ type: "ptp" }, entry] }));
    expect(currentEntry(confDir, entryFile)).toMatchObject({ stateDir: "/run/mr-state" });
    expect(currentEntry(confDir, undefined)).toMatchObject({ stateDir: "/run/mr-state" });
    expect(currentEntry(confDir, join(dir, "missing.json"))).toMatchObject({ stateDir: "/run/mr-state" });
  });
});

describe("agent: a conflist someone keeps rewriting", () => {
  it("over `limit` put-backs within the window: the agent pauses for pauseMs, then puts it back again; put-backs spread out never pause it", () => {
    let now = 0;
    const brake = new RepairBrake(5, 60_000, 300_000, () => now);
    for (let i = 0; i < 10; i++, now += 20_000) expect(brake.record(), `spread out, put-back ${i}`).toBe(false); // 3 a minute
    now += 60_000;
    const burst = Array.from({ length: 6 }, () => ((now += 1000), brake.record()));
    expect(burst).toEqual([false, false, false, false, false, true]);
    expect(brake.pausedFor()).toBe(300_000);
    now += 299_000;
    expect(brake.pausedFor()).toBe(1000);
    now += 1000;
    expect(brake.pausedFor()).toBe(0);
    expect(brake.record(), "the count starts again after the pause").toBe(false);
  });
});

describe("agent: a monitor that keeps dying", () => {
  it("is restarted after 1 s, then twice as long each time up to 30 s; after a while up, from 1 s again", () => {
    const delays: number[] = [];
    let last: number | undefined;
    for (let i = 0; i < 7; i++) delays.push((last = nextRestartMs(RESTART_BACKOFF, last, 50)));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    expect(nextRestartMs(RESTART_BACKOFF, 30_000, RESTART_BACKOFF.stableMs)).toBe(1000);
  });

  it("each restart says how it ended, with its last line on stderr, and when it starts again; its death wakes a pass", async () => {
    const problems: string[] = [];
    let events = 0;
    const script = 'echo "first line" >&2; echo "nft: netlink: Error: cannot open socket" >&2; exit 3';
    const source = monitor(["sh", "-c", script], () => events++, (m) => problems.push(m), { firstMs: 20, maxMs: 80, stableMs: 60_000 });
    await new Promise((r) => setTimeout(r, 600));
    source.stop();
    const restarts = problems.map((m) => /restarting it in ([\d.]+) s$/.exec(m)?.[1]);
    expect(restarts.slice(0, 4)).toEqual(["0.02", "0.04", "0.08", "0.08"]);
    expect(problems[0]).toBe(`sh -c ${script} exited 3: nft: netlink: Error: cannot open socket; restarting it in 0.02 s`);
    expect(events).toBe(problems.length);
  });
});

// The runtime that runs markroute (issue 13): today's executable, dist/markroute (a Node 20 single
// executable with a startup snapshot, scripts/build.mjs), against the same src/ compiled by Bun,
// dist/markroute-bun (scripts/build-bun.mjs: `bun build --compile --minify --bytecode
// --format=cjs`), both measured in the same run until one of them ships:
//   - latency: VERSION, and ADD / DEL per backend at the 0-other-pods sites, each Bun command in the
//     same group as the Node one it is compared with (run.mjs), so both run back to back under the
//     same momentary load; the Go firewall plugin of the same rounds is the reference;
//   - memory: peak RSS of one ADD (lib/rss.mjs) and PSS per in-flight ADD with many ADDs at once
//     (pssWave below);
//   - the tables and the figures in build/bench-results.json (results.runtimes).
// dist/markroute-bun is built here when it is missing and the devDependency `bun` is installed
// (offline, about a second); without it the Bun columns are skipped with a note.
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { CNI_VERSION, REPO, cniEnv, invoke, markrouteConf } from "./cni.mjs";
import { children, cleanEnv, inNs, run, runIn, sleep } from "./proc.mjs";
import { summarize } from "./stats.mjs";

export const DIST_MARKROUTE_BUN = join(REPO, "dist/markroute-bun");
const BUILD_BUN = join(REPO, "scripts/build-bun.mjs");

export const RUNTIME_LABELS = {
  node: "Node SEA + snapshot (dist/markroute)",
  bun: "Bun compiled, bytecode (dist/markroute-bun)",
};

/** The targets for the executable that ships (information here until the switch is made). */
export const RUNTIME_TARGETS = { addOverFirewall: 1.2, delOverFirewall: 1.0, pssPerInFlightMiB: 8 };

const newestMtime = (dir) => readdirSync(dir, { withFileTypes: true, recursive: true })
  .filter((e) => e.isFile()).map((e) => statSync(join(e.parentPath ?? e.path, e.name)).mtimeMs)
  .reduce((a, b) => Math.max(a, b), 0);

/**
 * dist/markroute-bun, built if missing, copied into `dir` (as `markroute`, the name a runtime
 * calls it by) and checked to answer VERSION. Returns { bin, meta, warnings } or { skipped }.
 */
export function prepareBun(dir, log) {
  const warnings = [];
  let built = false;
  if (!existsSync(DIST_MARKROUTE_BUN)) {
    if (!existsSync(join(REPO, "node_modules/bun/package.json"))) {
      return { skipped: "dist/markroute-bun is missing and the devDependency bun is not installed (npm ci)" };
    }
    log("runtimes: dist/markroute-bun is missing: node scripts/build-bun.mjs");
    const r = run([process.execPath, BUILD_BUN], { check: false, env: { HOME: process.env.HOME ?? "/root" }, timeoutMs: 300_000 });
    if (r.status !== 0 || !existsSync(DIST_MARKROUTE_BUN)) {
      return { skipped: `scripts/build-bun.mjs failed: ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" / ")}` };
    }
    built = true;
  } else if (newestMtime(join(REPO, "src")) > statSync(DIST_MARKROUTE_BUN).mtimeMs) {
    warnings.push("src/ is newer than dist/markroute-bun: run `node scripts/build-bun.mjs` to measure the current code");
  }
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, "markroute");
  copyFileSync(DIST_MARKROUTE_BUN, bin);
  chmodSync(bin, 0o755);
  const v = run([bin], { input: JSON.stringify({ cniVersion: CNI_VERSION }), env: { CNI_COMMAND: "VERSION" }, check: false });
  if (v.status !== 0) return { skipped: `dist/markroute-bun does not answer VERSION: exit ${v.status ?? v.signal}: ${v.stderr.trim().slice(0, 300)}` };
  const st = statSync(DIST_MARKROUTE_BUN);
  let bunVersion;
  try { bunVersion = JSON.parse(readFileSync(join(REPO, "node_modules/bun/package.json"), "utf8")).version; } catch { /* not installed */ }
  return {
    bin, warnings,
    meta: {
      path: bin, size: st.size, mtime: st.mtime.toISOString(), builtByBench: built, bunVersion,
      sha256: createHash("sha256").update(readFileSync(bin)).digest("hex"),
    },
  };
}

/** The commands measured for one executable, each returning its wall time in ms (as lib/latency.mjs). */
export function runtimeCommands(bin) {
  return {
    version: (site) => runIn(site.node, [bin], { input: JSON.stringify({ cniVersion: CNI_VERSION }), env: { CNI_COMMAND: "VERSION" } }).ms,
    add: (site, pod) => invoke(site.node, bin, "ADD", pod, markrouteConf(site, pod.prevResult)).ms,
    del: (site, pod) => invoke(site.node, bin, "DEL", pod, markrouteConf(site, pod.prevResult)).ms,
  };
}

/** Pss and Rss (KiB) of `pid` if it is `bin` by now (`ip netns exec` execs it in place), else undefined. */
function memoryOf(pid, bin) {
  try {
    if (readlinkSync(`/proc/${pid}/exe`) !== bin) return undefined;
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN);
    return { pss: kib("Pss"), rss: kib("Rss") };
  } catch {
    return undefined; // exited between the two reads, or not yet exec'd
  }
}

/**
 * `command` (ADD or DEL) for every pod of `pods` at once at `site` with executable `bin`, sampling
 * every in-flight process's PSS (/proc/<pid>/smaps_rollup: shared pages divided among the processes
 * that map them, so N copies of one binary are not counted N times) every `everyMs` while they run.
 * Returns the wave's wall time, failures, the sample with the largest total PSS (and that total over
 * the number then in flight: PSS per in-flight operation), the most in flight at any sample, and
 * each process's own largest PSS.
 */
export async function pssWave(site, bin, command, pods, { everyMs = 10 } = {}) {
  const began = performance.now();
  const procs = pods.map((pod) => {
    const argv = inNs(site.node, [bin]);
    const child = spawn(argv[0], argv.slice(1), { env: cleanEnv(cniEnv(command, pod)), stdio: ["pipe", "ignore", "pipe"] });
    children.add(child);
    const p = { pid: child.pid, exited: false, stderr: "", maxPss: 0 };
    child.stderr.setEncoding("utf8").on("data", (d) => { if (p.stderr.length < 2000) p.stderr += d; });
    p.done = new Promise((resolve) => {
      child.on("error", (e) => { p.exited = true; children.delete(child); resolve(`${pod.name}: ${e.message}`); });
      child.on("close", (status, signal) => {
        p.exited = true;
        children.delete(child);
        resolve(status === 0 ? undefined : `${command} ${pod.name}: exit ${status ?? signal}: ${p.stderr.trim().slice(0, 300)}`);
      });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(JSON.stringify(markrouteConf(site, pod.prevResult)));
    return p;
  });
  let finished = false;
  const all = Promise.all(procs.map((p) => p.done)).then((r) => { finished = true; return r; });
  const samples = [];
  while (!finished) {
    let n = 0; let pss = 0; let rss = 0;
    for (const p of procs) {
      if (p.exited) continue;
      const m = memoryOf(p.pid, bin);
      if (!m) continue;
      n++; pss += m.pss; rss += m.rss;
      p.maxPss = Math.max(p.maxPss, m.pss);
    }
    samples.push({ ms: performance.now() - began, inFlight: n, pssKiB: pss, rssKiB: rss });
    await sleep(everyMs);
  }
  const failures = (await all).filter(Boolean);
  const wallMs = performance.now() - began;
  // The sample with the largest total PSS: the node's worst moment. (The one with the most in flight
  // comes too early: all have started, few have loaded everything yet; the first holder is done soon after.)
  const peak = samples.reduce((a, s) => (s.pssKiB > a.pssKiB ? s : a), { inFlight: 0, pssKiB: 0, rssKiB: 0, ms: 0 });
  return {
    command, pods: pods.length, wallMs, failures,
    peak: { ...peak, pssPerInFlightKiB: peak.inFlight ? peak.pssKiB / peak.inFlight : NaN },
    maxInFlight: Math.max(0, ...samples.map((s) => s.inFlight)),
    perProcessMaxPssKiB: summarize(procs.map((p) => p.maxPss).filter((x) => x > 0)),
    samples: samples.length,
  };
}

/**
 * PSS waves at `site`: for each runtime in `order`, `n` ADDs at once then their DELs at once
 * (new pods each time). `holdings(site)` before and after each pair must match.
 */
export async function pssWaves(site, runtimes, order, n, newPod, holdings) {
  const out = Object.fromEntries(Object.keys(runtimes).map((k) => [k, []]));
  for (const k of order) {
    const pods = Array.from({ length: n }, () => newPod(`pss${k}`));
    const before = holdings(site);
    const add = await pssWave(site, runtimes[k], "ADD", pods);
    const del = await pssWave(site, runtimes[k], "DEL", pods);
    const after = holdings(site);
    const off = JSON.stringify(before) === JSON.stringify(after) ? [] : [`holdings before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`];
    out[k].push({ add, del, wrongHoldings: off });
  }
  return out;
}

/** The summary of one runtime's PSS waves (ADD): per in-flight ADD at peak, the median over waves. */
export function pssSummary(waves) {
  if (!waves?.length) return undefined;
  const per = waves.map((w) => w.add.peak.pssPerInFlightKiB);
  return {
    waves: waves.length, pods: waves[0].add.pods,
    pssPerInFlightKiB: summarize(per),
    inFlightAtPeak: summarize(waves.map((w) => w.add.peak.inFlight)),
    maxInFlight: summarize(waves.map((w) => w.add.maxInFlight)),
    totalPssAtPeakKiB: summarize(waves.map((w) => w.add.peak.pssKiB)),
    perProcessMaxPssKiB: summarize(waves.map((w) => w.add.perProcessMaxPssKiB.median)),
    delPssPerInFlightKiB: summarize(waves.map((w) => w.del.peak.pssPerInFlightKiB)),
    addWaveMs: summarize(waves.map((w) => w.add.wallMs)),
    delWaveMs: summarize(waves.map((w) => w.del.wallMs)),
    failures: waves.flatMap((w) => [...w.add.failures, ...w.del.failures]),
    wrongHoldings: waves.flatMap((w) => w.wrongHoldings),
  };
}

const f = (x, d = 1) => (x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(d));
const pad = (s, n, right) => (right ? String(s).padStart(n) : String(s).padEnd(n));

/**
 * The printed comparison. `R` is results.runtimes: { node, bun?, bunSkipped?, firewall }, each
 * runtime with { version, add: {backend: summary}, del, addInProcess, delInProcess, rssKiB, pss }.
 */
export function runtimeTable(R, backends) {
  const rt = ["node", ...(R.bun ? ["bun"] : [])];
  const fw = R.firewall;
  const head = ["", ...rt.map((k) => (k === "node" ? "Node" : "Bun")), ...(R.bun ? ["Bun/Node"] : []), "firewall",
    ...rt.map((k) => `${k === "node" ? "Node" : "Bun"}/fw`), "target"];
  const W = [46, 8, 8, 8, 8, 8, 8, 10];
  const line = (cells) => "  " + cells.map((c, i) => pad(c, i === 0 ? W[0] : 9, i > 0)).join(" ");
  const rows = [];
  const row = (label, get, fwValue, digits = 1, target = "") => {
    const v = rt.map((k) => get(R[k]));
    rows.push(line([label, ...v.map((x) => f(x, digits)), ...(R.bun ? [f(v[1] / v[0], 3)] : []), f(fwValue, digits),
      ...v.map((x) => (fwValue === undefined ? "" : f(x / fwValue, 3))), target]));
  };
  row("VERSION (start-up floor), median ms", (r) => r.version?.median);
  row("  min", (r) => r.version?.min);
  for (const b of backends) {
    row(`ADD, ${b}, median ms`, (r) => r.add[b]?.median, fw.add?.median, 1, `<= ${RUNTIME_TARGETS.addOverFirewall} fw`);
    row("  p95", (r) => r.add[b]?.p95, fw.add?.p95);
    row("  min", (r) => r.add[b]?.min, fw.add?.min);
    row("  in-process (log durationMs), median", (r) => r.addInProcess[b]?.median);
  }
  for (const b of backends) {
    row(`DEL, ${b}, median ms`, (r) => r.del[b]?.median, fw.del?.median, 1, `<= ${RUNTIME_TARGETS.delOverFirewall} fw`);
    row("  p95", (r) => r.del[b]?.p95, fw.del?.p95);
    row("  min", (r) => r.del[b]?.min, fw.del?.min);
    row("  in-process (log durationMs), median", (r) => r.delInProcess[b]?.median);
  }
  for (const b of backends) row(`peak RSS of one ADD, ${b}, max MiB`, (r) => (r.rssKiB?.[b]?.max ?? NaN) / 1024);
  const P = R.node.pss;
  if (P) {
    const mib = (x) => x / 1024;
    row(`PSS per in-flight ADD, ${P.pods} at once, MiB`, (r) => mib(r.pss?.pssPerInFlightKiB.median ?? NaN), undefined, 2,
      `<= ${RUNTIME_TARGETS.pssPerInFlightMiB} MiB`);
    row("  processes in flight at that sample", (r) => r.pss?.inFlightAtPeak.median, undefined, 0);
    row("  total PSS at that sample, MiB", (r) => mib(r.pss?.totalPssAtPeakKiB.median ?? NaN), undefined, 0);
    row("  each ADD's own largest PSS (median), MiB", (r) => mib(r.pss?.perProcessMaxPssKiB.median ?? NaN), undefined, 2);
    row("  PSS per in-flight DEL (its DEL wave), MiB", (r) => mib(r.pss?.delPssPerInFlightKiB.median ?? NaN), undefined, 2);
    row(`  ADD wave of ${P.pods} (wall ms, median)`, (r) => r.pss?.addWaveMs.median, undefined, 0);
    row(`  DEL wave of ${P.pods} (wall ms, median)`, (r) => r.pss?.delWaveMs.median, undefined, 0);
    row("  failed calls / holdings off", (r) => (r.pss ? r.pss.failures.length + r.pss.wrongHoldings.length : NaN), undefined, 0, "0");
  }
  const out = [
    `Runtime (issue 13): today's executable vs Bun's, the same src/, the same rounds (0 other pods; firewall: Go plugin, iptables)`,
    `  Node: ${RUNTIME_LABELS.node}` + (R.node.meta ? `, ${(R.node.meta.size / 1048576).toFixed(1)} MiB` : ""),
    R.bun ? `  Bun:  ${RUNTIME_LABELS.bun}, bun ${R.bun.meta.bunVersion ?? "?"}, ${(R.bun.meta.size / 1048576).toFixed(1)} MiB${R.bun.meta.builtByBench ? " (built by this run)" : ""}`
      : `  Bun:  not measured: ${R.bunSkipped}`,
    `  targets: the issue's, for the executable that ships (information until the switch)` +
      (P ? `; PSS: /proc/<pid>/smaps_rollup of every in-flight markroute ADD, sampled every 10 ms; at the sample with the largest total, total / number in flight; ` +
        `${P.waves} wave(s) per runtime, ${R.pssOrder.join(", ")}` : ""),
    line(head),
    ...rows,
  ];
  return out.join("\n");
}

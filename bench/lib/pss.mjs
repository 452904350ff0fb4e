// PSS per in-flight markroute ADD with many ADDs at once (issue 13: a node that reboots starts all
// its pods at once): `n` ADDs of made-up pods started together at one site, then their `n` DELs,
// while /proc/<pid>/smaps_rollup of every in-flight markroute is sampled (pssWave); the summary of
// the waves (pssSummary) and the printed section (pssTable). Peak RSS of a single ADD is lib/rss.mjs.
import { readFileSync, readlinkSync } from "node:fs";
import { spawn } from "node:child_process";
import { cniEnv, markrouteConf } from "./cni.mjs";
import { children, cleanEnv, inNs, sleep } from "./proc.mjs";
import { summarize } from "./stats.mjs";

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
 * `waves` PSS waves of executable `bin` at `site`: each `n` ADDs at once, then their DELs at once
 * (new pods each time). `holdings(site)` before and after each pair must match.
 */
export async function pssWaves(site, bin, waves, n, newPod, holdings) {
  const out = [];
  for (let i = 0; i < waves; i++) {
    const pods = Array.from({ length: n }, () => newPod("pss"));
    const before = holdings(site);
    const add = await pssWave(site, bin, "ADD", pods);
    const del = await pssWave(site, bin, "DEL", pods);
    const after = holdings(site);
    const off = JSON.stringify(before) === JSON.stringify(after) ? [] : [`holdings before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`];
    out.push({ add, del, wrongHoldings: off });
  }
  return out;
}

/** The summary of the PSS waves (ADD): per in-flight ADD at peak, the median over waves. */
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
const mib = (kib) => f(kib / 1024, 2);

/** The printed section: `S` is pssSummary's, `target` the PSS per in-flight ADD in MiB. */
export function pssTable(S, site, target) {
  const row = (label, s, fmt) => `  ${label.padEnd(46)} ${fmt(s.median).padStart(9)} ${fmt(s.min).padStart(9)} ${fmt(s.max).padStart(9)}`;
  return [
    `PSS per in-flight ADD: ${S.pods} markroute ADDs at once at ${site}, then their ${S.pods} DELs (${S.waves} wave(s))`,
    `  /proc/<pid>/smaps_rollup of every in-flight markroute, sampled every 10 ms; at the sample with the`,
    `  largest total PSS, that total over the number then in flight (issue 13 target: <= ${target} MiB)`,
    `  ${"".padEnd(46)} ${"median".padStart(9)} ${"min".padStart(9)} ${"max".padStart(9)}`,
    row("PSS per in-flight ADD, MiB", S.pssPerInFlightKiB, mib),
    row("  processes in flight at that sample", S.inFlightAtPeak, (x) => f(x, 0)),
    row("  total PSS at that sample, MiB", S.totalPssAtPeakKiB, (x) => f(x / 1024, 0)),
    row("  each ADD's own largest PSS (median), MiB", S.perProcessMaxPssKiB, mib),
    row("  most in flight at any sample", S.maxInFlight, (x) => f(x, 0)),
    row("PSS per in-flight DEL (its DEL wave), MiB", S.delPssPerInFlightKiB, mib),
    row(`ADD wave of ${S.pods} (wall ms)`, S.addWaveMs, (x) => f(x, 0)),
    row(`DEL wave of ${S.pods} (wall ms)`, S.delWaveMs, (x) => f(x, 0)),
    `  failed calls: ${S.failures.length}, holdings off: ${S.wrongHoldings.length}`,
    ...S.failures.slice(0, 3).map((m) => `  FAILED: ${m}`),
    ...S.wrongHoldings.slice(0, 3).map((m) => `  FAILED: ${m}`),
  ].join("\n");
}

// `npm run bench`: markroute's start-up latency, its scaling with attached pods, the data-path
// cost of its marking, and its memory, all measured in one run inside network namespaces of
// its own (see lib/lab.mjs; the root namespace is never changed). Prints a table with the
// targets and writes every sample to build/bench-results.json.
//   node bench/run.mjs [--quick]     (--quick: few samples and 100 pods, to try the bench itself)
// Exit status: 0 all targets met, 1 a target missed, 2 the bench itself failed.
import { availableParallelism, loadavg, release } from "node:os";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { CNI_DIR, DIST_MARKROUTE, MARKROUTE, REPO, assertBinaries, stageMarkroute, invoke, invokeAsync, markrouteConf, ptpConf } from "./lib/cni.mjs";
import { udpPps } from "./lib/datapath.mjs";
import { Lab, sweepStale } from "./lib/lab.mjs";
import { commands, inProcess, rounds } from "./lib/latency.mjs";
import { check, checksTable, datapathTable, latencyTable, rssTable, writeJson } from "./lib/report.mjs";
import { PATH, pool, run, runIn } from "./lib/proc.mjs";
import { addPeakRssKiB, rssMethod } from "./lib/rss.mjs";
import { quantile, summarize } from "./lib/stats.mjs";

const QUICK = process.argv.includes("--quick");
const P = QUICK
  ? { rounds: 10, warmup: 2, pods: 100, coldCycles: 3, rssRuns: 3, iperfSeconds: 1, iperfRuns: 1 }
  : { rounds: 40, warmup: 5, pods: 1000, coldCycles: 8, rssRuns: 10, iperfSeconds: 3, iperfRuns: 5 };
const CONCURRENCY = Math.max(2, availableParallelism() * 2);
const RESULTS = join(REPO, "build/bench-results.json");
const SEED = 20;

const log = (msg) => process.stderr.write(`bench: ${msg}\n`);

/** Checks what the bench needs; returns warnings to print with the results. */
function preflight() {
  const warnings = [];
  if (process.getuid?.() !== 0) throw new Error("needs root (it creates network namespaces); run it as root");
  assertBinaries();
  for (const tool of ["ip", "iperf3", "ipset", "iptables", "ping", "sysctl"]) {
    if (!PATH.split(":").some((dir) => existsSync(join(dir, tool)))) throw new Error(`${tool} is not installed`);
  }
  // A stale executable would measure old code.
  const newest = (dir) => readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile()).map((e) => statSync(join(e.parentPath ?? e.path, e.name)).mtimeMs)
    .reduce((a, b) => Math.max(a, b), 0);
  if (newest(join(REPO, "src")) > statSync(DIST_MARKROUTE).mtimeMs) warnings.push("src/ is newer than dist/markroute: run `npm run build` to measure the current code");
  if (process.env.NODE_OPTIONS || process.env.NODE_EXTRA_CA_CERTS) {
    log("note: NODE_OPTIONS / NODE_EXTRA_CA_CERTS are set here; children are started without them");
  }
  const others = run(["ip", "netns", "list"]).stdout.split("\n").filter((l) => l && !l.startsWith("mr-bench-"));
  if (others.length) warnings.push(`${others.length} other network namespaces exist (another lab running?): figures may be noisier`);
  for (const w of warnings) log(`WARNING: ${w}`);
  return warnings;
}

/** Pods a and b of a site: real namespaces with veths made by the real ptp plugin and host-local IPAM. */
function makeRealPods(lab, site) {
  return ["a", "b"].map((name) => {
    const pod = lab.addPodNs(site, name);
    pod.containerId = `${site.tag}${name}`.padEnd(64, "0");
    pod.prevResult = JSON.parse(invoke(site.node, `${CNI_DIR}/ptp`, "ADD", pod, ptpConf(site.dir)).stdout);
    pod.ip = pod.prevResult.ips[0].address.split("/")[0];
    return pod;
  });
}

const datapathSummary = (runs) => ({
  pps: quantile(runs.map((r) => r.pps), 0.5),
  bestPps: Math.max(...runs.map((r) => r.pps)),
  sentPps: quantile(runs.map((r) => r.sentPps), 0.5),
  lossPercent: quantile(runs.map((r) => r.lossPercent), 0.5),
  viaFabric: runs.every((r) => r.viaFabric >= 0.9 * r.received),
  runs,
});

function podSetSize(site) {
  const set = runIn(site.node, ["ipset", "list", "-n"]).stdout.split("\n").find((n) => n.startsWith("mr4-"));
  const m = set && /Number of entries: (\d+)/.exec(runIn(site.node, ["ipset", "list", "-t", set]).stdout);
  return m ? Number(m[1]) : 0;
}

/**
 * Two identical sites (node + fabric + pods a and b made by ptp): "small" keeps markroute with
 * its 2 real pods, "big" gets P.pods more. Everything compared across them is measured
 * interleaved (latency rounds, alternating iperf3 runs), so a busy neighbour cannot bias a ratio.
 */
async function bench(lab, results) {
  const cmd = commands(lab);
  const S = (xs) => (xs && xs.length ? summarize(xs) : undefined);

  log("setting up namespaces: sites small and big (node, fabric, pods a and b via ptp), fwnode");
  lab.setup();
  const small = lab.addSite("small");
  const big = lab.addSite("big");
  const pods = new Map([[small, makeRealPods(lab, small)], [big, makeRealPods(lab, big)]]);
  const iperf = (site, expectFabric) => udpPps(site, ...pods.get(site), { seconds: P.iperfSeconds, expectFabric });

  log(`data path (a): no markroute, ${P.iperfRuns} x ${P.iperfSeconds} s`);
  const runsA = [];
  for (let i = 0; i < P.iperfRuns; i++) runsA.push(...(await iperf(small, false)));

  // First pod in / last pod out: installs and removes every shared object (information only).
  log(`first ADD / last DEL cycles (${P.coldCycles})`);
  const cold = await rounds({
    rounds: P.coldCycles, warmup: 1, seed: SEED,
    makeRound: () => {
      const pod = cmd.newPod("cold");
      return { before: [["add", () => cmd.mrAdd(small, pod)]], after: [["del", () => cmd.mrDel(small, pod)]] };
    },
  });

  log("markroute ADD for pods a and b of both sites");
  for (const [site, [a, b]] of pods) for (const pod of [a, b]) cmd.mrAdd(site, pod);

  log(`attaching ${P.pods} more pods to site big (${CONCURRENCY} concurrent ADDs)`);
  const t0 = performance.now();
  const extra = Array.from({ length: P.pods }, () => cmd.newPod("bulk"));
  await pool(extra.map((pod) => () => invokeAsync(big.node, MARKROUTE, "ADD", pod, markrouteConf(big.dir, pod.prevResult))), CONCURRENCY);
  const attachSeconds = (performance.now() - t0) / 1000;
  const sizes = { small: podSetSize(small), big: podSetSize(big) };
  if (sizes.small !== 2 || sizes.big !== P.pods + 2) throw new Error(`markroute's ipsets hold ${sizes.small} and ${sizes.big} pods, not 2 and ${P.pods + 2}`);
  // markroute reads its state index once and writes it twice per operation: its size matters.
  const indexBytes = (site) => statSync(join(markrouteConf(site.dir).stateDir, "index.json")).size;

  log(`latency: ${P.rounds} rounds after ${P.warmup} warm-up rounds`);
  const ids = { small: [], big: [] };
  const lat = await rounds({
    rounds: P.rounds, warmup: P.warmup, seed: SEED,
    makeRound: (i) => {
      const p = cmd.newPod("lat");
      const q = cmd.newPod("big");
      if (i >= P.warmup) { ids.small.push(p.containerId); ids.big.push(q.containerId); }
      return {
        before: [["nsTrue", () => cmd.nsTrue(small)], ["nodeE0", () => cmd.nodeE0(small)], ["mrVersion", () => cmd.mrVersion(small)],
          ["mrAdd", () => cmd.mrAdd(small, p)], ["fwAdd", () => cmd.fwAdd(p)], ["mrAddBig", () => cmd.mrAdd(big, q)]],
        after: [["mrDel", () => cmd.mrDel(small, p)], ["fwDel", () => cmd.fwDel(p)], ["mrDelBig", () => cmd.mrDel(big, q)]],
      };
    },
  });
  const inSmall = inProcess(small, ids.small);
  const inBig = inProcess(big, ids.big);

  log(`peak RSS (${P.rssRuns} ADDs per site)`);
  const rss = { small: [], big: [] };
  for (let i = 0; i < P.rssRuns; i++) {
    for (const site of [small, big]) {
      const pod = cmd.newPod("rss");
      rss[site.tag].push(await addPeakRssKiB(site, pod));
      cmd.mrDel(site, pod);
    }
  }

  log(`data path (c) 2 pods and (b) ${P.pods + 2} pods, alternating: ${P.iperfRuns} x ${P.iperfSeconds} s each`);
  const runsC = [];
  const runsB = [];
  for (let i = 0; i < P.iperfRuns; i++) {
    runsC.push(...(await iperf(small, true)));
    runsB.push(...(await iperf(big, true)));
  }

  Object.assign(results, {
    latency: {
      nsTrue: S(lat.nsTrue), nodeE0: S(lat.nodeE0), mrVersion: S(lat.mrVersion),
      mrAdd: S(lat.mrAdd), mrDel: S(lat.mrDel), fwAdd: S(lat.fwAdd), fwDel: S(lat.fwDel),
      mrAddInProcess: S(inSmall.ADD?.durationMs), mrDelInProcess: S(inSmall.DEL?.durationMs),
      mrAddLockWait: S(inSmall.ADD?.lockWaitMs),
    },
    firstPod: { add: S(cold.add), del: S(cold.del) },
    scale: {
      podsAttached: sizes.big, attachSeconds, attachConcurrency: CONCURRENCY,
      indexBytes: { small: indexBytes(small), big: indexBytes(big) },
      mrAdd: S(lat.mrAddBig), mrDel: S(lat.mrDelBig),
      mrAddInProcess: S(inBig.ADD?.durationMs), mrDelInProcess: S(inBig.DEL?.durationMs),
    },
    datapath: { a: datapathSummary(runsA), c: datapathSummary(runsC), b: datapathSummary(runsB) },
    rss: { method: rssMethod(), twoPodsKiB: S(rss.small), manyPodsKiB: S(rss.big) },
    samples: { latency: lat, firstPod: cold, rssKiB: rss },
  });
}

const kib = (bytes) => `${(bytes / 1024).toFixed(0)} KiB`;

function report(r) {
  const L = r.latency;
  const n = r.scale.podsAttached;
  const checks = [
    check("markroute ADD / node -e 0 (medians)", L.mrAdd.median / L.nodeE0.median, "<=", 1.6),
    // Minimums are the least disturbed runs: on a busy machine they show what medians would be on a quiet one.
    check("  same, minimums", L.mrAdd.min / L.nodeE0.min),
    check("markroute ADD / firewall ADD (medians)", L.mrAdd.median / L.fwAdd.median),
    check("markroute DEL / firewall DEL (medians)", L.mrDel.median / L.fwDel.median),
    check(`markroute ADD, ${n} pods / 2 pods (medians)`, r.scale.mrAdd.median / L.mrAdd.median, "<=", 1.2),
    check("  same, minimums", r.scale.mrAdd.min / L.mrAdd.min),
    check(`UDP pps (b) ${n} pods / (c) 2 pods`, r.datapath.b.pps / r.datapath.c.pps, ">=", 0.85),
    check("  same, best runs", r.datapath.b.bestPps / r.datapath.c.bestPps),
    check(`UDP pps (b) ${n} pods / (a) no markroute`, r.datapath.b.pps / r.datapath.a.pps),
    check("peak RSS of markroute ADD (max over runs)", Math.max(r.rss.twoPodsKiB.max, r.rss.manyPodsKiB.max) / 1024, "<=", 64, " MiB"),
  ];
  r.checks = checks;
  const m = r.meta;
  const out = [
    `markroute bench  ${m.date}  node ${m.node}  kernel ${m.kernel}  ${m.cpus} CPUs  load ${m.loadavg[0]} -> ${m.loadavgEnd[0]}${m.quick ? "  (--quick)" : ""}`,
    ...m.warnings.map((w) => `WARNING: ${w}`),
    `every command run as \`ip netns exec <node-ns> …\` with env PATH only (+ CNI_*); times in ms`,
    "",
    latencyTable(`Latency, 2 pods attached (${P.rounds} rounds, interleaved, after ${P.warmup} warm-up)`, [
      ["ip netns exec <ns> true", L.nsTrue],
      ["node -e 0", L.nodeE0],
      ["markroute VERSION (start-up floor, no kernel work)", L.mrVersion],
      ["markroute ADD", L.mrAdd],
      ["markroute DEL", L.mrDel],
      ["firewall ADD (Go, iptables backend)", L.fwAdd],
      ["firewall DEL", L.fwDel],
      ["  markroute ADD in-process (log durationMs)", L.mrAddInProcess],
      ["  markroute DEL in-process (log durationMs)", L.mrDelInProcess],
      ["  markroute ADD lock wait (log lockWaitMs)", L.mrAddLockWait],
    ]),
    "",
    latencyTable(`First pod in / last pod out (installs / removes shared objects; ${r.firstPod.add.n} cycles)`, [
      ["markroute ADD, first pod", r.firstPod.add],
      ["markroute DEL, last pod", r.firstPod.del],
    ]),
    "",
    latencyTable(`Scale: ${n} pods attached (in ${r.scale.attachSeconds.toFixed(1)} s, ${r.scale.attachConcurrency} concurrent ADDs; state index ${kib(r.scale.indexBytes.big)} vs ${kib(r.scale.indexBytes.small)}); same rounds as above`, [
      ["markroute ADD, 2 pods (from the table above)", r.latency.mrAdd],
      [`markroute ADD, ${n} pods`, r.scale.mrAdd],
      [`markroute DEL, ${n} pods`, r.scale.mrDel],
      ["  markroute ADD in-process, 2 pods (from above)", r.latency.mrAddInProcess],
      [`  markroute ADD in-process, ${n} pods`, r.scale.mrAddInProcess],
      [`  markroute DEL in-process, ${n} pods`, r.scale.mrDelInProcess],
    ]),
    "",
    datapathTable(`Data path: UDP 64 B pod a -> pod b, iperf3 -b 0, median of ${P.iperfRuns} x ${P.iperfSeconds} s`, [
      ["(a) no markroute (node routes directly)", r.datapath.a],
      ["(c) markroute, 2 pods (hairpin)", r.datapath.c],
      [`(b) markroute, ${n} pods (hairpin)`, r.datapath.b],
    ]),
    "",
    rssTable(`Peak RSS of markroute ADD (${r.rss.method})`, [
      ["2 pods attached", r.rss.twoPodsKiB],
      [`${n} pods attached`, r.rss.manyPodsKiB],
    ]),
    "",
    checksTable(checks),
  ];
  process.stdout.write(out.join("\n") + "\n");
  return checks.every((c) => c.pass !== false);
}

async function main() {
  const results = {
    meta: {
      date: new Date().toISOString(), node: process.version, kernel: release(), cpus: availableParallelism(),
      loadavg: loadavg().map((x) => x.toFixed(2)), quick: QUICK, params: P,
    },
  };
  results.meta.warnings = preflight();
  sweepStale();
  const lab = new Lab();
  const onSignal = (sig) => {
    log(`${sig}: cleaning up`);
    lab.cleanup();
    process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGHUP" ? 1 : 15));
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, onSignal);
  process.on("exit", () => lab.cleanup()); // last resort; cleanup is idempotent and synchronous
  const started = performance.now();
  try {
    results.meta.markroute = await stageMarkroute(lab.dir);
    await bench(lab, results);
  } finally {
    lab.cleanup();
  }
  results.meta.seconds = (performance.now() - started) / 1000;
  results.meta.loadavgEnd = loadavg().map((x) => x.toFixed(2));
  const ok = report(results);
  writeJson(RESULTS, results);
  log(`done in ${results.meta.seconds.toFixed(0)} s; results in ${RESULTS}`);
  return ok;
}

main().then(
  (ok) => { process.exitCode = ok ? 0 : 1; },
  (err) => {
    log(`FAILED: ${err.message}`);
    if (!(err.message ?? "").includes("npm run build")) log(err.stack ?? "");
    process.exitCode = 2;
  },
);

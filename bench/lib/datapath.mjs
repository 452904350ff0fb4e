// Pod-to-pod UDP packet rate with iperf3 (64-byte payloads, unlimited rate): the per-packet
// cost of whatever the node does to forwarded packets. Client and server are pinned to one CPU
// (-A 0,0): veth transmit runs the receiving side's processing in the sender's softirq, so that
// CPU then does all the work of a packet — send, every forwarding hop, receive — and the rate is
// 1 / (cost per packet). Measured here, client and server on different CPUs is bimodal (55k or
// 80k pps from run to run, depending on whether ksoftirqd takes over), on one CPU within ±3%.
import { inNs, runAsync, runIn, sleep, startBackground } from "./proc.mjs";
import { UPLINK } from "./lab.mjs";

const PORT = 5201;

function startServer(pod) {
  const child = startBackground(inNs(pod.ns, ["iperf3", "-s", "-1", "-B", pod.ip, "-p", String(PORT), "--forceflush"]));
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`iperf3 server in ${pod.ns} not ready: ${out}`)); }, 5000);
    const onData = (d) => {
      out += d;
      if (out.includes("Server listening")) { clearTimeout(timer); resolve(child); }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("close", (code) => { clearTimeout(timer); reject(new Error(`iperf3 server exited ${code}: ${out}`)); });
  });
}

/** Packets the fabric's uplink received: hairpinned traffic must show up here, direct traffic must not. */
const fabricRx = (site) =>
  JSON.parse(runIn(site.fabric, ["ip", "-s", "-j", "link", "show", UPLINK]).stdout)[0].stats64.rx.packets;

/** One iperf3 run from `client` to `server`; packets/s as received, as sent, and what crossed the fabric. */
async function once(site, client, server, seconds) {
  const srv = await startServer(server);
  const closed = new Promise((r) => srv.on("close", r));
  const before = fabricRx(site);
  const argv = ["iperf3", "-c", server.ip, "-p", String(PORT), "-u", "-l", "64", "-b", "0", "-t", String(seconds), "-A", "0,0", "-J"];
  try {
    const r = await runAsync(inNs(client.ns, argv), { timeoutMs: (seconds + 15) * 1000 });
    const end = JSON.parse(r.stdout).end;
    const rx = end.sum_received ?? end.sum;
    const tx = end.sum_sent ?? end.sum;
    const received = rx.packets - rx.lost_packets;
    return {
      pps: received / rx.seconds,
      sentPps: tx.packets / tx.seconds,
      lossPercent: rx.lost_percent,
      viaFabric: fabricRx(site) - before,
      received,
    };
  } finally {
    // -1 makes the server exit after its one client; make sure it has before the next run.
    await Promise.race([closed, sleep(2000)]);
    if (srv.exitCode === null && srv.signalCode === null) srv.kill("SIGKILL");
  }
}

/**
 * `runs` short runs; the median is the figure. `expectFabric` checks the path really is the one
 * meant (hairpinned through the fabric, or direct), so a broken setup cannot pass for a fast one.
 */
export async function udpPps(site, client, server, { seconds, runs = 1, expectFabric }) {
  // Neighbour entries resolved before the first timed packet.
  runIn(client.ns, ["ping", "-c", "2", "-i", "0.2", "-W", "1", server.ip]);
  const results = [];
  for (let i = 0; i < runs; i++) {
    const r = await once(site, client, server, seconds);
    const crossed = r.viaFabric >= 0.9 * r.received;
    if (expectFabric !== crossed) {
      throw new Error(`data path check: ${r.received} packets received, ${r.viaFabric} crossed the fabric; expected ${expectFabric ? "all" : "none"} to`);
    }
    results.push(r);
  }
  return results;
}

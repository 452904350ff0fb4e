// Peak resident memory of markroute during an ADD. GNU time's %M is the process's ru_maxrss from
// wait4 (the largest of markroute and the tools it ran, which are far smaller). Without
// /usr/bin/time, VmHWM of /proc/<pid>/status is polled instead (`ip netns exec` execs the plugin
// in place, so the spawned pid is markroute's); the last poll before exit can miss a final spike.
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { cniEnv, MARKROUTE, markrouteConf } from "./cni.mjs";
import { children, cleanEnv, inNs, run } from "./proc.mjs";
import { spawn } from "node:child_process";

const GNU_TIME = "/usr/bin/time";

export const rssMethod = () => (existsSync(GNU_TIME) ? "GNU time %M (ru_maxrss)" : "VmHWM polled from /proc");

/** Peak RSS in KiB of one markroute ADD of `pod` (the staged dist/markroute). */
export async function addPeakRssKiB(site, pod) {
  const bin = MARKROUTE;
  const input = JSON.stringify(markrouteConf(site, pod.prevResult));
  const env = cniEnv("ADD", pod);
  if (existsSync(GNU_TIME)) {
    const out = join(site.dir, "rss.txt");
    rmSync(out, { force: true });
    run(inNs(site.node, [GNU_TIME, "-f", "%M", "-o", out, bin]), { input, env });
    return Number(readFileSync(out, "utf8").trim().split("\n").pop());
  }
  return pollHwm(inNs(site.node, [bin]), input, env);
}

function pollHwm(argv, input, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env: cleanEnv(env), stdio: ["pipe", "ignore", "pipe"] });
    children.add(child);
    let hwm = 0;
    let exited = false;
    const poll = () => {
      if (exited) return;
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
        if (m) hwm = Math.max(hwm, Number(m[1]));
      } catch { /* between exec and exit, or gone */ }
      setImmediate(poll);
    };
    child.on("error", reject);
    child.on("close", (code) => {
      exited = true;
      children.delete(child);
      if (code !== 0) reject(new Error(`markroute ADD exited ${code}`));
      else resolve(hwm);
    });
    child.stdin.end(input);
    poll();
  });
}

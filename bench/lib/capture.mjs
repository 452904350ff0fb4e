// The kernel tools markroute runs for one pod's ADD or DEL, learnt by watching it rather than by
// copying its batch format here (which would silently go stale when src/ changes): one ADD and one
// DEL of a made-up pod run with a directory of shims first in PATH; each shim records its argv and
// stdin, then runs the real tool with them. The bench then replays those invocations, alone, for
// other made-up pods (address and interface substituted): the "tool" figures of the scale table.
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MARKROUTE, cniEnv, markrouteConf } from "./cni.mjs";
import { PATH, inNs, run } from "./proc.mjs";

/**
 * Every tool markroute may run (src/backend, src/kernel); `ip` included, so the shims see all of
 * them, and `nsenter` (the pod's interface, read inside CNI_NETNS when prevResult does not name the host side).
 */
const TOOLS = ["nft", "ipset", "ip", "sysctl", "nsenter",
  ...["iptables", "ip6tables"].flatMap((t) => [t, `${t}-save`, `${t}-restore`, `${t}-nft-save`, `${t}-nft-restore`, `${t}-legacy-save`, `${t}-legacy-restore`])];

// CommonJS (no package.json next to it): record, then run the real tool with the same argv and
// stdin, and a PATH without the shims: what a tool runs itself (nsenter's `ip`) is not markroute's run.
const SHIM = `
const { spawnSync } = require("node:child_process");
const { appendFileSync, existsSync, readFileSync } = require("node:fs");
const { basename, join } = require("node:path");
const tool = basename(process.argv[1]);
const real = (process.env.PATH || "").split(":").filter((d) => d && d !== process.env.MRB_SHIM_DIR)
  .map((d) => join(d, tool)).find((p) => existsSync(p));
let input = "";
try { input = readFileSync(0, "utf8"); } catch { /* no stdin */ }
appendFileSync(process.env.MRB_CAPTURE, JSON.stringify({ argv: [tool, ...process.argv.slice(2)], input }) + "\\n");
if (!real) { process.stderr.write(tool + ": not found\\n"); process.exit(127); }
const env = { ...process.env, PATH: (process.env.PATH || "").split(":").filter((d) => d !== process.env.MRB_SHIM_DIR).join(":") };
const r = spawnSync(real, process.argv.slice(2), { input, env, stdio: ["pipe", "inherit", "inherit"] });
process.exit(r.status === null ? 128 : r.status);
`;

/** The real `ip`, by absolute path: the shims' PATH must not catch the bench's own `ip netns exec`. */
const realIp = () => PATH.split(":").map((d) => join(d, "ip")).find((p) => existsSync(p));

export function makeShims(dir) {
  const shimDir = join(dir, "shims");
  mkdirSync(shimDir, { recursive: true });
  for (const tool of TOOLS) {
    writeFileSync(join(shimDir, tool), `#!${process.execPath}\n${SHIM}`);
    chmodSync(join(shimDir, tool), 0o755);
  }
  return shimDir;
}

/** The tool invocations of one markroute `command` (ADD or DEL) for `pod` at `site`, in order. */
export function captureTools(site, shimDir, command, pod) {
  const file = join(site.dir, `capture-${command}.jsonl`);
  rmSync(file, { force: true });
  writeFileSync(file, "");
  run([realIp(), "netns", "exec", site.node, MARKROUTE], {
    // The tools of an ADD whose drift check is not due (its earlier ADDs checked), as most ADDs of a busy node.
    input: JSON.stringify(markrouteConf(site, pod.prevResult, { driftCheckSeconds: 86400 })),
    env: { ...cniEnv(command, pod), PATH: `${shimDir}:${PATH}`, MRB_SHIM_DIR: shimDir, MRB_CAPTURE: file },
  });
  return readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** `calls` captured for pod `from`, rewritten for pod `to` (address, host interface, name, container ID). */
export function retarget(calls, from, to) {
  const subs = [
    [new RegExp(`${escape(from.address)}(?![0-9])`, "g"), to.address],
    [new RegExp(`${escape(from.hostIf)}(?![0-9a-z])`, "g"), to.hostIf],
    [new RegExp(`${escape(from.name)}(?![0-9])`, "g"), to.name],
    [new RegExp(escape(from.containerId.slice(0, 12)), "g"), to.containerId.slice(0, 12)],
  ];
  const sub = (s) => subs.reduce((acc, [re, v]) => acc.replace(re, v), s);
  return calls.map((c) => ({ argv: c.argv.map(sub), input: sub(c.input) }));
}

/** The one tool run of an ADD whose prevResult does not name the host side (src/kernel/links.ts readPodInterface). */
export const podInterfaceRead = (pod, ifName) => ["nsenter", `--net=${pod.netnsPath}`, "ip", "-j", "-d", "addr", "show", "dev", ifName];

const lineCount = (input) => input.split("\n").filter(Boolean).length;

/**
 * How `calls` (captured for pod `to`) differ from `base` (captured for pod `from`, e.g. another
 * result shape at the same site): `extra`, those of `calls` that `base` retargeted to `to` does not
 * have (same argv, same number of stdin lines), and `missing`, those of `base` that `calls` lacks.
 */
export function toolDiff(base, from, calls, to) {
  const key = (c) => JSON.stringify([c.argv, lineCount(c.input)]);
  const missing = retarget(base, from, to);
  const extra = [];
  for (const c of calls) {
    const i = missing.findIndex((m) => key(m) === key(c));
    if (i >= 0) missing.splice(i, 1);
    else extra.push(c);
  }
  return { extra, missing };
}

/** Runs captured invocations one after the other in `site`'s node namespace; total wall ms. */
export function replay(site, calls) {
  let ms = 0;
  for (const c of calls) ms += run(inNs(site.node, c.argv), { input: c.input }).ms;
  return ms;
}

/** One line per captured invocation, for the report: tool, argv, number of stdin lines. */
export const describe = (calls) =>
  calls.map((c) => `${c.argv.join(" ")}${c.input ? ` (${((n) => `${n} line${n === 1 ? "" : "s"}`)(lineCount(c.input))})` : ""}`).join("; ") || "(none)";

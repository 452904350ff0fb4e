// The CNI edge, inbound: environment and stdin into a typed request (SPEC.md "Parameters").
import { readSync } from "node:fs";
import { CNI_NAME, IFNAME } from "../config.js";
import { CniError, ErrorCode } from "./errors.js";

export const COMMANDS = ["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS"] as const;
export type Command = (typeof COMMANDS)[number];

export interface CniRequest {
  command: Command;
  containerId: string;
  ifName: string;
  /** Empty on the DEL containerd sends for RemovePodSandbox. */
  netns: string;
  args: Map<string, string>;
}

const MAX_STDIN = 1024 * 1024;

function badEnv(msg: string): never {
  throw new CniError(ErrorCode.invalidEnvironment, msg);
}

/** Reads and validates the CNI_* variables; a missing or malformed one is CNI error 4 naming it. */
export function parseEnvironment(env: NodeJS.ProcessEnv): CniRequest {
  const command = env.CNI_COMMAND as Command;
  if (!COMMANDS.includes(command)) badEnv(`CNI_COMMAND must be one of ${COMMANDS.join(", ")}, got "${env.CNI_COMMAND ?? ""}"`);
  const perAttachment = command === "ADD" || command === "DEL" || command === "CHECK";
  const containerId = env.CNI_CONTAINERID ?? "";
  const ifName = env.CNI_IFNAME ?? "";
  const netns = env.CNI_NETNS ?? "";
  if (perAttachment) {
    // 128 is twice a runtime's 64-hex ID; it keeps state file names under the 255-byte limit.
    if (!CNI_NAME.test(containerId) || containerId.length > 128) badEnv(`CNI_CONTAINERID must be 1-128 of letters, digits, _ . - starting with a letter or digit, got "${containerId.slice(0, 200)}"`);
    if (!IFNAME.test(ifName)) badEnv(`CNI_IFNAME must be an interface name of 1-15 letters, digits, _ . @ -, got "${ifName}"`);
    if (command !== "DEL" && !netns.startsWith("/")) badEnv(`CNI_NETNS must be the absolute path of the container's network namespace for ${command}, got "${netns}"`);
  }
  return { command, containerId, ifName, netns, args: argsFor(command, env.CNI_ARGS ?? "") };
}

/** CNI_ARGS only name the pod in comments: DEL needs none, so malformed ones do not stop it. */
function argsFor(command: Command, text: string): Map<string, string> {
  try {
    return parseCniArgs(text);
  } catch (err) {
    if (command === "DEL") return new Map();
    throw err;
  }
}

/** CNI_ARGS: "K=V;K2=V2". */
export function parseCniArgs(text: string): Map<string, string> {
  const args = new Map<string, string>();
  for (const pair of text.split(";").filter(Boolean)) {
    const eq = pair.indexOf("=");
    if (eq <= 0) badEnv(`CNI_ARGS: "${pair}" is not KEY=VALUE`);
    args.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return args;
}

/** Reads the netconf from stdin; more than 1 MiB is refused rather than buffered. */
export function readStdin(fd = 0): string {
  const chunks: Buffer[] = [];
  let total = 0;
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") continue;
      if (code === "EOF") break;
      throw new CniError(ErrorCode.ioFailure, `cannot read stdin: ${(err as Error).message}`);
    }
    if (n === 0) break;
    total += n;
    if (total > MAX_STDIN) throw new CniError(ErrorCode.decodeFailure, `netconf on stdin is larger than ${MAX_STDIN} bytes`);
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString("utf8");
}

// Far deeper than any netconf; deeper values would overflow the stack when the result is printed.
const MAX_DEPTH = 64;

function depthOf(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== "object" || v === null) continue;
    deepest = Math.max(deepest, depth);
    if (deepest > MAX_DEPTH) break;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return deepest;
}

export function decodeNetconf(text: string): unknown {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("not a JSON object");
    if (depthOf(value) > MAX_DEPTH) throw new Error(`nested deeper than ${MAX_DEPTH} levels`);
    return value;
  } catch (err) {
    throw new CniError(ErrorCode.decodeFailure, `cannot decode the netconf on stdin: ${(err as Error).message}`);
  }
}

// Entry: with CNI_COMMAND set this is the CNI plugin (stdout carries only the result); without, the CLI for people.
import * as commands from "./commands.js";
import { writeSync } from "node:fs";
import { CniError, ErrorCode } from "./cni/errors.js";
import { decodeNetconf, parseEnvironment, readStdin, type CniRequest } from "./cni/request.js";
import { LATEST_VERSION, delTargetOf, isSupportedVersion, logFileOf, parseConfig, type Config } from "./config.js";
import { openLog } from "./log.js";


export async function main(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  // The CLI (commander, install, explain) is loaded only for people: a CNI call never pays for it.
  return env.CNI_COMMAND === undefined ? (await import("./cli.js")).cli(args) : cniMain(env);
}

function dispatch(config: Config, req: CniRequest): Promise<commands.Outcome> | commands.Outcome {
  switch (req.command) {
    case "ADD": return commands.add(config, req);
    case "DEL": return commands.del(config, req);
    case "CHECK": return commands.check(config, req);
    case "GC": return commands.gc(config);
    case "STATUS": return commands.status(config);
    case "VERSION": throw new Error("VERSION is answered before the netconf is validated");
  }
}

/** What the log line names, learnt as the call is validated (an error is logged with what is known). */
interface CallContext {
  req?: CniRequest;
  log: { file: string; level: string; network: unknown };
}

async function cniMain(env: NodeJS.ProcessEnv): Promise<number> {
  const started = performance.now();
  let cniVersion = LATEST_VERSION;
  // Where the log goes: stderr until a netconf says where.
  const ctx: CallContext = { log: { file: "stderr", level: "info", network: undefined } };
  try {
    const text = readStdin();
    if (env.CNI_COMMAND === "VERSION") {
      ctx.req = parseEnvironment(env);
      const asked = text.trim() ? (decodeNetconf(text) as { cniVersion?: unknown }).cniVersion : undefined;
      return write(commands.version(asked).result);
    }
    const raw = decodeNetconf(text) as { cniVersion?: unknown; name?: unknown };
    ctx.log = { ...ctx.log, file: logFileOf(raw), network: raw.name };
    if (isSupportedVersion(raw.cniVersion)) cniVersion = raw.cniVersion;
    const outcome = await answer(env, raw, ctx);
    // The answer first: logging can neither delay nor change it.
    write(outcome.result);
    const fields = { ...context(ctx), durationMs: elapsed(started), outcome: "ok", ...outcome.summary, ...(outcome.selection ? { selection: outcome.selection } : {}) };
    const logger = openLog(ctx.log.file, ctx.log.level);
    if (outcome.warning) logger.warn(fields, `${env.CNI_COMMAND} ok: ${outcome.warning}`);
    else logger.info(fields, `${env.CNI_COMMAND} ok`);
    return 0;
  } catch (err) {
    const error = err instanceof CniError ? err : new CniError(ErrorCode.internal, `internal error: ${(err as Error).stack ?? err}`);
    write(error.toJSON(cniVersion));
    openLog(ctx.log.file, ctx.log.level).error({ ...context(ctx), durationMs: elapsed(started), outcome: "error", code: error.code }, error.message);
    return 1;
  }
}

/**
 * Validates, then runs the command, filling `ctx` as it learns. DEL never stops the runtime's
 * cleanup on what it does not need (libcni stops a DEL chain at the first error, and the main
 * plugin's IPAM would keep the pod's address): CNI_ARGS, the netconf beyond its name and stateDir,
 * and names under which no ADD could have recorded anything (then there is nothing to remove).
 */
async function answer(env: NodeJS.ProcessEnv, raw: unknown, ctx: CallContext): Promise<commands.Outcome> {
  const isDel = env.CNI_COMMAND === "DEL";
  try {
    ctx.req = parseEnvironment(env);
  } catch (err) {
    if (!isDel || !(err instanceof CniError)) throw err;
    return { warning: `nothing to remove: ${err.message}; no ADD could have recorded an attachment under it` };
  }
  let config: Config;
  try {
    config = parseConfig(raw);
  } catch (err) {
    if (!isDel || !(err instanceof CniError)) throw err;
    const target = delTargetOf(raw);
    if (!target) return { warning: `nothing to remove: ${err.message}; no ADD could have recorded an attachment under this netconf's name and stateDir` };
    return { ...(await commands.del(target, ctx.req)), warning: `the netconf does not validate (${err.message}); removed what the record says` };
  }
  ctx.log = { file: config.logFile, level: config.logLevel, network: config.name };
  return dispatch(config, ctx.req);
}

const elapsed = (since: number) => Math.round((performance.now() - since) * 10) / 10;

const context = ({ req, log }: CallContext) => ({
  command: req?.command, containerId: req?.containerId, ifName: req?.ifName, network: log.network,
});

/**
 * The result on stdout, with write(2): process.stdout would load node:stream (~8 ms of every call's
 * start-up under Bun). The runtime reads the pipe as we write (Go's exec copies it); a result never
 * fills a pipe's 64 KiB, but should the runtime have made it non-blocking and full, we wait a
 * millisecond for it to drain rather than spin.
 */
const DRAIN_WAIT = new Int32Array(new SharedArrayBuffer(4));

function write(result: object | undefined): number {
  if (!result) return 0;
  const bytes = Buffer.from(JSON.stringify(result) + "\n");
  for (let done = 0; done < bytes.length; ) {
    try {
      done += writeSync(1, bytes, done);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
      Atomics.wait(DRAIN_WAIT, 0, 0, 1);
    }
  }
  return 0;
}

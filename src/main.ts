// Entry: with CNI_COMMAND set this is the CNI plugin (stdout carries only the result); without, the CLI for people.
import { cli } from "./cli.js";
import * as commands from "./commands.js";
import { CniError, ErrorCode } from "./cni/errors.js";
import { decodeNetconf, parseEnvironment, readStdin, type CniRequest } from "./cni/request.js";
import { LATEST_VERSION, delTargetOf, isSupportedVersion, logFileOf, parseConfig, type Config } from "./config.js";
import { openLog } from "./log.js";


export async function main(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return env.CNI_COMMAND === undefined ? cli(args) : cniMain(env);
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

async function cniMain(env: NodeJS.ProcessEnv): Promise<number> {
  const started = performance.now();
  let cniVersion = LATEST_VERSION;
  let req: CniRequest | undefined;
  // Where the log goes: stderr until a netconf says where.
  let log = { file: "stderr", level: "info", network: undefined as unknown };
  try {
    const text = readStdin();
    if (env.CNI_COMMAND === "VERSION") {
      req = parseEnvironment(env);
      const asked = text.trim() ? (decodeNetconf(text) as { cniVersion?: unknown }).cniVersion : undefined;
      return write(commands.version(asked).result);
    }
    const raw = decodeNetconf(text) as { cniVersion?: unknown; name?: unknown };
    log = { ...log, file: logFileOf(raw), network: raw.name };
    if (isSupportedVersion(raw.cniVersion)) cniVersion = raw.cniVersion;
    const outcome = await answer(env, raw, (r) => (req = r), (config) => (log = { file: config.logFile, level: config.logLevel, network: config.name }));
    // The answer first: logging can neither delay nor change it.
    write(outcome.result);
    const fields = { ...context(req, log.network), durationMs: elapsed(started), outcome: "ok", ...outcome.summary };
    const logger = openLog(log.file, log.level);
    if (outcome.warning) logger.warn(fields, `${env.CNI_COMMAND} ok: ${outcome.warning}`);
    else logger.info(fields, `${env.CNI_COMMAND} ok`);
    return 0;
  } catch (err) {
    const error = err instanceof CniError ? err : new CniError(ErrorCode.internal, `internal error: ${(err as Error).stack ?? err}`);
    write(error.toJSON(cniVersion));
    openLog(log.file, log.level).error({ ...context(req, log.network), durationMs: elapsed(started), outcome: "error", code: error.code }, error.message);
    return 1;
  }
}

/**
 * Validates, then runs the command. DEL never stops the runtime's cleanup on what it does not need
 * (libcni stops a DEL chain at the first error, and the main plugin's IPAM would keep the pod's
 * address): CNI_ARGS, the netconf beyond its name and stateDir, and names under which no ADD could
 * have recorded anything (then there is nothing to remove).
 */
async function answer(env: NodeJS.ProcessEnv, raw: unknown, onRequest: (r: CniRequest) => void, onConfig: (c: Config) => void): Promise<commands.Outcome> {
  const isDel = env.CNI_COMMAND === "DEL";
  let req: CniRequest;
  try {
    req = parseEnvironment(env);
  } catch (err) {
    if (!isDel || !(err instanceof CniError)) throw err;
    return { warning: `nothing to remove: ${err.message}; no ADD could have recorded an attachment under it` };
  }
  onRequest(req);
  let config: Config;
  try {
    config = parseConfig(raw);
  } catch (err) {
    const target = isDel && err instanceof CniError ? delTargetOf(raw) : undefined;
    if (!isDel || !(err instanceof CniError)) throw err;
    if (!target) return { warning: `nothing to remove: ${err.message}; no ADD could have recorded an attachment under this netconf's name and stateDir` };
    return { ...(await commands.del(target, req)), warning: `the netconf does not validate (${err.message}); removed what the record says` };
  }
  onConfig(config);
  return dispatch(config, req);
}

const elapsed = (since: number) => Math.round((performance.now() - since) * 10) / 10;

const context = (req: CniRequest | undefined, network: unknown) => ({
  command: req?.command, containerId: req?.containerId, ifName: req?.ifName, network,
});

function write(result: object | undefined): number {
  if (result) process.stdout.write(JSON.stringify(result) + "\n");
  return 0;
}

// Entry: with CNI_COMMAND set this is the CNI plugin (stdout carries only the result); without, the CLI for people.
import type { Logger } from "pino";
import { cli } from "./cli.js";
import * as commands from "./commands.js";
import { CniError, ErrorCode } from "./cni/errors.js";
import { decodeNetconf, parseEnvironment, readStdin, type CniRequest } from "./cni/request.js";
import { DEFAULT_LOG_FILE, SUPPORTED_VERSIONS, parseConfig, type Config } from "./config.js";
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
  let cniVersion: string = SUPPORTED_VERSIONS.at(-1)!;
  let raw: { cniVersion?: unknown; logFile?: unknown; name?: unknown } | undefined;
  let logger: Logger | undefined;
  let req: CniRequest | undefined;
  try {
    req = parseEnvironment(env);
    const text = readStdin();
    if (req.command === "VERSION") {
      const asked = text.trim() ? (decodeNetconf(text) as { cniVersion?: unknown }).cniVersion : undefined;
      return write(commands.version(asked).result);
    }
    raw = decodeNetconf(text) as typeof raw;
    if (typeof raw?.cniVersion === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(raw.cniVersion)) cniVersion = raw.cniVersion;
    const config = parseConfig(raw);
    logger = openLog(config.logFile, config.logLevel);
    const outcome = await dispatch(config, req);
    const fields = { ...context(req, config.name), durationMs: elapsed(started), outcome: "ok", ...outcome.summary };
    if (outcome.warning) logger.warn(fields, `${req.command} ok: ${outcome.warning}`);
    else logger.info(fields, `${req.command} ok`);
    return write(outcome.result);
  } catch (err) {
    const error = err instanceof CniError ? err : new CniError(ErrorCode.internal, `internal error: ${(err as Error).stack ?? err}`);
    logger ??= openLog(typeof raw?.logFile === "string" && raw.logFile.startsWith("/") ? raw.logFile : DEFAULT_LOG_FILE, "info");
    logger.error({ ...context(req, raw?.name), durationMs: elapsed(started), outcome: "error", code: error.code }, error.message);
    write(error.toJSON(cniVersion));
    return 1;
  }
}

const elapsed = (since: number) => Math.round((performance.now() - since) * 10) / 10;

const context = (req: CniRequest | undefined, network: unknown) => ({
  command: req?.command, containerId: req?.containerId, ifName: req?.ifName, network,
});

function write(result: object | undefined): number {
  if (result) process.stdout.write(JSON.stringify(result) + "\n");
  return 0;
}

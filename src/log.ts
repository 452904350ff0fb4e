import { mkdirSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { dirname } from "node:path";
import pino, { type Logger } from "pino";

// The logger is built once, at snapshot time, writing to a sink whose file descriptor main()
// opens: building a pino logger per run costs ~2 ms of every pod's start. pid and hostname come
// from a mixin because pino's own defaults would be frozen into the snapshot.
const sink = {
  fd: 2,
  write(line: string) {
    writeSync(this.fd, line);
  },
};
const logger = pino({ base: undefined, mixin: () => ({ pid: process.pid, hostname: hostname() }) }, sink);

/**
 * JSON lines to the netconf's logFile (stdout is the CNI result), owner-only. A log file that
 * cannot be opened must not fail the pod, so stderr takes over.
 */
export function openLog(logFile: string, level: string): Logger {
  sink.fd = 2;
  if (logFile !== "stderr") {
    try {
      mkdirSync(dirname(logFile), { recursive: true, mode: 0o700 });
      sink.fd = openSync(logFile, "a", 0o600);
    } catch {
      // stderr it is
    }
  }
  logger.level = level;
  return logger;
}

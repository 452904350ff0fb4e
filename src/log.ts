import { hostname } from "node:os";
import pino, { type Logger } from "pino";

/**
 * JSON lines to the netconf's logFile (stdout is the CNI result). Made inside main: pino's module
 * defaults (pid, hostname) would otherwise be frozen into the startup snapshot. A log file that
 * cannot be opened must not fail the pod, so stderr takes over.
 */
export function createLogger(logFile: string, level: string): Logger {
  const base = { pid: process.pid, hostname: hostname() };
  if (logFile !== "stderr") {
    try {
      return pino({ level, base }, pino.destination({ dest: logFile, sync: true, mkdir: true, mode: 0o600 }));
    } catch {
      // fall through to stderr
    }
  }
  return pino({ level, base }, pino.destination({ dest: 2, sync: true }));
}

import { closeSync, constants, fstatSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { secureParent } from "./state/safe-path.js";

// One JSON line per call, in pino's shape (level number, time in ms, pid, hostname, the fields,
// msg), so `jq 'select(.level >= 50)'` and log shippers that know pino keep working. Written here
// rather than with pino: loading pino (and the stream modules it pulls in) cost ~6 ms of every
// CNI call's start-up, for one line.
const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const;
export type LogLevel = keyof typeof LEVELS;
export type LogFields = Record<string, unknown>;
export interface Logger {
  info(fields: LogFields, msg: string): void;
  warn(fields: LogFields, msg: string): void;
  error(fields: LogFields, msg: string): void;
}

const sink = {
  fd: 2,
  failed: false,
  write(line: string) {
    // Logging never fails an operation or changes its outcome (a full disk, /dev/full): the CNI
    // answer is already out; one note on stderr says the log is incomplete.
    try {
      writeSync(this.fd, line);
    } catch (err) {
      if (this.failed) return;
      this.failed = true;
      try {
        writeSync(2, `markroute: cannot write the log: ${(err as Error).message}\n`);
      } catch {
        // nowhere left to say it
      }
    }
  },
};

function lineWriter(threshold: number) {
  return (level: number) => (fields: LogFields, msg: string) => {
    if (level < threshold) return;
    sink.write(JSON.stringify({ level, time: Date.now(), pid: process.pid, hostname: hostname(), ...fields, msg }) + "\n");
  };
}

/**
 * JSON lines to the netconf's logFile (stdout is the CNI result), owner-only. The file is root's
 * alone: never opened through a symlink, never another user's file or a device (`/dev/stdout`
 * would put lines before the result), in a directory nobody else can redirect. A log file that
 * cannot be used must not fail the pod, so stderr takes over (and says why).
 */
export function openLog(logFile: string, level: string): Logger {
  sink.fd = 2;
  sink.failed = false;
  if (logFile !== "stderr") {
    try {
      sink.fd = openOwnFile(logFile);
    } catch (err) {
      sink.write(`markroute: logging to stderr: ${(err as Error).message}\n`);
    }
  }
  const at = lineWriter(LEVELS[level as LogLevel] ?? LEVELS.info);
  return { info: at(LEVELS.info), warn: at(LEVELS.warn), error: at(LEVELS.error) };
}

function openOwnFile(path: string): number {
  secureParent(path);
  const fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  const st = fstatSync(fd);
  const problem = !st.isFile() ? "not a regular file" : st.uid !== process.getuid!() ? `owned by uid ${st.uid}` : (st.mode & 0o022) !== 0 ? "writable by group or others" : undefined;
  if (problem) {
    closeSync(fd);
    throw new Error(`log file ${path} is ${problem}`);
  }
  return fd;
}

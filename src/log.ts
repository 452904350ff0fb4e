import { closeSync, constants, fstatSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import pino, { type Logger } from "pino";
import { secureParent } from "./state/safe-path.js";

// The logger is built once, when the module loads, writing to a sink whose file descriptor
// openLog() chooses (stderr until a netconf says where). pid and hostname come from a mixin, read
// at each line.
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
const logger = pino({ base: undefined, mixin: () => ({ pid: process.pid, hostname: hostname() }) }, sink);

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
  logger.level = level;
  return logger;
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

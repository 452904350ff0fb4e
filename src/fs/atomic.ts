// Replacing a file so that whoever opens it gets the old file or the whole new one, never half of
// one: write a temporary file beside it, then rename it over. One implementation for the state
// directory (records, index) and for `markroute install` (the binary, the conflist).
// Only node:fs here: every pod start loads this code.
import { closeSync, constants, fchmodSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";

export interface ReplaceOptions {
  /** The temporary file, in the same directory: a leftover is replaced, never followed (O_EXCL | O_NOFOLLOW after the unlink). */
  tmp: string;
  /** Set with fchmod: the umask must not decide who may read (or kubelet execute) the file. */
  mode: number;
  /**
   * fsync the file before the rename and the directory after: the new file survives a power loss.
   * The state directory does without (its kernel objects do not survive one either); install needs it.
   */
  durable: boolean;
}

/** fsyncs a directory, so that a rename or an unlink in it is on disk. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `content` (text, or what `fill` writes to the descriptor) to `opts.tmp` and renames it
 * over `path`. The temporary file never outlives a failure; the error is `cannot write <path>: …`.
 */
export function replaceFile(path: string, content: string | ((fd: number) => void), opts: ReplaceOptions): void {
  const { tmp, mode, durable } = opts;
  try {
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
    try {
      if (typeof content === "string") writeSync(fd, content);
      else content(fd);
      fchmodSync(fd, mode);
      if (durable) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    if (durable) fsyncDir(dirname(path));
  } catch (err) {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // what is in the way is named by the error below
    }
    throw new Error(`cannot write ${path}: ${(err as Error).message}`);
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

/**
 * Removes the temporary files of writers that died before their rename (never a live one's):
 * `pidOf` gives the writer's pid from a name, or undefined for a name that is not such a file.
 */
export function sweepTemporaries(dir: string, pidOf: (name: string) => string | undefined): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(pidOf(name));
    if (!Number.isInteger(pid) || pid <= 0 || (pid !== process.pid && alive(pid))) continue;
    try {
      rmSync(join(dir, name), { force: true });
    } catch {
      // best effort: what cannot go fails this run's own write, loudly, if it is in its way
    }
  }
}

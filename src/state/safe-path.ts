// Paths markroute writes as root (the state directory, the log file): nobody else may be able to
// redirect them. Every directory on the way must be root's and writable by root alone (or sticky,
// like /tmp, where others cannot move root's entries); a symlink on the way must be root's; the
// last component is never a symlink. Checked before anything is created, then created owner-only.
import { lstatSync, mkdirSync, realpathSync, type Stats } from "node:fs";
import { dirname, sep } from "node:path";
import { CniError, ErrorCode } from "../cni/errors.js";

const STICKY = 0o1000;

function unsafe(path: string, why: string): never {
  throw new CniError(ErrorCode.stateStore, `${path} ${why}; refusing to use it`);
}

const lstatOrUndefined = (path: string): Stats | undefined => {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CniError(ErrorCode.stateStore, `cannot inspect ${path}: ${(err as Error).message}`);
  }
};

/** A directory others cannot write to, or can but not rename root's entries in (sticky). */
function checkDirectory(path: string, st: Stats, uid: number, last: boolean): void {
  if (!st.isDirectory()) unsafe(path, "is not a directory");
  if (st.uid !== uid && st.uid !== 0) unsafe(path, `is owned by uid ${st.uid}`);
  const writableByOthers = (st.mode & 0o022) !== 0;
  if (writableByOthers && (last || (st.mode & STICKY) === 0)) unsafe(path, `is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`);
}

/** An absolute path's ancestors, outermost first: /a/b/c → /, /a, /a/b. */
const ancestors = (path: string): string[] => {
  const parts = path.split(sep).filter(Boolean);
  return [sep, ...parts.slice(0, -1).map((_, i) => sep + parts.slice(0, i + 1).join(sep))];
};

/**
 * Checks every existing ancestor of `path` (an absolute path without . or .. components), following
 * root's symlinks only, then makes what is missing of `path` itself (a directory) owner-only when
 * `create`, and checks it: writable by root alone, or, with `stickyOk`, sticky as well. Returns
 * false when it does not exist and was not to be made.
 */
export function secureDirectory(path: string, create: boolean, { stickyOk = false } = {}): boolean {
  const uid = process.getuid!();
  for (const dir of ancestors(path)) {
    const st = lstatOrUndefined(dir);
    if (!st) break; // the rest is made below
    if (st.isSymbolicLink()) {
      if (st.uid !== 0 && st.uid !== uid) unsafe(dir, `is a symlink owned by uid ${st.uid}`);
      checkDirectory(`${dir} (-> ${realpathSync(dir)})`, lstatSync(realpathSync(dir)), uid, false);
    } else {
      checkDirectory(dir, st, uid, false);
    }
  }
  let st = lstatOrUndefined(path);
  if (!st && !create) return false;
  if (!st) {
    for (const dir of [...ancestors(path).slice(1), path]) {
      if (lstatOrUndefined(dir)) continue;
      try {
        mkdirSync(dir, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw new CniError(ErrorCode.stateStore, `cannot create ${dir}: ${(err as Error).message}`);
      }
    }
    st = lstatSync(path);
  }
  if (st.isSymbolicLink()) unsafe(path, "is a symlink");
  checkDirectory(path, st, uid, !stickyOk);
  return true;
}

/**
 * The directory a file lives in, made safe (and owner-only where made). It may be sticky (/tmp):
 * others cannot move root's file there, and one of theirs under its name is refused when opened.
 */
export const secureParent = (file: string) => secureDirectory(dirname(file), true, { stickyOk: true });

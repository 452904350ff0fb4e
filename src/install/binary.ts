// markroute's executable in the CNI bin directory: copied in through a temporary file and a rename
// (kubelet runs the old binary or the new one, never half of one), and removed.
import { closeSync, fstatSync, lstatSync, openSync, readSync, rmSync, statSync, writeSync, type Stats } from "node:fs";
import { join } from "node:path";
import { replaceFile, sweepTemporaries } from "../fs/atomic.js";

/** The executable's name, and so the `type` of its conflist entry. */
export const BINARY_NAME = "markroute";
export const DEFAULT_BIN_DIR = "/opt/cni/bin";

const BIN_TMP_PREFIX = `.${BINARY_NAME}.tmp-`;
const binTmpPid = (name: string) => (name.startsWith(BIN_TMP_PREFIX) ? name.slice(BIN_TMP_PREFIX.length) : undefined);
const message = (err: unknown) => (err as Error).message;
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

/** Whether two files hold the same bytes (read in chunks: the executable is ~90 MB). */
function sameContent(a: string, b: string): boolean {
  let fa: number | undefined;
  let fb: number | undefined;
  try {
    fa = openSync(a, "r");
    fb = openSync(b, "r");
    if (fstatSync(fa).size !== fstatSync(fb).size) return false;
    const ba = Buffer.allocUnsafe(1 << 20);
    const bb = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const na = readSync(fa, ba, 0, ba.length, null);
      const nb = readSync(fb, bb, 0, bb.length, null);
      if (na !== nb || ba.compare(bb, 0, nb, 0, na) !== 0) return false;
      if (na === 0) return true;
    }
  } catch {
    return false;
  } finally {
    if (fa !== undefined) closeSync(fa);
    if (fb !== undefined) closeSync(fb);
  }
}

/** Copies `source` to `<binDir>/markroute` through `<binDir>/.markroute.tmp-<pid>`, mode 0755. */
export function installBinary(source: string, binDir: string): { path: string; action: "installed" | "unchanged" } {
  const path = join(binDir, BINARY_NAME);
  let dir: Stats;
  try {
    dir = statSync(binDir);
  } catch (err) {
    throw new Error(`CNI bin dir ${binDir} ${errno(err) === "ENOENT" ? "does not exist" : `cannot be used: ${message(err)}`}: is this the node's CNI bin dir (containerd's bin_dir)?`);
  }
  if (!dir.isDirectory()) throw new Error(`CNI bin dir ${binDir} is not a directory`);
  let src: number;
  try {
    src = openSync(source, "r");
  } catch (err) {
    throw new Error(`cannot read the executable to install, ${source}: ${message(err)}`);
  }
  try {
    sweepTemporaries(binDir, binTmpPid);
    const installed = (() => {
      try {
        const st = lstatSync(path);
        return st.isFile() && (st.mode & 0o777) === 0o755;
      } catch {
        return false;
      }
    })();
    if (installed && sameContent(source, path)) return { path, action: "unchanged" };
    const buf = Buffer.allocUnsafe(1 << 20);
    const copy = (fd: number) => {
      let position = 0;
      for (;;) {
        const n = readSync(src, buf, 0, buf.length, position);
        if (n === 0) break;
        for (let off = 0; off < n;) off += writeSync(fd, buf, off, n - off);
        position += n;
      }
    };
    replaceFile(path, copy, { tmp: join(binDir, `${BIN_TMP_PREFIX}${process.pid}`), mode: 0o755, durable: true });
    return { path, action: "installed" };
  } finally {
    closeSync(src);
  }
}

/** Removes `<binDir>/markroute` (and dead installers' temporary files); "absent" when it was not there. */
export function removeBinary(binDir: string): { path: string; action: "removed" | "absent" } {
  const path = join(binDir, BINARY_NAME);
  sweepTemporaries(binDir, binTmpPid);
  try {
    lstatSync(path);
    rmSync(path);
  } catch (err) {
    if (errno(err) !== "ENOENT") throw new Error(`cannot remove ${path}: ${message(err)}`);
    return { path, action: "absent" };
  }
  return { path, action: "removed" };
}

// The lock that serialises read-count-change on one state directory: flock(2) on the file `lock`
// inside it. The directory is root's and owner-only, so no other user can open the file, let alone
// lock it (an abstract Unix socket, the earlier lock, could be bound by any process of the network
// namespace, hostNetwork pods included, and so stall every pod of the node).
//
// The lock is tried first with flock(2) itself, without blocking, through Bun's FFI (no spawn:
// the common, uncontended case costs a system call). When it is held, or the runtime has no FFI
// (unit tests run under Node), a child `flock --wait` locks the open file description it inherits
// from us, then exits, and waiters sleep in the kernel. Either way the lock stays with our
// descriptor until we close it or die (SIGKILL included: the kernel releases it, so a dead holder
// can never wedge the node). The wait is bounded per holder, not per queue: each holder writes a
// fresh sequence number into the file, and a waiter that times out waits again if the holder
// changed meanwhile. So 200 pods starting at once all get their turn, while one holder that hangs
// for `stuckMs` makes everyone behind it answer "try again later".
//
// The agent must not freeze while it waits (its probes, metrics and SIGTERM run on the same event
// loop): it takes the lock with `acquireLockInBackground`, whose `flock --wait` child runs while
// the loop goes on, then hands it to the engine's operation (`withState`'s `heldLock`), which
// would otherwise wait for our own lock forever through a second open file description.
import { spawn, spawnSync } from "node:child_process";
import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { CniError, ErrorCode } from "../cni/errors.js";
import { openLibrary } from "../kernel/ffi.js";

export interface HeldLock {
  release(): Promise<void>;
  /** How long acquiring took, for the logs and the benchmark. */
  waitedMs: number;
}

export const LOCK_FILE = "lock";
/** flock's exit status when the wait ran out. */
const TIMED_OUT = 75;

export async function acquireLock(stateDir: string, stuckMs: number): Promise<HeldLock> {
  const path = join(stateDir, LOCK_FILE);
  return holdLock(path, stuckMs, (fd) => flockWait(fd, path, stuckMs));
}

/**
 * The lock, waited for without blocking the event loop (the agent's): a held lock is waited for by
 * a `flock --wait` child, as `acquireLock` does, but not synchronously; the kernel hands the lock
 * to one of its waiters, this one as fairly as the CNI operations, so a burst of them delays a
 * pass without starving it. The holder then hands it to `withState` (its `heldLock`).
 */
export async function acquireLockInBackground(stateDir: string, stuckMs: number): Promise<HeldLock> {
  const path = join(stateDir, LOCK_FILE);
  return holdLock(path, stuckMs, (fd) => flockWaitInBackground(fd, path, stuckMs));
}

/** Locks `path` at once if it is free, else with `wait` (false: `stuckMs` passed), waiting again while holders change. */
async function holdLock(path: string, stuckMs: number, wait: (fd: number) => boolean | Promise<boolean>): Promise<HeldLock> {
  const fd = openLockFile(path);
  const started = performance.now();
  try {
    for (let first = true; ; first = false) {
      const seen = readSequence(fd);
      if ((first && tryLockNow(fd)) || (await wait(fd))) {
        writeSequence(fd, `${process.pid}.${seen + 1}`);
        return { waitedMs: performance.now() - started, release: async () => closeSync(fd) };
      }
      if (readSequence(fd) === seen) {
        throw new CniError(ErrorCode.tryAgainLater, `another markroute operation has held the lock on ${dirname(path)} for over ${stuckMs} ms; try again later`);
      }
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** Opens (or creates) the lock file: never through a symlink, and only if it is root's alone. */
function openLockFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === "ELOOP" ? "it is a symlink" : (err as Error).message;
    throw new CniError(ErrorCode.stateStore, `cannot open the lock file ${path}: ${why}`);
  }
  const st = fstatSync(fd);
  const problem = !st.isFile() ? "not a regular file"
    : st.uid !== process.getuid!() ? `owned by uid ${st.uid}, not by us`
    : (st.mode & 0o022) !== 0 ? `writable by group or others (mode ${(st.mode & 0o777).toString(8)})` : undefined;
  if (problem) {
    closeSync(fd);
    throw new CniError(ErrorCode.stateStore, `lock file ${path} is ${problem}; refusing to use it`);
  }
  return fd;
}

const LOCK_EX = 2;
const LOCK_NB = 4;
let libc: { flock(fd: number, operation: number): number } | null | undefined;

/** Locks `fd` at once if nobody holds it; false when someone does (or there is no FFI). */
function tryLockNow(fd: number): boolean {
  libc ??= openLibrary("libc.so.6", { flock: { args: ["i32", "i32"], returns: "i32" } });
  return libc !== null && libc.flock(fd, LOCK_EX | LOCK_NB) === 0;
}

const flockArgs = (stuckMs: number) => ["--exclusive", "--wait", String(stuckMs / 1000), "--conflict-exit-code", String(TIMED_OUT), "3"];

/** Locks `fd` through a child; false when `stuckMs` passed first. */
function flockWait(fd: number, path: string, stuckMs: number): boolean {
  const res = spawnSync("flock", flockArgs(stuckMs), { stdio: ["ignore", "ignore", "pipe", fd], encoding: "utf8" });
  return flockOutcome(res.status, res.error, res.stderr, path);
}

/** The same, the child waited for while the event loop runs. */
function flockWaitInBackground(fd: number, path: string, stuckMs: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = spawn("flock", flockArgs(stuckMs), { stdio: ["ignore", "ignore", "pipe", fd] });
    let stderr = "";
    let settled = false;
    const settle = (status: number | null, error?: Error) => {
      if (settled) return;
      settled = true;
      try {
        resolve(flockOutcome(status, error, stderr, path));
      } catch (err) {
        reject(err);
      }
    };
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", (err) => settle(null, err)); // not started (flock missing)
    child.on("close", (status) => settle(status));
  });
}

/** True: locked; false: the wait ran out; otherwise why flock could not lock. */
function flockOutcome(status: number | null, error: Error | undefined, stderr: string, path: string): boolean {
  if (status === 0) return true;
  if (status === TIMED_OUT) return false;
  const missing = (error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
  throw new CniError(missing ? ErrorCode.pluginNotAvailable : ErrorCode.stateStore,
    missing ? "flock (util-linux) is not installed on this node" : `cannot lock ${path}: ${error?.message ?? stderr.trim()}`);
}

/** The holder's sequence number: it changes with every acquisition. */
function readSequence(fd: number): number {
  const buf = Buffer.alloc(64);
  const n = readSync(fd, buf, 0, buf.length, 0);
  return Number(/\.(\d+)/.exec(buf.subarray(0, n).toString())?.[1] ?? 0);
}

function writeSequence(fd: number, text: string): void {
  // Fixed width, so a shorter value never leaves the tail of a longer one.
  writeSync(fd, text.padEnd(40, " ") + "\n", 0);
}

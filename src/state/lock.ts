import { createServer, type Server } from "node:net";
import { CniError, ErrorCode } from "../cni/errors.js";
import { fnv1a } from "../net/hash.js";

export interface HeldLock {
  release(): Promise<void>;
  /** How long acquiring took, for the logs and the benchmark. */
  waitedMs: number;
}

/**
 * The lock that serialises read-count-change on one state directory: an abstract Unix socket
 * bound by the holder. The kernel releases it when the holder exits in any way, SIGKILL included,
 * so a dead holder can never wedge the node and there is no stale-lock recovery to get wrong.
 * Abstract sockets belong to a network namespace; so do the kernel objects the lock protects.
 */
export async function acquireLock(stateDir: string, timeoutMs: number): Promise<HeldLock> {
  const name = `\0markroute/${fnv1a(stateDir)}/${stateDir.slice(-64)}`;
  const started = performance.now();
  let backoff = 1;
  for (;;) {
    const server = await tryBind(name);
    if (server) {
      return {
        waitedMs: performance.now() - started,
        release: () => new Promise<void>((resolve) => server.close(() => resolve())),
      };
    }
    if (performance.now() - started > timeoutMs) {
      throw new CniError(ErrorCode.tryAgainLater, `another markroute operation has held the lock on ${stateDir} for over ${timeoutMs} ms; try again later`);
    }
    // Jittered backoff up to 20 ms: waiters do not wake in lockstep.
    await new Promise((r) => setTimeout(r, backoff * (0.5 + Math.random())));
    backoff = Math.min(backoff * 2, 20);
  }
}

function tryBind(name: string): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") resolve(undefined);
      else reject(new CniError(ErrorCode.stateStore, `cannot take the markroute lock: ${err.message}`));
    });
    server.listen(name, () => {
      // The lock must not keep the process alive on its own.
      server.unref();
      resolve(server);
    });
  });
}

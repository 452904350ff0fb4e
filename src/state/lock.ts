import { connect, createServer, type Server, type Socket } from "node:net";
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
 *
 * Waiters do not poll: each connects to the holder and sleeps until that connection closes (the
 * holder released or died), then tries again. `stuckMs` bounds how long one holder may keep the
 * lock without letting go, not the length of the queue: 200 pods starting at once on 2 cores all
 * get their turn, while a holder that hangs makes everyone behind it answer "try again later".
 */
export async function acquireLock(stateDir: string, stuckMs: number): Promise<HeldLock> {
  const name = `\0markroute/${fnv1a(stateDir)}/${stateDir.slice(-64)}`;
  const started = performance.now();
  for (;;) {
    const held = await tryBind(name);
    if (held) return { waitedMs: performance.now() - started, release: held };
    const outcome = await holderLetsGo(name, stuckMs);
    if (outcome === "stuck") {
      throw new CniError(ErrorCode.tryAgainLater, `another markroute operation has held the lock on ${stateDir} for over ${stuckMs} ms; try again later`);
    }
  }
}

/** Binds the name; on success returns the release function, which also wakes the waiters. */
function tryBind(name: string): Promise<(() => Promise<void>) | undefined> {
  return new Promise((resolve, reject) => {
    const waiters = new Set<Socket>();
    const server: Server = createServer((socket) => {
      // Waiters only wait for this connection to close; nothing is read or written.
      socket.unref();
      socket.on("error", () => socket.destroy());
      waiters.add(socket);
    });
    server.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") resolve(undefined);
      else reject(new CniError(ErrorCode.stateStore, `cannot take the markroute lock: ${err.message}`));
    });
    server.listen(name, () => {
      // The lock must not keep the process alive on its own.
      server.unref();
      resolve(() => new Promise<void>((done) => {
        server.close(() => done());
        for (const w of waiters) w.destroy();
      }));
    });
  });
}

/** Sleeps until the current holder lets go ("released"), or `stuckMs` pass without that ("stuck"). */
function holderLetsGo(name: string, stuckMs: number): Promise<"released" | "stuck"> {
  return new Promise((resolve) => {
    const socket = connect(name);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve("stuck");
    }, stuckMs);
    const released = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve("released");
    };
    // Closed by the holder's release or death; refused when it let go before we connected.
    socket.once("close", released);
    socket.once("error", released);
  });
}

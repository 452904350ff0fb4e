// The agent's event sources: what the kernel announces (rtnetlink: rules, routes, links and
// netconf, which carries rp_filter; nftables: every table, chain, rule, set and element change,
// iptables-nft's included), as long-running monitors in the agent's own network namespace, and the
// conf dir. Each event only wakes the agent up; what changed is found by reading everything back.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, watch, type FSWatcher } from "node:fs";
import { join } from "node:path";

/** The monitors: argv, never a shell. `nft monitor` is absent where nft is not installed (iptables nodes). */
export const IP_MONITOR = ["ip", "-o", "monitor", "rule", "route", "link", "netconf"];
export const NFT_MONITOR = ["nft", "monitor"];

/**
 * A monitor that dies is started again after `firstMs`, then twice as long each time it dies again
 * (up to `maxMs`), so one that cannot run (a kernel without nftables) costs a start every `maxMs`,
 * not every second; one that stayed up `stableMs` starts from `firstMs` again.
 */
export interface RestartBackoff {
  firstMs: number;
  maxMs: number;
  stableMs: number;
}

export const RESTART_BACKOFF: RestartBackoff = { firstMs: 1000, maxMs: 30_000, stableMs: 60_000 };

/** The delay before the next start of a monitor that ran for `upMs` after a delay of `lastMs` (undefined: its first death). */
export const nextRestartMs = (b: RestartBackoff, lastMs: number | undefined, upMs: number): number =>
  lastMs === undefined || upMs >= b.stableMs ? b.firstMs : Math.min(b.maxMs, lastMs * 2);

/** Where `tool` is on PATH, if it is. */
function onPath(tool: string): string | undefined {
  for (const dir of (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return join(dir, tool);
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The monitor dies with the agent, SIGKILL included (setpriv's parent-death signal, util-linux);
 * without setpriv, an orphaned monitor ends at its next event, when its output has no reader.
 */
const withParentDeath = (argv: string[]): string[] => (onPath("setpriv") ? ["setpriv", "--pdeathsig", "KILL", "--", ...argv] : argv);

export interface EventSource {
  stop(): void;
  /** True while its events can come (a monitor's process runs). */
  running(): boolean;
}

/**
 * Runs `argv` for as long as the agent runs, calling `onEvent` for each line it prints (after
 * `nft monitor`'s "# new generation" comments are dropped: each follows a change already seen).
 * A monitor that fails to start or dies is restarted (with `backoff`), its last line on stderr in
 * the message; one that is not installed is given up, said once.
 */
export function monitor(argv: string[], onEvent: () => void, onProblem: (message: string) => void, backoff = RESTART_BACKOFF): EventSource {
  let child: ChildProcess | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let delay: number | undefined;
  if (!onPath(argv[0]!)) {
    onProblem(`${argv[0]} is not installed: no ${argv.join(" ")} events (the periodic read-back still runs)`);
    return { stop() {}, running: () => false };
  }
  const run = withParentDeath(argv);
  const start = () => {
    let partial = "";
    let lastError = "";
    const startedAt = Date.now();
    const c = spawn(run[0]!, run.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    c.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop()!;
      if (lines.some((l) => l && !l.startsWith("#"))) onEvent();
    });
    c.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      lastError = chunk.split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ?? lastError;
    });
    c.on("error", (err) => onProblem(`${argv.join(" ")}: ${err.message}`));
    c.on("close", (code, signal) => {
      if (stopped) return;
      delay = nextRestartMs(backoff, delay, Date.now() - startedAt);
      const how = signal ? `killed by ${signal}` : `exited ${code}`;
      onProblem(`${argv.join(" ")} ${how}${lastError ? `: ${lastError}` : ""}; restarting it in ${delay / 1000} s`);
      // what happened while it was down is read back by the pass this schedules
      onEvent();
      timer = setTimeout(start, delay);
    });
  };
  start();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    },
    running: () => child !== undefined && child.exitCode === null && child.signalCode === null && child.pid !== undefined,
  };
}

/** Every change of the conf dir's entries (a rewrite is a write or a rename). A dir that cannot be watched is left to the periodic check. */
export function watchDir(dir: string, onEvent: () => void, onProblem: (message: string) => void): EventSource {
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: true }, () => onEvent());
    watcher.on("error", (err) => onProblem(`watching ${dir}: ${err.message}`));
  } catch (err) {
    onProblem(`cannot watch ${dir} (${(err as Error).message}): the conflist entry is checked every resync only`);
  }
  return { stop: () => watcher?.close(), running: () => watcher !== undefined };
}

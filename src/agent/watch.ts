// The agent's event sources: what the kernel announces (rtnetlink: rules, routes, links and
// netconf, which carries rp_filter; nftables: every table, chain, rule, set and element change,
// iptables-nft's included), as long-running monitors in the agent's own network namespace, and the
// conf dir. Each event only wakes the agent up; what changed is found by reading everything back.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, watch, type FSWatcher } from "node:fs";
import { join } from "node:path";

/** The monitors: argv, never a shell. `nft monitor` is absent where nft is not installed (iptables nodes). */
export const KERNEL_MONITORS: string[][] = [
  ["ip", "-o", "monitor", "rule", "route", "link", "netconf"],
  ["nft", "monitor"],
];

/** A monitor that dies is started again after this long. */
const RESTART_MS = 1000;

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
}

/**
 * Runs `argv` for as long as the agent runs, calling `onEvent` for each line it prints (after
 * `nft monitor`'s "# new generation" comments are dropped: each follows a change already seen).
 * A monitor that fails to start or dies is restarted; one that is not installed is given up, said once.
 */
export function monitor(argv: string[], onEvent: () => void, onProblem: (message: string) => void): EventSource {
  let child: ChildProcess | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  if (!onPath(argv[0]!)) {
    onProblem(`${argv[0]} is not installed: no ${argv.join(" ")} events (the periodic read-back still runs)`);
    return { stop() {} };
  }
  const run = withParentDeath(argv);
  const start = () => {
    let partial = "";
    const c = spawn(run[0]!, run.slice(1), { stdio: ["ignore", "pipe", "ignore"] });
    child = c;
    c.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop()!;
      if (lines.some((l) => l && !l.startsWith("#"))) onEvent();
    });
    c.on("error", (err) => onProblem(`${argv.join(" ")}: ${err.message}`));
    c.on("close", () => {
      if (stopped) return;
      onProblem(`${argv.join(" ")} exited; restarting it`);
      // what happened while it was down is read back by the pass this schedules
      onEvent();
      timer = setTimeout(start, RESTART_MS);
    });
  };
  start();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    },
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
  return { stop: () => watcher?.close() };
}

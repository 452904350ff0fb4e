// Which state directory and CNI log the agent follows: the CNI binary uses those its netconf entry
// names, so the agent takes them from the same entry (--entry-file's, else the one in the conflist
// the runtime uses) unless told otherwise; told otherwise, it says so at start, since it then
// repairs records and counts operations no CNI call of this node writes.
import { DEFAULT_LOG_FILE, DEFAULT_STATE_DIR, logFileOf } from "../config.js";
import { findConflist } from "../install/conf-dir.js";
import { readEntry, type Json } from "../install/entry.js";

export interface AgentPaths {
  stateDir: string;
  logFile: string;
  /** Where a path given on the command line differs from the entry's: logged at start. */
  warnings: string[];
}

/** markroute's entry as the CNI binary gets it: the conflist's, else --entry-file's (about to go in); undefined when there is none yet. */
export function currentEntry(confDir: string, entryFile: string | undefined): Json | undefined {
  const attempt = <T>(read: () => T) => {
    try {
      return read();
    } catch {
      return undefined; // no conflist yet (the main plugin installs it later), or an unreadable file: said by /readyz
    }
  };
  return attempt(() => findConflist(confDir).list.plugins.find((p) => p.type === "markroute")) ?? (entryFile ? attempt(() => readEntry({ entryFile })) : undefined);
}

/** The paths to follow: each given one, else the entry's, else the CNI binary's default. */
export function agentPaths(given: { stateDir?: string; logFile?: string }, entry: Json | undefined): AgentPaths {
  const fromEntry = {
    stateDir: typeof entry?.stateDir === "string" ? entry.stateDir : DEFAULT_STATE_DIR,
    logFile: entry ? logFileOf(entry) : DEFAULT_LOG_FILE,
  };
  const warnings: string[] = [];
  for (const [flag, key] of [["--state-dir", "stateDir"], ["--log-file", "logFile"]] as const) {
    const value = given[key];
    if (entry && value !== undefined && value !== fromEntry[key]) {
      warnings.push(`${flag} ${value} differs from markroute's entry's ${key} ${fromEntry[key]}: the CNI operations use the entry's, the agent follows ${value}`);
    }
  }
  return { stateDir: given.stateDir ?? fromEntry.stateDir, logFile: given.logFile ?? fromEntry.logFile, warnings };
}

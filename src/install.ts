// Putting markroute on a node and taking it off (`markroute install` / `markroute uninstall`, run by
// the DaemonSet's init container and the uninstall Job in deploy/): the binary into the CNI bin
// directory (install/binary.ts), its entry into the conflist the container runtime uses
// (install/conf-dir.ts, install/entry.ts). Every write is write-fsync-rename (fs/atomic.ts).
// Only node:fs here and modules the binary already loads: every pod start loads this code.
import { lstatSync } from "node:fs";
import { DEFAULT_STATE_DIR } from "./config.js";
import { withState, type ChangeSummary } from "./engine.js";
import { installBinary, removeBinary } from "./install/binary.js";
import { findConflist, installEntry, removeEntries, type EntryInstalled } from "./install/conf-dir.js";
import { checkedEntry, type Json } from "./install/entry.js";

export interface InstallOptions {
  binDir: string;
  confDir: string;
  /** The markroute entry of the conflist (`type` is "markroute"; added when missing). */
  entry: Json;
  /** The executable to install; this one by default. */
  source?: string;
}

export interface InstallReport {
  binary: { path: string; action: "installed" | "unchanged" };
  conflist: EntryInstalled;
}

export interface UninstallOptions {
  binDir: string;
  confDir: string;
  /** Default: the stateDir of the markroute entry found in the conflist, else /var/lib/cni/markroute. */
  stateDir?: string;
}

export interface UninstallReport {
  conflists: { path: string; action: "removed" | "unchanged" }[];
  stateDir: string;
  /** Attachments whose kernel objects were removed. */
  attachments: string[];
  summary?: ChangeSummary;
  binary: { path: string; action: "removed" | "absent" };
}

/**
 * Installs the binary, then the conflist entry: kubelet must never find an entry for a binary
 * that is not there. The entry is checked (and the conflist found) before anything changes.
 */
export function install(opts: InstallOptions): InstallReport {
  checkedEntry(opts.entry, findConflist(opts.confDir));
  const binary = installBinary(opts.source ?? process.execPath, opts.binDir);
  const conflist = installEntry(opts.confDir, opts.entry);
  return { binary, conflist };
}

/**
 * Takes markroute off the node: its entry out of every conflist of the conf dir (new pods stop
 * calling it), then every recorded attachment's kernel objects, then the binary. Each step is
 * idempotent; a failure stops before the binary goes, so a retry (or the runtime's DELs) still can.
 */
export async function uninstall(opts: UninstallOptions): Promise<UninstallReport> {
  const { conflists, stateDir: entryStateDir } = removeEntries(opts.confDir);
  const stateDir = opts.stateDir ?? entryStateDir ?? DEFAULT_STATE_DIR;
  let attachments: string[] = [];
  let summary: ChangeSummary | undefined;
  let present = true;
  try {
    lstatSync(stateDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new Error(`cannot inspect the state directory ${stateDir}: ${(err as Error).message}`);
    present = false; // never used on this node: nothing recorded, nothing to remove
  }
  if (present) {
    ({ attachments, summary } = await withState(stateDir, (session) => {
      const ids = session.view.records().map((r) => r.id);
      for (const id of ids) session.detach(id);
      const left = session.view.records().map((r) => r.id);
      if (left.length) throw new Error(`attachments still recorded in ${stateDir} after removal: ${left.join(", ")}`);
      return { attachments: ids, summary: session.summary };
    }));
  }
  const binary = removeBinary(opts.binDir);
  return { conflists, stateDir, attachments, ...(summary ? { summary } : {}), binary };
}

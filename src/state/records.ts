// The state read without the lock, for the agent: whether a state directory holds records at all,
// how many pods they mark or pass through (its metrics), and a read-only view of them (its cheap
// read-back). Nothing here writes or removes anything: a writer's temporary file is left to the
// next operation under the lock (StateStore.listRecords). A record or the index is written whole
// (write, then rename), so a read sees an old file or a new one; a read racing a change may mix
// the two, which a caller tolerates by re-reading under the lock before it acts on what it found.
import { readdirSync } from "node:fs";
import { secureDirectory } from "./safe-path.js";
import { StateStore, emptyIndex, kernelIdentity, recordsDirOf, type AttachmentRecord } from "./store.js";
import { StateView, type DriftReader } from "./view.js";

/**
 * True when the state directory and its records directory exist (safe: see safe-path.ts); false
 * when nothing was ever attached with it. Creates nothing.
 */
export function stateExists(stateDir: string): boolean {
  return secureDirectory(stateDir, false) && secureDirectory(recordsDirOf(stateDir), false);
}

/** The records as they are now, without the lock: one gone meanwhile (a DEL) is skipped; a malformed one is counted. */
function recordsNow(stateDir: string): { records: AttachmentRecord[]; malformed: number } {
  let names: string[];
  try {
    names = readdirSync(recordsDirOf(stateDir));
  } catch {
    return { records: [], malformed: 0 }; // nothing attached with this state directory yet
  }
  const store = new StateStore(stateDir);
  const found = { records: [] as AttachmentRecord[], malformed: 0 };
  for (const n of names.filter((n) => n.endsWith(".json"))) {
    try {
      const record = store.readRecord(n.slice(0, -".json".length));
      if (record) found.records.push(record);
    } catch {
      found.malformed++; // the next operation under the lock reports it
    }
  }
  return found;
}

/** Pods recorded on the node: those marked (their records hold kernel objects) and those passed through (excluded, or selected by nothing). */
export interface PodCounts {
  marked: number;
  unmarked: number;
}

/** The records counted by what they hold, without the lock (a malformed one is counted by neither). */
export function countPods(stateDir: string): PodCounts {
  const { records } = recordsNow(stateDir);
  const marked = records.filter((r) => r.objects.length > 0).length;
  return { marked, unmarked: records.length - marked };
}
/**
 * The state as a view, read without the lock; undefined when it cannot be trusted as it is (a
 * malformed record; no index while records hold objects, a dirty one, another boot's or
 * namespace's): only an operation under the lock, which heals or reports it, can say what the
 * kernel should hold then.
 */
export function unlockedView(stateDir: string, driftOf: DriftReader): StateView | undefined {
  const { records, malformed } = recordsNow(stateDir);
  const identity = kernelIdentity();
  const index = new StateStore(stateDir).readIndex() ?? emptyIndex(identity);
  if (malformed > 0 || index.kernel !== identity) return undefined;
  const view = new StateView({ readRecord: (id) => records.find((r) => r.id === id), listRecords: () => records }, index, driftOf);
  return view.needsRecovery(records) ? undefined : view;
}

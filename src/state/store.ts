// The state directory: one record per attachment (the truth), and an index (a cache of what the
// records add up to, so an operation reads one file instead of every pod's). A little over ~250
// lines: the file formats, their validation and their upgrades from older versions' shapes are one
// concern, kept together so that a format change is made in one place.
import { lstatSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { CniError, ErrorCode } from "../cni/errors.js";
import { replaceFile } from "../fs/atomic.js";
import { secureDirectory } from "./safe-path.js";
import { setName, type AttachmentPlan, type KernelObject, type NodeFacts } from "../plan.js";
import { SELECTED_BY, type PodSelection } from "../selection.js";

/** Records are version 1; the index, a cache rebuilt from them, is version 2 (counts instead of holder lists). */
export const STATE_VERSION = 1;
export const INDEX_VERSION = 2;

export interface AttachmentRecord extends AttachmentPlan {
  version: number;
  createdAt: string;
  /** Always there once read from the state directory: records older than the field get it inferred (`selectionOfOld`). */
  selection?: PodSelection;
}

export interface IndexEntry {
  object: KernelObject;
  /** For rp_filter: the value found before we loosened it, to put back with the last pod. */
  previous?: number;
  /** Its holders planned it differently (the conflist changed between their ADDs). */
  mixed?: boolean;
}

export interface StateIndex {
  version: number;
  /** Set before the kernel is touched and cleared after: a dirty index means an operation died midway. */
  dirty: boolean;
  /** Every shared object we may have installed (a superset while dirty), by key. */
  objects: Record<string, IndexEntry>;
  /**
   * How many attachments hold each object, shared ones and set elements alike; an object goes when
   * none does. Counts, not holder lists: the index is read and written twice by every operation.
   */
  refs: Record<string, number>;
  /** When an ADD last read the shared objects back from the kernel (ms since the epoch). */
  checkedAt?: number;
  /** Detected once, while any attachment exists. */
  facts?: Partial<NodeFacts>;
  /** The boot and network namespace the objects were installed in; another one has none of them. */
  kernel: string;
}

export const emptyIndex = (kernel: string): StateIndex => ({ version: INDEX_VERSION, dirty: false, objects: {}, refs: {}, kernel });

/** Identifies this boot and network namespace: kernel objects live and die with them. */
export function kernelIdentity(): string {
  const bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  return `${bootId}/${statSync("/proc/self/ns/net").ino}`;
}

function storeError(what: string, err: unknown): never {
  throw new CniError(ErrorCode.stateStore, `${what}: ${(err as Error).message}`);
}

/** Records and index, wherever they are kept: the state directory, or memory for tests. */
export interface StateStorage {
  readIndex(): StateIndex | undefined;
  writeIndex(idx: StateIndex): void;
  readRecord(id: string): AttachmentRecord | undefined;
  writeRecord(rec: AttachmentRecord): void;
  deleteRecord(id: string): void;
  listRecords(): AttachmentRecord[];
}

/** Keeps records and index as JSON text, as the state directory does. */
export class MemoryStore implements StateStorage {
  readonly files = new Map<string, string>();
  private get = <T>(name: string) => (this.files.has(name) ? (JSON.parse(this.files.get(name)!) as T) : undefined);
  readIndex = () => this.get<StateIndex>("index");
  writeIndex = (idx: StateIndex) => void this.files.set("index", JSON.stringify(idx));
  readRecord = (id: string) => this.get<AttachmentRecord>(`record/${id}`);
  writeRecord = (rec: AttachmentRecord) => void this.files.set(`record/${rec.id}`, JSON.stringify(rec));
  deleteRecord = (id: string) => void this.files.delete(`record/${id}`);
  listRecords = () => [...this.files.keys()].filter((k) => k.startsWith("record/")).map((k) => this.get<AttachmentRecord>(k)!);
}

/** Where a state directory keeps its records, one file per attachment. */
export const recordsDirOf = (stateDir: string) => join(stateDir, "attachments");

export class StateStore implements StateStorage {
  private readonly recordsDir: string;
  private readonly indexPath: string;

  constructor(readonly dir: string) {
    this.recordsDir = recordsDirOf(dir);
    this.indexPath = join(dir, "index.json");
  }

  /**
   * Creates the directory owner-only (or, for a reader, requires it); refuses one that anyone but
   * root could redirect or write (safe-path.ts), checked before anything is made.
   */
  ensure(create: boolean): void {
    if (!secureDirectory(this.dir, create) || !secureDirectory(this.recordsDir, create)) {
      throw new CniError(ErrorCode.stateStore, `state directory ${this.dir} does not exist (or holds no attachments directory): nothing was attached with it`);
    }
  }

  /** The index, or undefined when it is missing or unreadable (it is then rebuilt from the records). */
  readIndex(): StateIndex | undefined {
    const idx = readJson<StateIndex & { holders?: unknown }>(this.indexPath);
    if (!idx || typeof idx.objects !== "object") return undefined;
    if (idx.version === INDEX_VERSION && typeof idx.refs === "object") return idx;
    return idx.version === 1 ? fromIndexV1(idx) : undefined;
  }

  writeIndex(idx: StateIndex): void {
    writeAtomic(this.indexPath, JSON.stringify(idx));
  }

  private recordPath(id: string): string {
    return join(this.recordsDir, `${id}.json`);
  }

  /** The record, or undefined when there is none; one of the wrong shape is error 101 naming its file. */
  readRecord(id: string): AttachmentRecord | undefined {
    const path = this.recordPath(id);
    const rec = readJson<unknown>(path);
    if (rec === undefined) return undefined;
    const problem = recordProblem(rec, id);
    if (problem) throw new CniError(ErrorCode.stateStore, `record ${path} is malformed: ${problem}`);
    const r = rec as AttachmentRecord;
    const objects = r.objects.map(upgradeObject);
    return { ...r, objects, selection: r.selection ?? selectionOfOld(r.attachment.network, objects) };
  }

  writeRecord(rec: AttachmentRecord): void {
    writeAtomic(this.recordPath(rec.id), JSON.stringify(rec, null, 1));
  }

  deleteRecord(id: string): void {
    try {
      unlinkSync(this.recordPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") storeError(`cannot delete record ${id}`, err);
    }
  }

  listRecords(): AttachmentRecord[] {
    let names: string[];
    try {
      names = readdirSync(this.recordsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      storeError(`cannot list ${this.recordsDir}`, err);
    }
    // A writer killed between write and rename leaves its temporary file; we hold the lock, so it is
    // dead. Best effort: what cannot go (not a file) makes the next write of that record fail loudly.
    for (const n of names.filter((n) => n.endsWith(".tmp"))) {
      try {
        rmSync(join(this.recordsDir, n), { force: true });
      } catch {
        // see above
      }
    }
    return names
      .filter((n) => n.endsWith(".json"))
      .map((n) => this.readRecord(n.slice(0, -".json".length)))
      .filter((r): r is AttachmentRecord => r !== undefined);
  }
}

const OBJECT_KINDS = ["ipset", "element", "markChain", "nftTable", "nftElement", "linkGroup", "rule", "suppressRule", "route", "rpFilter"];

/**
 * What makes a record's JSON unusable (the fields its readers rely on), or undefined when it is
 * usable. `id` is the file's: a record naming another attachment would make DEL or GC act on that one.
 */
export function recordProblem(rec: unknown, id: string): string | undefined {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  const kind = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "an array" : typeof v);
  if (!isObject(rec)) return `expected a JSON object, found ${kind(rec)}`;
  if (rec.id !== id) return `id: expected "${id}" (the file's name), found ${JSON.stringify(rec.id) ?? "none"}`;
  if (typeof rec.createdAt !== "string") return "createdAt: expected a string";
  const a = rec.attachment;
  if (!isObject(a)) return "attachment: expected an object";
  for (const f of ["network", "containerId", "ifName"]) if (typeof a[f] !== "string") return `attachment.${f}: expected a string`;
  const h = rec.hostMatch;
  if (!isObject(h)) return "hostMatch: expected an object";
  if (typeof h.iface !== "string") return "hostMatch.iface: expected a string";
  if (!Array.isArray(h.addresses)) return "hostMatch.addresses: expected an array";
  if (!Array.isArray(rec.objects)) return `objects: expected an array, found ${kind(rec.objects)}`;
  const bad = rec.objects.findIndex((o) => !isObject(o) || !OBJECT_KINDS.includes(o.kind as string));
  if (bad >= 0) return `objects.${bad}: expected a kernel object (kind one of ${OBJECT_KINDS.join(", ")})`;
  const sel = rec.selection;
  if (sel !== undefined && !(isObject(sel) && SELECTED_BY.includes(sel.by as PodSelection["by"]) && typeof sel.reason === "string" && ["string", "undefined"].includes(typeof sel.mark))) {
    return `selection: expected {by: ${SELECTED_BY.join("|")}, reason, mark?}`;
  }
  return undefined;
}

/**
 * Objects as older versions recorded them, in today's shape, so that what they installed is still
 * recognised and removed: a marking chain or table of one mark had it at top level.
 */
function upgradeObject(o: KernelObject): KernelObject {
  const old = o as KernelObject & { set?: string; mark?: number; mask?: number; marks?: unknown };
  if ((o.kind === "markChain" || o.kind === "nftTable") && old.marks === undefined) {
    const { set, mark, mask, ...rest } = old;
    return { ...rest, marks: [{ name: "default", set: set ?? "", mark: mark!, mask: mask! }] } as KernelObject;
  }
  if (o.kind === "nftElement" && old.set === undefined) return { ...o, set: "" };
  return o;
}

/**
 * What selected a pod recorded before records said so. Then only marked pods had records, and a
 * mark had one selector: transparent-tunnel's (its set without a tag) every pod of the network,
 * annotated mode's entries (a set each) the pod's annotation.
 */
function selectionOfOld(network: string, objects: KernelObject[]): PodSelection {
  const marking = objects.flatMap((o) => (o.kind === "markChain" || o.kind === "nftTable" ? o.marks : []));
  const element = objects.find((o) => o.kind === "element" || o.kind === "nftElement");
  const untagged = (set: string) => set === "" || set === setName(network, 4) || set === setName(network, 6);
  const said = "recorded before markroute kept what selected a pod";
  if (!element || untagged(element.set)) return { by: "network", mark: "default", reason: `transparent-tunnel marks every pod of network ${network} (${said})` };
  const mark = marking.find((m) => m.set === element.set)?.name;
  return { by: "annotation", ...(mark ? { mark } : {}), reason: `its annotation named ${mark ? `marks.${mark}` : "an entry of marks"} (${said})` };
}

/**
 * An index of version 1 (holder lists) as today's, kept dirty: the first operation reconciles it
 * with the records, and the values to put back (rp_filter) it holds are not lost on the way.
 */
function fromIndexV1(old: StateIndex): StateIndex {
  const objects = Object.fromEntries(Object.entries(old.objects)
    .filter(([key]) => !key.startsWith("element/"))
    .map(([key, entry]) => [key, { ...entry, object: upgradeObject(entry.object) }]));
  return { ...emptyIndex(old.kernel), objects, facts: old.facts, dirty: true };
}

function readJson<T>(path: string): T | undefined {
  let text: string;
  try {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) throw new CniError(ErrorCode.stateStore, `${path} is a symlink; refusing to read it`);
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (err instanceof CniError) throw err;
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    storeError(`cannot read ${path}`, err);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    // A torn or corrupt file is treated as absent; the records and a reconcile restore the truth.
    return undefined;
  }
}

/**
 * Write-then-rename, owner-only: a reader sees the old file or the new one, never a torn one.
 * Not fsynced: a process crash keeps the page cache, and after a power loss the kernel objects are
 * gone too (the index records the boot it describes, so a new boot reconciles).
 */
function writeAtomic(path: string, text: string): void {
  // One name per file is enough: writers hold the lock.
  try {
    replaceFile(path, text, { tmp: `${path}.tmp`, mode: 0o600, durable: false });
  } catch (err) {
    throw new CniError(ErrorCode.stateStore, (err as Error).message);
  }
}

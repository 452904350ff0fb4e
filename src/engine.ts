// Reference-counted changes under the lock: records first, then the kernel, then the index. A little
// over ~250 lines: the Session's verbs share the one order that makes a crash harmless, kept in one place.
import { applyChange, driftOf, valuesBefore, type ApplyOptions, type Removal } from "./backend/apply.js";
import { objectKey, type AttachmentPlan, type KernelObject, type NodeFacts } from "./plan.js";
import { acquireLock, type HeldLock } from "./state/lock.js";
import * as refcount from "./state/refcount.js";
import { STATE_VERSION, StateStore, emptyIndex, kernelIdentity, type StateIndex, type StateStorage } from "./state/store.js";
import { StateView } from "./state/view.js";

export const LOCK_TIMEOUT_MS = 10_000;

/** What happened to the kernel in one operation, for logs and `reconcile`. */
export interface ChangeSummary {
  installed: string[];
  removed: string[];
  recovered: boolean;
  /** This ADD read the shared objects back from the kernel (its drift check was due, or the kernel refused its change). */
  driftChecked?: boolean;
  /** Why that read failed, when it did (the ADD went on; the next due check reads again). */
  driftCheckError?: string;
  /** What the read-back found wrong, then repaired by re-applying every record. */
  repaired?: Repair[];
  /** Why healing a predecessor's leftovers failed, when it did. */
  recoveryError?: string;
  lockWaitMs: number;
}

/** A shared object found not as planned, and what differed. */
export interface Repair { key: string; problems: string[] }

export const repairsOf = (drift: Map<string, string[]>): Repair[] => [...drift].map(([key, problems]) => ({ key, problems }));

/** What the engine needs of the kernel; the real one batches tool calls, tests use a fake. */
export interface Kernel {
  /** The values installing `objects` overwrites (rp_filter), read before anything changes, by key. */
  valuesBefore(objects: KernelObject[]): Map<string, number>;
  /** Installs and removes; removals put back their recorded values. */
  apply(install: KernelObject[], remove: Removal[], options?: ApplyOptions): void;
  /** For each object, what differs from the plan (empty: installed as planned). */
  drift(objects: KernelObject[]): Map<string, string[]>;
}

export const linuxKernel: Kernel = { valuesBefore, apply: applyChange, drift: driftOf };

const stamped = (plan: AttachmentPlan) => ({ ...plan, version: STATE_VERSION, createdAt: new Date().toISOString() });

/**
 * One operation under the lock: the verbs (attach, detach, check, reconcile) over the store, the
 * index and the kernel. Reference counting is src/state/refcount.ts; this holds the order that
 * makes a crash harmless: the index marked dirty and the record written before the kernel changes,
 * the index written clean after; a refused ADD rolled back; a dead predecessor's work recovered.
 */
export class Session {
  readonly summary: ChangeSummary;
  /** What status, explain and CHECK read; it sees this session's changes as they happen. */
  readonly view: StateView;
  /** Recovery failed: the index stays dirty so that the next operation tries again. */
  private unhealed = false;

  constructor(
    private readonly store: StateStorage,
    private readonly kernel: Kernel,
    private readonly index: StateIndex,
    lockWaitMs: number,
    recovered: boolean,
  ) {
    this.summary = { installed: [], removed: [], recovered, lockWaitMs };
    this.view = new StateView(store, index, (objects) => kernel.drift(objects));
  }

  /** Before the kernel is touched: the index lists what may be installed, and says an operation is under way. */
  private markDirty(install: KernelObject[]): void {
    // Values to put back are recorded now, with the dirty mark: a change cut short still has them.
    const before = this.kernel.valuesBefore(install.filter((o) => this.index.objects[objectKey(o)]?.previous === undefined));
    for (const o of install.filter(refcount.isShared)) {
      const entry = { ...this.index.objects[objectKey(o)], object: o };
      entry.previous ??= before.get(objectKey(o));
      this.index.objects[objectKey(o)] = entry;
    }
    this.index.dirty = true;
    this.store.writeIndex(this.index);
  }

  /** Changes the kernel, then records that it is done. A crash before the end leaves the index dirty. */
  private applyAndClean({ install, remove }: refcount.Change, afterKernel?: () => void, options?: ApplyOptions): void {
    const removals = remove.map((o): Removal => ({ object: o, previous: this.index.objects[objectKey(o)]?.previous }));
    this.kernel.apply(install, removals, options);
    for (const o of remove) delete this.index.objects[objectKey(o)];
    afterKernel?.();
    if (Object.keys(this.index.refs).length === 0) delete this.index.facts;
    this.index.dirty = this.unhealed;
    this.store.writeIndex(this.index);
    this.summary.installed.push(...install.map(objectKey));
    this.summary.removed.push(...remove.map(objectKey));
  }

  /**
   * An ADD, which also repairs drift: every `checkEveryMs` (0: every time) it first reads the shared
   * objects back from the kernel and, if someone removed or changed one, re-applies every record.
   * Reading them costs a few tool runs (~10 ms), too much for every pod start; a change the kernel
   * refuses (our table or set deleted) is read back at once, repaired and tried again. `facts`, when
   * given, replace the node facts the index caches.
   */
  attach(plan: AttachmentPlan, checkEveryMs: number, facts?: Partial<NodeFacts>): void {
    // A pod passed through, holding nothing from an earlier ADD either: its record alone (no index, no drift check).
    if (plan.objects.length === 0 && !this.store.readRecord(plan.id)?.objects.length) return this.store.writeRecord(stamped(plan));
    if (facts) this.index.facts = facts;
    const now = Date.now();
    const last = this.index.checkedAt ?? 0;
    // A recovery that just re-applied every record has repaired any drift as well.
    const healed = this.summary.recovered && !this.unhealed;
    if (healed) this.index.checkedAt = now;
    const due = !healed && (now - last >= checkEveryMs || now < last);
    if (due) this.repairDrift(now);
    try {
      this.install(plan);
    } catch (err) {
      if (due || healed || !this.repairDrift(now)) throw err;
      this.install(plan);
    }
  }

  /**
   * Reads back the shared objects the index holds and, if any is not as planned, re-applies every
   * record. True when it found drift (repaired, or `recoveryError` says why not). A read that fails
   * is reported, not thrown: the check is an ADD's extra, and the ADD goes on without it.
   */
  private repairDrift(now: number): boolean {
    this.index.checkedAt = now;
    this.summary.driftChecked = true;
    let drift: Map<string, string[]>;
    try {
      drift = this.sharedDrift();
    } catch (err) {
      this.summary.driftCheckError = (err as Error).message;
      return false;
    }
    if (drift.size === 0) return false;
    // A repair that fails must not block this ADD, which then installs everything it needs itself.
    this.recover();
    if (!this.unhealed) this.summary.repaired = repairsOf(drift);
    return true;
  }

  /** The shared objects the index holds that the kernel does not have as planned, by key, with what differs. */
  sharedDrift(): Map<string, string[]> {
    return this.driftOf(this.view.installed());
  }

  /** Of `objects`, those the kernel does not have as planned, by key, with what differs. */
  private driftOf(objects: KernelObject[]): Map<string, string[]> {
    return new Map([...this.kernel.drift(objects)].filter(([, problems]) => problems.length > 0));
  }

  /**
   * The agent's pass: reads back every object the records need (`only` those it selects), the
   * pods' own set elements and link groups included, and if any is not as planned re-applies every
   * record, as a recovery does. Returns what it found; a re-apply that fails is the summary's
   * `recoveryError`, and leaves the index dirty for the next operation to heal.
   */
  repair(only: (o: KernelObject) => boolean = () => true): Repair[] {
    const found = repairsOf(this.driftOf(this.view.wanted().filter(only)));
    if (found.length > 0) this.recover();
    return found;
  }

  /** The counts and the kernel change for `plan`, then the record, then the kernel; a refusal is rolled back. */
  private install(plan: AttachmentPlan): void {
    const old = this.store.readRecord(plan.id)?.objects ?? [];
    const change = refcount.attach(this.index, plan, old, this.unhealed, () => this.store.listRecords());
    this.markDirty(change.install);
    // The record is written before the kernel changes, so whatever gets installed is traceable.
    this.store.writeRecord(stamped(plan));
    try {
      this.applyAndClean(change);
    } catch (err) {
      this.rollBack(plan.id);
      throw err;
    }
  }

  /**
   * A refused ADD takes back what it got installed, so a failed ADD changes nothing. If even that
   * fails, the record and the dirty index stay: the runtime's DEL, or the next operation, finishes it.
   */
  private rollBack(id: string): void {
    try {
      this.detach(id);
    } catch {
      // left for the DEL that follows a failed ADD
    }
  }

  /** A DEL: removes the attachment's objects that no other attachment holds. False when there was nothing to remove. */
  detach(id: string): boolean {
    const record = this.store.readRecord(id);
    if (!record) return false;
    if (record.objects.length === 0) this.store.deleteRecord(id); // a pod passed through: nothing counted or installed
    else {
      const change = refcount.detach(this.index, record, () => this.store.listRecords());
      this.markDirty(change.install);
      this.applyAndClean(change, () => this.store.deleteRecord(id));
    }
    return true;
  }

  /** A CHECK: what differs in the kernel from the attachment's objects, or undefined when nothing is recorded for `id`. */
  check(id: string): string[] | undefined {
    const record = this.store.readRecord(id);
    return record && [...this.kernel.drift(this.view.expected(record)).values()].flat();
  }

  /**
   * Heals what a dead predecessor left. Its failure must not block this operation (a DEL must still
   * be able to remove its own attachment); the index then stays dirty and the next operation retries.
   */
  recover(): void {
    try {
      // healed now, whatever an earlier attempt of this operation left: the index may be clean again
      this.unhealed = false;
      this.reconcile();
      delete this.summary.recoveryError;
    } catch (err) {
      this.unhealed = true;
      this.summary.recoveryError = (err as Error).message;
    }
  }

  /** Re-applies every recorded attachment and removes what no record needs: the answer to any doubt. */
  reconcile(): void {
    const change = refcount.reconcile(this.index, this.store.listRecords());
    this.markDirty(change.install);
    this.applyAndClean(change, undefined, { reapply: true });
  }
}

export interface StateOptions {
  kernel?: Kernel;
  /**
   * For people's read-only commands (status, explain): a state directory that does not exist is
   * an error, not made, and an index needing recovery is shown as found, not healed.
   */
  readOnly?: boolean;
  /** The lock, already held by the caller (the agent's, waited for off its event loop), who releases it. */
  heldLock?: HeldLock;
}

/**
 * Runs `fn` holding the state directory's lock. An index that is missing, dirty (an operation
 * died midway) or from another boot or network namespace is first reconciled from the records.
 */
export async function withState<T>(stateDir: string, fn: (session: Session) => T, { kernel = linuxKernel, readOnly = false, heldLock }: StateOptions = {}): Promise<T> {
  const store = new StateStore(stateDir);
  store.ensure(!readOnly);
  const lock = heldLock ?? (await acquireLock(stateDir, LOCK_TIMEOUT_MS));
  try {
    const identity = kernelIdentity();
    const found = store.readIndex();
    const healthy = found && !found.dirty && found.kernel === identity;
    // Objects of another boot or namespace are not ours to remove here: start from the records alone
    // (those of pods passed through hold nothing that needs an index).
    const index = found && found.kernel === identity ? found : emptyIndex(identity);
    const recover = !readOnly && !healthy && (found !== undefined || store.listRecords().some((r) => r.objects.length > 0));
    const session = new Session(store, kernel, index, lock.waitedMs, recover);
    if (recover) session.recover();
    return fn(session);
  } finally {
    if (!heldLock) await lock.release();
  }
}

/** For people's read-only commands (status, explain): the state as found, under the lock, through the view alone. */
export const readState = <T>(stateDir: string, fn: (view: StateView) => T, { kernel }: Pick<StateOptions, "kernel"> = {}): Promise<T> =>
  withState(stateDir, (session) => fn(session.view), { ...(kernel ? { kernel } : {}), readOnly: true });

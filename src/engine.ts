// Reference-counted changes under the lock: records first, then the kernel, then the index.
import { applyChange, driftOf, valuesBefore, type Removal } from "./backend/apply.js";
import { isPerPod, mergeShared, objectKey, type AttachmentPlan, type KernelObject } from "./plan.js";
import { acquireLock } from "./state/lock.js";
import {
  STATE_VERSION, StateStore, emptyIndex, kernelIdentity, type AttachmentRecord, type StateIndex, type StateStorage,
} from "./state/store.js";

export const LOCK_TIMEOUT_MS = 10_000;

const sameObject = (a: KernelObject, b: KernelObject) => JSON.stringify(a) === JSON.stringify(b);

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
  apply(install: KernelObject[], remove: Removal[]): void;
  /** For each object, what differs from the plan (empty: installed as planned). */
  drift(objects: KernelObject[]): Map<string, string[]>;
}

export const linuxKernel: Kernel = { valuesBefore, apply: applyChange, drift: driftOf };

export class Transaction {
  readonly summary: ChangeSummary;
  /** Recovery failed: the index stays dirty so that the next operation tries again. */
  private unhealed = false;

  constructor(
    readonly store: StateStorage,
    private readonly kernel: Kernel,
    readonly index: StateIndex,
    lockWaitMs: number,
    recovered: boolean,
  ) {
    this.summary = { installed: [], removed: [], recovered, lockWaitMs };
  }

  /** Counts `objects` as held by one more (+1) or one fewer (-1) attachment; returns those no longer held. */
  private count(objects: KernelObject[], delta: 1 | -1): KernelObject[] {
    const unheld: KernelObject[] = [];
    for (const o of objects) {
      const key = objectKey(o);
      const refs = Math.max(0, (this.index.refs[key] ?? 0) + delta);
      if (refs > 0) this.index.refs[key] = refs;
      else {
        delete this.index.refs[key];
        unheld.push(this.index.objects[key]?.object ?? o);
      }
    }
    return unheld;
  }

  /**
   * After a release, a shared object its holders planned differently (the conflist changed
   * between their ADDs) must be as the newest remaining holder planned it, not as a departed one
   * left it. Only objects flagged `mixed` cost a read of the records.
   */
  private reinstated(released: KernelObject[], departing: string): KernelObject[] {
    const mixed = released.map(objectKey).filter((k) => this.index.refs[k] && this.index.objects[k]?.mixed);
    if (mixed.length === 0) return [];
    const records = this.store.listRecords()
      .filter((r) => r.id !== departing)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    const reinstate: KernelObject[] = [];
    for (const key of mixed) {
      const entry = this.index.objects[key]!;
      const versions = records.flatMap((r) => r.objects.filter((o) => objectKey(o) === key));
      if (versions.length === 0) continue;
      const wanted = versions.reduce((held, planned) => mergeShared(planned, held));
      if (versions.every((v) => sameObject(v, wanted))) delete entry.mixed;
      if (!sameObject(wanted, entry.object)) reinstate.push(wanted);
    }
    return reinstate;
  }

  /** Before the kernel is touched: the index lists what may be installed, and says an operation is under way. */
  private markDirty(install: KernelObject[]): void {
    // Values to put back are recorded now, with the dirty mark: a change cut short still has them.
    const before = this.kernel.valuesBefore(install.filter((o) => this.index.objects[objectKey(o)]?.previous === undefined));
    for (const o of install.filter(isShared)) {
      const entry = { ...this.index.objects[objectKey(o)], object: o };
      entry.previous ??= before.get(objectKey(o));
      this.index.objects[objectKey(o)] = entry;
    }
    this.index.dirty = true;
    this.store.writeIndex(this.index);
  }

  /** Changes the kernel, then records that it is done. A crash before the end leaves the index dirty. */
  private applyAndClean(install: KernelObject[], remove: KernelObject[], afterKernel?: () => void): void {
    const removals = remove.map((o): Removal => ({ object: o, previous: this.index.objects[objectKey(o)]?.previous }));
    this.kernel.apply(install, removals);
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
   * refuses (our table or set deleted) is read back at once, repaired and tried again.
   */
  add(plan: AttachmentPlan, checkEveryMs: number): void {
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
    const drift = this.kernel.drift(Object.values(this.index.objects).map((e) => e.object));
    return new Map([...drift].filter(([, problems]) => problems.length > 0));
  }

  /**
   * Installs what the plan needs and is not known to be installed as planned (the pod's own set
   * elements always: re-ADD must leave them present). Re-ADD releases what the old plan held and
   * the new one does not.
   */
  private install(plan: AttachmentPlan): void {
    const keys = new Set(plan.objects.map(objectKey));
    const old = this.store.readRecord(plan.id)?.objects ?? [];
    const oldKeys = new Set(old.map(objectKey));
    const install = plan.objects.flatMap((planned) => {
      const known = this.index.objects[objectKey(planned)];
      // After a failed recovery the index may list objects that are not there: install them all.
      if (!known || !isShared(planned)) return [planned];
      const heldByOthers = (this.index.refs[objectKey(planned)] ?? 0) > (oldKeys.has(objectKey(planned)) ? 1 : 0);
      const o = heldByOthers ? mergeShared(planned, known.object) : planned;
      if (sameObject(known.object, o) && !this.unhealed && !repairedByEveryAdd(o)) return [];
      // The conflist changed under pods that hold this object: remember to look at them on release.
      if (heldByOthers && !sameObject(known.object, o)) known.mixed = true;
      return [o];
    });
    this.count(plan.objects.filter((o) => !oldKeys.has(objectKey(o))), 1);
    const released = old.filter((o) => !keys.has(objectKey(o)));
    const remove = this.count(released, -1);
    install.push(...this.reinstated(released, plan.id));
    this.markDirty(install);
    // The record is written before the kernel changes, so whatever gets installed is traceable.
    this.store.writeRecord({ ...plan, version: STATE_VERSION, createdAt: new Date().toISOString() });
    try {
      this.applyAndClean(install, remove);
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
      this.remove(id);
    } catch {
      // left for the DEL that follows a failed ADD
    }
  }

  /** Removes the attachment's objects that no other attachment holds. False when there was nothing to remove. */
  remove(id: string): boolean {
    const record = this.store.readRecord(id);
    if (!record) return false;
    const remove = this.count(record.objects, -1);
    const reinstate = this.reinstated(record.objects, id);
    this.markDirty(reinstate);
    this.applyAndClean(reinstate, remove, () => this.store.deleteRecord(id));
    return true;
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
    const records = this.store.listRecords().sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    const desired = new Map<string, KernelObject>();
    for (const r of records) {
      for (const o of r.objects) {
        const held = desired.get(objectKey(o));
        desired.set(objectKey(o), held ? mergeShared(o, held) : o);
      }
    }
    this.index.refs = {};
    for (const r of records) this.count(r.objects, 1);
    // What the index may have installed and no record needs (elements are not in the index: a
    // dead ADD's elements are in its record, so they are desired, and a dead DEL's were removed first).
    const stale = Object.entries(this.index.objects).filter(([k]) => !desired.has(k)).map(([, e]) => e.object);
    this.markDirty([...desired.values()]);
    this.applyAndClean([...desired.values()], stale);
  }

  records(): AttachmentRecord[] {
    return this.store.listRecords();
  }

  /** For a set of objects, what differs in the kernel from the plan. */
  drift(objects: KernelObject[]): Map<string, string[]> {
    return this.kernel.drift(objects);
  }
}

/**
 * Shared objects every ADD writes again although the index says they are there, because that
 * costs nothing: rp_filter is a file (someone resetting it is undone by the next pod). The rest
 * is read back only when an ADD's drift check is due (Transaction.add).
 */
const repairedByEveryAdd = (o: KernelObject) => o.kind === "rpFilter";

/** Shared objects live in the index; a pod's own objects only in its record (and the reference counts). */
const isShared = (o: KernelObject) => !isPerPod(o);

export interface StateOptions {
  kernel?: Kernel;
  /**
   * For people's read-only commands (status, explain): a state directory that does not exist is
   * an error, not made, and an index needing recovery is shown as found, not healed.
   */
  readOnly?: boolean;
}

/**
 * Runs `fn` holding the state directory's lock. An index that is missing, dirty (an operation
 * died midway) or from another boot or network namespace is first reconciled from the records.
 */
export async function withState<T>(stateDir: string, fn: (tx: Transaction) => T, { kernel = linuxKernel, readOnly = false }: StateOptions = {}): Promise<T> {
  const store = new StateStore(stateDir);
  store.ensure(!readOnly);
  const lock = await acquireLock(stateDir, LOCK_TIMEOUT_MS);
  try {
    const identity = kernelIdentity();
    const found = store.readIndex();
    const healthy = found && !found.dirty && found.kernel === identity;
    // Objects of another boot or namespace are not ours to remove here: start from the records alone.
    const index = found && found.kernel === identity ? found : emptyIndex(identity);
    const recover = !readOnly && !healthy && (found !== undefined || store.listRecords().length > 0);
    const tx = new Transaction(store, kernel, index, lock.waitedMs, recover);
    if (recover) tx.recover();
    return fn(tx);
  } finally {
    await lock.release();
  }
}

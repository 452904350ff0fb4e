// What people's commands (status, explain) and CHECK read of the state: the records, the index's
// counts and shared objects, and their drift from the kernel. Nothing here writes.
import { isPerPod, objectKey, type KernelObject, type NodeFacts } from "../plan.js";
import type { AttachmentRecord, StateIndex, StateStorage } from "./store.js";

/** For each object, what differs in the kernel from the plan (empty: installed as planned). */
export type DriftReader = (objects: KernelObject[]) => Map<string, string[]>;

export class StateView {
  constructor(
    private readonly store: Pick<StateStorage, "readRecord" | "listRecords">,
    private readonly index: StateIndex,
    private readonly driftOf: DriftReader,
  ) {}

  records(): AttachmentRecord[] {
    return this.store.listRecords();
  }

  record(id: string): AttachmentRecord | undefined {
    return this.store.readRecord(id);
  }

  /** The shared objects the index holds, as installed now (the newest holder's plan). */
  installed(): KernelObject[] {
    return Object.values(this.index.objects).map((e) => e.object);
  }

  /** Every object the records need: the shared ones as the index holds them, each pod's own (set elements, link groups) as its record has them. */
  wanted(records: AttachmentRecord[] = this.records()): KernelObject[] {
    const objects = new Map(this.installed().map((o) => [objectKey(o), o]));
    for (const r of records) for (const o of r.objects.filter(isPerPod)) objects.set(objectKey(o), o);
    return [...objects.values()];
  }

  /** How many attachments hold the object with this key. */
  refs(key: string): number {
    return this.index.refs[key] ?? 0;
  }

  /** The index is dirty or missing (an operation died midway, or the node rebooted). */
  needsRecovery(records: AttachmentRecord[] = this.records()): boolean {
    // (records of pods passed through hold nothing to count)
    return this.index.dirty || (records.some((r) => r.objects.length > 0) && Object.keys(this.index.refs).length === 0);
  }

  /** When an ADD last read the shared objects back (ms since the epoch), if one has. */
  driftCheckedAt(): number | undefined {
    return this.index.checkedAt;
  }

  /** Node facts earlier ADDs detected, kept while pods are attached. */
  cachedFacts(): Partial<NodeFacts> | undefined {
    return this.index.facts;
  }

  /** A record's objects as they are meant to be now: shared ones as the index holds them, the pod's own set elements as recorded. */
  expected(record: AttachmentRecord): KernelObject[] {
    return record.objects.map((o) => (o.kind === "element" ? o : (this.index.objects[objectKey(o)]?.object ?? o)));
  }

  /** For a set of objects, what differs in the kernel from the plan. */
  drift(objects: KernelObject[]): Map<string, string[]> {
    return this.driftOf(objects);
  }
}

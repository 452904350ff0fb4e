// Reference counting over the index, with no I/O: what an attach, a detach or a reconcile must
// install and remove. The counts (and `mixed` flags) are updated in the index given; the session
// (src/engine.ts) writes it, and changes the kernel, in the order crash safety needs.
import { isPerPod, mergeShared, objectKey, type AttachmentPlan, type KernelObject } from "../plan.js";
import type { AttachmentRecord, StateIndex } from "./store.js";

/** What the kernel must get and lose for one operation. */
export interface Change {
  install: KernelObject[];
  remove: KernelObject[];
}

const sameObject = (a: KernelObject, b: KernelObject) => JSON.stringify(a) === JSON.stringify(b);

/** Shared objects live in the index; a pod's own objects only in its record (and the reference counts). */
export const isShared = (o: KernelObject) => !isPerPod(o);

/**
 * Shared objects every ADD writes again although the index says they are there, because that
 * costs nothing: rp_filter is a file (someone resetting it is undone by the next pod). The rest
 * is read back only when an ADD's drift check is due (Session.attach).
 */
const repairedByEveryAdd = (o: KernelObject) => o.kind === "rpFilter";

/** Counts `objects` as held by one more (+1) or one fewer (-1) attachment; returns those no longer held. */
export function count(index: StateIndex, objects: KernelObject[], delta: 1 | -1): KernelObject[] {
  const unheld: KernelObject[] = [];
  for (const o of objects) {
    const key = objectKey(o);
    const refs = Math.max(0, (index.refs[key] ?? 0) + delta);
    if (refs > 0) index.refs[key] = refs;
    else {
      delete index.refs[key];
      unheld.push(index.objects[key]?.object ?? o);
    }
  }
  return unheld;
}

/** Records oldest first: a shared object is as the newest holder planned it. */
const byAge = (records: AttachmentRecord[]) => [...records].sort((a, b) => a.createdAt.localeCompare(b.createdAt));

/**
 * After a release, a shared object its holders planned differently (the conflist changed
 * between their ADDs) must be as the newest remaining holder planned it, not as a departed one
 * left it. Only objects flagged `mixed` cost a call of `records` (a read of every record).
 */
function reinstated(index: StateIndex, released: KernelObject[], departing: string, records: () => AttachmentRecord[]): KernelObject[] {
  const mixed = released.map(objectKey).filter((k) => index.refs[k] && index.objects[k]?.mixed);
  if (mixed.length === 0) return [];
  const holders = byAge(records().filter((r) => r.id !== departing));
  const reinstate: KernelObject[] = [];
  for (const key of mixed) {
    const entry = index.objects[key]!;
    const versions = holders.flatMap((r) => r.objects.filter((o) => objectKey(o) === key));
    if (versions.length === 0) continue;
    const wanted = versions.reduce((held, planned) => mergeShared(planned, held));
    if (versions.every((v) => sameObject(v, wanted))) delete entry.mixed;
    if (!sameObject(wanted, entry.object)) reinstate.push(wanted);
  }
  return reinstate;
}

/**
 * An ADD (or re-ADD, whose earlier objects are `old`): installs what the plan needs and is not
 * known to be installed as planned (the pod's own set elements always: re-ADD must leave them
 * present; everything when `installAll`, after a failed recovery). Re-ADD releases what the old
 * plan held and the new one does not.
 */
export function attach(index: StateIndex, plan: AttachmentPlan, old: KernelObject[], installAll: boolean, records: () => AttachmentRecord[]): Change {
  const keys = new Set(plan.objects.map(objectKey));
  const oldKeys = new Set(old.map(objectKey));
  const install = plan.objects.flatMap((planned) => {
    const known = index.objects[objectKey(planned)];
    // After a failed recovery the index may list objects that are not there: install them all.
    if (!known || !isShared(planned)) return [planned];
    const heldByOthers = (index.refs[objectKey(planned)] ?? 0) > (oldKeys.has(objectKey(planned)) ? 1 : 0);
    const o = heldByOthers ? mergeShared(planned, known.object) : planned;
    if (sameObject(known.object, o) && !installAll && !repairedByEveryAdd(o)) return [];
    // The conflist changed under pods that hold this object: remember to look at them on release.
    if (heldByOthers && !sameObject(known.object, o)) known.mixed = true;
    return [o];
  });
  count(index, plan.objects.filter((o) => !oldKeys.has(objectKey(o))), 1);
  const released = old.filter((o) => !keys.has(objectKey(o)));
  const remove = count(index, released, -1);
  install.push(...reinstated(index, released, plan.id, records));
  return { install, remove };
}

/** A DEL: the attachment's objects that no other attachment holds go; mixed ones it leaves revert to the remaining holders' plan. */
export function detach(index: StateIndex, record: AttachmentRecord, records: () => AttachmentRecord[]): Change {
  const remove = count(index, record.objects, -1);
  return { install: reinstated(index, record.objects, record.id, records), remove };
}

/**
 * Every record re-applied, the counts rebuilt from them, and what the index may have installed and
 * no record needs removed (elements are not in the index: a dead ADD's elements are in its record,
 * so they are desired, and a dead DEL's were removed first).
 */
export function reconcile(index: StateIndex, records: AttachmentRecord[]): Change {
  const desired = new Map<string, KernelObject>();
  for (const r of byAge(records)) {
    for (const o of r.objects) {
      const held = desired.get(objectKey(o));
      desired.set(objectKey(o), held ? mergeShared(o, held) : o);
    }
  }
  index.refs = {};
  for (const r of records) count(index, r.objects, 1);
  const stale = Object.entries(index.objects).filter(([k]) => !desired.has(k)).map(([, e]) => e.object);
  return { install: [...desired.values()], remove: stale };
}

// Reference counting as pure functions over an index: objects in, what to install and remove out.
// The session's bookkeeping (shared objects entered in the index, removed ones dropped) is done
// here by `applied`, so that each case reads as a sequence of operations.
import { describe, expect, it } from 'vitest';
import { objectKey, type AttachmentPlan, type KernelObject } from '../../src/plan.ts';
import { attach, detach, reconcile, type Change } from '../../src/state/refcount.ts';
import { emptyIndex, type AttachmentRecord, type StateIndex } from '../../src/state/store.ts';

const set: KernelObject = { kind: 'ipset', family: 4, name: 'mr-net' };
const rule: KernelObject = { kind: 'rule', family: 4, priority: 32765, mark: 16, mask: 16, table: 100 };
const rp: KernelObject = { kind: 'rpFilter', dev: 'eth0', value: 2 };
const route = (gateway: string): KernelObject => ({ kind: 'route', family: 4, table: 100, gateway, dev: 'eth0' });
const element = (pod: number): KernelObject =>
  ({ kind: 'element', family: 4, set: 'mr-net', address: `10.244.0.${pod}`, iface: `veth${pod}`, comment: `pod ${pod}` });

function planOf(pod: number, gateway = '10.224.0.1', extra: KernelObject[] = []): AttachmentPlan {
  const attachment = { network: 'net', containerId: `c${pod}`, ifName: 'eth0' };
  const hostMatch = { iface: `veth${pod}`, topology: 'routed' as const, addresses: [{ family: 4 as const, address: `10.244.0.${pod}` }] };
  return { id: `net_c${pod}_eth0`, attachment, hostMatch, objects: [set, element(pod), rule, route(gateway), ...extra] } as AttachmentPlan;
}

const recordOf = (plan: AttachmentPlan, at: number): AttachmentRecord => ({ ...plan, version: 1, createdAt: new Date(at).toISOString() });

/** What the session does around a change: shared objects installed enter the index, removed ones leave it. */
function applied(index: StateIndex, change: Change): { install: string[]; remove: string[] } {
  for (const o of change.install) if (o.kind !== 'element') index.objects[objectKey(o)] = { ...index.objects[objectKey(o)], object: o };
  for (const o of change.remove) delete index.objects[objectKey(o)];
  return { install: change.install.map(objectKey), remove: change.remove.map(objectKey) };
}

const none = (): AttachmentRecord[] => {
  throw new Error('records read although no object is mixed');
};

describe('refcount', () => {
  it('the first holder installs everything, the next only its own element and rp_filter, the last takes the shared objects away', () => {
    const index = emptyIndex('boot/ns');
    const first = applied(index, attach(index, planOf(2, '10.224.0.1', [rp]), [], false, none));
    expect(first.install).toEqual(planOf(2, '10.224.0.1', [rp]).objects.map(objectKey));
    const second = applied(index, attach(index, planOf(3, '10.224.0.1', [rp]), [], false, none));
    expect(second.install).toEqual([objectKey(element(3)), 'rpFilter/eth0']);
    expect(index.refs[objectKey(rule)]).toBe(2);

    expect(applied(index, detach(index, recordOf(planOf(2, '10.224.0.1', [rp]), 1), none))).toEqual({ install: [], remove: [objectKey(element(2))] });
    const last = applied(index, detach(index, recordOf(planOf(3, '10.224.0.1', [rp]), 2), none));
    expect(last.remove.sort()).toEqual(planOf(3, '10.224.0.1', [rp]).objects.map(objectKey).sort());
    expect(index).toMatchObject({ refs: {}, objects: {} });
  });

  it('re-attaching counts each object once, and releases what the new plan no longer holds', () => {
    const index = emptyIndex('boot/ns');
    const plan = planOf(2, '10.224.0.1', [rp]);
    applied(index, attach(index, plan, [], false, none));
    const again = applied(index, attach(index, planOf(2), plan.objects, false, none));
    expect(again).toEqual({ install: [objectKey(element(2))], remove: ['rpFilter/eth0'] });
    expect(Object.values(index.refs)).toEqual([1, 1, 1, 1]);
  });

  it('a shared object planned differently is mixed, and reverts to the remaining holders\' plan when the newer one leaves', () => {
    const index = emptyIndex('boot/ns');
    const old = planOf(2, '10.224.0.1');
    const changed = planOf(3, '10.224.0.254'); // the conflist changed between the ADDs: newest wins
    applied(index, attach(index, old, [], false, none));
    expect(applied(index, attach(index, changed, [], false, none)).install).toEqual([objectKey(element(3)), 'route/4/100']);
    expect(index.objects['route/4/100']).toMatchObject({ object: route('10.224.0.254'), mixed: true });

    const records = () => [recordOf(old, 1), recordOf(changed, 2)];
    const change = detach(index, recordOf(changed, 2), records);
    expect(change.install).toEqual([route('10.224.0.1')]);
    expect(index.objects['route/4/100']!.mixed).toBeUndefined();
  });

  it('after a failed recovery every shared object is installed again', () => {
    const index = emptyIndex('boot/ns');
    applied(index, attach(index, planOf(2), [], false, none));
    expect(applied(index, attach(index, planOf(3), [], true, none)).install).toHaveLength(4);
  });

  it('reconcile rebuilds the counts from the records, installs what they need (newest plan wins) and removes the rest', () => {
    const index = emptyIndex('boot/ns');
    index.objects['rpFilter/eth0'] = { object: rp, previous: 1 }; // installed by an ADD whose record is gone
    index.refs = { 'rpFilter/eth0': 5 };
    const change = reconcile(index, [recordOf(planOf(3, '10.224.0.254'), 2), recordOf(planOf(2), 1)]);
    expect(change.remove).toEqual([rp]);
    expect(change.install).toContainEqual(route('10.224.0.254'));
    expect(change.install.map(objectKey)).toHaveLength(5);
    expect(index.refs).toEqual({ 'ipset/mr-net': 2, [objectKey(element(2))]: 1, [objectKey(element(3))]: 1, [objectKey(rule)]: 2, 'route/4/100': 2 });
  });
});

// One agent pass over a real state directory and a fake kernel: a pass that finds nothing reads
// the records without the lock (it returns while another process holds it); one that finds drift
// takes the lock, reads again under it and repairs; a state that needs healing is never judged
// without the lock. The lock is held by a real flock(1) process.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { repairKernel, unobservable } from '../../src/agent/passes.ts';
import { withState, type Kernel } from '../../src/engine.ts';
import type { AttachmentPlan, KernelObject } from '../../src/plan.ts';
import { objectKey } from '../../src/plan.ts';
import { LOCK_FILE } from '../../src/state/lock.ts';
import { unlockedView } from '../../src/state/records.ts';
import { StateStore } from '../../src/state/store.ts';

const rule: KernelObject = { kind: 'rule', family: 4, priority: 32765, mark: 16, mask: 16, table: 100 };
const element: KernelObject = { kind: 'nftElement', family: 4, table: 'markroute-1', set: '', address: '10.244.0.2', iface: 'veth-a', comment: '' };
const plan: AttachmentPlan = {
  id: 'pods_a_eth0', attachment: { network: 'pods', containerId: 'a', ifName: 'eth0' },
  hostMatch: { iface: 'veth-a', topology: 'routed', addresses: [{ family: 4, address: '10.244.0.2' }] }, objects: [rule, element],
};

let dir: string;
let stateDir: string;
let holder: ChildProcess | undefined;
/** Keys the fake kernel reports missing, what it was asked to read, and what it applied. */
let missing: Set<string>;
let reads: number;
let applied: string[];
const kernel: Kernel = {
  valuesBefore: () => new Map(),
  apply: (install) => {
    applied.push(...install.map(objectKey));
    for (const o of install) missing.delete(objectKey(o));
  },
  drift: (objects) => {
    reads++;
    return new Map(objects.map((o) => [objectKey(o), missing.has(objectKey(o)) ? ['missing'] : []]));
  },
};

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mr-unit-pass-'));
  stateDir = join(dir, 'state');
  [missing, reads, applied] = [new Set(), 0, []];
  await withState(stateDir, (s) => s.attach(plan, Infinity), { kernel });
  [reads, applied] = [0, []];
});
afterEach(() => {
  holder?.kill('SIGKILL');
  holder = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** Another process holds the state lock for `seconds`. */
async function lockedElsewhere(seconds: number): Promise<void> {
  holder = spawn('flock', ['--exclusive', join(stateDir, LOCK_FILE), 'sleep', String(seconds)], { stdio: 'ignore' });
  const free = () => spawnSync('flock', ['--nonblock', join(stateDir, LOCK_FILE), 'true']).status === 0;
  for (let i = 0; i < 100 && free(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(free()).toBe(false);
}

describe('an agent pass', () => {
  test('nothing changed: the records are read back without the lock (the pass ends while another process holds it)', async () => {
    await lockedElsewhere(5);
    const started = performance.now();
    const pass = await repairKernel(stateDir, unobservable(true), false, kernel);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(pass).toEqual({ repaired: [], recovered: false, unobservable: 0, lockWaitMs: 0, locked: false });
    expect(reads).toBe(1);
    expect(applied).toEqual([]);
  });

  test('drift found: the pass takes the lock (waiting for its holder), reads again under it, and repairs', async () => {
    missing.add(objectKey(rule));
    await lockedElsewhere(0.4);
    const pass = await repairKernel(stateDir, unobservable(true), false, kernel);
    expect(pass).toMatchObject({ repaired: [{ key: objectKey(rule), problems: ['missing'] }], recovered: false, locked: true });
    expect(pass.lockWaitMs).toBeGreaterThan(200);
    expect(reads, 'once without the lock, once under it').toBe(2);
    expect(applied).toContain(objectKey(rule));
  });

  test('drift that is gone by the time the lock is held (a CNI operation was mid-change): nothing repaired', async () => {
    missing.add(objectKey(element));
    await lockedElsewhere(0.3);
    setTimeout(() => missing.clear(), 100); // the operation holding the lock finishes its change
    const pass = await repairKernel(stateDir, unobservable(true), false, kernel);
    expect(pass).toMatchObject({ repaired: [], locked: true });
    expect(applied).toEqual([]);
  });

  test('a state that needs healing (a dirty index) is not judged without the lock', async () => {
    const store = new StateStore(stateDir);
    store.writeIndex({ ...store.readIndex()!, dirty: true });
    expect(unlockedView(stateDir, kernel.drift)).toBeUndefined();
    const pass = await repairKernel(stateDir, unobservable(true), false, kernel);
    expect(pass).toMatchObject({ recovered: true, locked: true });
    expect(new StateStore(stateDir).readIndex()!.dirty).toBe(false);
  });

  test('a malformed record, or an index of another boot: not judged without the lock either', () => {
    expect(unlockedView(stateDir, kernel.drift)?.wanted().map(objectKey).sort()).toEqual([objectKey(rule), objectKey(element)].sort());
    const store = new StateStore(stateDir);
    const index = store.readIndex()!;
    store.writeIndex({ ...index, kernel: 'another-boot/1' });
    expect(unlockedView(stateDir, kernel.drift)).toBeUndefined();
    store.writeIndex(index);
    expect(unlockedView(stateDir, kernel.drift)).toBeDefined();
    writeFileSync(join(stateDir, 'attachments', 'bad.json'), '{"id":"other"}');
    expect(unlockedView(stateDir, kernel.drift)).toBeUndefined();
  });
});

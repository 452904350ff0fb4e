// The state lock as the agent takes it: waited for in the background (its event loop goes on
// answering probes and signals meanwhile), handed to the engine's operation while held, and still
// refusing a holder that hangs. Real flock(1) holders on a temp dir's lock file.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { withState } from '../../src/engine.ts';
import { LOCK_FILE, acquireLockInBackground } from '../../src/state/lock.ts';

let dir: string;
let holder: ChildProcess | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mr-unit-lock-'));
  writeFileSync(join(dir, LOCK_FILE), '', { mode: 0o600 });
});
afterEach(() => {
  holder?.kill('SIGKILL');
  holder = undefined;
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Whether another process could take the lock now. */
const free = () => spawnSync('flock', ['--nonblock', join(dir, LOCK_FILE), 'true']).status === 0;

/** Another process holds the lock for `seconds`. */
async function heldElsewhere(seconds: number): Promise<void> {
  holder = spawn('flock', ['--exclusive', join(dir, LOCK_FILE), 'sleep', String(seconds)], { stdio: 'ignore' });
  for (let i = 0; i < 100 && free(); i++) await sleep(10);
  expect(free(), 'the other process holds the lock').toBe(false);
}

/** Counts timer ticks while `work` runs: a frozen event loop counts none. */
async function ticksDuring<T>(work: () => Promise<T>): Promise<{ value: T; ticks: number }> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  try {
    return { value: await work(), ticks };
  } finally {
    clearInterval(timer);
  }
}

describe('the state lock, taken in the background (the agent)', () => {
  test('held by another process: waited for while the event loop runs, then held', async () => {
    await heldElsewhere(0.6);
    const { value: lock, ticks } = await ticksDuring(() => acquireLockInBackground(dir, 5000));
    expect(lock.waitedMs).toBeGreaterThan(300);
    expect(ticks, 'timers fired during the wait').toBeGreaterThan(5);
    expect(free()).toBe(false);
    await lock.release();
    expect(free()).toBe(true);
  });

  test('handed to withState, the held lock is used as is (no second acquisition waiting for our own lock) and stays held until its holder releases it', async () => {
    const held = await acquireLockInBackground(dir, 5000);
    const started = performance.now();
    const seen = await withState(dir, () => free(), { heldLock: held });
    expect(performance.now() - started).toBeLessThan(400); // a second acquisition would wait for our own lock until it gave up (500 ms... 10 s)
    expect(seen, 'held during the operation').toBe(false);
    expect(free(), 'still held after it: its holder releases it').toBe(false);
    await held.release();
    expect(free()).toBe(true);
  });

  test('a holder that hangs past stuckMs: "try again later" (code 11), the event loop running meanwhile', async () => {
    await heldElsewhere(5);
    const { value: error, ticks } = await ticksDuring(() => acquireLockInBackground(dir, 500).then(() => undefined, (e: Error & { code?: number }) => e));
    expect(error?.message).toMatch(/held the lock on .* for over 500 ms; try again later/);
    expect(error?.code).toBe(11);
    expect(ticks).toBeGreaterThan(10);
  });
});

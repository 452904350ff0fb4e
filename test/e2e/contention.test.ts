// Contention: another process holds a lock markroute needs for longer than markroute waits for it.
// ADD and DEL must answer CNI error 11 ("try again later", so the runtime retries) in bounded time,
// never hang, and leave the node exactly as it was (no half-change); once the lock is free the
// same calls succeed and the node ends as it began.
//  (a) the xtables lock: iptables-legacy-restore --wait 5 gives up after 5 s (src/kernel/exec.ts
//      maps its "Another app is currently holding the xtables lock" to code 11);
//  (b) markroute's own lock, an abstract unix socket per state directory bound in the node
//      namespace (src/state/lock.ts): the wait is bounded at 10 s (engine.ts LOCK_TIMEOUT_MS).
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { DirectNode, oneJsonObject, type Exit, type Started } from '../lab/direct.ts';
import { NO_MARKROUTE, markChains, markrouteObjects, nsExec, run, type Backend } from '../lab/index.ts';

const BACKENDS: Backend[] = ['iptables', 'nftables'];

/** The one CNI error a refused call prints, with a non-zero exit. */
function cniError(e: Exit): { code: number; msg: string } {
  expect(e.code, `exit ${e.code ?? e.signal}: ${e.stdout} ${e.stderr}`).toBe(1);
  const out = oneJsonObject(e.stdout);
  if (!out.ok) throw new Error(out.why);
  expect(out.value).toMatchObject({ code: expect.any(Number), msg: expect.any(String) });
  return out.value as { code: number; msg: string };
}

/** Waits until the started process printed `word` on stdout. */
const printed = (o: Started, word: string) =>
  new Promise<void>((resolve, reject) => {
    let seen = '';
    o.child.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(word)) resolve();
    });
    void o.done.then((e) => reject(new Error(`lock holder exited ${e.code ?? e.signal}: ${e.stderr}`)));
  });

// (a) -------------------------------------------------------------------------------------------
//
// The xtables lock is a file lock (flock) on /run/xtables.lock by default. That file is not per
// network namespace: holding it would stall every legacy iptables user on the machine, the host's
// and the other suites' included. iptables reads the lock's path from XTABLES_LOCKFILE, and
// markroute's tools inherit its environment, so the markroute calls here (and the lab's own legacy
// iptables calls on this node) name a lock file of this test's own, which the test holds with
// flock(1). The mechanism is the real one (iptables-legacy-restore --wait 5 blocking on flock);
// only the path is private. The node is made to look like a kubelet on iptables-legacy
// (KUBE-IPTABLES-HINT in legacy mangle), so markroute's iptables backend picks the legacy
// variant, which is the one that takes the lock (iptables-nft does not).
describe('the xtables lock held by another process (iptables backend, legacy variant)', () => {
  let node: DirectNode;
  let lockFile: string;
  let holder: Started | undefined;
  const legacyEnv = () => ({ PATH: process.env.PATH ?? '', XTABLES_LOCKFILE: lockFile });

  const hold = async () => {
    // -F: flock execs sleep itself, so killing this pid releases the lock
    holder = node.spawnIn(['flock', '-x', '-F', lockFile, 'sh', '-c', 'echo held; exec sleep 120'], legacyEnv(), '', 'xtables lock holder');
    await printed(holder, 'held');
    expect(run(['flock', '-n', '-x', lockFile, 'true'], { check: false }).code, 'the lock is held').not.toBe(0);
  };
  const release = async () => {
    holder?.child.kill('SIGKILL');
    await holder?.done;
    holder = undefined;
    expect(run(['flock', '-n', '-x', lockFile, 'true'], { check: false }).code, 'the lock is free').toBe(0);
  };

  afterAll(async () => {
    holder?.child.kill('SIGKILL');
    node?.destroy();
    if (lockFile) rmSync(lockFile, { force: true });
  });

  test('ADD of the first pod and DEL of the last answer 11 after ~5 s and change nothing; both succeed once the lock is free', { timeout: 90_000 }, async () => {
    node = new DirectNode('xtlock', 'iptables');
    lockFile = join(node.dir, 'xtables.lock');
    writeFileSync(lockFile, '');
    nsExec(node.ns, ['iptables-legacy', '-w', '5', '-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT'], { env: legacyEnv() });
    const baseline = node.snapshot();
    const opts = { env: { XTABLES_LOCKFILE: lockFile } };
    const pod = node.pod();

    // the first pod's ADD must install the marking chain: it needs the lock, and gives up
    await hold();
    const refused = await node.run('ADD', pod, opts);
    const err = cniError(refused);
    expect(err.code, err.msg).toBe(11);
    expect(err.msg).toMatch(/xtables lock/);
    expect(refused.ms, 'bounded by --wait 5').toBeGreaterThan(4500);
    expect(refused.ms, 'bounded by --wait 5').toBeLessThan(9000);
    // rolled back: the ipset it had made is gone, nothing was recorded
    expect(node.snapshot()).toEqual(baseline);
    expect(node.records()).toEqual([]);
    expect(node.index()?.dirty ?? false).toBe(false);
    expect(node.lockHolders()).toEqual([]);
    await release();

    // the runtime retries: the same ADD succeeds, in the legacy variant
    const added = await node.run('ADD', pod, opts);
    expect(added.code, added.stdout).toBe(0);
    const attached = node.snapshot();
    expect(markChains(attached.iptables.legacy4)).toHaveLength(1);
    expect(markChains(attached.iptables.nft4)).toEqual([]);

    // the last pod's DEL must remove the chain: it needs the lock, and gives up without removing anything
    await hold();
    const refusedDel = await node.run('DEL', pod, opts);
    const delErr = cniError(refusedDel);
    expect(delErr.code, delErr.msg).toBe(11);
    expect(refusedDel.ms).toBeGreaterThan(4500);
    expect(refusedDel.ms).toBeLessThan(9000);
    expect(node.snapshot()).toEqual(attached);
    expect(node.records()).toHaveLength(1);
    expect(node.lockHolders()).toEqual([]);
    await release();

    // the retried DEL succeeds, and the node is as before the first pod
    const deleted = await node.run('DEL', pod, opts);
    expect(deleted.code, deleted.stdout).toBe(0);
    expect(markrouteObjects(node.snapshot())).toEqual(NO_MARKROUTE);
    expect(node.snapshot()).toEqual(baseline);
    expect(node.records()).toEqual([]);
    expect(node.index()).toMatchObject({ dirty: false, refs: {}, objects: {} });
  });
});

// (b) -------------------------------------------------------------------------------------------
//
// markroute's own lock: flock(2) on <stateDir>/lock, held here by another root process of the node
// (as another markroute operation would hold it). Both backends at once (test.concurrent): each
// waits out the same 10 s.
describe.concurrent.each(BACKENDS)("markroute's own lock held by another process, %s backend", (backend) => {
  const nodes: DirectNode[] = [];
  afterAll(() => {
    for (const n of nodes) n.destroy();
  });

  test('ADD, DEL, CHECK and GC answer 11 after the 10 s bounded wait and change nothing; all succeed once it is free', { timeout: 90_000 }, async ({ expect }) => {
    const node = new DirectNode(`ownlock-${backend.slice(0, 3)}`, backend);
    nodes.push(node);
    const baseline = node.snapshot();
    const anchor = node.pod('dual');
    const anchorAdd = await node.run('ADD', anchor);
    expect(anchorAdd.code, anchorAdd.stdout).toBe(0);
    const before = node.snapshot();
    const recordsBefore = node.records();

    const holder = node.spawnIn(
      [process.execPath, '-e', `
        const fd = require('fs').openSync(process.env.LOCK_FILE, 'r+');
        require('child_process').spawnSync('flock', ['--exclusive', '3'], { stdio: ['ignore', 'ignore', 'inherit', fd] });
        console.log('held');
        setInterval(() => {}, 1 << 30);`],
      { PATH: process.env.PATH ?? '', LOCK_FILE: join(node.stateDir, 'lock') }, '', 'markroute lock holder');
    try {
      await printed(holder, 'held');
      // /proc/locks names the process that called flock(2): the holder's flock child
      expect(node.lockHolders()).toHaveLength(1);

      const newcomer = node.pod('dual');
      const calls = await Promise.all([
        node.run('ADD', newcomer),
        node.run('DEL', anchor),
        node.run('CHECK', anchor),
        node.run('GC', undefined, { netconf: { 'cni.dev/valid-attachments': [] } }),
      ]);
      for (const [i, e] of calls.entries()) {
        const what = ['ADD', 'DEL', 'CHECK', 'GC'][i];
        const err = cniError(e);
        expect(err.code, `${what}: ${err.msg}`).toBe(11);
        expect(err.msg).toMatch(/held the lock/);
        // bounded: the 10 s wait plus start-up, on a busy 2-core machine
        expect(e.ms, `${what} took`).toBeGreaterThanOrEqual(10_000);
        expect(e.ms, `${what} took`).toBeLessThan(16_000);
      }
      expect(node.snapshot()).toEqual(before);
      expect(node.records()).toEqual(recordsBefore);
      expect(node.index()?.dirty).toBe(false);
    } finally {
      holder.child.kill('SIGKILL');
      await holder.done;
    }
    // the kernel released the lock with its holder: everything goes through at once
    expect(node.lockHolders()).toEqual([]);
    const newcomer = node.pod();
    const [add, del] = await Promise.all([node.run('ADD', newcomer), node.run('DEL', anchor)]);
    expect([add.code, del.code], `${add.stdout} ${del.stdout}`).toEqual([0, 0]);
    expect((await node.run('DEL', newcomer)).code).toBe(0);
    expect(node.snapshot()).toEqual(baseline);
    expect(node.records()).toEqual([]);
  });
});

// Crash anywhere: markroute SIGKILLed at random points of ADD and DEL (drift repairs included: every
// third round someone first deletes our ip rule and empties our chain), hundreds of times per
// backend, and the node converging afterwards (docs/design.md#the-lock: a holder killed with SIGKILL
// never wedges the node; docs/design.md#state-lock-and-crash-safety: a dirty index is reconciled by
// the next operation).
//
// Pods are on paper (lab/direct.ts: ptp-style prevResults naming host veths that need not exist),
// so a kill costs ~60 ms and hundreds fit in a few minutes on 2 cores. Each round kills in one of
// three ways:
//  - lone: single calls one after another, each killed at a uniform random time across the span
//    of a median uncontended call (start-up, lock, records, kernel, index), so the next victim is often
//    the one that heals its predecessor;
//  - burst: several calls at once (ADDs, re-ADDs, DELs with and without prevResult, containerd's
//    RemovePodSandbox DEL without netns), most killed at uniform random times across the span of
//    such a burst, one in eight left to finish among the kills;
//  - dirty: a burst whose calls are all killed the moment the index says a change is under way,
//    so the lock holder dies between "dirty" and "clean".
// After every round a GC naming every pod (it removes nothing) stands for "the next operation",
// and the node must have converged: index clean, lock free, the kernel's pod elements exactly the
// recorded ones, shared objects present exactly while a record needs them, reference counts as
// the records add up. Every few rounds, and at the end, every pod goes (DEL, or GC with an empty
// valid list) and the node must equal its baseline snapshot.
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { DirectNode, type Exit, type PaperPod, type Started } from '../lab/direct.ts';
import { NO_MARKROUTE, markrouteObjects, nsExec, podElements, sleep, type Backend } from '../lab/index.ts';
import { objectKey } from '../../src/plan.ts';

const BACKENDS: Backend[] = ['iptables', 'nftables'];
/** Rounds per backend; the kills per round vary (lone: 6, burst and dirty: 8). */
const ROUNDS = Number(process.env.MARKROUTE_CRASH_ROUNDS ?? 36);
const POOL = 24;
const BURST = 8;
const LONE = 6;
const TEARDOWN_EVERY = 6;
/** What a run must have done, whatever the machine's load: calls killed, and killed mid-change. */
const MIN_KILLS = 100;
const MIN_MID_CHANGE = 10;

const rand = (n: number) => Math.floor(Math.random() * n);
const pick = <T>(xs: T[]) => xs[rand(xs.length)]!;
const shuffle = <T>(xs: T[]) => xs.map((x) => [Math.random(), x] as const).sort((a, b) => a[0] - b[0]).map(([, x]) => x);

type Op = { cmd: 'ADD' | 'DEL'; pod: PaperPod; how: 'with prevResult' | 'no prevResult' | 'no netns' };

interface Tally {
  calls: number;
  killed: number;
  /** Kills after which the index was found dirty: the victim held the lock and died mid-change. */
  midChange: number;
  survivors: number;
}

const report: string[] = [];
afterAll(() => {
  if (report.length) console.info(`crash (SIGKILL at random points):\n${report.join('\n')}`);
});

describe.each(BACKENDS)('SIGKILL anywhere in ADD and DEL, %s backend', (backend) => {
  let node: DirectNode;
  afterAll(() => node?.destroy());

  test(`${ROUNDS} rounds of kills; after each the node converges, after all of them nothing is left`, { timeout: 240_000 }, async () => {
    const began = performance.now();
    node = new DirectNode(`crash-${backend.slice(0, 3)}`, backend);
    const baseline = node.snapshot();
    // One pod in three dual-stack: IPv6 rules, routes and set elements are crashed too.
    const pool = Array.from({ length: POOL }, (_, i) => node.pod(i % 3 === 2 ? 'dual' : 'ipv4'));
    const tally: Tally = { calls: 0, killed: 0, midChange: 0, survivors: 0 };
    const dirty = () => node.index()?.dirty === true;
    const recorded = () => new Set(node.recordObjects().map((r) => r.attachment.containerId as string));

    // Half the ADDs have their drift check due every time (driftCheckSeconds 0): they read the shared
    // objects back first, and repair injected drift, so kills land in that read and repair too.
    const start = (op: Op): Started =>
      node.start(op.cmd, op.pod, {
        ...(op.how === 'no prevResult' ? { prev: null } : op.how === 'no netns' ? { prev: null, netns: '' } : {}),
        ...(op.cmd === 'ADD' ? { netconf: { driftCheckSeconds: pick([0, 10]) } } : {}),
      });

    /** A random op for a pod: mostly what a runtime would do next given whether markroute holds it. */
    const opFor = (pod: PaperPod, held: Set<string>): Op => {
      const r = Math.random();
      if (held.has(pod.containerId)) return r < 0.6 ? { cmd: 'DEL', pod, how: 'with prevResult' } : r < 0.75 ? { cmd: 'DEL', pod, how: 'no netns' } : { cmd: 'ADD', pod, how: 'with prevResult' };
      return r < 0.8 ? { cmd: 'ADD', pod, how: 'with prevResult' } : { cmd: 'DEL', pod, how: 'no prevResult' };
    };

    const expectSurvivorOk = (o: Started, e: Exit) => {
      if (e.signal === 'SIGKILL') return;
      tally.survivors++;
      expect(e.code, `${o.desc} (not killed): ${e.stdout} ${e.stderr}`).toBe(0);
    };

    // Spans to aim at: one uncontended ADD and DEL, and a burst of BURST concurrent ADDs / DELs.
    const lone: number[] = [];
    for (const p of pool.slice(0, 3)) {
      for (const cmd of ['ADD', 'DEL'] as const) {
        const e = await node.run(cmd, p);
        expect(e.code, e.stdout).toBe(0);
        lone.push(e.ms);
      }
    }
    // the median: most lone victims die before they end, some after their change is done
    const loneSpan = lone.sort((a, b) => a - b)[lone.length >> 1]!;
    const burstStart = performance.now();
    const burstPods = pool.slice(0, BURST);
    for (const cmd of ['ADD', 'DEL'] as const) {
      const exits = await Promise.all(burstPods.map((p) => node.run(cmd, p)));
      for (const e of exits) expect(e.code, e.stdout).toBe(0);
    }
    const burstSpan = (performance.now() - burstStart) / 2;

    /** After "the next operation": the node holds exactly what the records say, and nobody holds the lock. */
    const expectConverged = (where: string) => {
      // the counts themselves, including any status --json does not list (a pod's key without a record)
      const index = node.index();
      expect(index?.dirty, `${where}: index dirty`).toBe(false);
      expect(node.lockHolders(), `${where}: lock sockets`).toEqual([]);
      const records = node.recordObjects();
      const s = node.snapshot();
      const kernel = podElements(s).map((e) => `${e.address},${e.iface}`).sort();
      const wanted = records.flatMap((r) => r.objects.filter((o: any) => o.kind === 'element' || o.kind === 'nftElement').map((o: any) => `${o.address},${o.iface}`)).sort();
      expect(kernel, `${where}: pod elements in the kernel vs in the records`).toEqual(wanted);
      const refs: Record<string, number> = {};
      for (const r of records) for (const o of r.objects) refs[objectKey(o)] = (refs[objectKey(o)] ?? 0) + 1;
      expect(index.refs, `${where}: reference counts vs the records`).toEqual(refs);
      const objects = markrouteObjects(s);
      if (records.length === 0) {
        expect(objects, `${where}: objects left with no record`).toEqual(NO_MARKROUTE);
        expect(s, `${where}: node vs baseline with no record`).toEqual(baseline);
        return;
      }
      const v6 = records.some((r) => r.hostMatch.addresses.some((a: any) => a.family === 6));
      expect({ rules4: objects.rules4.length, routes4: objects.routes4.length, rules6: objects.rules6.length, routes6: objects.routes6.length, rpFilter: s.rpFilter.eth0 }, where)
        .toEqual({ rules4: 1, routes4: 1, rules6: v6 ? 1 : 0, routes6: v6 ? 1 : 0, rpFilter: '2' });
      if (backend === 'nftables') expect(objects.nftTables, where).toHaveLength(1);
      else expect(objects.chains.nft4, where).toHaveLength(1);
      expect(Object.keys(index.objects).sort(), `${where}: index objects`).toEqual(Object.keys(refs).filter((k) => !/^(element|nftElement|linkGroup)\//.test(k)).sort());
    };

    const gcKeeping = (pods: PaperPod[]) =>
      node.run('GC', undefined, { netconf: { 'cni.dev/valid-attachments': pods.map((p) => ({ containerID: p.containerId, ifname: p.ifname })) } });

    /** Kills one call at `delay` ms (Infinity: lets it finish). */
    const killAt = async (o: Started, delay: number) => {
      if (!Number.isFinite(delay)) return;
      await sleep(delay);
      if (o.running()) o.child.kill('SIGKILL');
    };

    const settle = async (started: Started[]) => {
      const exits = await Promise.all(started.map((o) => o.done));
      tally.calls += started.length;
      for (const [i, e] of exits.entries()) {
        if (e.signal === 'SIGKILL') tally.killed++;
        expectSurvivorOk(started[i]!, e);
      }
      return exits;
    };

    /** Someone deletes our IPv4 ip rule and empties what marks pods, so the round's drift checks repair it, dying midway too. */
    const injectDrift = () => {
      nsExec(node.ns, ['ip', 'rule', 'del', 'fwmark', '0x10/0x10', 'lookup', '100'], { check: false });
      const s = node.snapshot();
      if (backend === 'nftables') for (const t of markrouteObjects(s).nftTables) nsExec(node.ns, ['nft', 'flush', 'table', 'inet', t]);
      else for (const variant of ['nft', 'legacy'] as const) for (const c of markrouteObjects(s).chains[`${variant}4`]) nsExec(node.ns, [`iptables-${variant}`, '-t', 'mangle', '-F', c]);
    };

    // Rounds go on past ROUNDS (up to twice as many) until the kills and mid-change kills asked for
    // below happened: under a loaded machine the calibrated spans run long and fewer calls die.
    const enoughKills = () => tally.killed >= MIN_KILLS && tally.midChange >= MIN_MID_CHANGE;
    for (let round = 0; round < ROUNDS || (round < 2 * ROUNDS && !enoughKills()); round++) {
      const kind = (['lone', 'burst', 'dirty', 'burst'] as const)[round % 4]!;
      const drifted = round % 3 === 1 && recorded().size > 0;
      const where = `round ${round} (${kind}${drifted ? ', drift injected' : ''})`;
      if (drifted) injectDrift();
      if (kind === 'lone') {
        for (let i = 0; i < LONE; i++) {
          const o = start(opFor(pick(pool), recorded()));
          await killAt(o, Math.random() * loneSpan);
          const [e] = await settle([o]);
          if (e!.signal === 'SIGKILL' && dirty()) tally.midChange++;
        }
      } else {
        const held = recorded();
        const ops = shuffle(pool).slice(0, BURST).map((p) => opFor(p, held));
        const started = ops.map(start);
        if (kind === 'dirty') {
          const until = performance.now() + 3 * burstSpan;
          while (!dirty() && started.some((o) => o.running()) && performance.now() < until) await new Promise((r) => setImmediate(r));
          for (const o of started) if (o.running()) o.child.kill('SIGKILL');
        } else {
          // One call in eight is left alone: it runs among the dying and must succeed.
          await Promise.all(started.map((o) => killAt(o, Math.random() < 0.125 ? Infinity : Math.random() * burstSpan)));
        }
        const exits = await settle(started);
        if (exits.some((e) => e.signal === 'SIGKILL') && dirty()) tally.midChange++;
      }

      // the next operation, then the node must hold exactly what the records say
      const gc = await gcKeeping(pool);
      expect(gc.code, `${where}: GC after the kills: ${gc.stdout}`).toBe(0);
      const held = pool.find((p) => recorded().has(p.containerId));
      if (drifted && held) {
        // drift waits for an ADD whose check is due (GC does not read the kernel back)
        const readd = await node.run('ADD', held, { netconf: { driftCheckSeconds: 0 } });
        expect(readd.code, `${where}: re-ADD after the kills: ${readd.stdout}`).toBe(0);
        const status = JSON.parse(node.cli(['status', '--json']).stdout) as { objects: { key: string; drift: string[] }[] };
        expect(status.objects.filter((o) => o.drift.length), `${where}: drift after the re-ADD`).toEqual([]);
      }
      expectConverged(where);

      if (round % TEARDOWN_EVERY === TEARDOWN_EVERY - 1) {
        // every pod goes: by DEL (all at once) on even teardowns, by GC with an empty valid list on odd ones
        if ((round / TEARDOWN_EVERY) % 2 < 1) {
          const dels = await Promise.all(pool.map((p) => node.run('DEL', p)));
          for (const [i, e] of dels.entries()) expect(e.code, `${where}: teardown DEL ${pool[i]!.name}: ${e.stdout}`).toBe(0);
        } else {
          const e = await gcKeeping([]);
          expect(e.code, `${where}: teardown GC: ${e.stdout}`).toBe(0);
        }
        expect(node.records(), `${where}: records after teardown`).toEqual([]);
        expectConverged(`${where}, teardown`);
      }
    }

    // The end: every pod's DEL (the runtime's StopPodSandbox) succeeds, for half of them first;
    // then GC with an empty valid list takes the rest; then RemovePodSandbox's DEL of every pod.
    const half = pool.filter((_, i) => i % 2 === 0);
    for (const e of await Promise.all(half.map((p) => node.run('DEL', p)))) expect(e.code, e.stdout).toBe(0);
    const gc = await gcKeeping([]);
    expect(gc.code, gc.stdout).toBe(0);
    for (const e of await Promise.all(pool.map((p) => node.run('DEL', p, { prev: null, netns: '' })))) expect(e.code, e.stdout).toBe(0);
    const status = node.cli(['status']);
    expect(status.code, status.stderr).toBe(0);
    expect(node.records()).toEqual([]);
    expect(node.tmpFiles()).toEqual([]);
    expect(node.status()).toMatchObject({ indexNeedsRecovery: false, attachments: [], objects: [] });
    // the counts themselves: status lists no key that neither the index's objects nor a record holds
    expect(node.index()).toMatchObject({ dirty: false, refs: {}, objects: {} });
    expect(node.lockHolders()).toEqual([]);
    expect(markrouteObjects(node.snapshot())).toEqual(NO_MARKROUTE);
    expect(node.snapshot()).toEqual(baseline);

    // the lock is free: a fresh pod's ADD and DEL go through without waiting for it
    const fresh = node.pod('dual');
    const add = await node.run('ADD', fresh);
    const del = await node.run('DEL', fresh);
    expect([add.code, del.code], `${add.stdout} ${del.stdout}`).toEqual([0, 0]);
    const waits = node.logLines().filter((l) => l.containerId === fresh.containerId).map((l) => l.lockWaitMs);
    expect(waits).toHaveLength(2);
    for (const w of waits) expect(w).toBeLessThan(1000);
    expect(node.snapshot()).toEqual(baseline);

    const repairs = node.logLines().filter((l) => l.repaired).length;
    const line = `  ${backend.padEnd(8)}: ${tally.calls} calls, ${tally.killed} SIGKILLed (${tally.midChange} left the index dirty: killed mid-change), ` +
      `${tally.survivors} ran to the end among them, ${repairs} ADDs repaired injected drift; spans aimed at: lone ${Math.round(loneSpan)} ms, ` +
      `burst of ${BURST} ${Math.round(burstSpan)} ms; ${((performance.now() - began) / 1000).toFixed(1)} s`;
    report.push(line);
    console.info(line);
    expect(tally.killed).toBeGreaterThanOrEqual(MIN_KILLS);
    expect(tally.midChange).toBeGreaterThanOrEqual(MIN_MID_CHANGE); // the crash path itself was exercised, not only start-up
    expect(repairs).toBeGreaterThanOrEqual(1); // the drift repair ran in these rounds (the re-ADDs after them at least)
  });
});

// Deterministic hit of one narrow window: the first ADD has loosened the uplink's rp_filter (1 -> 2)
// but has not yet written the clean index that records the old value (1) for the last DEL to put
// back. strace kills the ADD as it opens the index's temporary file the second time: the first is
// the dirty mark written before the kernel changes, the second the clean index after it changed.
// (A watcher spinning on the sysctl used to race for this window; with a faster runtime it lost.)
// The value rp_filter had before the first pod is recorded (in the dirty index) before it is
// loosened: an ADD killed right after loosening it must not leave the uplink loose for good.
describe.each(BACKENDS)('SIGKILL right after rp_filter was loosened, %s backend', (backend) => {
  let node: DirectNode;
  afterAll(() => node?.destroy());

  test('the last DEL still puts back the rp_filter the node had before the first pod', { timeout: 60_000 }, async () => {
    node = new DirectNode(`rpkill-${backend.slice(0, 3)}`, backend);
    const baseline = node.snapshot();
    expect(baseline.rpFilter.eth0).toBe('1');
    const pod = node.pod();
    const indexTmp = join(node.stateDir, 'index.json.tmp');
    const victim = node.spawnIn(
      ['strace', '-f', '-qq', '-o', '/dev/null', '-P', indexTmp, '-e', 'trace=openat', '-e', 'inject=openat:signal=SIGKILL:when=2', node.bin],
      node.env('ADD', pod), JSON.stringify(node.netconf(pod)), 'ADD (killed at its clean index)');
    const v = await victim.done;
    expect(v.stdout, 'killed before it answered').toBe('');
    expect(node.status().indexNeedsRecovery, `the index is left dirty (strace: exit ${v.code}, ${v.stderr.trim()})`).toBe(true);
    expect(node.snapshot().rpFilter.eth0).toBe('2');
    // the runtime's DEL after the failed ADD (no prevResult), and everything must be as before the first pod
    const del = await node.run('DEL', pod, { prev: null });
    expect(del.code, del.stdout).toBe(0);
    expect(node.records()).toEqual([]);
    const after = node.snapshot();
    expect({ rpFilter: after.rpFilter.eth0, objects: markrouteObjects(after) }).toEqual({ rpFilter: '1', objects: NO_MARKROUTE });
    expect(after).toEqual(baseline);
  });
});

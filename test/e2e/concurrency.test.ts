// markroute under containerd-style concurrency, for both backends: many ADDs and DELs at once (IPv4
// and dual-stack pods), and lock holders killed with SIGKILL in the middle of a change. The kernel
// state and the state directory must come out whole: every call that was not killed succeeds, and
// after the last DEL nothing is left.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  buildOneConfig, cniArgs, cniEnv, createLab, findPlugin, fwmarkRules, inNs, loadPtpConflist, markrouteObjects, NO_MARKROUTE, podElements, run,
  parseStatus, sleep, tableRoutes,
  type Backend, type Conflist, type Lab, type Pod, type RuntimeConf, type Snapshot,
} from '../lab/index.ts';

const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':');

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

describe.each(['iptables', 'nftables'] as Backend[])('concurrent markroute operations (10-ptp-markroute.conflist), %s backend', (backend) => {
  let lab: Lab;
  let list: Conflist;
  /** The kind of a pod's element in the index's reference counts. */
  const elementKind = backend === 'iptables' ? 'element/' : 'nftElement/';
  let stateDir: string;
  let bin: string;
  let baseline: Snapshot;

  const stateFiles = (sub = '') => (existsSync(join(stateDir, sub)) ? readdirSync(join(stateDir, sub)) : []);
  const index = (dir = stateDir) => JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  /** The state as `markroute status --json` reports it (the index file itself only where a kill's timing needs it). */
  const status = () => parseStatus(lab.exec(lab.ns.node, [bin, 'status', '--json', '--state-dir', stateDir], { check: false }));
  /** How many pods' set elements the counts hold. */
  const countedElements = () => status().objects.filter((o) => o.key.startsWith(elementKind) && o.refs > 0).length;

  const runtimeConf = (pod: Pod, netns = pod.netnsPath): RuntimeConf => ({
    containerId: pod.containerId,
    netns,
    ifname: pod.ifname,
    args: cniArgs(pod),
    cniPath: lab.cniPath,
    hostNs: lab.ns.node,
  });

  /** markroute's netconf for a pod as libcni builds it (prevResult: ptp's result; none when null). */
  const netconf = (pod: Pod, prev: unknown = pod.result, l = list) => buildOneConfig(l, l.plugins[1]!, prev ?? undefined, runtimeConf(pod));

  /** Starts markroute for a pod in the node namespace; the child is the plugin itself (ip netns exec execs). */
  function start(cmd: 'ADD' | 'DEL', pod: Pod, prev?: unknown, l = list) {
    const began = performance.now();
    const argv = inNs(lab.ns.node, [bin]);
    const child = spawn(argv[0]!, argv.slice(1), { env: cniEnv(cmd, runtimeConf(pod)), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {});
    child.stdin.end(JSON.stringify(netconf(pod, prev, l)));
    const done = new Promise<Exit>((resolve) =>
      child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: performance.now() - began })),
    );
    return { child, done, desc: `${cmd} ${pod.name}` };
  }

  /** A pod with ptp attached (its result cached on the pod), markroute not yet run. */
  async function preparePod(name: string, l = list): Promise<Pod> {
    const pod = lab.createPodNs(name);
    const add = await lab.cni('ADD', pod, { conflist: { ...l, plugins: [l.plugins[0]!] } });
    expect(add.ok, JSON.stringify(add.runs.map((r) => [r.code, r.rawStdout]))).toBe(true);
    pod.conflist = l; // DEL through the whole list, as the runtime would
    return pod;
  }

  async function removePods(pods: Pod[]): Promise<void> {
    const dels = await Promise.all(pods.map((p) => lab.delPod(p)));
    for (const d of dels) expect(d.ok, JSON.stringify(d.runs.map((r) => [r.type, r.code, r.rawStdout]))).toBe(true);
  }

  const expectNoMarkroute = (s: Snapshot) => {
    expect(s.ipset).toBe('');
    expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);
    expect(s.rpFilter.eth0).toBe('1');
    expect(stateFiles('attachments').filter((f) => f.endsWith('.json'))).toEqual([]);
    expect(status()).toMatchObject({ indexNeedsRecovery: false, attachments: [], objects: [] });
    // the counts themselves: status lists no key that neither the index's objects nor a record holds
    expect(index()).toMatchObject({ dirty: false, refs: {}, objects: {} });
  };

  /** One chain per family (iptables, in iptables-nft: there is no kube-proxy to follow here) or one table. */
  const expectOneMarkingObject = (s: Snapshot, families: (4 | 6)[]) => {
    const o = markrouteObjects(s);
    if (backend === 'iptables') {
      const one = (f: 4 | 6) => (families.includes(f) ? [expect.stringMatching(/^MARKROUTE-/)] : []);
      expect(o.chains).toEqual({ legacy4: [], nft4: one(4), legacy6: [], nft6: one(6) });
      expect(o.jumps).toEqual(families.map(() => expect.stringMatching(/^-A PREROUTING -j MARKROUTE-/)));
      expect(o.nftTables).toEqual([]);
    } else {
      expect({ chains: o.chains, jumps: o.jumps, ipsets: o.ipsets }).toEqual({ chains: NO_MARKROUTE.chains, jumps: [], ipsets: [] });
      expect(o.nftTables).toEqual([expect.stringMatching(/^markroute-/)]);
    }
  };

  beforeAll(async () => {
    lab = await createLab({ cniPath, ipv6: true });
    list = loadPtpConflist(lab, backend);
    stateDir = list.plugins[1]!.stateDir as string;
    bin = findPlugin('markroute', lab.cniPath)!;
    baseline = lab.snapshot();
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('20 ADDs at once, then 20 DELs at once: all succeed, all 20 elements, then nothing left', async () => {
    const pods = await Promise.all(Array.from({ length: 20 }, (_, i) => preparePod(`c${i}`)));
    const added = await Promise.all(pods.map((p) => lab.invoke('ADD', netconf(p), p)));
    for (const [i, r] of added.entries()) {
      expect(r.code, `ADD ${pods[i]!.name}: ${r.rawStdout} ${r.stderr}`).toBe(0);
      expect(r.stdout).toEqual(pods[i]!.result);
    }
    const s = lab.snapshot();
    const elements = podElements(s);
    expect(elements).toHaveLength(20);
    for (const p of pods) {
      expect(elements).toContainEqual(expect.objectContaining({ address: p.ip4, iface: p.hostIf, comment: expect.stringMatching(new RegExp(`^default/${p.name} `)) }));
    }
    expect(fwmarkRules(s)).toHaveLength(1);
    expect(tableRoutes(s, '100')).toHaveLength(1);
    expectOneMarkingObject(s, [4]);
    expect(s.rpFilter.eth0).toBe('2');
    expect(stateFiles('attachments')).toHaveLength(20);
    expect(status().indexNeedsRecovery).toBe(false);
    expect(countedElements()).toBe(20);

    const deleted = await Promise.all(pods.map((p) => lab.invoke('DEL', netconf(p), p)));
    for (const [i, r] of deleted.entries()) {
      expect(r.code, `DEL ${pods[i]!.name}: ${r.rawStdout} ${r.stderr}`).toBe(0);
      expect(r.rawStdout).toBe('');
    }
    expectNoMarkroute(lab.snapshot());
    expect([...stateFiles(), ...stateFiles('attachments')].filter((f) => f.endsWith('.tmp'))).toEqual([]);
    await removePods(pods); // ptp's DEL (markroute's second DEL is a no-op)
    expect(lab.snapshot()).toEqual(baseline);
  });

  test('dual-stack pods: 6 ADDs at once, then 3 DELs and 3 ADDs at once, then the rest: both families\' elements follow, then nothing left', async () => {
    const dual = loadPtpConflist(lab, backend, 'dual');
    const both = (p: Pod) => [`${p.ip4},${p.hostIf}`, `${p.ip6},${p.hostIf}`];
    const elements = () => podElements(lab.snapshot()).map((e) => `${e.address},${e.iface}`).sort();
    const first = await Promise.all(Array.from({ length: 6 }, (_, i) => preparePod(`d${i}`, dual)));
    const added = await Promise.all(first.map((p) => lab.invoke('ADD', netconf(p, p.result, dual), p)));
    for (const [i, r] of added.entries()) expect(r.code, `ADD ${first[i]!.name}: ${r.rawStdout} ${r.stderr}`).toBe(0);
    expect(elements()).toEqual(first.flatMap(both).sort());
    let s = lab.snapshot();
    for (const f of [4, 6] as const) {
      expect(fwmarkRules(s, f), `IPv${f}`).toHaveLength(1);
      expect(tableRoutes(s, '100', f), `IPv${f}`).toHaveLength(1);
    }
    expectOneMarkingObject(s, [4, 6]);

    const [leaving, staying] = [first.slice(0, 3), first.slice(3)];
    const second = await Promise.all(Array.from({ length: 3 }, (_, i) => preparePod(`d${6 + i}`, dual)));
    const mixed = await Promise.all([
      ...leaving.map((p) => lab.invoke('DEL', netconf(p, p.result, dual), p).then((r) => ['DEL', p, r] as const)),
      ...second.map((p) => lab.invoke('ADD', netconf(p, p.result, dual), p).then((r) => ['ADD', p, r] as const)),
    ]);
    for (const [cmd, p, r] of mixed) expect(r.code, `${cmd} ${p.name}: ${r.rawStdout} ${r.stderr}`).toBe(0);
    expect(elements()).toEqual([...staying, ...second].flatMap(both).sort());
    expect(status().indexNeedsRecovery).toBe(false);
    expect(countedElements()).toBe(12);

    const rest = [...staying, ...second];
    const deleted = await Promise.all(rest.map((p) => lab.invoke('DEL', netconf(p, p.result, dual), p)));
    for (const [i, r] of deleted.entries()) expect(r.code, `DEL ${rest[i]!.name}: ${r.rawStdout} ${r.stderr}`).toBe(0);
    s = lab.snapshot();
    expectNoMarkroute(s);
    await removePods([...first, ...second]);
    expect(lab.snapshot()).toEqual(baseline);
  });

  test('lock holders killed with SIGKILL mid-operation do not block the node, and the state heals', async () => {
    // How long one uncontended ADD and DEL take end to end, to aim the kills inside the change.
    const probe = await preparePod('k-probe');
    const t0 = await start('ADD', probe).done;
    const t1 = await start('DEL', probe).done;
    expect([t0.code, t1.code]).toEqual([0, 0]);
    const span = Math.max(t0.ms, t1.ms);

    // One pod stays attached throughout, so kills land on the shared-objects-present path; the
    // first ADD on an empty node stopped midway has its own deterministic test below.
    const anchor = await preparePod('k-anchor');
    expect((await start('ADD', anchor).done).code).toBe(0);
    const attached = new Set<Pod>([anchor]);
    const all: Pod[] = [probe, anchor];
    let n = 0;
    const fresh = async () => {
      const p = await preparePod(`k${n++}`);
      all.push(p);
      return p;
    };
    const kill = (o: ReturnType<typeof start>) => {
      o.child.kill('SIGKILL');
    };
    /** Kills the process as soon as the index says a change is under way (between "dirty" and "clean"). */
    const killWhenDirty = async (o: ReturnType<typeof start>, timeoutMs: number) => {
      const until = performance.now() + timeoutMs;
      while (o.child.exitCode === null && o.child.signalCode === null && performance.now() < until) {
        let dirty = false;
        try {
          dirty = index().dirty === true;
        } catch {
          /* not written yet, or being replaced */
        }
        if (dirty) break;
        await new Promise((r) => setImmediate(r));
      }
      kill(o);
    };
    const outcomes: { how: string; victim: string; killed: boolean; dirty: boolean }[] = [];

    for (let round = 0; round < 12; round++) {
      // a victim alone first, so what the kill left behind can be seen before anyone repairs it:
      // even rounds kill it the moment its change starts, odd ones after a delay across its run
      const addVictim = round % 4 !== 3 || attached.size < 2;
      const victimPod = addVictim ? await fresh() : [...attached].find((p) => p !== anchor)!;
      const victim = start(addVictim ? 'ADD' : 'DEL', victimPod);
      const delay = Math.round(span * (0.2 + (0.6 * round) / 11));
      if (round % 2 === 0) await killWhenDirty(victim, 2 * span);
      else {
        await sleep(delay);
        kill(victim);
      }
      const v = await victim.done;
      const dirty = existsSync(join(stateDir, 'index.json')) && index().dirty === true;
      outcomes.push({ how: round % 2 === 0 ? 'on dirty' : `${delay} ms`, victim: victim.desc, killed: v.signal === 'SIGKILL', dirty });
      if (v.signal !== 'SIGKILL') expect(v.code, `${victim.desc}: ${v.stdout}`).toBe(0);

      // the next operations, started together while the victim's kill is fresh: the runtime's
      // DEL after a failed ADD (no prevResult) or its retried DEL, other pods' ADDs and DELs
      const others = [start('DEL', victimPod, null)];
      const newcomer = await fresh();
      others.push(start('ADD', newcomer));
      const leaving = [...attached].find((p) => p !== victimPod && p !== anchor);
      if (leaving) others.push(start('DEL', leaving));
      // a second kill, among concurrent operations
      const secondPod = await fresh();
      const second = start('ADD', secondPod);
      others.push(second);
      await sleep(delay);
      kill(second);
      const results = await Promise.all(others.map((o) => o.done));
      for (const [i, r] of results.entries()) {
        if (others[i] === second && r.signal === 'SIGKILL') continue;
        expect(r.code, `${others[i]!.desc} after killing ${victim.desc}: ${r.stdout} ${r.stderr}`).toBe(0);
      }
      attached.delete(victimPod);
      if (leaving) attached.delete(leaving);
      attached.add(newcomer);
      if (results.at(-1)!.code === 0) attached.add(secondPod);

      // healed: every attached pod passes CHECK, and the index is clean again
      const check = await Promise.all([...attached].map((p) => lab.invoke('CHECK', netconf(p), p)));
      for (const [i, c] of check.entries()) expect(c.code, `CHECK ${[...attached][i]!.name}: ${c.rawStdout}`).toBe(0);
      expect(status().indexNeedsRecovery).toBe(false);
    }

    const kills = outcomes.filter((o) => o.killed);
    const midChange = outcomes.filter((o) => o.dirty);
    console.info(`SIGKILL: ${kills.length}/${outcomes.length} victims killed while running, ${midChange.length} mid-change (index left dirty); span ${Math.round(span)} ms`);
    expect(kills.length).toBeGreaterThan(0);
    expect(midChange.length).toBeGreaterThanOrEqual(2); // the crash path was exercised

    // every pod's DEL (runtime style, whole list) succeeds; afterwards nothing of markroute is left
    await removePods(all.filter((p) => lab.pods.has(p.name)));
    expectNoMarkroute(lab.snapshot());
    expect(lab.snapshot()).toEqual(baseline);
    // write-then-rename temp files a killed writer left are swept by the next look at the records
    expect(lab.exec(lab.ns.node, [bin, 'status', '--state-dir', stateDir], { check: false }).code).toBe(0);
    expect([...stateFiles(), ...stateFiles('attachments')].filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  // The first ADD on a node, stopped after it marked the index dirty and before its record was
  // written, leaves an index listing objects that were never installed (the set among them).
  // Every later operation first reconciles; removing what was never there must succeed. The stop
  // lands there deterministically: a directory squats the record's temporary file name, so the
  // record cannot be written and the ADD fails exactly at that point, as a kill there would leave it.
  test('a first ADD stopped between marking the index dirty and writing its record does not wedge the node', async () => {
    const crashList = structuredClone(list);
    const crashDir = join(lab.dir, 'state-crash');
    crashList.plugins[1]!.stateDir = crashDir;
    const victim = await preparePod('squat-victim');
    const squatter = join(crashDir, 'attachments', `${list.name}_${victim.containerId}_${victim.ifname}.json.tmp`);
    run(['mkdir', '-p', '-m', '700', squatter]);
    const o = await start('ADD', victim, undefined, crashList).done;
    expect(o.code).toBe(1);
    expect(JSON.parse(o.stdout), o.stdout).toMatchObject({ code: 101 });
    run(['rmdir', squatter]);
    expect(index(crashDir).dirty).toBe(true);
    expect(markrouteObjects(lab.snapshot())).toEqual(NO_MARKROUTE); // nothing reached the kernel

    // the runtime's DEL after the failed ADD (no prevResult), then other pods, then the CLI
    const del = await start('DEL', victim, null, crashList).done;
    const other = await preparePod('fifo-other');
    const add = await start('ADD', other, undefined, crashList).done;
    const status = lab.exec(lab.ns.node, [bin, 'status', '--state-dir', crashDir], { check: false });
    expect({
      delAfterFailedAdd: [del.code, del.stdout],
      addOfAnotherPod: [add.code, add.stdout],
      status: [status.code, status.stderr],
    }).toEqual({ delAfterFailedAdd: [0, ''], addOfAnotherPod: [0, JSON.stringify(other.result) + '\n'], status: [0, ''] });
    const delOther = await start('DEL', other, undefined, crashList).done;
    expect(delOther.code).toBe(0);
    await removePods([victim, other].map((p) => ({ ...p, conflist: crashList })));
    expect(index(crashDir)).toMatchObject({ dirty: false, refs: {}, objects: {} });
    expect(lab.snapshot()).toEqual(baseline);
  });
});

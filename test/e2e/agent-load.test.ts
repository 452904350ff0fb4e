// The agent under stress, both backends. Killed (SIGKILL, injected by strace as it opens the
// index's temporary file) at the start of a repair (its dirty mark, before the kernel changed) or
// after its kernel change (the index still dirty): the next CNI operation, or the next agent, heals
// everything. And 50 concurrent ADDs, then their DELs, while the agent runs and
// someone keeps tampering: every operation succeeds and the node ends as it was.
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import {
  fabricCrossing, settled, findPlugin, markChains, parseStatus, podPairLab, saveKey, sleep, startAgent, timeUntil,
  type Agent, type Backend, type Conflist, type Lab, type Pod, type Snapshot,
} from '../lab/index.ts';
import { markrouteTables } from '../lab/nft.ts';


describe.each<Backend>(['nftables', 'iptables'])('the agent killed, and under load (%s)', (backend) => {
  let lab: Lab;
  let list: Conflist;
  let first: Pod;
  let server: Pod;
  let before: Snapshot;
  let agent: Agent | undefined;
  const out = (argv: string[]) => lab.exec(lab.ns.node, argv, { check: false }).stdout;
  const status = () => parseStatus(lab.exec(lab.ns.node, [findPlugin('markroute', lab.cniPath)!, 'status', '--json', '--state-dir', join(lab.dir, 'state')], { check: false }));
  const ruleThere = () => out(['ip', '-4', 'rule', 'show', 'priority', '32765']).includes('fwmark 0x10/0x10 lookup 100');
  const deleteRule = () => lab.exec(lab.ns.node, ['ip', 'rule', 'del', 'fwmark', '0x10/0x10', 'lookup', '100', 'priority', '32765'], { check: false });
  /** The node as the records say, nothing drifted, and same-node traffic across the fabric. */
  async function healed(): Promise<void> {
    expect(settled(lab.snapshot())).toEqual(settled(before));
    const s = status();
    expect(s.indexNeedsRecovery).toBe(false);
    expect(s.objects.filter((o) => o.drift.length)).toEqual([]);
    expect(await fabricCrossing({ lab, first, server })).toEqual({ received: 3, throughFabric: true });
  }

  beforeAll(async () => {
    ({ lab, list, first, server, before } = await podPairLab(backend));
  });

  afterEach(async () => {
    await agent?.stop('SIGKILL');
    agent = undefined;
    // the next test starts from a healed node, whatever this one left
    lab.exec(lab.ns.node, [findPlugin('markroute', lab.cniPath)!, 'reconcile', '--state-dir', join(lab.dir, 'state')]);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test.each([
    // Killed before anything changed: the index is clean, the kernel as tampered; nothing tells a CNI operation (its drift check heals when due).
    { when: 1, at: 'its dirty mark, before the kernel changed', healer: 'the next agent' },
    { when: 2, at: 'its clean index, the kernel repaired', healer: 'the next CNI operation' },
    { when: 2, at: 'its clean index, the kernel repaired', healer: 'the next agent' },
  ])('SIGKILL at $at: $healer heals everything', { timeout: 60_000 }, async ({ when, healer }) => {
    const indexTmp = join(lab.dir, 'state', 'index.json.tmp');
    agent = await startAgent(lab, list, {
      wrap: ['strace', '-f', '-qq', '-o', '/dev/null', '-P', indexTmp, '-e', 'trace=openat', '-e', `inject=openat:signal=SIGKILL:when=${when}`],
    });
    deleteRule();
    lab.exec(lab.ns.node, ['sysctl', '-qw', 'net.ipv4.conf.eth0.rp_filter=1']);
    const killed = await timeUntil(() => agent!.child.exitCode !== null || agent!.child.signalCode !== null);
    expect(killed, `the agent was killed in its repair: ${agent.stderr()}`).toBeLessThan(Infinity);
    expect(status().indexNeedsRecovery).toBe(when === 2);
    expect(ruleThere()).toBe(when === 2);
    agent = undefined;
    if (healer === 'the next agent') {
      agent = await startAgent(lab, list);
      expect(await timeUntil(() => !status().indexNeedsRecovery && ruleThere())).toBeLessThan(Infinity);
      expect(agent.metric('markroute_repairs_total', { kind: when === 2 ? 'recovery' : 'rule' })).toBe(1);
      await healed();
    } else {
      const pod = await lab.addPod(`next${when}`, list);
      expect(ruleThere()).toBe(true);
      expect((await lab.delPod(pod)).ok).toBe(true);
      await healed();
    }
  });

  test('50 concurrent ADDs, then their DELs, while the agent runs and someone tampers: no error, the node as before', { timeout: 240_000 }, async () => {
    agent = await startAgent(lab, list);
    const variant = markChains(lab.snapshot().iptables[saveKey('nft', 4)]).length ? 'nft' : 'legacy';
    const tampering = [
      deleteRule,
      () => lab.exec(lab.ns.node, ['ip', 'route', 'flush', 'table', '100'], { check: false }),
      () => lab.exec(lab.ns.node, ['sysctl', '-qw', 'net.ipv4.conf.eth0.rp_filter=1'], { check: false }),
      backend === 'nftables'
        ? () => lab.exec(lab.ns.node, ['nft', 'delete', 'element', 'inet', markrouteTables(lab.snapshot())[0]!, 'pods4', `{ ${first.ip4} . "${first.hostIf}" }`], { check: false })
        : () => lab.exec(lab.ns.node, [`iptables-${variant}`, '-t', 'mangle', '-F'], { check: false }),
    ];
    let tampered = 0;
    let stop = false;
    const tamperer = (async () => {
      while (!stop) {
        tampering[tampered++ % tampering.length]!();
        await sleep(150);
      }
    })();
    const pods: Pod[] = [];
    try {
      const adds = await Promise.all(Array.from({ length: 50 }, (_, i) => {
        const pod = lab.createPodNs(`load${i}`);
        pod.conflist = list;
        pods.push(pod);
        return lab.cni('ADD', pod);
      }));
      expect(adds.filter((a) => !a.ok).map((a) => a.runs.at(-1)?.stdout)).toEqual([]);
      const dels = await Promise.all(pods.map((p) => lab.delPod(p)));
      expect(dels.filter((d) => !d.ok).map((d) => d.runs.at(-1)?.stdout)).toEqual([]);
    } finally {
      stop = true;
      await tamperer;
    }
    expect(tampered).toBeGreaterThan(4);
    // the last tampering is repaired within the bound
    expect(await timeUntil(() => ruleThere() && status().objects.every((o: { drift: string[] }) => o.drift.length === 0))).toBeLessThan(Infinity);
    expect(agent.metric('markroute_attachments')).toBe(2);
    expect(agent.metric('markroute_cni_operations_total', { command: 'ADD', outcome: 'ok' })).toBe(50);
    expect(agent.metric('markroute_cni_operations_total', { command: 'DEL', outcome: 'ok' })).toBe(50);
    expect(agent.metric('markroute_repair_failures_total', { target: 'kernel' })).toBe(0);
    await healed();
  });
});

// `markroute agent` in the node namespace, both backends: each kind of tampering (the ip rule
// deleted, the policy table flushed, the marking table or chain deleted, one pod's element deleted,
// rp_filter reset, a pod's link group, the conflist rewritten without markroute's entry) is put back within 2 s with
// no CNI call, the node is then as it was and same-node pod traffic crosses the fabric again; the
// metrics (scraped with curl) count the attachments, the repairs and the CNI operations; the
// probes answer; SIGTERM stops it at once and leaves the kernel as it is.
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  fabricCrossing, settled, ipsetAdds, sleep, markChains, podPairLab, saveKey, startAgent, timeUntil,
  type Agent, type Backend, type Conflist, type Lab, type Pod, type PodPair, type Snapshot,
} from '../lab/index.ts';
import { markrouteTables } from '../lab/nft.ts';

/** The bound the issue sets, from the tampering to the object back. */
const REPAIR_MS = 2000;


/** Tampers, then waits for `back`: the time from the tampering to the repair, which must be within the bound; the node is then as before. */
async function expectRepaired({ lab, before, agent }: Pick<PodPair, 'lab' | 'before'> & { agent: Agent }, tamper: () => void, back: () => boolean): Promise<void> {
  expect(back(), 'in place before the tampering').toBe(true);
  const started = performance.now();
  tamper();
  expect(back(), 'the tampering took').toBe(false);
  const waited = await timeUntil(back);
  const ms = waited === Infinity ? Infinity : performance.now() - started;
  expect(ms, `repaired within ${REPAIR_MS} ms; agent log:\n${agent.stderr()}`).toBeLessThanOrEqual(REPAIR_MS);
  expect(settled(lab.snapshot())).toEqual(settled(before));
}

describe.each<Backend>(['nftables', 'iptables'])('markroute agent repairs the node (%s)', (backend) => {
  let lab: Lab;
  let agent: Agent;
  let first: Pod;
  let server: Pod;
  let before: Snapshot;
  let list: Conflist;
  const out = (argv: string[]) => lab.exec(lab.ns.node, argv, { check: false }).stdout;
  const repairs = (kind: string) => agent.metric('markroute_repairs_total', { kind });

  const repaired = (tamper: () => void, back: () => boolean) => expectRepaired({ lab, before, agent }, tamper, back);
  const crossesFabric = async () => expect(await fabricCrossing({ lab, first, server })).toEqual({ received: 3, throughFabric: true });

  const variant = () => (markChains(lab.snapshot().iptables[saveKey('nft', 4)]).length ? 'nft' : 'legacy');

  beforeAll(async () => {
    // kube-system's pods are passed through: recorded, unmarked
    ({ lab, list, first, server, before } = await podPairLab(backend, { excludeNamespaces: ['kube-system'] }));
    agent = await startAgent(lab, list, { extra: ['--resync', '30'] });
  });

  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await lab?.destroy();
  });

  test('/healthz and /readyz answer 200; /metrics counts the attachments; it follows the entry\'s stateDir and logFile', async () => {
    expect(agent.stderr()).toContain(`"stateDir":${JSON.stringify(`${lab.dir}/state`)}`);
    expect(agent.stderr()).toContain(`"logFile":${JSON.stringify(`${lab.dir}/markroute.log`)}`);
    expect(agent.get('/healthz').code).toBe(200);
    expect(agent.get('/readyz')).toEqual({ code: 200, body: 'ok\n' });
    expect(await timeUntil(() => agent.metric('markroute_attachments') === 2)).toBeLessThan(Infinity);
    expect(agent.get('/metrics').body).toMatch(/^# TYPE markroute_repairs_total counter$/m);
    expect(agent.get('/nothing').code).toBe(404);
  });

  test('the ip rule deleted: back within 2 s', async () => {
    const rule = () => out(['ip', '-4', 'rule', 'show', 'priority', '32765']).includes('fwmark 0x10/0x10 lookup 100');
    await repaired(() => lab.exec(lab.ns.node, ['ip', 'rule', 'del', 'fwmark', '0x10/0x10', 'lookup', '100', 'priority', '32765']), rule);
    expect(repairs('rule')).toBe(1);
    await crossesFabric();
  });

  test('the policy table flushed: back within 2 s', async () => {
    const route = () => out(['ip', '-4', 'route', 'show', 'table', '100']).includes('default via 10.224.0.1 dev eth0');
    await repaired(() => lab.exec(lab.ns.node, ['ip', 'route', 'flush', 'table', '100']), route);
    expect(repairs('route')).toBe(1);
    await crossesFabric();
  });

  test('the marking table or chain deleted: back within 2 s, with every pod\'s element', async () => {
    if (backend === 'nftables') {
      const table = markrouteTables(lab.snapshot())[0]!;
      const marking = () => [first, server].every((p) => out(['nft', 'list', 'set', 'inet', table, 'pods4']).includes(p.ip4!));
      await repaired(() => lab.exec(lab.ns.node, ['nft', 'delete', 'table', 'inet', table]), marking);
      expect(repairs('nftTable')).toBe(1);
    } else {
      const v = variant();
      const chain = markChains(lab.snapshot().iptables[saveKey(v, 4)])[0]!;
      const marking = () => {
        const save = out([`iptables-${v}-save`, '-t', 'mangle']);
        return save.includes(`-A PREROUTING -j ${chain}`) && save.includes(`-A ${chain} `);
      };
      await repaired(() => {
        lab.exec(lab.ns.node, [`iptables-${v}`, '-t', 'mangle', '-D', 'PREROUTING', '-j', chain]);
        lab.exec(lab.ns.node, [`iptables-${v}`, '-t', 'mangle', '-F', chain]);
        lab.exec(lab.ns.node, [`iptables-${v}`, '-t', 'mangle', '-X', chain]);
      }, marking);
      expect(repairs('markChain')).toBe(1);
    }
    await crossesFabric();
  });

  test('one pod\'s element deleted: back within 2 s', async () => {
    if (backend === 'nftables') {
      const table = markrouteTables(lab.snapshot())[0]!;
      const element = () => out(['nft', 'list', 'set', 'inet', table, 'pods4']).includes(first.ip4!);
      await repaired(() => lab.exec(lab.ns.node, ['nft', 'delete', 'element', 'inet', table, 'pods4', `{ ${first.ip4} . "${first.hostIf}" }`]), element);
      expect(repairs('nftElement')).toBeGreaterThanOrEqual(1);
    } else {
      const set = ipsetAdds(lab.snapshot()).find((l) => l.includes(first.ip4!))!.split(' ')[1]!;
      const element = () => out(['ipset', 'list', set]).includes(`${first.ip4},${first.hostIf}`);
      await repaired(() => lab.exec(lab.ns.node, ['ipset', 'del', set, `${first.ip4},${first.hostIf}`]), element);
      expect(repairs('element')).toBe(1);
    }
    await crossesFabric();
  });

  test('rp_filter reset to strict: back to loose within 2 s', async () => {
    const loose = () => out(['sysctl', '-n', 'net.ipv4.conf.eth0.rp_filter']).trim() === '2';
    await repaired(() => lab.exec(lab.ns.node, ['sysctl', '-qw', 'net.ipv4.conf.eth0.rp_filter=1']), loose);
    expect(repairs('rpFilter')).toBe(1);
    await crossesFabric();
  });

  test('the conflist rewritten without markroute\'s entry (as flannel\'s install-cni does): the entry is back within 2 s, with install\'s backup', async () => {
    const original = readFileSync(agent.conflistFile, 'utf8');
    const withEntry = () => (JSON.parse(readFileSync(agent.conflistFile, 'utf8')).plugins as { type: string }[]).some((p) => p.type === 'markroute');
    const list = JSON.parse(original);
    const rewritten = { ...list, plugins: list.plugins.filter((p: { type: string }) => p.type !== 'markroute') };
    await repaired(() => writeFileSync(agent.conflistFile, JSON.stringify(rewritten, null, 2)), withEntry);
    expect(JSON.parse(readFileSync(agent.conflistFile, 'utf8'))).toEqual(list);
    expect(JSON.parse(readFileSync(`${agent.conflistFile}.markroute-backup`, 'utf8'))).toEqual(rewritten);
    expect(repairs('conflistEntry')).toBe(1);
  });

  test('/metrics: the pods marked and passed through, the CNI operations the node ran since the agent started, by command and outcome, and when the agent last repaired', async () => {
    expect(agent.metric('markroute_pods_unmarked')).toBe(0);
    const late = await lab.addPod('late', list);
    const passed = await lab.addPod('passed', list, { k8sNamespace: 'kube-system' });
    expect(await timeUntil(() => agent.metric('markroute_attachments') === 3)).toBeLessThan(Infinity);
    expect(agent.metric('markroute_pods_unmarked'), 'the pod passed through is not an attachment of kernel objects').toBe(1);
    expect((await lab.delPod(late)).ok).toBe(true);
    expect((await lab.delPod(passed)).ok).toBe(true);
    expect(await timeUntil(() => agent.metric('markroute_attachments') === 2 && agent.metric('markroute_pods_unmarked') === 0)).toBeLessThan(Infinity);
    expect(agent.metric('markroute_cni_operations_total', { command: 'ADD', outcome: 'ok' })).toBe(2);
    expect(agent.metric('markroute_cni_operations_total', { command: 'DEL', outcome: 'ok' })).toBe(2);
    expect(agent.metric('markroute_cni_operation_duration_seconds_count', { command: 'ADD', outcome: 'ok' })).toBe(2);
    expect(agent.metric('markroute_cni_operation_duration_seconds_sum', { command: 'ADD', outcome: 'ok' })).toBeGreaterThan(0);
    expect(agent.metric('markroute_last_repair_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 120);
    expect(agent.metric('markroute_repair_failures_total', { target: 'kernel' })).toBe(0);
    expect(agent.metric('markroute_repair_failures_total', { target: 'conflist' })).toBe(0);
  });

  test('SIGTERM: exits 0 within 2 s and leaves the kernel as it is', async () => {
    const stopped = await agent.stop('SIGTERM');
    expect(stopped).toMatchObject({ code: 0, signal: null });
    expect(stopped.ms).toBeLessThan(2000);
    expect(settled(lab.snapshot())).toEqual(settled(before));
    await crossesFabric();
  });
});

describe('markroute agent repairs a pod\'s link group (linkGroup, nftables)', () => {
  const GROUP = 8;
  let lab: Lab;
  let agent: Agent;
  let first: Pod;
  let server: Pod;
  let before: Snapshot;
  let list: Conflist;
  const group = (dev: string) => (JSON.parse(lab.exec(lab.ns.node, ['ip', '-j', 'link', 'show', 'dev', dev]).stdout) as { group?: string }[])[0]?.group;

  beforeAll(async () => {
    ({ lab, list, first, server, before } = await podPairLab('nftables', { linkGroup: GROUP }));
    agent = await startAgent(lab, list);
  });

  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await lab?.destroy();
  });

  test('the pod\'s host veth put back in the default group: back in its group within 2 s, its traffic marked again', async () => {
    await expectRepaired({ lab, before, agent }, () => lab.exec(lab.ns.node, ['ip', 'link', 'set', 'dev', first.hostIf!, 'group', 'default']),
      () => group(first.hostIf!) === String(GROUP));
    expect(agent.metric('markroute_repairs_total', { kind: 'linkGroup' })).toBe(1);
    expect(await fabricCrossing({ lab, first, server })).toEqual({ received: 3, throughFabric: true });
  });

  test('a pod whose veth is gone before its DEL: nothing to put back, no failed pass; its DEL then removes it', async () => {
    const gone = await lab.addPod('gone', list);
    expect(group(gone.hostIf!)).toBe(String(GROUP));
    lab.exec(lab.ns.node, ['ip', 'link', 'del', 'dev', gone.hostIf!]);
    await sleep(1000); // the link events' pass, and a second's worth of others
    expect(agent.metric('markroute_repair_failures_total', { target: 'kernel' })).toBe(0);
    expect((await lab.delPod(gone)).ok).toBe(true);
    expect(await timeUntil(() => agent.metric('markroute_attachments') === 2)).toBeLessThan(Infinity);
    expect(settled(lab.snapshot())).toEqual(settled(before));
  });
});

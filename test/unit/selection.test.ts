// Selecting pods by namespace (src/selection.ts, the `namespaces` and `excludeNamespaces` fields of
// src/config.ts): selection over annotation × namespace × exclusions, what is recorded and how old
// records read, and the config errors (code 7 naming the field, and both entries for a namespace
// listed twice).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { add, check, del, dryRun } from '../../src/commands.ts';
import { parseConfig } from '../../src/config.ts';
import { fakeProbe } from '../../src/kernel/probe-fake.ts';
import type { Kernel } from '../../src/engine.ts';
import { describeSelection, selectPod } from '../../src/selection.ts';
import { StateStore, recordProblem } from '../../src/state/store.ts';
import { cniError } from './helpers.ts';

const ANNOTATION = 'cni.fwmark.net/name';
const annotatedNetconf = {
  cniVersion: '1.0.0', name: 'pods', type: 'markroute',
  capabilities: { 'io.kubernetes.cri.pod-annotations': true },
  marks: {
    vpn: { mark: 16, mask: 16, table: 123, gateway: '192.168.2.1', uplink: 'vpn0', namespaces: ['team-vpn', 'team-b'] },
    tor: { mark: 32, mask: 32, namespaces: ['onion'] },
    plain: { mark: 64 },
  },
};
const annotated = (annotations?: Record<string, string> | null, extra: Record<string, unknown> = {}) =>
  parseConfig({ ...annotatedNetconf, ...extra, ...(annotations !== undefined ? { runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations } } : {}) });
const tunnel = (extra: Record<string, unknown> = {}) => parseConfig({ cniVersion: '1.0.0', name: 'pods', type: 'markroute', ...extra });
/** What selectPod answers, with the entry by name. */
const select = (...args: Parameters<typeof selectPod>) => {
  const { mark, ...rest } = selectPod(...args);
  return { ...rest, mark: mark?.name };
};

describe('annotated mode: annotation × namespace', () => {
  test.each([
    // annotation, namespace → by, mark
    [undefined, 'team-vpn', 'namespace', 'vpn'],
    [undefined, 'team-b', 'namespace', 'vpn'],
    [undefined, 'onion', 'namespace', 'tor'],
    [undefined, 'default', 'none', undefined],
    [undefined, undefined, 'none', undefined],
    ['tor', 'team-vpn', 'annotation', 'tor'], // the pod's own annotation wins over its namespace
    ['vpn', 'team-vpn', 'annotation', 'vpn'],
    ['plain', 'default', 'annotation', 'plain'],
    ['plain', undefined, 'annotation', 'plain'],
  ] as const)('annotation %s, namespace %s: selected by %s, mark %s', (name, namespace, by, mark) => {
    const config = annotated(name === undefined ? null : { [ANNOTATION]: name, other: 'x' });
    expect(select(config, namespace)).toMatchObject({ by, mark });
  });

  test('the reasons say which entry, and what the annotation won over', () => {
    expect(selectPod(annotated(null), 'team-vpn').reason).toBe('its namespace team-vpn is listed by marks.vpn');
    expect(selectPod(annotated({ [ANNOTATION]: 'tor' }), 'team-vpn').reason)
      .toBe(`its annotation ${ANNOTATION}=tor names marks.tor (over marks.vpn, which lists its namespace team-vpn)`);
    expect(selectPod(annotated({ [ANNOTATION]: 'vpn' }), 'team-vpn').reason).toBe(`its annotation ${ANNOTATION}=vpn names marks.vpn`);
    expect(selectPod(annotated(null), 'default').reason).toBe(`the pod has no ${ANNOTATION} annotation, and its namespace default is listed by no entry of marks`);
    expect(selectPod(annotated(null), undefined).reason).toMatch(/, and CNI_ARGS name no Kubernetes namespace \(K8S_POD_NAMESPACE\), so none is listed by no entry of marks$/);
    // without any entry listing namespaces, the message is the fwmark plugin's case: no annotation
    expect(selectPod(annotated(null, { marks: { vpn: { mark: 16 } } }), 'default').reason).toBe(`the pod has no ${ANNOTATION} annotation`);
  });

  test('an unknown annotation is code 7 even in a selected namespace: the annotation is the pod\'s own word', () => {
    const err = cniError(() => selectPod(annotated({ [ANNOTATION]: 'nosuch' }), 'team-vpn'));
    expect([err.code, err.message]).toEqual([7, `invalid netconf: marks: the pod's annotation ${ANNOTATION}="nosuch" names no entry of marks; known: vpn, tor, plain`]);
  });

  test.each(['Team-VPN', 'team_vpn', '-team', 'a'.repeat(64), '', 'team-vpn/x', '../team-vpn'])(
    'a K8S_POD_NAMESPACE that is no Kubernetes name (%j) selects nothing and is not echoed', (namespace) => {
      const s = select(annotated(null, { marks: { vpn: { mark: 16, namespaces: ['team-vpn'] } } }), namespace);
      expect(s).toMatchObject({ by: 'none', mark: undefined });
      if (namespace) expect(s.reason).not.toContain(namespace);
    });
});

describe('transparent-tunnel mode: excludeNamespaces', () => {
  test.each([
    ['kube-system', 'excluded', undefined],
    ['monitoring', 'excluded', undefined],
    ['default', 'network', 'default'],
    [undefined, 'network', 'default'],
    ['Kube-System', 'network', 'default'], // not a namespace name: not the excluded one
  ] as const)('namespace %s: %s', (namespace, by, mark) => {
    expect(select(tunnel({ excludeNamespaces: ['kube-system', 'monitoring'] }), namespace)).toMatchObject({ by, mark });
  });

  test('every pod is marked without excludeNamespaces; the reasons say why', () => {
    expect(selectPod(tunnel(), 'kube-system')).toMatchObject({ by: 'network', reason: 'transparent-tunnel marks every pod of network pods' });
    const c = tunnel({ excludeNamespaces: ['kube-system'] });
    expect(selectPod(c, 'kube-system').reason).toBe('its namespace kube-system is in excludeNamespaces');
    expect(selectPod(c, 'default').reason).toBe('transparent-tunnel marks every pod of network pods; its namespace default is not in excludeNamespaces');
  });

  test('an annotation means nothing in transparent-tunnel mode', () => {
    const c = tunnel({ excludeNamespaces: ['kube-system'], runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { [ANNOTATION]: 'vpn' } } });
    expect(select(c, 'kube-system').by).toBe('excluded');
  });

  test('describeSelection: one line for status and explain', () => {
    expect(describeSelection({ by: 'namespace', mark: 'vpn', reason: 'its namespace team-vpn is listed by marks.vpn' }))
      .toBe('marked "vpn" (by namespace): its namespace team-vpn is listed by marks.vpn');
    expect(describeSelection({ by: 'excluded', reason: 'its namespace kube-system is in excludeNamespaces' }))
      .toBe('not marked (excluded): its namespace kube-system is in excludeNamespaces');
  });
});

describe('config: namespaces and excludeNamespaces', () => {
  const message = (fn: () => unknown) => {
    const err = cniError(fn);
    expect(err.code).toBe(7);
    return err.message;
  };

  test('an entry keeps its namespaces; excludeNamespaces defaults to none', () => {
    expect(annotated(undefined).marks.map((m) => [m.name, m.namespaces])).toEqual([['vpn', ['team-vpn', 'team-b']], ['tor', ['onion']], ['plain', undefined]]);
    expect(tunnel().excludeNamespaces).toEqual([]);
    expect(tunnel({ excludeNamespaces: ['kube-system'] }).excludeNamespaces).toEqual(['kube-system']);
  });

  test.each(['Team', 'team_vpn', '-team', 'team-', 'a'.repeat(64), '', 'a.b', 'ns/x', 7])('a namespace %j is refused, naming the field', (bad) => {
    const rule = 'must be a Kubernetes namespace name: 1-63 of a-z 0-9 -, starting and ending with a letter or digit';
    expect(message(() => annotated(undefined, { marks: { vpn: { mark: 16 }, tor: { mark: 32, namespaces: ['ok', bad] } } })))
      .toBe(`invalid netconf: marks.tor.namespaces.1: ${typeof bad === 'string' ? rule : 'Invalid input: expected string, received number'}`);
    expect(message(() => tunnel({ excludeNamespaces: [bad] }))).toMatch(/^invalid netconf: excludeNamespaces\.0: /);
  });

  test('the longest names are fine', () => {
    expect(tunnel({ excludeNamespaces: ['a'.repeat(63), 'a', '0-9'] }).excludeNamespaces).toHaveLength(3);
  });

  test('a namespace listed by two entries is refused, naming both', () => {
    expect(message(() => annotated(undefined, { marks: { vpn: { mark: 16, namespaces: ['a', 'team'] }, tor: { mark: 32, namespaces: ['team'] } } })))
      .toBe("invalid netconf: marks.tor.namespaces.0: namespace team is also listed by marks.vpn.namespaces.1: a namespace's pods can get one entry's mark");
    expect(message(() => annotated(undefined, { marks: { vpn: { mark: 16, namespaces: ['team', 'team'] } } })))
      .toBe("invalid netconf: marks.vpn.namespaces.1: namespace team is also listed by marks.vpn.namespaces.0: a namespace's pods can get one entry's mark");
    expect(message(() => tunnel({ excludeNamespaces: ['kube-system', 'x', 'kube-system'] })))
      .toBe('invalid netconf: excludeNamespaces.2: namespace kube-system is also listed by excludeNamespaces.0: list each namespace once');
  });

  test('each field belongs to its mode', () => {
    expect(message(() => annotated(undefined, { excludeNamespaces: ['kube-system'] }))).toMatch(/^invalid netconf: excludeNamespaces: belongs to mode "transparent-tunnel"/);
    expect(message(() => tunnel({ namespaces: ['x'] }))).toMatch(/^invalid netconf: /);
    expect(annotated(undefined, { excludeNamespaces: [] }).excludeNamespaces).toEqual([]);
  });
});

// ADD, CHECK and DEL over a fake kernel and a real state directory: what the record says.
describe('what selected the pod is recorded with the attachment', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mr-selection-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const applied: { install: string[]; remove: string[] }[] = [];
  const kernel: Kernel = {
    valuesBefore: () => new Map([['rpFilter/vpn0', 1]]),
    apply: (install, remove) => void applied.push({ install: install.map((o) => o.kind), remove: remove.map((r) => r.object.kind) }),
    drift: (objects) => new Map(objects.map((o) => [JSON.stringify(o), []])),
  };
  const probe = fakeProbe({ nft: true, uplinks: { 4: { dev: 'eth0', gateway: '10.224.0.1' } } });
  const prevResult = (n: number) => ({
    cniVersion: '1.0.0', interfaces: [{ name: `veth${n}` }, { name: 'eth0', sandbox: `/run/netns/p${n}` }], ips: [{ address: `10.244.0.${n}/24`, interface: 1 }],
  });
  const netconf = (n: number, extra: Record<string, unknown>) => ({ ...annotatedNetconf, stateDir: join(dir, 'state'), logFile: 'stderr', prevResult: prevResult(n), ...extra });
  const request = (n: number, namespace?: string) => ({
    command: 'ADD' as const, containerId: `c${n}`, ifName: 'eth0', netns: `/run/netns/p${n}`,
    args: new Map(namespace ? [['K8S_POD_NAMESPACE', namespace], ['K8S_POD_NAME', `p${n}`]] : []),
  });
  const store = new StateStore(join(dir, 'state'));

  test('a pod of a listed namespace is marked; the record says by its namespace, and DEL needs no CNI_ARGS', async () => {
    applied.length = 0;
    const out = await add(parseConfig(netconf(2, {})), request(2, 'team-vpn'), { probe, kernel });
    expect(out.warning).toBeUndefined();
    expect(out.selection).toEqual({ by: 'namespace', mark: 'vpn', reason: 'its namespace team-vpn is listed by marks.vpn' });
    expect(store.readRecord('pods_c2_eth0')).toMatchObject({ selection: out.selection, objects: expect.arrayContaining([expect.objectContaining({ kind: 'nftElement', set: parseConfig(annotatedNetconf).marks[0]!.tag })]) });
    expect(applied[0]!.install).toEqual(expect.arrayContaining(['nftTable', 'nftElement', 'rule', 'route', 'rpFilter']));
    await del({ name: 'pods', stateDir: join(dir, 'state') }, { ...request(2), args: new Map() }, { kernel });
    expect(store.readRecord('pods_c2_eth0')).toBeUndefined();
    expect(applied[1]!.remove).toEqual(expect.arrayContaining(['nftTable', 'nftElement', 'rule', 'route', 'rpFilter']));
  });

  test('a pod passed through gets a record that holds nothing and says why; CHECK passes, DEL removes it; neither the kernel nor the index changes', async () => {
    applied.length = 0;
    const indexText = () => readFileSync(join(dir, 'state/index.json'), 'utf8');
    const index = indexText();
    const config = parseConfig(netconf(3, {}));
    const out = await add(config, request(3, 'default'), { probe, kernel });
    expect(out.warning).toBe(`not marked: the pod has no ${ANNOTATION} annotation, and its namespace default is listed by no entry of marks`);
    expect(store.readRecord('pods_c3_eth0')).toMatchObject({ objects: [], selection: { by: 'none', reason: expect.stringContaining('default') } });
    expect(applied.every((a) => a.install.length === 0 && a.remove.length === 0)).toBe(true);
    expect(await check(config, { ...request(3, 'default'), command: 'CHECK' })).toEqual({});
    await del({ name: 'pods', stateDir: join(dir, 'state') }, request(3), { kernel });
    expect(store.listRecords()).toEqual([]);
    expect(applied).toEqual([]);
    expect(indexText()).toBe(index);
  });

  test('a pod passed through starts even when its record cannot be written (the state directory unusable): the warning says so', async () => {
    const blocked = join(dir, 'a-file');
    writeFileSync(blocked, 'not a directory');
    const out = await add(parseConfig(netconf(5, { stateDir: blocked })), request(5, 'default'), { probe, kernel });
    expect(out.result).toBeDefined();
    expect(out.warning).toMatch(/^not marked: .*\. its record was not written \(status and explain will not show it\): .*a-file/);
    // a marked pod still needs its state: the same directory is its error
    await expect(add(parseConfig(netconf(6, { stateDir: blocked })), request(6, 'team-vpn'), { probe, kernel })).rejects.toThrow(/a-file/);
  });

  test('on a node where only pods passed through were added, no index is written and nothing is "recovered"', async () => {
    applied.length = 0;
    const fresh = join(dir, 'fresh');
    for (const n of [6, 7]) {
      const out = await add(parseConfig(netconf(n, { stateDir: fresh })), request(n, 'default'), { probe, kernel });
      expect(out.summary).toMatchObject({ recovered: false, installed: [], removed: [] });
      expect(out.summary?.driftChecked).toBeUndefined();
    }
    expect(new StateStore(fresh).listRecords().map((r) => r.selection?.by)).toEqual(['none', 'none']);
    expect(existsSync(join(fresh, 'index.json'))).toBe(false);
    expect(applied).toEqual([]);
  });

  test('a re-ADD after the pod\'s namespace was excluded releases what it held', async () => {
    applied.length = 0;
    const tunnelConf = (excluded: string[]) => parseConfig({ ...netconf(4, {}), marks: undefined, excludeNamespaces: excluded });
    await add(tunnelConf([]), request(4, 'kube-system'), { probe, kernel });
    expect(store.readRecord('pods_c4_eth0')!.selection).toMatchObject({ by: 'network', mark: 'default' });
    const out = await add(tunnelConf(['kube-system']), request(4, 'kube-system'), { probe, kernel });
    expect(out.warning).toBe('not marked: its namespace kube-system is in excludeNamespaces');
    expect(store.readRecord('pods_c4_eth0')).toMatchObject({ objects: [], selection: { by: 'excluded' } });
    expect(applied.at(-1)!.remove).toEqual(expect.arrayContaining(['nftTable', 'nftElement', 'rule', 'route', 'rpFilter']));
    await del({ name: 'pods', stateDir: join(dir, 'state') }, request(4), { kernel });
  });

  test('`plan` says why nothing would be installed', () => {
    expect(dryRun(parseConfig(netconf(5, {})), request(5, 'elsewhere'), probe)).toEqual({
      objects: [], reason: `not marked: the pod has no ${ANNOTATION} annotation, and its namespace elsewhere is listed by no entry of marks`,
    });
    // a pod of onion: its element in marks.tor's set
    const plan = dryRun(parseConfig(netconf(5, {})), request(5, 'onion'), probe);
    const tor = parseConfig(annotatedNetconf).marks[1]!;
    expect('keys' in plan && plan.keys.filter((k) => k.startsWith('nftElement/'))).toEqual([expect.stringMatching(new RegExp(`^nftElement/markroute-[0-9a-f]+/${tor.tag}/10\\.244\\.0\\.5,veth5$`))]);
  });

  test('records older than the field read as what selected them then: the network, or the annotation', () => {
    // the record markroute wrote at commit 4072c0e (test/fixtures/records), transparent-tunnel mode
    const old = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/records/v1-record.json'), 'utf8'));
    expect(old.selection).toBeUndefined();
    expect(recordProblem(old, old.id)).toBeUndefined();
    writeFileSync(join(dir, 'state/attachments', `${old.id}.json`), JSON.stringify(old));
    expect(store.readRecord(old.id)!.selection).toEqual({ by: 'network', mark: 'default', reason: expect.stringMatching(/^transparent-tunnel marks every pod of network .* \(recorded before markroute kept what selected a pod\)$/) });
    // an annotated-mode record: its element is in the entry's own set
    const config = parseConfig({ ...annotatedNetconf, backend: 'iptables' });
    const vpn = config.marks[0]!;
    const annotatedOld = {
      ...old, id: 'pods_c9_eth0', attachment: { network: 'pods', containerId: 'c9', ifName: 'eth0' },
      objects: [
        { kind: 'markChain', family: 4, variant: 'nft', chain: 'MARKROUTE-x', network: 'pods', exempt: [], marks: config.marks.map((m) => ({ name: m.name, set: `mr4-${m.tag}`, mark: m.mark, mask: m.mask })) },
        { kind: 'element', family: 4, set: `mr4-${vpn.tag}`, address: '10.244.0.9', iface: 'veth9', comment: 'c9 eth0' },
      ],
    };
    writeFileSync(join(dir, 'state/attachments', 'pods_c9_eth0.json'), JSON.stringify(annotatedOld));
    expect(store.readRecord('pods_c9_eth0')!.selection).toMatchObject({ by: 'annotation', mark: 'vpn' });
    rmSync(join(dir, 'state/attachments', 'pods_c9_eth0.json'));
    rmSync(join(dir, 'state/attachments', `${old.id}.json`));
  });

  test('a malformed selection makes the record malformed (error 101 naming its file)', () => {
    const rec = { id: 'x', createdAt: 'now', attachment: { network: 'n', containerId: 'c', ifName: 'eth0' }, hostMatch: { iface: 'v', addresses: [] }, objects: [] };
    expect(recordProblem({ ...rec, selection: { by: 'namespace', mark: 'vpn', reason: 'r' } }, 'x')).toBeUndefined();
    for (const selection of [null, 'namespace', { by: 'magic', reason: 'r' }, { by: 'none' }, { by: 'none', reason: 'r', mark: 5 }]) {
      expect(recordProblem({ ...rec, selection }, 'x')).toMatch(/^selection: expected/);
    }
  });
});

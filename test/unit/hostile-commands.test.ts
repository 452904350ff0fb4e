// Issue 11, point 6: GC, STATUS and the annotated-mode mark over inputs a probe of hostile and
// malformed netconfs found mishandled. GC runs over a real state directory (temporary) and a
// kernel that only records; STATUS over the fake probe (the uplink checks come before any tool).
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { add, gc, status } from '../../src/commands.ts';
import { selectPod } from '../../src/selection.ts';
import { parseEnvironment } from '../../src/cni/request.ts';
import { parseConfig } from '../../src/config.ts';
import type { Kernel } from '../../src/engine.ts';
import { parseNetDev } from '../../src/kernel/links.ts';
import { fakeProbe } from '../../src/kernel/probe-fake.ts';
import { objectKey, type KernelObject } from '../../src/plan.ts';
import { cniError } from './helpers.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'mr-unit-hostile-'));
  dirs.push(d);
  return d;
};

/** A kernel that keeps what is installed, by key. */
const recordingKernel = () => {
  const installed = new Map<string, KernelObject>();
  const kernel: Kernel = {
    valuesBefore: (objects) => new Map(objects.filter((o) => o.kind === 'rpFilter').map((o) => [objectKey(o), 1])),
    apply: (install, remove) => {
      for (const o of install) installed.set(objectKey(o), o);
      for (const r of remove) installed.delete(objectKey(r.object));
    },
    drift: (objects) => new Map(objects.map((o) => [objectKey(o), installed.has(objectKey(o)) ? [] : ['missing']])),
  };
  return { kernel, installed };
};

const base = { cniVersion: '1.1.0', name: 'mrgc', type: 'markroute' };
const PREV = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/p' }],
  ips: [{ address: '10.244.0.5/24', interface: 1 }],
};
const probe = fakeProbe({ nft: true, uplinks: { 4: { dev: 'eth0', gateway: '10.224.0.1' } } });

describe('GC needs cni.dev/valid-attachments', () => {
  async function attached(stateDir: string, kernel: Kernel, containerIds: string[]) {
    for (const id of containerIds) {
      const req = parseEnvironment({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_IFNAME: 'eth0', CNI_NETNS: '/run/netns/p' });
      await add(parseConfig({ ...base, stateDir, prevResult: PREV }), req, { probe, kernel });
    }
  }
  const records = (stateDir: string) => readdirSync(join(stateDir, 'attachments')).sort();

  test('without the list (either spelling) GC is code 7 naming the field, and removes nothing', async () => {
    const stateDir = join(tempDir(), 'state');
    const { kernel, installed } = recordingKernel();
    await attached(stateDir, kernel, ['a1', 'a2']);
    const before = [...installed.keys()];
    expect(records(stateDir)).toEqual(['mrgc_a1_eth0.json', 'mrgc_a2_eth0.json']);
    const err = await gc(parseConfig({ ...base, stateDir }), { kernel }).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({
      code: 7,
      message: expect.stringMatching(/^invalid netconf: cni\.dev\/valid-attachments: missing; GC removes every attachment of network mrgc that this list does not name/),
    });
    expect(records(stateDir)).toEqual(['mrgc_a1_eth0.json', 'mrgc_a2_eth0.json']);
    expect([...installed.keys()]).toEqual(before);
  });

  test('refused before the state directory is touched: a missing one is not created', async () => {
    const stateDir = join(tempDir(), 'never-made');
    await expect(gc(parseConfig({ ...base, stateDir }))).rejects.toMatchObject({ code: 7 });
    expect(existsSync(stateDir)).toBe(false);
  });

  test('a list keeps what it names; the older spelling works; an empty list means none is valid', async () => {
    const stateDir = join(tempDir(), 'state');
    const { kernel, installed } = recordingKernel();
    await attached(stateDir, kernel, ['a1', 'a2', 'a3']);
    await gc(parseConfig({ ...base, stateDir, 'cni.dev/valid-attachments': [{ containerID: 'a1', ifname: 'eth0' }, { containerID: 'a2', ifname: 'eth0' }] }), { kernel });
    expect(records(stateDir)).toEqual(['mrgc_a1_eth0.json', 'mrgc_a2_eth0.json']);
    await gc(parseConfig({ ...base, stateDir, 'cni.dev/attachments': [{ containerID: 'a2', ifname: 'eth0' }] }), { kernel });
    expect(records(stateDir)).toEqual(['mrgc_a2_eth0.json']);
    // another network's list says nothing about this one's
    await gc(parseConfig({ ...base, name: 'other', stateDir, 'cni.dev/valid-attachments': [] }), { kernel });
    expect(records(stateDir)).toEqual(['mrgc_a2_eth0.json']);
    await gc(parseConfig({ ...base, stateDir, 'cni.dev/valid-attachments': [] }), { kernel });
    expect(records(stateDir)).toEqual([]);
    expect([...installed.keys()]).toEqual([]);
  });
});

describe('STATUS says what ADD would find', () => {
  const config = (extra: Record<string, unknown>) => parseConfig({ ...base, ...extra });

  test('an uplink the netconf names that does not exist here: code 50 naming the field (ADD would answer 102)', () => {
    const err = cniError(() => status(config({ uplink: 'eth9', gateway: '10.224.0.1' }), probe));
    expect(err.code).toBe(50);
    expect(err.message).toBe('uplink: uplink eth9 does not exist on this node: an ADD would fail (code 102) until it does');
    // also when only its device route is planned (no gateway), and for a mark's own uplink
    expect(cniError(() => status(config({ uplink: 'eth9' }), probe)).message).toMatch(/^uplink: uplink eth9 does not exist/);
    const marks = { plain: { mark: 32 }, ok: { mark: 16, table: 101 }, vpn: { mark: 64, table: 102, uplink: 'wg0' } };
    expect(cniError(() => status(config({ marks }), probe)).message).toMatch(/^marks\.vpn\.uplink: uplink wg0 does not exist on this node/);
  });

  test('the uplink question is asked of the probe, once per uplink', () => {
    const p = fakeProbe({ nft: true, uplinks: { 4: { dev: 'eth0', gateway: '10.224.0.1' } }, links: ['wg0'] });
    try {
      status(config({ marks: { a: { mark: 16, table: 101 }, vpn: { mark: 64, table: 102, uplink: 'wg0' } } }), p);
    } catch (err) {
      // past the uplinks, STATUS runs the node's tools: only their absence may answer here
      expect((err as Error).message).not.toMatch(/uplink/);
    }
    expect(p.asked.filter((q) => q.startsWith('linkExists'))).toEqual(['linkExists eth0', 'linkExists wg0']);
  });

  test('no uplink at all is still code 50', () => {
    const err = cniError(() => status(config({}), fakeProbe({ nft: true })));
    expect([err.code, err.message]).toEqual([50, 'no uplink: the main table has no default route with a gateway, and the netconf sets none']);
  });

  test('/proc/net/dev names every interface of the namespace, up or down', () => {
    const text = [
      'Inter-|   Receive                                                |  Transmit',
      ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
      '    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0',
      '  eth0:      90       1    0    0    0     0          0         0      110       1    0    0    0     0       0          0',
      'veth-a.b@c:1 2 3',
      '',
    ].join('\n');
    expect([...parseNetDev(text)]).toEqual(['lo', 'eth0', 'veth-a.b@c']);
  });
});

describe('the pod annotation annotated mode reads', () => {
  const annotated = (annotations: unknown) =>
    parseConfig({ ...base, marks: { vpn: { mark: 16 } }, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations } });
  const FIELD = 'invalid netconf: runtimeConfig["io.kubernetes.cri.pod-annotations"]["cni.fwmark.net/name"]: the pod annotation must be a string naming an entry of marks';

  test.each([
    [5, 'a number'], [true, 'a boolean'], [['vpn'], 'an array'], [{ toString: 1 }, 'an object'], [{}, 'an object'], [null, 'null'],
  ])('a value %j is code 7 naming the annotation, not a crash', (value, kind) => {
    const err = cniError(() => selectPod(annotated({ 'cni.fwmark.net/name': value }), undefined).mark);
    expect([err.code, err.message]).toEqual([7, `${FIELD}, got ${kind}`]);
  });

  test('annotations that are not an object are code 7; none (null, as Go sends an empty map) passes the pod through', () => {
    for (const [annotations, kind] of [['vpn', 'a string'], [['vpn'], 'an array'], [7, 'a number']] as const) {
      const err = cniError(() => selectPod(annotated(annotations), undefined).mark);
      expect([err.code, err.message]).toEqual([7, `invalid netconf: runtimeConfig["io.kubernetes.cri.pod-annotations"]: must be an object of pod annotations (name to string), got ${kind}`]);
    }
    expect(selectPod(annotated(null), undefined).mark).toBeUndefined();
    expect(selectPod(annotated({ 'cni.fwmark.net/name': 'vpn', other: 5 }), undefined).mark?.name).toBe('vpn');
  });
});

// Drift: someone flushes our chain or table, deletes our ip rule or route, resets the uplink's
// rp_filter, or destroys our set. CHECK names what is missing; the next ADD repairs it (at once
// when its drift check is due, and whenever the kernel refuses its change); `markroute reconcile`
// repairs everything on demand and says what.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  createLab, findPlugin, ipsetAdds, loadPtpConflist, markChains, markrouteLog, saveKey, type Backend, type Conflist, type Lab, type Pod,
} from '../lab/index.ts';
import { markrouteTables } from '../lab/nft.ts';

/** The ptp conflist with markroute's drift check every `seconds` (0: every ADD). */
function conflist(lab: Lab, backend: Backend, seconds: number): Conflist {
  const list = loadPtpConflist(lab, backend);
  Object.assign(list.plugins.find((p) => p.type === 'markroute')!, { driftCheckSeconds: seconds });
  return list;
}

describe.each<Backend>(['nftables', 'iptables'])('drift is named by CHECK and repaired (%s)', (backend) => {
  let lab: Lab;
  let first: Pod;
  let server: Pod;
  let pods = 0;
  const check = async (pod: Pod) => (await lab.cni('CHECK', pod)).ok;
  const checkError = async (pod: Pod) => JSON.stringify((await lab.cni('CHECK', pod)).runs.at(-1)?.stdout);
  const nextPod = (list: Conflist) => lab.addPod(`next${++pods}`, list);
  /** Marked traffic still goes out through the fabric, where the NSG counts it. */
  const marked = async () => {
    lab.nsg.reset();
    const r = await lab.probe(first, 'udp', server.ip4!, 7000, { count: 3, fresh: true });
    expect(r.received).toBe(3);
    expect(lab.nsg.packets(first.ip4!, server.ip4!)).toBeGreaterThanOrEqual(3);
  };
  /** markroute's log lines at level warn (40) and above. */
  const warnings = () => markrouteLog(lab).filter((e) => e.level >= 40);

  /**
   * Empties what marks pods: every chain of our nftables table, or the whole mangle table (our
   * chain's rules and the PREROUTING jump to it); returns what CHECK must then say.
   */
  function flushMarking(): string[] {
    const s = lab.snapshot();
    if (backend === 'nftables') {
      const table = markrouteTables(s)[0]!;
      lab.exec(lab.ns.node, ['nft', 'flush', 'table', 'inet', table]);
      return [`chain prerouting of table inet ${table} does not hold the planned rules`];
    }
    const variant = markChains(s.iptables[saveKey('nft', 4)]).length ? 'nft' : 'legacy';
    const chain = markChains(s.iptables[saveKey(variant, 4)])[0]!;
    lab.exec(lab.ns.node, [`iptables-${variant}`, '-t', 'mangle', '-F']);
    return [`PREROUTING does not jump to ${chain}`, `chain ${chain} does not hold the planned rules`];
  }

  /** Takes away what holds every pod's element: our nftables table, or our chain's rules and then the ipset. */
  function destroyPodSets(): void {
    if (backend === 'nftables') {
      lab.exec(lab.ns.node, ['nft', 'delete', 'table', 'inet', markrouteTables(lab.snapshot())[0]!]);
      return;
    }
    const set = ipsetAdds(lab.snapshot())[0]!.split(' ')[1]!;
    flushMarking();
    lab.exec(lab.ns.node, ['ipset', 'destroy', set]);
  }

  beforeAll(async () => {
    lab = await createLab();
    const list = conflist(lab, backend, 0);
    first = await lab.addPod('first', list);
    server = await lab.addPod('server', list);
    await lab.serve(server, 'udp', 7000);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('marking flushed, ip rule and route deleted, rp_filter reset: CHECK names each, the next ADD (check due) repairs them all', async () => {
    const marking = flushMarking();
    lab.exec(lab.ns.node, ['ip', 'rule', 'del', 'fwmark', '0x10/0x10', 'lookup', '100', 'priority', '32765']);
    lab.exec(lab.ns.node, ['ip', 'route', 'del', 'default', 'table', '100']);
    lab.exec(lab.ns.node, ['sysctl', '-qw', 'net.ipv4.conf.eth0.rp_filter=1']);
    const broken = await checkError(first);
    for (const problem of marking) expect(broken).toContain(problem);
    expect(broken).toContain('ip -4 rule 32765: fwmark 0x10/0x10 lookup 100 is missing');
    expect(broken).toContain('default via 10.224.0.1 dev eth0 in table 100 (IPv4) is missing');
    expect(broken).toContain('rp_filter of eth0 is 1, not 2 (loose)');

    await nextPod(conflist(lab, backend, 0));
    expect(await check(first)).toBe(true);
    expect(lab.snapshot().rpFilter.eth0).toBe('2');
    const repaired = warnings().at(-1);
    expect(repaired.msg).toMatch(/^ADD ok: repaired what someone changed in the kernel: /);
    expect(repaired.repaired.map((r: { key: string }) => r.key)).toEqual(expect.arrayContaining(['rule/4/32765/16/16/100', 'route/4/100']));
    await marked();
  });

  test('between drift checks, an ADD whose change the kernel refuses (our set destroyed) repairs at once and succeeds', async () => {
    destroyPodSets();
    expect(await check(first)).toBe(false);
    const hourly = conflist(lab, backend, 3600); // the previous ADD checked: none is due for an hour
    const pod = await nextPod(hourly);
    expect(await check(first)).toBe(true); // the first pod's element is back, with the rest
    const add = warnings().filter((e) => e.containerId === pod.containerId);
    expect(add).toHaveLength(1);
    expect(add[0]).toMatchObject({ command: 'ADD', driftChecked: true });
    expect(add[0].repaired.length).toBeGreaterThan(0);
    await marked();
  });

  test('between drift checks, a deleted ip rule waits for the next check; markroute reconcile repairs it now and says so', async () => {
    lab.exec(lab.ns.node, ['ip', 'rule', 'del', 'fwmark', '0x10/0x10', 'lookup', '100', 'priority', '32765']);
    await nextPod(conflist(lab, backend, 3600));
    expect(await check(first)).toBe(false);
    const out = lab.exec(lab.ns.node, [findPlugin('markroute', lab.cniPath)!, 'reconcile', '--state-dir', join(lab.dir, 'state')]);
    expect(JSON.parse(out.stdout).repaired.map((r: { key: string }) => r.key)).toContain('rule/4/32765/16/16/100');
    expect(await check(first)).toBe(true);
    await marked();
  });
});

// ipv6ProbeRewrite (nftables): a cloud load balancer probes pods from a link-local address
// (Azure: fe80::1234:5678:9abc). The kernel never forwards a packet with a link-local source, so
// without the rewrite the probe dies on the node; with it, the probe's source becomes a routable
// address before conntrack, the pod answers that address, and the answer is put back to the
// link-local prober on its way out of the uplink.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLab, UPLINK, type Conflist, type Lab, type Pod } from '../lab/index.ts';

const PROBER = 'fe80::1234:5678:9abc';
const ROUTABLE = '2603:1062:0:1:fe80:1234:5678:9abc';
const PORT = 8080;

// A UDP probe sent from the prober's link-local address (bound with its scope), as the load balancer does.
const PROBE_SCRIPT = `
const dgram = require('node:dgram');
const [target, port] = process.argv.slice(1);
const s = dgram.createSocket('udp6');
const timer = setTimeout(() => { console.log(JSON.stringify({ answered: false })); process.exit(0); }, 1500);
s.on('message', (m) => { clearTimeout(timer); console.log(JSON.stringify({ answered: true, ...JSON.parse(m.toString()) })); process.exit(0); });
s.bind({ address: '${PROBER}%${UPLINK}', port: 0 }, () => s.send('probe', Number(port), target));
`;

describe('ipv6ProbeRewrite (nftables)', () => {
  let lab: Lab;
  let pod: Pod;
  let plain: Conflist;
  let rewriting: Conflist;
  let before: ReturnType<Lab['snapshot']>;

  /** markroute alone, ADDed again for the pod with the given conflist's netconf (ptp keeps its address). */
  const readd = async (list: Conflist) => {
    const conf = { cniVersion: list.cniVersion, name: list.name, ...list.plugins[1], prevResult: pod.result };
    const run = await lab.invoke('ADD', conf, pod);
    expect([run.code, run.stderr], run.rawStdout).toEqual([0, '']);
  };

  const probe = () => {
    const out = lab.exec(lab.ns.fabric, ['node', '-e', PROBE_SCRIPT, pod.ip6!, String(PORT)]);
    return JSON.parse(out.stdout) as { answered: boolean; seenAs?: string };
  };

  beforeAll(async () => {
    lab = await createLab({ ipv6: true });
    // The prober lives on the fabric's side of the node's uplink.
    lab.exec(lab.ns.fabric, ['ip', '-6', 'addr', 'add', `${PROBER}/64`, 'dev', UPLINK, 'nodad']);
    const markroute = (extra: Record<string, unknown>) => ({
      type: 'markroute', backend: 'nftables', serviceCIDRs: ['10.96.0.0/12', 'fd00:10::/108'],
      stateDir: join(lab.dir, 'state'), logFile: join(lab.dir, 'markroute.log'), ...extra,
    });
    plain = lab.conflist('ptp', { name: 'probed', chain: [markroute({})] });
    rewriting = lab.conflist('ptp', { name: 'probed', chain: [markroute({ ipv6ProbeRewrite: { from: PROBER, to: ROUTABLE } })] });
    before = lab.snapshot();
    pod = await lab.addPod('web', plain);
    await lab.serve(pod, 'udp', PORT);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('without the rewrite the link-local probe is not forwarded to the pod', () => {
    expect(probe()).toEqual({ answered: false });
  });

  test('with it the probe reaches the pod from the routable address and the answer reaches the prober', async () => {
    // The same pod's markroute ADDed again under the conflist that asks for the rewrite.
    await readd(rewriting);
    expect(probe()).toMatchObject({ answered: true, seenAs: ROUTABLE });
    const table = lab.exec(lab.ns.node, ['nft', 'list', 'table', 'inet', tableOf(lab)]).stdout;
    expect(table).toContain(`ip6 saddr ${PROBER} ip6 saddr set ${ROUTABLE}`);
    expect(table).toContain(`ip6 daddr ${ROUTABLE} ip6 daddr set ${PROBER}`);
  });

  test('a re-ADD under the conflist without it takes the rewrite away again', async () => {
    await readd(plain);
    expect(probe()).toEqual({ answered: false });
    expect(lab.exec(lab.ns.node, ['nft', 'list', 'table', 'inet', tableOf(lab)]).stdout).not.toContain(PROBER);
  });

  test('the rewrite goes with the last pod: the node is as before', async () => {
    await readd(rewriting);
    const del = await lab.delPod(pod, { conflist: rewriting });
    expect(del.ok).toBe(true);
    expect(lab.snapshot()).toEqual(before);
  });
});

/** markroute's table in the node namespace (one network, so one table). */
function tableOf(lab: Lab): string {
  const tables = lab.exec(lab.ns.node, ['nft', '-j', 'list', 'tables']).stdout;
  const names = (JSON.parse(tables).nftables as { table?: { name: string } }[]).flatMap((i) => (i.table ? [i.table.name] : []));
  return names.find((n) => n.startsWith('markroute-'))!;
}

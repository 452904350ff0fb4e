// markroute as kubelet's runtime runs it: containerd 1.6 with its CRI plugin (Debian's containerd
// and runc), driven through the CRI gRPC API by test/cri/client.ts, ptp then markroute from the
// shipped conflists (only IPAM's dataDir and markroute's stateDir/logFile moved into the suite's
// temp dir), a locally built pause image. containerd runs in the lab's node namespace
// (nsenter --net), with a gateway namespace behind `vpn0` standing in for a VPN.
// A recording wrapper in containerd's CNI bin_dir keeps each call of markroute, ptp and host-local
// (CNI_* env, stdin, stdout, exit status) and answers exactly as the plugin did.
// Cases: RunPodSandbox with and without the annotation in transparent-tunnel and annotated mode,
// StopPodSandbox/RemovePodSandbox (two DELs, the second without netns or prevResult); 20 sandboxes
// at once; an unknown mark name; traffic from an annotated pod leaves through vpn0, an
// unannotated pod's through the fabric (main route); with conflists/50-ptp-team-vpn.conflist, a pod of
// the namespace team-vpn leaves through vpn0 without any annotation. A markroute entry with a typo ("mark": "0xZZ"):
// three failed RunPodSandbox in a row, each cleaned up by containerd's DEL through the whole chain
// (no address left in host-local, nothing of markroute's); the typo written into the conflist while
// a pod runs: its teardown still removes the record, the kernel objects and the address.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { CriError } from '../cri/client.ts';
import { cachedResults, Containerd, containerdMissing, containerdVersion, mountsUnder, sweepStaleContainerd, type RecordedCall } from '../cri/containerd.ts';
import { buildPauseImage } from '../cri/pause-image.ts';
import {
  addGateway, addOutsideAddress, ArrivalCounter, createLab, elementKeys, FABRIC_IP, findPlugin, fwmarkRules, markrouteObjects,
  NO_MARKROUTE, OUTSIDE_IP, podElements, REPO_ROOT, runAsync, tableRoutes, VPN_GATEWAY_IP, VPN_IF,
  type Gateway, type Lab, type Snapshot,
} from '../lab/index.ts';

const missing = containerdMissing();
const VERSION = missing ? '' : `containerd ${containerdVersion().split(' ')[2]}`;
if (missing) console.warn(`containerd e2e suite skipped: ${missing}; scripts/test.sh installs containerd and runc`);

// MARKROUTE_CNI_PATH (colon-separated) points the suite at another build of the plugin.
const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':') ?? [join(REPO_ROOT, 'dist'), '/usr/lib/cni'];
const NETPROBE = join(REPO_ROOT, 'test/lab/netprobe.mjs');
const ANNOTATION = 'cni.fwmark.net/name';
const VPN = { [ANNOTATION]: 'vpn' };
const ECHO_PORT = 5353;

type Mode = 'transparent-tunnel' | 'annotated';
const CONFLIST: Record<Mode, string> = { 'transparent-tunnel': '10-ptp-markroute.conflist', annotated: '20-ptp-annotated.conflist' };
/** The policy table, and where its default route goes, per mode (the shipped conflists' values). */
const ROUTING: Record<Mode, { table: string; gateway: string; dev: string }> = {
  'transparent-tunnel': { table: '100', gateway: FABRIC_IP, dev: 'eth0' },
  annotated: { table: '123', gateway: VPN_GATEWAY_IP, dev: VPN_IF },
};

/** A sandbox as the node sees it: its address, its netns (under containerd's state dir) and its host veth. */
interface PodView {
  id: string;
  name: string;
  ip: string;
  netns: string;
  hostIf: string;
}

describe.skipIf(!!missing)('containerd CRI → ptp → markroute', () => {
  let lab: Lab;
  let gw: Gateway;
  let fabric: ArrivalCounter;
  let ctd: Containerd;
  let image: string;
  let baseline: Snapshot;
  let mode: Mode;
  let stateDir: string;
  let ipamDir: string;
  let networkName: string;

  beforeAll(async () => {
    await sweepStaleContainerd();
    lab = await createLab();
    gw = addGateway(lab);
    addOutsideAddress(lab.ns.fabric);
    fabric = new ArrivalCounter(lab.ns.fabric);
    fabric.install();
    await lab.serve(gw.ns, 'udp', ECHO_PORT);
    await lab.serve(lab.ns.fabric, 'udp', ECHO_PORT);
    const plugin = (type: string) => {
      const p = findPlugin(type, cniPath);
      if (!p) throw new Error(`CNI plugin ${type} not found in ${cniPath.join(':')}`);
      return p;
    };
    ctd = new Containerd({
      netns: lab.ns.node,
      plugins: Object.fromEntries(['markroute', 'ptp', 'host-local', 'loopback', 'portmap'].map((t) => [t, plugin(t)])),
      record: ['markroute', 'ptp', 'host-local'],
    });
    image = buildPauseImage(ctd.dir);
    baseline = lab.snapshot();
  }, 180_000);

  afterAll(async () => {
    const dir = ctd?.dir;
    await ctd?.destroy();
    await lab?.destroy();
    if (dir) {
      // nothing of containerd's is left: no process, no mount, no temp dir
      expect(readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir);
        } catch {
          return false;
        }
      })).toEqual([]);
      expect(mountsUnder(dir)).toEqual([]);
      expect(existsSync(dir)).toBe(false);
    }
  }, 120_000);

  // ---- helpers ---------------------------------------------------------------------

  /** A shipped conflist, with IPAM's dataDir and markroute's stateDir/logFile in the suite's temp dir (named by `tag`). */
  function conflist(file: string, tag: string): Record<string, any> {
    const list = JSON.parse(readFileSync(join(REPO_ROOT, 'conflists', file), 'utf8'));
    list.plugins[0].ipam.dataDir = join(ctd.dir, `ipam-${tag}`);
    const mr = markrouteEntry(list);
    mr.stateDir = join(ctd.dir, `markroute-state-${tag}`);
    mr.logFile = join(ctd.dir, `markroute-${tag}.log`);
    return list;
  }

  const markrouteEntry = (list: Record<string, any>): Record<string, any> => list.plugins.find((p: { type: string }) => p.type === 'markroute');

  async function view(id: string): Promise<PodView> {
    const st = await ctd.cri.podSandboxStatus(id, true);
    const info = JSON.parse(st.info.info!);
    const netns = (info.runtimeSpec.linux.namespaces as { type: string; path?: string }[]).find((n) => n.type === 'network')!.path!;
    const hostIf = Object.entries(info.cniResult.Interfaces as Record<string, { Sandbox: string }>).find(([, i]) => !i.Sandbox)?.[0];
    expect(st.status.state).toBe('SANDBOX_READY');
    return { id, name: st.status.metadata.name, ip: st.status.network!.ip, netns, hostIf: hostIf! };
  }

  async function runPod(name: string, annotations: Record<string, string> = {}, namespace?: string): Promise<PodView> {
    return view(await ctd.runPod(name, annotations, namespace));
  }

  async function stopAndRemove(p: { id: string }): Promise<void> {
    await ctd.cri.stopPodSandbox(p.id);
    await ctd.cri.removePodSandbox(p.id);
  }

  /** markroute's calls for one sandbox, in order. */
  const callsOf = (id: string): RecordedCall[] => ctd.calls('markroute').filter((c) => c.env.CNI_CONTAINERID === id);
  const summary = (c: RecordedCall) => ({
    command: c.env.CNI_COMMAND,
    netns: c.env.CNI_NETNS ?? '',
    prevResult: c.stdin.prevResult !== undefined,
    code: c.code,
  });

  const records = () => (existsSync(join(stateDir, 'attachments')) ? readdirSync(join(stateDir, 'attachments')) : []);
  /** host-local's allocations (files named by address) for the network. */
  const allocations = () => {
    const d = join(ipamDir, networkName);
    return existsSync(d) ? readdirSync(d).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
  };
  const nodeLinks = () => (JSON.parse(lab.exec(lab.ns.node, ['ip', '-j', 'link', 'show']).stdout) as { ifname: string }[]).map((l) => l.ifname).sort();
  const netnsMounts = () => mountsUnder(join(ctd.dir, 'state')).filter((m) => m.includes('/netns/'));

  async function expectClean(): Promise<void> {
    expect(await ctd.cri.listPodSandbox()).toEqual([]);
    expect(records(), 'markroute records').toEqual([]);
    expect(allocations(), 'IPAM allocations').toEqual([]);
    expect(netnsMounts(), 'pod netns mounts').toEqual([]);
    expect(nodeLinks()).toEqual(['eth0', 'lo', VPN_IF]);
    const s = lab.snapshot();
    expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);
    expect(s).toEqual(baseline);
  }

  /** The routing half: one rule for the mark to the mode's table and its default route, or neither. */
  function expectRouting(s: Snapshot, present: boolean): void {
    const r = ROUTING[mode];
    if (!present) {
      expect(fwmarkRules(s)).toEqual([]);
      expect(tableRoutes(s, r.table)).toEqual([]);
      return;
    }
    expect(fwmarkRules(s)).toEqual([expect.objectContaining({ priority: 32765, fwmark: '0x10', fwmask: '0x10', table: r.table })]);
    expect(tableRoutes(s, r.table)).toEqual([expect.objectContaining({ dst: 'default', gateway: r.gateway, dev: r.dev })]);
    // the uplink's rp_filter is loose while pods need it (the node's is strict)
    expect(s.rpFilter[r.dev]).toBe('2');
  }

  const probe = async (p: PodView, count = 5) =>
    JSON.parse((await runAsync(['nsenter', `--net=${p.netns}`, process.execPath, NETPROBE, 'probe', 'udp', OUTSIDE_IP, String(ECHO_PORT), String(count), '1500'], { timeoutMs: 20_000 })).stdout) as
      { sent: number; received: number; replies: { from: string; seenAs: string }[] };

  /**
   * For the describe it is called in: containerd started with the shipped conflist `file` (in the
   * suite's temp dir by `tag`; `written` may change what is written), each test's sandboxes removed
   * after it, containerd stopped after all.
   */
  function withContainerd(m: Mode, file: string, tag: string, written: (list: Record<string, any>) => Record<string, any> = (l) => l): void {
    beforeAll(async () => {
      mode = m;
      const list = conflist(file, tag);
      networkName = list.name;
      ipamDir = list.plugins[0].ipam.dataDir;
      stateDir = markrouteEntry(list).stateDir;
      ctd.setConflist(file, written(list));
      const v = await ctd.start();
      expect(v.runtimeName).toBe('containerd');
      expect(v.runtimeApiVersion).toBe('v1');
      ctd.importImage(image);
    }, 120_000);

    afterEach(async () => {
      // a failed test's sandboxes must not spill into the next one
      if (ctd.running) await ctd.removeAllPods();
    }, 120_000);

    afterAll(async () => {
      await ctd?.stop();
    }, 60_000);
  }

  describe.each(['transparent-tunnel', 'annotated'] as const)('%s mode', (m) => {
    withContainerd(m, CONFLIST[m], m);

    test(`${VERSION} runs in the node namespace, the sandbox network is ptp then markroute`, async () => {
      ctd.clearCalls();
      const a = await runPod('first');
      expect(a.ip).toMatch(/^10\.244\.0\.\d+$/);
      expect(a.hostIf).toMatch(/^veth/);
      // the host veth is in the node namespace: containerd ran the plugins there
      expect(nodeLinks()).toContain(a.hostIf);
      const [add] = callsOf(a.id);
      expect(add!.env).toMatchObject({
        CNI_COMMAND: 'ADD', CNI_IFNAME: 'eth0', CNI_NETNS: a.netns,
        CNI_ARGS: expect.stringMatching(/(^|;)K8S_POD_NAMESPACE=default(;|$)/),
      });
      expect(add!.env.CNI_ARGS).toMatch(/(^|;)K8S_POD_NAME=first(;|$)/);
      expect(add!.env.CNI_ARGS).toMatch(/(^|;)IgnoreUnknown=1(;|$)/);
      expect(add!.stdin).toMatchObject({ type: 'markroute', name: networkName, prevResult: { interfaces: expect.arrayContaining([expect.objectContaining({ name: a.hostIf })]) } });
      await stopAndRemove(a);
      await expectClean();
    });

    test('RunPodSandbox with and without the annotation: marks, rules and routes only for the pods that should have them', async () => {
      ctd.clearCalls();
      const annotated = await runPod('with-annotation', VPN);
      const plain = await runPod('without-annotation');
      const s = lab.snapshot();
      const marked = mode === 'transparent-tunnel' ? [annotated, plain] : [annotated];
      expect(elementKeys(s)).toEqual(marked.map((p) => `${p.ip},${p.hostIf}`).sort());
      // CNI_ARGS reached markroute: the element names the pod
      for (const p of marked) expect(podElements(s).find((e) => e.address === p.ip)!.comment).toMatch(new RegExp(`^default/${p.name} ${p.id.slice(0, 12)} eth0$`));
      expectRouting(s, true);
      // every markroute ADD succeeded; pod annotations reach it only where the conflist declares the capability
      for (const p of [annotated, plain]) {
        const [add] = callsOf(p.id);
        expect(summary(add!)).toEqual({ command: 'ADD', netns: p.netns, prevResult: true, code: 0 });
        // (containerd sends a pod without annotations as null: Go's nil map)
        if (mode === 'annotated') expect(add!.stdin.runtimeConfig).toEqual({ 'io.kubernetes.cri.pod-annotations': p === annotated ? VPN : null });
        else expect(add!.stdin.runtimeConfig).toBeUndefined();
      }
      await stopAndRemove(annotated);
      await stopAndRemove(plain);
      await expectClean();
    });

    test('StopPodSandbox is a DEL with netns and prevResult, RemovePodSandbox a second DEL with neither; shared objects go with the last marked pod', async () => {
      const a = await runPod('a', VPN);
      const b = await runPod('b', VPN);
      const plain = await runPod('plain');
      ctd.clearCalls();

      await ctd.cri.stopPodSandbox(a.id);
      expect(callsOf(a.id).map(summary)).toEqual([{ command: 'DEL', netns: a.netns, prevResult: true, code: 0 }]);
      let s = lab.snapshot();
      expect(elementKeys(s)).toEqual((mode === 'transparent-tunnel' ? [b, plain] : [b]).map((p) => `${p.ip},${p.hostIf}`).sort());
      expectRouting(s, true); // b still needs them

      await ctd.cri.removePodSandbox(a.id);
      expect(callsOf(a.id).map(summary)).toEqual([
        { command: 'DEL', netns: a.netns, prevResult: true, code: 0 },
        { command: 'DEL', netns: '', prevResult: false, code: 0 },
      ]);
      expect(lab.snapshot()).toEqual(s);

      await stopAndRemove(b);
      s = lab.snapshot();
      if (mode === 'annotated') {
        // the last marked pod is gone: so are the rule, the route and vpn0's loose rp_filter; the unannotated pod holds nothing
        expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);
        expect(s.rpFilter[VPN_IF]).toBe('1');
      } else {
        expect(elementKeys(s)).toEqual([`${plain.ip},${plain.hostIf}`]);
        expectRouting(s, true);
      }
      await stopAndRemove(plain);
      for (const p of [a, b, plain]) expect(callsOf(p.id).map((c) => [c.env.CNI_COMMAND, c.code])).toEqual([['DEL', 0], ['DEL', 0]]);
      await expectClean();
    });

    test('20 pod sandboxes created and removed concurrently: no error, nothing left', async () => {
      ctd.clearCalls();
      const names = Array.from({ length: 20 }, (_, i) => `many-${i}`);
      const annotatedOf = (n: string) => Number(n.split('-')[1]) % 2 === 0;
      const ids = await Promise.all(names.map((n) => ctd.runPod(n, annotatedOf(n) ? VPN : {})));
      const pods = await Promise.all(ids.map(view));
      expect(new Set(pods.map((p) => p.ip)).size).toBe(20);
      const s = lab.snapshot();
      const marked = mode === 'transparent-tunnel' ? pods : pods.filter((p) => annotatedOf(p.name));
      expect(elementKeys(s)).toEqual(marked.map((p) => `${p.ip},${p.hostIf}`).sort());
      expectRouting(s, true);
      // a record for every pod: those passed through unmarked say why (and hold nothing)
      expect(records()).toHaveLength(pods.length);

      await Promise.all(pods.map(stopAndRemove));
      const calls = ctd.calls('markroute');
      expect(calls.filter((c) => c.code !== 0).map((c) => [c.env.CNI_COMMAND, c.stdout])).toEqual([]);
      expect(calls.map((c) => c.env.CNI_COMMAND).sort()).toEqual([...Array(20).fill('ADD'), ...Array(40).fill('DEL')]);
      await expectClean();
    }, 180_000);

    if (m === 'annotated') {
      test('an unknown mark name: RunPodSandbox fails with markroute\'s message, and containerd\'s DEL leaves nothing', async () => {
        ctd.clearCalls();
        const err = await ctd.runPod('unknown-mark', { [ANNOTATION]: 'nosuch' }).then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(CriError);
        expect((err as CriError).details).toContain(`invalid netconf: marks: the pod's annotation ${ANNOTATION}="nosuch" names no entry of marks; known: vpn`);
        const calls = ctd.calls('markroute');
        const id = calls[0]!.env.CNI_CONTAINERID!;
        expect(calls.every((c) => c.env.CNI_CONTAINERID === id)).toBe(true);
        const [add, ...dels] = calls;
        expect(summary(add!)).toEqual({ command: 'ADD', netns: expect.stringContaining('/netns/cni-'), prevResult: true, code: 1 });
        expect(JSON.parse(add!.stdout)).toMatchObject({ code: 7, msg: expect.stringContaining('names no entry of marks') });
        // containerd tears the failed sandbox's network down: one DEL, with the netns but no prevResult, which succeeds
        expect(dels.map(summary)).toEqual([{ command: 'DEL', netns: add!.env.CNI_NETNS, prevResult: false, code: 0 }]);
        await expectClean();
      });

      test("traffic: the annotated pod's leaves through vpn0 to the gateway, the unannotated pod's through the fabric (main route)", async () => {
        const vpn = await runPod('via-vpn', VPN);
        const plain = await runPod('via-main');
        gw.counter.reset();
        fabric.reset();
        const r1 = await probe(vpn);
        expect(r1.received).toBe(5);
        // the gateway saw the pod's own address, and answered from its side of vpn0
        expect(r1.replies[0]).toEqual({ from: VPN_GATEWAY_IP, seenAs: vpn.ip });
        expect(gw.counter.packets(vpn.ip, OUTSIDE_IP)).toBe(5);
        expect(fabric.packets(vpn.ip, OUTSIDE_IP)).toBe(0);

        const r2 = await probe(plain);
        expect(r2.received).toBe(5);
        expect(r2.replies[0]).toEqual({ from: FABRIC_IP, seenAs: plain.ip });
        expect(fabric.packets(plain.ip, OUTSIDE_IP)).toBe(5);
        expect(gw.counter.packets(plain.ip, OUTSIDE_IP)).toBe(0);

        // once the annotated pod is gone, nothing of the vpn route is left for anyone
        await stopAndRemove(vpn);
        await stopAndRemove(plain);
        await expectClean();
      });
    } else {
      test('traffic: every pod is marked, so even the unannotated pod leaves through the fabric via table 100, never vpn0', async () => {
        const a = await runPod('tt-annotated', VPN);
        const b = await runPod('tt-plain');
        gw.counter.reset();
        fabric.reset();
        for (const p of [a, b]) {
          expect((await probe(p)).received).toBe(5);
          expect(fabric.packets(p.ip, OUTSIDE_IP)).toBe(5);
          expect(gw.counter.packets(p.ip, OUTSIDE_IP)).toBe(0);
        }
        await stopAndRemove(a);
        await stopAndRemove(b);
        await expectClean();
      });
    }
  });

  // conflists/50-ptp-team-vpn.conflist: the entry `team-vpn` lists the namespace team-vpn. containerd
  // puts the sandbox's metadata namespace in CNI_ARGS (K8S_POD_NAMESPACE): no annotation is needed.
  describe('annotated mode, pods selected by namespace (50-ptp-team-vpn.conflist)', () => {
    // annotated: the same mark as 20-ptp-annotated.conflist's, table 123 via the gateway behind vpn0
    withContainerd('annotated', '50-ptp-team-vpn.conflist', 'namespaces');

    test("a pod of team-vpn, without any annotation, leaves through vpn0 to the gateway; a pod of default through the fabric (main route)", async () => {
      ctd.clearCalls();
      const team = await runPod('team-pod', {}, 'team-vpn');
      const other = await runPod('other-pod', {}, 'default');
      const [add] = callsOf(team.id);
      expect(add!.env.CNI_ARGS).toMatch(/(^|;)K8S_POD_NAMESPACE=team-vpn(;|$)/);
      expect(add!.stdin.runtimeConfig).toEqual({ 'io.kubernetes.cri.pod-annotations': null });
      const s = lab.snapshot();
      expect(elementKeys(s)).toEqual([`${team.ip},${team.hostIf}`]);
      expect(podElements(s)[0]!.comment).toBe(`team-vpn/team-pod ${team.id.slice(0, 12)} eth0`);
      expectRouting(s, true);
      expect(records()).toHaveLength(2);

      gw.counter.reset();
      fabric.reset();
      const r1 = await probe(team);
      expect(r1.received).toBe(5);
      expect(r1.replies[0]).toEqual({ from: VPN_GATEWAY_IP, seenAs: team.ip });
      expect([gw.counter.packets(team.ip, OUTSIDE_IP), fabric.packets(team.ip, OUTSIDE_IP)]).toEqual([5, 0]);
      const r2 = await probe(other);
      expect(r2.received).toBe(5);
      expect(r2.replies[0]).toEqual({ from: FABRIC_IP, seenAs: other.ip });
      expect([gw.counter.packets(other.ip, OUTSIDE_IP), fabric.packets(other.ip, OUTSIDE_IP)]).toEqual([0, 5]);

      await stopAndRemove(team);
      await stopAndRemove(other);
      for (const p of [team, other]) expect(callsOf(p.id).map((c) => [c.env.CNI_COMMAND, c.code])).toEqual([['ADD', 0], ['DEL', 0], ['DEL', 0]]);
      await expectClean();
    });
  });

  // A typo in markroute's entry makes ADD fail, as it should. The runtime's cleanup must still run the
  // whole DEL chain: libcni stops at the first error, and markroute comes before ptp, whose DEL has
  // host-local release the pod's address. DEL needs only the netconf's name and stateDir.
  describe('a markroute entry with a typo ("mark": "0xZZ")', () => {
    const FILE = CONFLIST['transparent-tunnel'];
    let valid: Record<string, any>;
    let typo: Record<string, any>;
    /** Every recorded call for one sandbox (markroute, ptp and the host-local ptp ran), in order. */
    const chainOf = (id: string) => ctd.calls().filter((c) => c.env.CNI_CONTAINERID === id).map((c) => ({ plugin: c.plugin, ...summary(c) }));
    /** All of host-local's files for the network: allocations (named by address), last_reserved_ip.0, lock. */
    const ipamFiles = () => {
      const d = join(ipamDir, networkName);
      return existsSync(d) ? readdirSync(d).sort() : [];
    };
    const lastReserved = () => readFileSync(join(ipamDir, networkName, 'last_reserved_ip.0'), 'utf8');

    withContainerd('transparent-tunnel', FILE, 'typo', (list) => {
      valid = list;
      typo = structuredClone(valid);
      markrouteEntry(typo).mark = '0xZZ';
      return typo;
    });

    test("three failed starts in a row: markroute's code 7 about mark reaches the CRI caller; containerd's DEL runs the whole chain, nothing is left", async () => {
      await ctd.replaceConflist(FILE, typo);
      const ids: string[] = [];
      const released: string[] = [];
      for (let attempt = 0; attempt < 3; attempt++) {
        ctd.clearCalls();
        const err = await ctd.runPod('typo').then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(CriError);
        const [add] = ctd.calls('markroute');
        expect(add!.env.CNI_COMMAND).toBe('ADD');
        const answer = JSON.parse(add!.stdout) as { code: number; msg: string };
        expect(answer).toMatchObject({ code: 7, msg: expect.stringMatching(/^invalid netconf: mark: /) });
        const id = add!.env.CNI_CONTAINERID!;
        const netns = add!.env.CNI_NETNS!;
        ids.push(id);
        // containerd's error carries markroute's own message (libcni names the plugin and the command)
        expect((err as CriError).details).toBe(`failed to setup network for sandbox "${id}": plugin type="markroute" failed (add): ${answer.msg}`);

        // what kubelet does next: stop and remove whatever sandbox the runtime kept
        const kept = await ctd.cri.listPodSandbox();
        for (const p of kept) await stopAndRemove(p);
        // (containerd 1.6 keeps a failed sandbox, state unknown, only when its cleanup failed)
        expect(kept).toEqual([]);
        expect(ctd.calls().every((c) => c.env.CNI_CONTAINERID === id)).toBe(true);
        expect(chainOf(id)).toEqual([
          { plugin: 'ptp', command: 'ADD', netns, prevResult: false, code: 0 },
          { plugin: 'host-local', command: 'ADD', netns, prevResult: false, code: 0 },
          { plugin: 'markroute', command: 'ADD', netns, prevResult: true, code: 1 },
          // containerd's cleanup of the failed sandbox: DEL in reverse order, with the netns, no prevResult
          // (libcni caches only a successful ADD); markroute's succeeds, so ptp's and host-local's run
          { plugin: 'markroute', command: 'DEL', netns, prevResult: false, code: 0 },
          { plugin: 'ptp', command: 'DEL', netns, prevResult: false, code: 0 },
          { plugin: 'host-local', command: 'DEL', netns, prevResult: false, code: 0 },
        ]);
        // host-local gave ptp an address, and holds it no more
        const ip = (JSON.parse(ctd.calls('host-local')[0]!.stdout) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
        expect(lastReserved()).toBe(ip);
        released.push(ip);
        expect(ipamFiles(), 'host-local files').toEqual(['last_reserved_ip.0', 'lock']);
        expect(cachedResults(id), 'libcni result cache').toEqual([]);
        await expectClean();
      }
      // three sandboxes, three addresses handed out and given back: nothing accumulates
      expect(new Set(ids).size).toBe(3);
      expect(new Set(released).size).toBe(3);
    }, 120_000);

    test("the typo written into the conflist while a pod runs: the teardown's DELs succeed, markroute's record and objects go, host-local releases the address", async () => {
      await ctd.replaceConflist(FILE, valid);
      const p = await runPod('edited');
      let s = lab.snapshot();
      expect(elementKeys(s)).toEqual([`${p.ip},${p.hostIf}`]);
      expectRouting(s, true);
      expect(records()).toHaveLength(1);
      expect(allocations()).toEqual([p.ip]);

      // containerd reloads conf_dir on change: the teardown reads the typo
      await ctd.replaceConflist(FILE, typo);
      ctd.clearCalls();
      await ctd.cri.stopPodSandbox(p.id);
      const [del] = callsOf(p.id);
      expect(del!.stdin).toMatchObject({ mark: '0xZZ', prevResult: expect.anything() });
      expect(chainOf(p.id)).toEqual([
        { plugin: 'markroute', command: 'DEL', netns: p.netns, prevResult: true, code: 0 },
        { plugin: 'ptp', command: 'DEL', netns: p.netns, prevResult: true, code: 0 },
        { plugin: 'host-local', command: 'DEL', netns: p.netns, prevResult: true, code: 0 },
      ]);
      expect(records(), 'markroute records').toEqual([]);
      expect(allocations(), 'IPAM allocations').toEqual([]);
      s = lab.snapshot();
      expect(markrouteObjects(s)).toEqual(NO_MARKROUTE);

      await ctd.cri.removePodSandbox(p.id);
      expect(chainOf(p.id).slice(3)).toEqual([
        { plugin: 'markroute', command: 'DEL', netns: '', prevResult: false, code: 0 },
        { plugin: 'ptp', command: 'DEL', netns: '', prevResult: false, code: 0 },
        { plugin: 'host-local', command: 'DEL', netns: '', prevResult: false, code: 0 },
      ]);
      expect(cachedResults(p.id), 'libcni result cache').toEqual([]);
      expect(ipamFiles(), 'host-local files').toEqual(['last_reserved_ip.0', 'lock']);
      await expectClean();
    });
  });
});

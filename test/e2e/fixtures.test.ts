// The calls containerd 1.6 and podman 4.3 really made to a chained plugin (test/fixtures/
// runtime-calls, captured on this kind of machine), replayed through dist/markroute: `type` becomes "markroute", stateDir and
// logFile are added, the spy plugin's own setting (spySleepSec) is dropped, and everything else —
// runtimeConfig, capabilities, prevResult, CNI_ARGS and the other CNI_* variables — is sent exactly
// as captured. The node namespace has the bridges and host veths the prevResults name, and an
// uplink with a default route. Every scenario runs with each marking backend (iptables, nftables).
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import {
  createNodeNamespace, findPlugin, fwmarkRules, ipsetAdds, markChains, nsExec, REPO_ROOT, removeNamespace, run, snapshot, sweepStaleLabs, tableRoutes,
  type Backend, type Snapshot,
} from '../lab/index.ts';
import { markrouteTables, nftPodElements } from '../lab/nft.ts';
import { nftTableName, setName } from '../../src/plan.ts';

const FIXTURES = resolve(REPO_ROOT, 'test', 'fixtures', 'runtime-calls');
const SUPPORTED = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':') ?? [join(REPO_ROOT, 'dist')];
const NS = `mr-p${process.pid}s${randomInt(100_000_000, 999_999_999)}-fix`;
const BACKENDS: Backend[] = ['iptables', 'nftables'];

interface Fixture {
  runtime: string;
  scenario: string;
  env: Record<string, string>;
  stdin: Record<string, any>;
}

const fixture = (name: string): Fixture => JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as Fixture;

let bin: string;
let dir: string;
let seq = 0;

interface Call {
  status: number | null;
  stdout: string;
  stderr: string;
  json: any;
}

/** Runs dist/markroute in the node namespace with the fixture's environment (plus PATH) and `stdin`. */
function call(env: Record<string, string>, stdin: unknown): Call {
  const r = spawnSync('ip', ['netns', 'exec', NS, bin], {
    input: JSON.stringify(stdin),
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.error) throw r.error;
  let json: any;
  try {
    json = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

/** A node's worth of markroute settings: one state directory and log per scenario. */
function node(backend: Backend): { stateDir: string; logFile: string; backend: Backend } {
  const base = join(dir, `node${++seq}`);
  return { stateDir: join(base, 'state'), logFile: join(base, 'markroute.log'), backend };
}

/** A node's worth of markroute settings, and the marking backend its netconfs name. */
interface Where { stateDir: string; logFile: string; backend: Backend }

/** The captured netconf as markroute's: type replaced, backend, stateDir/logFile added, the spy's own knob dropped. */
function netconfOf(fx: Fixture, where: Where): Record<string, any> {
  const { spySleepSec: _spy, ...rest } = fx.stdin;
  return { ...rest, type: 'markroute', ...where };
}

/** Runs one captured call as markroute; VERSION probes go as captured. */
function replay(name: string, where: Where, tweak: (conf: Record<string, any>) => Record<string, any> = (c) => c): Call {
  const fx = fixture(name);
  const stdin = fx.env.CNI_COMMAND === 'VERSION' ? fx.stdin : tweak(netconfOf(fx, where));
  return call(fx.env, stdin);
}

/**
 * The pods' elements where the backend keeps them, each as `<set> <address>,<iface> comment "..."`:
 * the set is the ipset (mr4-<hash>) or `<nft table>/pods4`. The other backend must hold nothing.
 */
function elementsOf(s: Snapshot, backend: Backend): string[] {
  const marking = {
    ipsets: s.ipset.split('\n').filter((l) => l.startsWith('create ')).length,
    chains: Object.values(s.iptables).flatMap(markChains).length,
    nftTables: markrouteTables(s).length,
  };
  if (backend === 'iptables') {
    expect(marking.nftTables, 'nftables tables under the iptables backend').toBe(0);
    return ipsetAdds(s).map((l) => l.replace(/^add /, ''));
  }
  expect([marking.ipsets, marking.chains], 'ipsets and iptables chains under the nftables backend').toEqual([0, 0]);
  return nftPodElements(s).map((e) => `${e.table}/${e.set} ${e.address},${e.iface}${e.comment === undefined ? '' : ` comment "${e.comment}"`}`);
}

/** Where a backend keeps a network's IPv4 pods. */
const podSet = (backend: Backend, network: string) => (backend === 'iptables' ? setName(network, 4) : `${nftTableName(network)}/pods4`);

const ok = (c: Call) => {
  expect(c.stderr, 'stderr').toBe('');
  expect(c.status, `exit status; stdout: ${c.stdout}`).toBe(0);
};
const okSilent = (c: Call) => {
  ok(c);
  expect(c.stdout).toBe('');
};

const records = (stateDir: string): string[] => {
  try {
    return readdirSync(join(stateDir, 'attachments')).sort();
  } catch {
    return [];
  }
};

/** prevResult as libcni hands it to a plugin whose netconf says `version`. */
function prevResultIn(prev: Record<string, any>, version: string): Record<string, any> {
  const legacy = version.startsWith('0.');
  return {
    ...prev,
    cniVersion: version,
    ips: prev.ips.map((ip: Record<string, unknown>) => (legacy ? { version: String(ip.address).includes(':') ? '6' : '4', ...ip } : ip)),
  };
}

let baseline: Snapshot;

/** The node: an uplink with a default route, and the bridges and host veths the prevResults name. */
function buildNode(): void {
  createNodeNamespace(NS);

  // The bridge plugin lists the bridge, then the host veth, then the container's interface.
  const made = new Set<string>();
  let peer = 0;
  for (const file of readdirSync(FIXTURES).filter((f) => f.endsWith('.json')).sort()) {
    const prev = fixture(file.slice(0, -5)).stdin.prevResult;
    if (!prev) continue;
    const hostSide = (prev.interfaces as { name: string; sandbox?: string }[]).filter((i) => !i.sandbox).map((i) => i.name);
    expect(hostSide, `${file}: bridge and host veth`).toHaveLength(2);
    const [bridge, veth] = hostSide as [string, string];
    if (!made.has(bridge)) {
      nsExec(NS, ['ip', 'link', 'add', 'name', bridge, 'type', 'bridge']);
      nsExec(NS, ['ip', 'link', 'set', bridge, 'up']);
      made.add(bridge);
    }
    if (!made.has(veth)) {
      nsExec(NS, ['ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', `podside${++peer}`]);
      nsExec(NS, ['ip', 'link', 'set', veth, 'master', bridge]);
      nsExec(NS, ['ip', 'link', 'set', veth, 'up']);
      made.add(veth);
    }
  }
  baseline = snapshot(NS);
}

beforeAll(() => {
  bin = findPlugin('markroute', cniPath)!;
  expect(bin && existsSync(bin), `markroute not found in ${cniPath.join(':')}: run npm run build`).toBeTruthy();
  sweepStaleLabs();
  dir = mkdtempSync(join(tmpdir(), `${NS}-`));
  buildNode();
});

// Each test must leave the node as it found it (and asserts so); one that failed midway gets a
// fresh node, so that the next tests stay independent.
afterEach(() => {
  if (JSON.stringify(snapshot(NS)) !== JSON.stringify(baseline)) {
    removeNamespace(NS);
    buildNode();
  }
});

afterAll(() => {
  removeNamespace(NS);
  if (dir) rmSync(dir, { recursive: true, force: true });
  expect(run(['ip', 'netns', 'list']).stdout).not.toContain(NS);
});

test('the fixtures are where the README says, and complete', () => {
  expect(readdirSync(FIXTURES).filter((f) => f.endsWith('.json')).sort()).toEqual([
    'containerd-1-runpod-1-ADD.json',
    'containerd-2-stoppod-1-DEL.json',
    'containerd-3-removepod-1-DEL.json',
    'containerd-4-add-failure-1-ADD.json',
    'containerd-4-add-failure-2-DEL.json',
    'podman-1-run-1-VERSION.json',
    'podman-1-run-2-ADD.json',
    'podman-2-network-reload-1-VERSION.json',
    'podman-2-network-reload-2-DEL.json',
    'podman-2-network-reload-3-ADD.json',
    'podman-3-stop-1-VERSION.json',
    'podman-3-stop-2-DEL.json',
    'podman-5-add-failure-1-VERSION.json',
    'podman-5-add-failure-2-ADD.json',
    'podman-5-add-failure-3-DEL.json',
  ]);
});

describe.each(BACKENDS)('containerd 1.6 (CRI), backend %s', (backend) => {
  const runpod = fixture('containerd-1-runpod-1-ADD');
  const cid = runpod.env.CNI_CONTAINERID!;

  test('RunPodSandbox ADD, StopPodSandbox DEL, RemovePodSandbox DEL (empty netns, no prevResult)', () => {
    const where = node(backend);
    const add = replay('containerd-1-runpod-1-ADD', where);
    ok(add);
    expect(add.stdout.endsWith('}\n')).toBe(true);
    expect(add.stdout.trimEnd().split('\n')).toHaveLength(1);
    // the main plugin's result, passed through unchanged (prevResult is already 1.0.0)
    expect(add.json).toEqual(runpod.stdin.prevResult);

    const s = snapshot(NS);
    // bridged: the bridge and the pod's source address, named after the pod from CNI_ARGS
    expect(elementsOf(s, backend)).toEqual([`${podSet(backend, 'spynet')} 10.88.77.47,cni-spy0 comment "team-a/web-1 ${cid.slice(0, 12)} eth0"`]);
    expect(fwmarkRules(s)).toEqual([{ priority: 32765, src: 'all', fwmark: '0x10', fwmask: '0x10', table: '100' }]);
    expect(tableRoutes(s, '100')).toEqual([{ dst: 'default', gateway: '10.224.0.1', dev: 'eth0', table: '100', flags: [] }]);
    expect(s.rpFilter.eth0).toBe('2');
    expect(records(where.stateDir)).toEqual([`spynet_${cid}_eth0.json`]);
    const log = readFileSync(where.logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(log.at(-1)).toMatchObject({ command: 'ADD', containerId: cid, ifName: 'eth0', network: 'spynet', outcome: 'ok' });

    okSilent(replay('containerd-2-stoppod-1-DEL', where));
    expect(records(where.stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(baseline);

    okSilent(replay('containerd-3-removepod-1-DEL', where));
    expect(snapshot(NS)).toEqual(baseline);
  });

  test('RemovePodSandbox DEL alone also removes what ADD installed (no prevResult, empty netns)', () => {
    const where = node(backend);
    ok(replay('containerd-1-runpod-1-ADD', where));
    expect(elementsOf(snapshot(NS), backend)).toHaveLength(1);
    okSilent(replay('containerd-3-removepod-1-DEL', where));
    expect(records(where.stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(baseline);
  });

  test('the DEL after a failed ADD (no prevResult) succeeds for a pod markroute never added', () => {
    const where = node(backend);
    okSilent(replay('containerd-4-add-failure-2-DEL', where));
    expect(records(where.stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(baseline);
  });

  test('that DEL without prevResult removes what the ADD installed when markroute\'s ADD had succeeded', () => {
    const where = node(backend);
    const add = replay('containerd-4-add-failure-1-ADD', where);
    ok(add);
    expect(add.json).toEqual(fixture('containerd-4-add-failure-1-ADD').stdin.prevResult);
    expect(elementsOf(snapshot(NS), backend)).toEqual([`${podSet(backend, 'spynet')} 10.88.77.48,cni-spy0 comment "team-a/failpod ce41e4ea468f eth0"`]);
    okSilent(replay('containerd-4-add-failure-2-DEL', where));
    expect(snapshot(NS)).toEqual(baseline);
  });

  test.each(SUPPORTED)("ADD's result is prevResult in the netconf's cniVersion %s", (version) => {
    const where = node(backend);
    const prev = prevResultIn(runpod.stdin.prevResult, version);
    const add = replay('containerd-1-runpod-1-ADD', where, (c) => ({ ...c, cniVersion: version, prevResult: prev }));
    ok(add);
    expect(add.json).toEqual(prev);
    expect(add.json.cniVersion).toBe(version);
    for (const ip of add.json.ips) {
      if (version.startsWith('0.')) expect(ip.version).toBe('4');
      else expect(ip).not.toHaveProperty('version');
    }
    // libcni sends prevResult with DEL from 0.4.0 on
    const withPrev = !version.startsWith('0.3');
    okSilent(replay('containerd-2-stoppod-1-DEL', where, (c) => ({ ...c, cniVersion: version, prevResult: withPrev ? prev : undefined })));
    expect(snapshot(NS)).toEqual(baseline);
  });

  // linkGroup is for routed pods: a bridged pod stays a (bridge, address) element, and neither
  // its veth nor the bridge (which carries every pod of the bridge) is put in the group.
  test('with linkGroup, the bridged pod is still matched by (bridge, address) and no interface joins the group', () => {
    const where = node(backend);
    const groups = () => (JSON.parse(nsExec(NS, ['ip', '-j', 'link', 'show']).stdout) as { ifname: string; group: string }[])
      .filter((l) => l.group !== 'default').map((l) => `${l.ifname}:${l.group}`);
    ok(replay('containerd-1-runpod-1-ADD', where, (c) => ({ ...c, linkGroup: 7 })));
    expect(elementsOf(snapshot(NS), backend)).toEqual([`${podSet(backend, 'spynet')} 10.88.77.47,cni-spy0 comment "team-a/web-1 ${cid.slice(0, 12)} eth0"`]);
    expect(groups()).toEqual([]);
    okSilent(replay('containerd-2-stoppod-1-DEL', where, (c) => ({ ...c, linkGroup: 7 })));
    expect(snapshot(NS)).toEqual(baseline);
  });

  test('the capture as-is, with the spy plugin\'s own setting, is refused naming that field', () => {
    const fx = fixture('containerd-1-runpod-1-ADD');
    const r = call(fx.env, { ...fx.stdin, type: 'markroute', ...node(backend) });
    expect(r.status).toBe(1);
    expect(r.json).toEqual({ cniVersion: '1.0.0', code: 7, msg: 'invalid netconf: netconf: Unrecognized key: "spySleepSec"' });
    expect(snapshot(NS)).toEqual(baseline);
  });
});

describe.each(BACKENDS)('podman 4.3 (CNI backend), markroute backend %s', (backend) => {
  const versionAnswer = `${JSON.stringify({ cniVersion: '1.0.0', supportedVersions: SUPPORTED })}\n`;
  const run1 = fixture('podman-1-run-2-ADD');
  const cid = run1.env.CNI_CONTAINERID!;
  // Bridged: the element names the bridge, so it is the same whichever host veth the pod has now.
  const element = () => `${podSet(backend, 'spypod')} 10.89.99.50,cni-podman1 comment "${cid.slice(0, 12)} eth0"`;

  test.each(['podman-1-run-1-VERSION', 'podman-2-network-reload-1-VERSION', 'podman-3-stop-1-VERSION', 'podman-5-add-failure-1-VERSION'])(
    '%s answers the supported versions',
    (name) => {
      const r = replay(name, node(backend));
      ok(r);
      expect(r.stdout).toBe(versionAnswer);
    },
  );

  test('run (VERSION, ADD), network reload (VERSION, DEL, ADD on a new veth), stop (VERSION, DEL)', () => {
    const where = node(backend);
    expect(replay('podman-1-run-1-VERSION', where).stdout).toBe(versionAnswer);
    const add = replay('podman-1-run-2-ADD', where);
    ok(add);
    expect(add.json).toEqual(run1.stdin.prevResult);
    expect(elementsOf(snapshot(NS), backend)).toEqual([element()]);
    expect(records(where.stateDir)).toEqual([`spypod_${cid}_eth0.json`]);

    // network reload
    expect(replay('podman-2-network-reload-1-VERSION', where).stdout).toBe(versionAnswer);
    okSilent(replay('podman-2-network-reload-2-DEL', where));
    expect(records(where.stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(baseline);
    const readd = replay('podman-2-network-reload-3-ADD', where);
    ok(readd);
    expect(readd.json).toEqual(fixture('podman-2-network-reload-3-ADD').stdin.prevResult);
    const s = snapshot(NS);
    expect(elementsOf(s, backend)).toEqual([element()]);
    expect(fwmarkRules(s)).toHaveLength(1);
    expect(tableRoutes(s, '100')).toHaveLength(1);
    expect(records(where.stateDir)).toEqual([`spypod_${cid}_eth0.json`]);

    // stop
    expect(replay('podman-3-stop-1-VERSION', where).stdout).toBe(versionAnswer);
    okSilent(replay('podman-3-stop-2-DEL', where));
    expect(records(where.stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(baseline);
  });

  test('a reload ADD without the DEL before it (re-ADD) keeps one element and one set of shared objects', () => {
    const where = node(backend);
    ok(replay('podman-1-run-2-ADD', where));
    ok(replay('podman-2-network-reload-3-ADD', where));
    const s = snapshot(NS);
    expect(elementsOf(s, backend)).toEqual([element()]);
    expect(fwmarkRules(s)).toHaveLength(1);
    // one marking container: the chain (IPv4 only) or the table
    if (backend === 'iptables') expect(Object.values(s.iptables).flatMap(markChains)).toHaveLength(1);
    else expect(markrouteTables(s)).toEqual([nftTableName('spypod')]);
    okSilent(replay('podman-3-stop-2-DEL', where));
    expect(snapshot(NS)).toEqual(baseline);
  });

  test('the DEL after a failed ADD (no prevResult) succeeds, whether or not markroute had added the pod', () => {
    const never = node(backend);
    okSilent(replay('podman-5-add-failure-3-DEL', never));
    expect(snapshot(NS)).toEqual(baseline);

    const where = node(backend);
    expect(replay('podman-5-add-failure-1-VERSION', where).stdout).toBe(versionAnswer);
    const add = replay('podman-5-add-failure-2-ADD', where);
    ok(add);
    expect(elementsOf(snapshot(NS), backend)).toEqual([`${podSet(backend, 'spypod')} 10.89.99.51,cni-podman1 comment "57143928f1f9 eth0"`]);
    okSilent(replay('podman-5-add-failure-3-DEL', where));
    expect(records(where.stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(baseline);
  });
});

// test/lab/main-plugins: a ptp result reshaped as azure-vnet, Calico, Cilium and AWS VPC CNI print
// theirs (and the shape variants Calico v3.30.x and AWS branch-ENI pods) must have the structure of
// test/fixtures/main-plugins/<plugin>.json (read from their source); and markroute reads each as the
// fixtures' README says: the host side from prevResult, or from the kernel.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { parseConfig, type PrevResult } from '../../src/config.ts';
import { readResult } from '../../src/host-match.ts';
import { MAIN_PLUGINS, hostVethName, reshapeResult, type MainPlugin } from '../lab/main-plugins.ts';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '../fixtures/main-plugins');
const fixture = (plugin: MainPlugin): any => JSON.parse(readFileSync(join(FIXTURES, `${plugin}.json`), 'utf8'));

const NETNS = '/var/run/netns/cni-5d0a2c7e-8b1f-4c3d-9e6a-7f2b1c0d4e5f';
const IFNAME = 'eth0';
type Family = 'ipv4' | 'ipv6' | 'dual';
const legacy = (v: string) => v.startsWith('0.');

/** What the ptp plugin prints for a pod of host-local range 10.244.0.0/24 (fd00:244::/64). */
function ptpResult(cniVersion: string, family: Family): any {
  const ip = (v: 4 | 6) => ({
    ...(legacy(cniVersion) ? { version: String(v) } : {}),
    interface: 1,
    address: v === 4 ? '10.244.0.5/24' : 'fd00:244::5/64',
    gateway: v === 4 ? '10.244.0.1' : 'fd00:244::1',
  });
  const fams: (4 | 6)[] = family === 'ipv4' ? [4] : family === 'ipv6' ? [6] : [4, 6];
  return {
    cniVersion,
    interfaces: [
      { name: 'veth3c9a1f52', mac: 'a2:41:7e:0c:5b:19' },
      { name: IFNAME, mac: '6e:d2:90:14:3a:c8', sandbox: NETNS },
    ],
    ips: fams.map(ip),
    routes: fams.map((v) => ({ dst: v === 4 ? '0.0.0.0/0' : '::/0' })),
    ...(legacy(cniVersion) ? { dns: {} } : {}),
  };
}

const familyOf = (cidr: string) => (cidr.includes(':') ? 6 : 4);
const isHostPrefix = (cidr: string) => cidr.endsWith(familyOf(cidr) === 6 ? '/128' : '/32');
const sortedKeys = (o: object) => Object.keys(o).sort();

/**
 * The structure a chained plugin depends on: key sets at every level, each interface's role
 * (named CNI_IFNAME or not), whether it has a sandbox (a netns path or a literal) and what its mac
 * is, ips' interface values, families, order and masks, the kind of every route.
 */
function shape(r: any) {
  return {
    keys: sortedKeys(r),
    cniVersion: r.cniVersion,
    interfaces: (r.interfaces as any[]).map((i) => ({
      keys: sortedKeys(i),
      role: i.name === IFNAME ? 'container' : 'other',
      sandbox: i.sandbox === undefined ? 'none' : i.sandbox.startsWith('/') ? 'netns' : `literal ${i.sandbox}`,
      mac: i.mac === undefined ? 'none' : /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(i.mac) ? 'hw' : `literal ${i.mac}`,
      mtu: typeof i.mtu,
    })),
    ips: (r.ips as any[]).map((ip) => ({
      keys: sortedKeys(ip),
      interface: ip.interface ?? 'none',
      version: ip.version ?? 'none',
      family: familyOf(ip.address),
      mask: isHostPrefix(ip.address) ? 'host' : 'subnet',
    })),
    routes: r.routes === undefined ? 'none' : (r.routes as any[]).map((rt) => ({
      keys: sortedKeys(rt),
      family: familyOf(rt.dst),
      dst: /^(0\.0\.0\.0|::)\/0$/.test(rt.dst) ? 'default' : isHostPrefix(rt.dst) ? 'host' : 'prefix',
    })),
    dns: r.dns === undefined ? 'none' : sortedKeys(r.dns),
  };
}

const familyOfKey = (key: string): Family => (key === 'dual' ? 'dual' : key === 'ipv6' ? 'ipv6' : 'ipv4');

/** The reshape of a ptp result in the fixture's cniVersion, with the fixture's host veth as hostIf. */
function reshapeLikeFixture(plugin: MainPlugin, key: string) {
  const f = fixture(plugin);
  const expected = f.results[key];
  const hostIf: string = f.hostInterface.example;
  const got = reshapeResult(plugin, ptpResult(expected.cniVersion, familyOfKey(key)), { hostIf, ifName: IFNAME, netns: NETNS });
  return { f, expected, got, hostIf };
}

const cases = MAIN_PLUGINS.flatMap((plugin) => Object.keys(fixture(plugin).results).map((key) => [plugin, key] as const));

describe('fixtures', () => {
  test.each(MAIN_PLUGINS)('%s: cites a 40-hex commit, path and function; has an IPv4 result', (plugin) => {
    const f = fixture(plugin);
    expect(f.plugin).toBe(plugin);
    for (const src of [f.source, f.hostInterface.source]) {
      expect(src.commit).toMatch(/^[0-9a-f]{40}$/);
      expect(src.repo).toMatch(/^[\w.-]+\/[\w.-]+$/);
      expect(src.path).toBeTruthy();
      expect(src.function).toBeTruthy();
    }
    expect(f.results.ipv4).toBeDefined();
    expect(f.notes.length).toBeGreaterThan(3);
  });

  test('which plugins do dual stack: all but aws-vpc-cni, branch ENI or not (IPv6-only there)', () => {
    expect(MAIN_PLUGINS.filter((p) => fixture(p).results.dual)).toEqual(['azure-vnet', 'calico', 'cilium', 'calico-3.30']);
    expect(Object.keys(fixture('aws-vpc-cni').results)).toEqual(['ipv4', 'ipv6']);
    expect(Object.keys(fixture('aws-vpc-cni-branch').results)).toEqual(['ipv4', 'ipv6']);
  });

  test('the four plugins first, then the shape variants', () => {
    expect(MAIN_PLUGINS).toEqual(['azure-vnet', 'calico', 'cilium', 'aws-vpc-cni', 'calico-3.30', 'aws-vpc-cni-branch']);
  });
});

describe('reshapeResult', () => {
  test.each(cases)('%s %s: same structure as the fixture', (plugin, key) => {
    const { expected, got } = reshapeLikeFixture(plugin, key);
    expect(shape(got)).toEqual(shape(expected));
  });

  test.each(cases)('%s %s: hostIf where the plugin lists its host veth, nothing of ptp\'s host veth', (plugin, key) => {
    const { f, expected, got, hostIf } = reshapeLikeFixture(plugin, key);
    const names = (r: any) => (r.interfaces as any[]).map((i) => i.name);
    expect(names(got).indexOf(hostIf)).toBe(names(expected).indexOf(f.hostInterface.example));
    expect(names(got).includes(hostIf)).toBe(f.hostInterface.listedInResult);
    expect(JSON.stringify(got)).not.toContain('veth3c9a1f52');
    // the pod's own addresses survive, in the plugin's mask
    expect((got.ips as any[]).map((ip) => ip.address.split('/')[0]).sort()).toEqual((expected.ips as any[]).map((ip: any) => ip.address.split('/')[0]).sort());
  });

  test.each(MAIN_PLUGINS)('%s: printed in 1.0.0 — no "version" in ips, no empty dns, what the plugin keeps otherwise', (plugin) => {
    const hostIf = fixture(plugin).hostInterface.example;
    const got = reshapeResult(plugin, ptpResult('1.0.0', 'ipv4'), { hostIf, ifName: IFNAME, netns: NETNS });
    expect(got.cniVersion).toBe('1.0.0');
    expect((got.ips as any[]).every((ip) => !('version' in ip))).toBe(true);
    expect(got).not.toHaveProperty('dns');
    const noIndex = plugin === 'azure-vnet' || plugin === 'calico-3.30';
    expect((got.ips as any[]).every((ip) => ip.interface === (noIndex ? undefined : 1))).toBe(true);
  });

  test('calico below 1.0.0: the container interface loses mtu (types040 has none)', () => {
    const got = reshapeResult('calico', ptpResult('0.3.1', 'ipv4'), { hostIf: 'cali8c87caf69eb', ifName: IFNAME, netns: NETNS });
    expect(got.interfaces[1]).not.toHaveProperty('mtu');
    expect(got.ips[0]).toEqual({ version: '4', interface: 1, address: '10.244.0.5/32' });
  });

  test('aws-vpc-cni\'s dummy entry: "dummy" + the host veth\'s hash, 16 characters (not a valid ifname), sandbox "0"', () => {
    const got = reshapeResult('aws-vpc-cni', ptpResult('0.4.0', 'ipv4'), { hostIf: 'eni8c87caf69eb', ifName: IFNAME, netns: NETNS });
    expect(got.interfaces[2]).toEqual({ name: 'dummy8c87caf69eb', mac: '0', sandbox: '0' });
    expect(got.interfaces[2].name).toHaveLength(16);
    expect(fixture('aws-vpc-cni').results.ipv4.interfaces[2]).toEqual(got.interfaces[2]);
  });

  test('aws-vpc-cni gives a pod one family: a dual-stack ptp result is refused', () => {
    expect(() => reshapeResult('aws-vpc-cni', ptpResult('0.4.0', 'dual'), { hostIf: 'eni8c87caf69eb', ifName: IFNAME, netns: NETNS })).toThrow(/one address/);
    expect(() => reshapeResult('aws-vpc-cni-branch', ptpResult('0.4.0', 'dual'), { hostIf: 'vlan8c87caf69eb', ifName: IFNAME, netns: NETNS })).toThrow(/one address/);
  });

  test('calico-3.30: one interface, the host veth, nothing else of ptp\'s; ips without interface or gateway', () => {
    const got = reshapeResult('calico-3.30', ptpResult('0.3.1', 'dual'), { hostIf: 'cali8c87caf69eb', ifName: IFNAME, netns: NETNS });
    expect(got).toEqual(fixture('calico-3.30').results.dual);
  });

  test('aws-vpc-cni-branch: the dummy carries the VLAN id and no sandbox; eth0\'s "mac" is route table 0; a gateway', () => {
    const opts = { hostIf: 'vlan8c87caf69eb', ifName: IFNAME, netns: NETNS };
    const got = reshapeResult('aws-vpc-cni-branch', ptpResult('0.4.0', 'ipv4'), opts);
    expect(got).toEqual(fixture('aws-vpc-cni-branch').results.ipv4);
    expect(got.interfaces[2]).not.toHaveProperty('sandbox');
    expect(got.interfaces[2].name).toHaveLength(16);
    expect(reshapeResult('aws-vpc-cni-branch', ptpResult('0.4.0', 'ipv4'), { ...opts, vlanId: 1 }).interfaces[2]).toEqual({ name: 'dummy8c87caf69eb', mac: '1' });
    expect(reshapeResult('aws-vpc-cni-branch', ptpResult('0.4.0', 'ipv6'), opts).ips).toEqual([{ version: '6', interface: 1, address: 'fd00:244::5/128', gateway: 'fe80:ec2::1' }]);
  });

  // The comparison must catch the mistakes a reshape could make.
  const mutations: [string, MainPlugin, string, (r: any) => void][] = [
    ['azure keeping the sandbox', 'azure-vnet', 'ipv4', (r) => (r.interfaces[0].sandbox = NETNS)],
    ['azure keeping ptp\'s host veth', 'azure-vnet', 'ipv4', (r) => r.interfaces.unshift({ name: 'veth3c9a1f52', mac: 'a2:41:7e:0c:5b:19' })],
    ['azure with ips[].interface', 'azure-vnet', 'dual', (r) => r.ips.forEach((ip: any) => (ip.interface = 0))],
    ['calico with a gateway', 'calico', 'ipv4', (r) => (r.ips[0].gateway = '10.244.0.1')],
    ['calico without ips[].interface', 'calico', 'dual', (r) => r.ips.forEach((ip: any) => delete ip.interface)],
    ['calico keeping ptp\'s mask', 'calico', 'ipv4', (r) => (r.ips[0].address = '10.244.0.5/24')],
    ['calico\'s old single interface', 'calico', 'ipv4', (r) => r.interfaces.splice(0, 1)],
    ['cilium with IPv4 first', 'cilium', 'dual', (r) => r.ips.reverse()],
    ['cilium without the host entry', 'cilium', 'ipv4', (r) => r.interfaces.splice(0, 1)],
    ['cilium with interface 0', 'cilium', 'ipv4', (r) => (r.ips[0].interface = 0)],
    ['aws without the dummy', 'aws-vpc-cni', 'ipv4', (r) => r.interfaces.pop()],
    ['aws with a hardware mac on eth0', 'aws-vpc-cni', 'ipv4', (r) => (r.interfaces[1].mac = '6e:d2:90:14:3a:c8')],
    ['aws with routes', 'aws-vpc-cni', 'ipv6', (r) => (r.routes = [{ dst: '::/0' }])],
    ['calico-3.30 with the pod\'s MAC and sandbox (unreleased master)', 'calico-3.30', 'ipv4', (r) => Object.assign(r.interfaces[0], { mac: '3a:5f:1c:9e:42:d7', sandbox: NETNS })],
    ['calico-3.30 with ips[].interface', 'calico-3.30', 'dual', (r) => r.ips.forEach((ip: any) => (ip.interface = 0))],
    ['calico-3.30 with the container entry', 'calico-3.30', 'ipv4', (r) => r.interfaces.push({ name: IFNAME, sandbox: NETNS })],
    ['aws branch with a regular pod\'s dummy', 'aws-vpc-cni-branch', 'ipv4', (r) => Object.assign(r.interfaces[2], { mac: '0', sandbox: '0' })],
    ['aws branch without the gateway', 'aws-vpc-cni-branch', 'ipv6', (r) => delete r.ips[0].gateway],
    ['aws branch with route table 254', 'aws-vpc-cni-branch', 'ipv4', (r) => (r.interfaces[1].mac = '254')],
  ];
  test.each(mutations)('a reshape with %s does not pass', (_name, plugin, key, mutate) => {
    const { expected, got } = reshapeLikeFixture(plugin, key);
    mutate(got);
    expect(shape(got)).not.toEqual(shape(expected));
  });
});

describe('hostVethName', () => {
  test.each(MAIN_PLUGINS)('%s: the fixture\'s example from its input, its pattern, ≤15 chars', (plugin) => {
    const { hostInterface } = fixture(plugin);
    const name = hostVethName(plugin, hostInterface.input);
    expect(name).toBe(hostInterface.example);
    expect(name).toMatch(new RegExp(hostInterface.pattern));
    expect(name.length).toBeLessThanOrEqual(15);
  });

  test('hash inputs: namespace/name for all but cilium; the container ID for cilium', () => {
    const pod = { namespace: 'default', name: 'web-7d4b9c6f5-x2kq8', containerId: 'a'.repeat(64) };
    const other = { ...pod, containerId: 'b'.repeat(64) };
    const renamed = { ...pod, name: 'web-7d4b9c6f5-zzzzz' };
    for (const p of MAIN_PLUGINS.filter((p) => p !== 'cilium')) {
      expect(hostVethName(p, other)).toBe(hostVethName(p, pod));
      expect(hostVethName(p, renamed)).not.toBe(hostVethName(p, pod));
    }
    expect(hostVethName('cilium', renamed)).toBe(hostVethName('cilium', pod));
    expect(hostVethName('cilium', other)).not.toBe(hostVethName('cilium', pod));
    // Calico and AWS hash the same string: only the prefix differs
    expect(hostVethName('calico', pod).slice(4)).toBe(hostVethName('aws-vpc-cni', pod).slice(3));
    expect(hostVethName('calico-3.30', pod)).toBe(hostVethName('calico', pod));
    expect(hostVethName('aws-vpc-cni-branch', pod)).toBe('vlan' + hostVethName('aws-vpc-cni', pod).slice(3));
  });
});

/** What markroute makes of a result as prevResult: parsed as its netconf's, then read (src/host-match.ts). */
const markrouteReads = (result: any) => {
  const prev = parseConfig({ cniVersion: result.cniVersion, name: 'mrnet', type: 'markroute', prevResult: result }).prevResult as PrevResult;
  return readResult(prev, IFNAME, () => undefined);
};
const podAddresses = (result: any) => (result.ips as any[]).map((ip) => ({ family: familyOf(ip.address), address: ip.address.split('/')[0] }));

/** Where prevResult names no host side unambiguously, so markroute asks the kernel (CNI_NETNS peer lookup); README "Shapes and how markroute resolves them". */
const KERNEL_LOOKUP: MainPlugin[] = ['azure-vnet'];

describe('markroute\'s reading of each shape (readResult)', () => {
  test.each(cases)('%s %s: the host side from prevResult, or the kernel asked; the pod\'s addresses either way', (plugin, key) => {
    const f = fixture(plugin);
    const reading = markrouteReads(f.results[key]);
    expect(reading.addresses).toEqual(podAddresses(f.results[key]));
    if (KERNEL_LOOKUP.includes(plugin)) {
      expect(reading.host).toBeUndefined();
      expect(reading.ambiguity).toBe('it lists no host-side interface');
    } else {
      expect(reading.host).toEqual({ iface: f.hostInterface.example, topology: 'routed' });
    }
  });

  test('shapes no supported release prints go to the kernel: Calico master between #9396 and #10382, Cilium before v1.14', () => {
    const calicoUnreleased = fixture('calico').previous.ipv4;
    expect(markrouteReads(calicoUnreleased)).toEqual({ ambiguity: 'it lists no host-side interface', addresses: [{ family: 4, address: '10.244.0.5' }] });
    // plugins/cilium-cni/main.go cmdAdd before #26518: eth0 only; `for i := range res.Interfaces { res.IPs[i].Interface = Int(i) }`
    const ciliumPre114 = {
      cniVersion: '0.3.1',
      interfaces: [{ name: IFNAME, mac: 'd6:7f:3a:91:25:0e', sandbox: NETNS }],
      ips: [{ version: '6', interface: 0, address: 'fd00:244::5/128', gateway: 'fd00:244::a3' }, { version: '4', address: '10.244.0.5/32', gateway: '10.244.0.163' }],
      dns: {},
    };
    expect(markrouteReads(ciliumPre114).host).toBeUndefined();
  });
});

// test/lab/main-plugins: a ptp result reshaped as azure-vnet, Calico, Cilium and AWS VPC CNI print
// theirs must have the structure of test/fixtures/main-plugins/<plugin>.json (read from their source).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
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

  test('which plugins do dual stack: all but aws-vpc-cni (IPv6-only there)', () => {
    expect(MAIN_PLUGINS.filter((p) => fixture(p).results.dual)).toEqual(['azure-vnet', 'calico', 'cilium']);
    expect(Object.keys(fixture('aws-vpc-cni').results)).toEqual(['ipv4', 'ipv6']);
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
    const azure = plugin === 'azure-vnet';
    expect((got.ips as any[]).every((ip) => ip.interface === (azure ? undefined : 1))).toBe(true);
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

  test('hash inputs: namespace/name for azure-vnet, calico and aws-vpc-cni; the container ID for cilium', () => {
    const pod = { namespace: 'default', name: 'web-7d4b9c6f5-x2kq8', containerId: 'a'.repeat(64) };
    const other = { ...pod, containerId: 'b'.repeat(64) };
    const renamed = { ...pod, name: 'web-7d4b9c6f5-zzzzz' };
    for (const p of ['azure-vnet', 'calico', 'aws-vpc-cni'] as MainPlugin[]) {
      expect(hostVethName(p, other)).toBe(hostVethName(p, pod));
      expect(hostVethName(p, renamed)).not.toBe(hostVethName(p, pod));
    }
    expect(hostVethName('cilium', renamed)).toBe(hostVethName('cilium', pod));
    expect(hostVethName('cilium', other)).not.toBe(hostVethName('cilium', pod));
    // Calico and AWS hash the same string: only the prefix differs
    expect(hostVethName('calico', pod).slice(4)).toBe(hostVethName('aws-vpc-cni', pod).slice(3));
  });
});

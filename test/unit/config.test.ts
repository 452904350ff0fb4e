// parseConfig: defaults, mark/mask forms, and every validation rule of src/config.ts and docs/design.md#the-configuration-contract.
// Every rejection must be CNI error 7 whose message names the field (or error 1 for cniVersion).
import { describe, expect, test } from 'vitest';
import { CniError } from '../../src/cni/errors.ts';
import { SUPPORTED_VERSIONS, parseConfig } from '../../src/config.ts';

const base = { cniVersion: '1.0.0', name: 'mrnet', type: 'markroute' };

/** The CniError parseConfig throws for `raw`, or fails the test when it does not throw one. */
function rejection(raw: unknown): CniError {
  try {
    parseConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error(`parseConfig accepted ${JSON.stringify(raw)}`);
}

function expectInvalid(fields: Record<string, unknown>, message: string | RegExp): void {
  const err = rejection({ ...base, ...fields });
  expect(err.code).toBe(7);
  if (typeof message === 'string') expect(err.message).toBe(message);
  else expect(err.message).toMatch(message);
}

/** The transparent-tunnel mark's routing for `base` with `fields`. */
const routing = (fields: Record<string, unknown>) => parseConfig({ ...base, ...fields }).marks[0]!.routing!;

describe('defaults', () => {
  test('a minimal netconf gets every documented default', () => {
    expect(parseConfig(base)).toEqual({
      cniVersion: '1.0.0',
      name: 'mrnet',
      mode: 'transparent-tunnel',
      annotation: 'cni.fwmark.net/name',
      marks: [{ name: 'default', tag: '', mark: 0x10, mask: 0x10, routing: { table: 100, priority: 32765 } }],
      suppressMainPrefixLength: undefined,
      excludeNamespaces: [],
      exemptCIDRs: [],
      backend: 'auto',
      linkGroup: undefined,
      ipv6ProbeRewrite: undefined,
      rpFilter: 'loose',
      driftCheckSeconds: 30,
      stateDir: '/var/lib/cni/markroute',
      logFile: '/var/log/markroute.log',
      logLevel: 'info',
      prevResult: undefined,
      runtimeConfig: undefined,
      validAttachments: undefined,
    });
  });

  test('the docs/design.md example parses to exact values', () => {
    const c = parseConfig({
      ...base,
      mode: 'transparent-tunnel',
      mark: '0x10',
      mask: '0x10',
      table: 100,
      rulePriority: 32765,
      uplink: 'eth0',
      gateway: '10.224.0.1',
      gateway6: 'fe80::1',
      serviceCIDRs: ['10.0.0.0/16', 'fd00:10::/108'],
      excludeCIDRs: ['168.63.129.16/32'],
      backend: 'auto',
      linkGroup: 8,
      rpFilter: 'loose',
      stateDir: '/var/lib/cni/markroute',
      logFile: '/var/log/markroute.log',
      logLevel: 'info',
    });
    expect(c).toMatchObject({ backend: 'auto', linkGroup: 8 });
    expect(c.marks).toEqual([{
      name: 'default', tag: '', mark: 16, mask: 16,
      routing: { table: 100, priority: 32765, uplink: 'eth0', gateway: '10.224.0.1', gateway6: 'fe80::1' },
    }]);
    expect(c.exemptCIDRs).toEqual([
      { cidr: { family: 4, text: '10.0.0.0/16' }, why: 'service' },
      { cidr: { family: 6, text: 'fd00:10::/108' }, why: 'service' },
      { cidr: { family: 4, text: '168.63.129.16/32' }, why: 'exclude' },
    ]);
  });

  test('backend is kept as given: auto is resolved on the node, at ADD', () => {
    for (const backend of ['auto', 'iptables', 'nftables']) expect(parseConfig({ ...base, backend }).backend).toBe(backend);
  });

  test('ipv6ProbeRewrite: a link-local source to a routable one, canonicalised; refused with the iptables backend', () => {
    const c = parseConfig({ ...base, ipv6ProbeRewrite: { from: 'FE80::1234:5678:9ABC', to: '2603:1062:0:1:fe80:1234:5678:9abc' } });
    expect(c.ipv6ProbeRewrite).toEqual({ from: 'fe80::1234:5678:9abc', to: '2603:1062:0:1:fe80:1234:5678:9abc' });
    expectInvalid({ ipv6ProbeRewrite: { from: '2603::1', to: '2603::2' } }, /^invalid netconf: ipv6ProbeRewrite\.from: must be a link-local/);
    expectInvalid({ ipv6ProbeRewrite: { from: 'fe80::1', to: 'fe80::2' } }, /^invalid netconf: ipv6ProbeRewrite\.to: must be a routable/);
    expectInvalid({ ipv6ProbeRewrite: { from: 'fe80::1', to: '::ffff:10.0.0.1' } }, /^invalid netconf: ipv6ProbeRewrite\.to: must be a routable/);
    expectInvalid({ backend: 'iptables', ipv6ProbeRewrite: { from: 'fe80::1', to: '2603::2' } }, /^invalid netconf: ipv6ProbeRewrite: needs the nftables backend/);
  });

  test('linkGroup: 1 to 2^31-1, what ip link takes', () => {
    expect(parseConfig({ ...base, linkGroup: 8 }).linkGroup).toBe(8);
    expect(parseConfig({ ...base, linkGroup: 2 ** 31 - 1 }).linkGroup).toBe(2 ** 31 - 1);
    for (const linkGroup of [0, -1, 2 ** 31, 2 ** 32, 1.5, '8']) expectInvalid({ linkGroup }, /^invalid netconf: linkGroup: /);
  });

  test('every supported cniVersion is accepted and kept', () => {
    expect(SUPPORTED_VERSIONS).toEqual(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    for (const v of SUPPORTED_VERSIONS) expect(parseConfig({ ...base, cniVersion: v }).cniVersion).toBe(v);
  });

  test('standard fields runtimes send are accepted: capabilities, runtimeConfig, args, ipam, dns, prevResult', () => {
    const c = parseConfig({
      ...base,
      capabilities: { 'io.kubernetes.cri.pod-annotations': true, portMappings: true },
      runtimeConfig: { portMappings: [{ hostPort: 1, containerPort: 2 }], 'io.kubernetes.cri.pod-annotations': { a: 'b' } },
      args: { cni: { x: 1 } },
      ipam: {},
      dns: { nameservers: ['10.96.0.10'] },
      disableCheck: true,
      disableGC: false,
    });
    expect(c.runtimeConfig).toEqual({ portMappings: [{ hostPort: 1, containerPort: 2 }], 'io.kubernetes.cri.pod-annotations': { a: 'b' } });
  });

  test('GC attachments: the CNI 1.1 key and the older spelling', () => {
    const list = [{ containerID: 'abc', ifname: 'eth0' }];
    expect(parseConfig({ ...base, 'cni.dev/valid-attachments': list }).validAttachments).toEqual(list);
    expect(parseConfig({ ...base, 'cni.dev/attachments': list }).validAttachments).toEqual(list);
  });

  test('prevResult defaults interfaces and ips to empty arrays and keeps unknown keys', () => {
    const c = parseConfig({ ...base, prevResult: { cniVersion: '1.0.0', dns: {}, routes: [{ dst: '0.0.0.0/0' }] } });
    expect(c.prevResult).toEqual({ cniVersion: '1.0.0', dns: {}, routes: [{ dst: '0.0.0.0/0' }], interfaces: [], ips: [] });
  });
});

describe('mark and mask', () => {
  test.each([
    [16, 16, 16, 16],
    ['0x10', '0x10', 16, 16],
    ['16', '0x10', 16, 16],
    ['0x1', '0xf', 1, 15],
    ['0x10000', '0xffff0000', 0x10000, 0xffff0000],
    ['0xffff0000', '0xffff0000', 0xffff0000, 0xffff0000],
    [0x80000000, 0x80000000, 0x80000000, 0x80000000],
    ['0xABCD0000', '0xFFFF0000', 0xabcd0000, 0xffff0000],
    ['0x80', '0x80', 0x80, 0x80],
  ])('mark %j / mask %j -> %d / %d', (mark, mask, m, k) => {
    const c = parseConfig({ ...base, mark, mask });
    expect(c.marks[0]).toMatchObject({ mark: m, mask: k });
  });

  test('a mark bit outside the mask is refused, naming both in hex', () => {
    expectInvalid({ mark: 0x30, mask: 0x10 }, 'invalid netconf: mark: 0x30 has bits outside mask 0x10');
    expectInvalid({ mark: '0x80000010', mask: '0x10' }, 'invalid netconf: mark: 0x80000010 has bits outside mask 0x10');
  });

  test('mark 0 is refused', () => {
    expectInvalid({ mark: 0, mask: 0x10 }, /^invalid netconf: mark: must not be 0: /);
    expectInvalid({ mark: '0x0' }, /^invalid netconf: mark: must not be 0/);
  });

  test('mask 0 is refused', () => {
    expectInvalid({ mark: 0x10, mask: 0 }, 'invalid netconf: mask: must not be 0: the mark would match every packet');
    expectInvalid({ mark: 0, mask: '0' }, /^invalid netconf: mask: must not be 0/);
  });

  test("a mask overlapping kube-proxy's 0xc000 is refused", () => {
    expectInvalid({ mark: 0x4000, mask: 0x4000 }, "invalid netconf: mask: 0x4000 overlaps kube-proxy's masquerade/drop bits 0xc000");
    expectInvalid({ mark: 0x8000, mask: 0x8000 }, /^invalid netconf: mask: 0x8000 overlaps kube-proxy/);
    expectInvalid({ mark: '0x10', mask: '0xffffffff' }, /^invalid netconf: mask: 0xffffffff overlaps kube-proxy/);
    expectInvalid({ mark: 0x10, mask: 0xc010 }, /^invalid netconf: mask: 0xc010 overlaps/);
  });

  test('out of range and malformed values are refused naming the field', () => {
    expectInvalid({ mark: -1 }, /^invalid netconf: mark: /);
    expectInvalid({ mark: 0x100000000 }, /^invalid netconf: mark: /);
    expectInvalid({ mark: 1.5 }, /^invalid netconf: mark: /);
    expectInvalid({ mark: '0x1ffffffff' }, 'invalid netconf: mark: mark must be a decimal or 0x-hex 32-bit number');
    expectInvalid({ mark: 'zz' }, 'invalid netconf: mark: mark must be a decimal or 0x-hex 32-bit number');
    expectInvalid({ mark: ' 16' }, /^invalid netconf: mark: /);
    expectInvalid({ mark: '-16' }, /^invalid netconf: mark: /);
    expectInvalid({ mark: '' }, /^invalid netconf: mark: /);
    expectInvalid({ mask: 'ff' }, 'invalid netconf: mask: mask must be a decimal or 0x-hex 32-bit number');
    expectInvalid({ mask: true }, /^invalid netconf: mask: /);
    expectInvalid({ mark: null }, /^invalid netconf: mark: /);
    expectInvalid({ mark: [16] }, /^invalid netconf: mark: /);
    // ten decimal digits pass the pattern but not the range check
    expectInvalid({ mark: '4294967296', mask: '0x10' }, 'invalid netconf: mark: must fit in 32 bits');
    expectInvalid({ mark: '0x10', mask: '9999999999' }, 'invalid netconf: mask: must fit in 32 bits');
  });
});

describe('table, priorities, prefix length', () => {
  test.each([1, 252, 256, 1000, 0xffffffff])('table %d is accepted', (table) => {
    expect(routing({ table }).table).toBe(table);
  });

  test.each([253, 254, 255])("table %d (the kernel's own) is refused", (table) => {
    expectInvalid({ table }, "invalid netconf: table: 253 (default), 254 (main) and 255 (local) are the kernel's own tables");
  });

  test('table 0, 2^32, fractions and strings are refused', () => {
    expectInvalid({ table: 0 }, /^invalid netconf: table: /);
    expectInvalid({ table: -1 }, /^invalid netconf: table: /);
    expectInvalid({ table: 0x100000000 }, /^invalid netconf: table: /);
    expectInvalid({ table: 100.5 }, /^invalid netconf: table: /);
    expectInvalid({ table: '100' }, /^invalid netconf: table: .*expected number/);
  });

  test('rulePriority 2..32765 is accepted; 0, 1, 32766 (main) and beyond are refused', () => {
    expect(routing({ rulePriority: 2 }).priority).toBe(2);
    expect(routing({ rulePriority: 1000 }).priority).toBe(1000);
    for (const rulePriority of [0, 1, 32766, 32767, 40000, -5, 10.5, '100']) expectInvalid({ rulePriority }, /^invalid netconf: rulePriority: /);
  });

  test('suppressMainPrefixLength 0..128', () => {
    expect(parseConfig({ ...base, suppressMainPrefixLength: 0 }).suppressMainPrefixLength).toBe(0);
    expect(parseConfig({ ...base, suppressMainPrefixLength: 128 }).suppressMainPrefixLength).toBe(128);
    for (const v of [-1, 129, 1.5, '0']) expectInvalid({ suppressMainPrefixLength: v }, /^invalid netconf: suppressMainPrefixLength: /);
  });
});

describe('uplink and gateways', () => {
  test.each(['eth0', 'ens5', 'vlan.100', 'br-lan_0', 'a@b', 'x23456789012345'])('uplink %j is accepted', (uplink) => {
    expect(routing({ uplink }).uplink).toBe(uplink);
  });

  test.each(['eth0;rm -rf /', '$(id)', '`id`', 'eth 0', 'x234567890123456', '', '-eth0', '.eth0', 'eth0\n', 'eth/0', 'eth0"', "eth0'", 'ethé'])(
    'uplink %j is refused',
    (uplink) => expectInvalid({ uplink }, /^invalid netconf: uplink: must be an interface name/),
  );

  test('gateways are canonicalised', () => {
    const r = routing({ gateway: '10.224.0.1', gateway6: 'FE80:0:0:0:0:0:0:1' });
    expect(r.gateway).toBe('10.224.0.1');
    expect(r.gateway6).toBe('fe80::1');
    expect(routing({ gateway6: '2001:db8:0:0:1:0:0:1' }).gateway6).toBe('2001:db8::1:0:0:1');
  });

  test('a gateway of the wrong family or not an address is refused', () => {
    expectInvalid({ gateway: 'fe80::1' }, 'invalid netconf: gateway: must be an IPv4 address');
    expectInvalid({ gateway: '10.224.0.256' }, 'invalid netconf: gateway: must be an IPv4 address');
    expectInvalid({ gateway: '10.224.0.1/24' }, 'invalid netconf: gateway: must be an IPv4 address');
    expectInvalid({ gateway: 'gw.example' }, 'invalid netconf: gateway: must be an IPv4 address');
    expectInvalid({ gateway6: '10.224.0.1' }, 'invalid netconf: gateway6: must be an IPv6 address');
    expectInvalid({ gateway6: 'fe80::1::2' }, 'invalid netconf: gateway6: must be an IPv6 address');
    expectInvalid({ gateway: 167772161 }, /^invalid netconf: gateway: /);
  });
});

describe('CIDR lists', () => {
  test('service and excluded CIDRs are canonicalised, in order, service first', () => {
    const c = parseConfig({ ...base, excludeCIDRs: ['168.63.129.16'], serviceCIDRs: ['10.0.5.6/16', 'FD00:10:0::7/108'] });
    expect(c.exemptCIDRs).toEqual([
      { cidr: { family: 4, text: '10.0.0.0/16' }, why: 'service' },
      { cidr: { family: 6, text: 'fd00:10::/108' }, why: 'service' },
      { cidr: { family: 4, text: '168.63.129.16/32' }, why: 'exclude' },
    ]);
  });

  test('an invalid element is refused, naming the list and its index', () => {
    expectInvalid({ serviceCIDRs: ['10.0.0.0/16', '10.0.0.0/33'] }, 'invalid netconf: serviceCIDRs.1: must be an IPv4 or IPv6 CIDR such as 10.0.0.0/16');
    expectInvalid({ serviceCIDRs: ['10.0.0.0/16/8'] }, /^invalid netconf: serviceCIDRs\.0: /);
    expectInvalid({ serviceCIDRs: ['fd00::/129'] }, /^invalid netconf: serviceCIDRs\.0: /);
    expectInvalid({ excludeCIDRs: ['168.63.129.16/32', 'not-a-cidr'] }, 'invalid netconf: excludeCIDRs.1: must be an IPv4 or IPv6 CIDR such as 10.0.0.0/16');
    expectInvalid({ excludeCIDRs: ['10.0.0.0/-1'] }, /^invalid netconf: excludeCIDRs\.0: /);
    expectInvalid({ excludeCIDRs: [''] }, /^invalid netconf: excludeCIDRs\.0: /);
    expectInvalid({ excludeCIDRs: [10] }, /^invalid netconf: excludeCIDRs\.0: /);
  });

  test('a list that is not a list is refused', () => {
    expectInvalid({ serviceCIDRs: '10.0.0.0/16' }, /^invalid netconf: serviceCIDRs: .*expected array/);
    expectInvalid({ excludeCIDRs: { a: 1 } }, /^invalid netconf: excludeCIDRs: /);
  });
});

describe('enumerations, names and paths', () => {
  test('mode, backend, rpFilter, logLevel accept only their values', () => {
    expect(parseConfig({ ...base, rpFilter: 'unchanged' }).rpFilter).toBe('unchanged');
    expect(parseConfig({ ...base, logLevel: 'debug' }).logLevel).toBe('debug');
    expectInvalid({ mode: 'annotated' }, /^invalid netconf: marks: annotated mode needs at least one entry/);
    expectInvalid({ mode: 'TRANSPARENT-TUNNEL' }, /^invalid netconf: mode: /);
    expectInvalid({ backend: 'ebpf' }, /^invalid netconf: backend: /);
    expectInvalid({ rpFilter: 'strict' }, /^invalid netconf: rpFilter: /);
    expectInvalid({ rpFilter: 2 }, /^invalid netconf: rpFilter: /);
    expectInvalid({ logLevel: 'verbose' }, /^invalid netconf: logLevel: /);
  });

  test('driftCheckSeconds is a whole number of seconds, 0 (every ADD) to a day', () => {
    expect(parseConfig({ ...base, driftCheckSeconds: 0 }).driftCheckSeconds).toBe(0);
    expect(parseConfig({ ...base, driftCheckSeconds: 86400 }).driftCheckSeconds).toBe(86400);
    for (const driftCheckSeconds of [-1, 1.5, 86401, '10', null]) {
      expectInvalid({ driftCheckSeconds }, /^invalid netconf: driftCheckSeconds: /);
    }
  });

  test('stateDir must be an absolute path of safe characters', () => {
    expect(parseConfig({ ...base, stateDir: '/run/markroute-a.b_c' }).stateDir).toBe('/run/markroute-a.b_c');
    for (const stateDir of ['state', 'tmp/state', './state', '', '/tmp/a b', '/tmp/$(id)', '/tmp/`id`', '/tmp/x;y', '~/state', 5, '/', '/var/lib/../../etc', '/var/./x']) {
      expectInvalid({ stateDir }, /^invalid netconf: stateDir: /);
    }
  });

  test('logFile must be an absolute path or "stderr"', () => {
    expect(parseConfig({ ...base, logFile: 'stderr' }).logFile).toBe('stderr');
    expect(parseConfig({ ...base, logFile: '/tmp/x.log' }).logFile).toBe('/tmp/x.log');
    for (const logFile of ['x.log', 'stdout', '/tmp/a b.log', '/tmp/$(id)', '', '/', '/var/log/../../etc/x', '/tmp/a\nb']) {
      expectInvalid({ logFile }, /^invalid netconf: logFile: must be an absolute path .*, or "stderr"$/);
    }
  });

  test('the network name must be a CNI name of at most 64 characters', () => {
    expect(parseConfig({ ...base, name: 'a'.repeat(64) }).name).toBe('a'.repeat(64));
    expect(parseConfig({ ...base, name: 'k8s-pod-network.v1_x' }).name).toBe('k8s-pod-network.v1_x');
    expectInvalid({ name: 'a'.repeat(65) }, 'invalid netconf: name: Too big: expected string to have <=64 characters');
    for (const name of ['a/b', '../x', '.x', '-x', 'a b', '', 'a;b', '$(id)']) {
      expectInvalid({ name }, /^invalid netconf: name: /);
    }
  });

  test('required standard fields', () => {
    const { name: _n, ...noName } = base;
    const { type: _t, ...noType } = base;
    const { cniVersion: _v, ...noVersion } = base;
    expect(rejection(noName).message).toMatch(/^invalid netconf: name: /);
    expect(rejection(noType).message).toMatch(/^invalid netconf: type: /);
    const missing = rejection(noVersion);
    expect(missing.code).toBe(7);
    expect(missing.message).toMatch(/^invalid netconf: cniVersion: /);
  });

  test('wrong types of standard fields are refused naming them', () => {
    expectInvalid({ cniVersion: 1 }, /^invalid netconf: cniVersion: /);
    expectInvalid({ name: 5 }, /^invalid netconf: name: /);
    expectInvalid({ capabilities: [] }, /^invalid netconf: capabilities: /);
    expectInvalid({ runtimeConfig: 'x' }, /^invalid netconf: runtimeConfig: /);
    expectInvalid({ disableCheck: 'yes' }, /^invalid netconf: disableCheck: /);
    expectInvalid({ prevResult: 'x' }, /^invalid netconf: prevResult: /);
    expectInvalid({ 'cni.dev/valid-attachments': [{ containerID: 1, ifname: 'eth0' }] }, /^invalid netconf: cni\.dev\/valid-attachments\.0\.containerID: /);
  });
});

describe('unknown fields and cniVersion', () => {
  test('an unknown field is refused, naming it', () => {
    expectInvalid({ foo: 1 }, 'invalid netconf: netconf: Unrecognized key: "foo"');
    expectInvalid({ Mark: 16 }, /Unrecognized key: "Mark"/);
    expectInvalid(JSON.parse('{"__proto__": {"mark": 0}}'), /Unrecognized key: "__proto__"/);
  });

  test.each(['0.1.0', '0.2.0', '0.3', '1.0', '1.2.0', '2.0.0', ''])('cniVersion %j is CNI error 1 listing the supported ones', (v) => {
    const err = rejection({ ...base, cniVersion: v });
    expect(err.code).toBe(1);
    expect(err.message).toBe(`cniVersion ${v} is not supported; supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0`);
  });

  test('an unsupported cniVersion wins over other problems', () => {
    expect(rejection({ ...base, cniVersion: '0.2.0', mark: 'bad', foo: 1 }).code).toBe(1);
  });

  test('input that is not an object is error 7', () => {
    for (const raw of [null, 5, 'x', []]) expect(rejection(raw).code).toBe(7);
  });
});

describe('prevResult', () => {
  test('interface names and addresses are validated, naming the path', () => {
    expectInvalid({ prevResult: { interfaces: [{ name: 'veth`id`' }] } }, 'invalid netconf: prevResult.interfaces.0.name: must be an interface name of letters, digits, _ . @ -');
    expectInvalid({ prevResult: { interfaces: [{ name: 'eth0' }, { name: 'x/y' }] } }, /^invalid netconf: prevResult\.interfaces\.1\.name: /);
    // AWS VPC CNI lists a 16-character `dummy…` entry that is no interface: accepted, never matched (host-match.ts)
    expect(parseConfig({ ...base, prevResult: { interfaces: [{ name: 'dummy0123456789ab', mac: '0' }] } }).prevResult?.interfaces[0]?.name).toBe('dummy0123456789ab');
    expectInvalid({ prevResult: { ips: [{ address: 'zz/24' }] } }, 'invalid netconf: prevResult.ips.0.address: must be an address with prefix such as 10.244.0.5/24');
    expectInvalid({ prevResult: { ips: [{ address: '10.0.0.1/24', interface: -1 }] } }, /^invalid netconf: prevResult\.ips\.0\.interface: /);
    expectInvalid({ prevResult: { ips: [{ address: '10.0.0.1/24', interface: '1' }] } }, /^invalid netconf: prevResult\.ips\.0\.interface: /);
    expectInvalid({ prevResult: { interfaces: 'eth0' } }, /^invalid netconf: prevResult\.interfaces: /);
  });
});

test('errors serialise as the spec wants', () => {
  const err = rejection({ ...base, table: 254 });
  expect(err.toJSON('0.4.0')).toEqual({
    cniVersion: '0.4.0',
    code: 7,
    msg: "invalid netconf: table: 253 (default), 254 (main) and 255 (local) are the kernel's own tables",
  });
  expect(new CniError(100, 'x', 'batch').toJSON('1.0.0')).toEqual({ cniVersion: '1.0.0', code: 100, msg: 'x', details: 'batch' });
});

// Issue 11, point 6: inputs a probe of hostile netconfs found accepted, or answered by a tool's
// failure (code 100) or a crash (110) instead of code 7 naming the field.
describe('hostile inputs are refused with code 7 naming the field', () => {
  test.each([
    [{ gateway: '0.0.0.0' }, 'gateway'], [{ gateway: '0.1.2.3' }, 'gateway'], [{ gateway: '127.0.0.1' }, 'gateway'],
    [{ gateway: '224.0.0.1' }, 'gateway'], [{ gateway: '239.255.255.250' }, 'gateway'], [{ gateway: '255.255.255.255' }, 'gateway'],
    [{ gateway6: '::' }, 'gateway6'], [{ gateway6: '0:0:0:0:0:0:0:0' }, 'gateway6'], [{ gateway6: '::1' }, 'gateway6'],
    [{ gateway6: 'ff02::1' }, 'gateway6'], [{ gateway6: '::ffff:10.224.0.1' }, 'gateway6'],
    [{ marks: { vpn: { mark: 16, table: 123, gateway: '0.0.0.0' } } }, 'marks.vpn.gateway'],
    [{ marks: { vpn: { mark: 16, table: 123, gateway6: '::' } } }, 'marks.vpn.gateway6'],
  ])('%j: not a next hop', (fields, field) => {
    expectInvalid(fields, new RegExp(`^invalid netconf: ${field.replace('.', '\\.')}: must be a unicast next hop`));
  });

  test('real next hops stay accepted, link-local IPv6 and the uplink\'s own subnet alike', () => {
    expect(routing({ gateway: '10.224.0.1', gateway6: 'fe80::1' })).toMatchObject({ gateway: '10.224.0.1', gateway6: 'fe80::1' });
    expect(routing({ gateway: '1.0.0.1', gateway6: '2001:db8::1' })).toMatchObject({ gateway: '1.0.0.1', gateway6: '2001:db8::1' });
  });

  test.each([
    [{ gateway6: 'fe80::1%eth0' }, 'gateway6'],
    [{ gateway6: 'fe80::%eth0' }, 'gateway6'],
    [{ gateway6: 'fe80::1%2' }, 'gateway6'],
    [{ gateway: '10.224.0.1%eth0' }, 'gateway'],
    [{ marks: { vpn: { mark: 16, table: 123, uplink: 'vpn0', gateway6: 'fe80::1%vpn0' } } }, 'marks.vpn.gateway6'],
    [{ serviceCIDRs: ['10.96.0.0/12', 'fd00:10::%eth0/108'] }, 'serviceCIDRs.1'],
    [{ excludeCIDRs: ['fe80::1%eth0'] }, 'excludeCIDRs.0'],
    [{ excludeCIDRs: ['fe80::%eth0/64'] }, 'excludeCIDRs.0'],
    [{ ipv6ProbeRewrite: { from: 'fe80::1234%eth0', to: '2603:1062:0:1::9abc' } }, 'ipv6ProbeRewrite.from'],
    [{ ipv6ProbeRewrite: { from: 'fe80::1234', to: '2603:1062:0:1::9abc%eth0' } }, 'ipv6ProbeRewrite.to'],
    [{ prevResult: { interfaces: [{ name: 'veth1' }], ips: [{ address: 'fe80::5%eth0/64', interface: 0 }] } }, 'prevResult.ips.0.address'],
    [{ prevResult: { interfaces: [{ name: 'veth1' }], ips: [{ address: 'fd00::5%1/64', interface: 0 }] } }, 'prevResult.ips.0.address'],
  ])('%j: an IPv6 zone is refused, never dropped or passed on', (fields, field) => {
    expectInvalid(fields, `invalid netconf: ${field}: must not carry an IPv6 zone (%...): give the address alone; a link-local gateway's device is \`uplink\``);
  });

  test.each([
    [{ uplink: 'all' }, 'uplink'], [{ uplink: 'default' }, 'uplink'],
    [{ marks: { vpn: { mark: 16, table: 123, uplink: 'all' } } }, 'marks.vpn.uplink'],
    [{ marks: { vpn: { mark: 16, table: 123, uplink: 'default' } } }, 'marks.vpn.uplink'],
  ])('%j: a name the kernel keeps for its sysctl defaults is no uplink', (fields, field) => {
    expectInvalid(fields, new RegExp(`^invalid netconf: ${field.replace('.', '\\.')}: must name an interface; "all" and "default"`));
  });

  test('lo and names that merely contain a reserved word stay accepted', () => {
    for (const uplink of ['lo', 'all0', 'default1', 'eth-all']) expect(routing({ uplink }).uplink).toBe(uplink);
  });

  test('a marks key "__proto__" (an own property after JSON.parse) is refused, not dropped', () => {
    const marks = JSON.parse('{"__proto__": {"mark": 16}, "vpn": {"mark": 32}}');
    expectInvalid({ marks }, /^invalid netconf: marks\.__proto__: names must be 1-63 of letters/);
    const raw = JSON.parse(`{"cniVersion":"1.0.0","name":"mrnet","type":"markroute","mode":"annotated","marks":{"__proto__":{"mark":16}}}`);
    expect(rejection(raw).message).toMatch(/^invalid netconf: marks\.__proto__: /);
    // inside an entry, and at top level, the strict objects refuse it as an unknown key
    expectInvalid({ marks: { vpn: JSON.parse('{"mark": 16, "__proto__": {"table": 5}}') } }, 'invalid netconf: marks.vpn: Unrecognized key: "__proto__"');
    expect(rejection(JSON.parse('{"cniVersion":"1.0.0","name":"mrnet","type":"markroute","__proto__":{"mark":5}}')).message)
      .toBe('invalid netconf: netconf: Unrecognized key: "__proto__"');
  });
});

// fast-check generators of what a runtime hands markroute: the CNI_* environment and the netconf
// (markroute's fields, the standard ones, prevResult, runtimeConfig, GC's valid attachments).
// Each input is valid but for a few defects: every field drawn from valid values, then, in most
// inputs, 1-3 fields replaced by an invalid value, a JSON value of any shape, or nothing. Shared
// by the unit property suite (the pure layer) and the e2e one (dist/markroute in a namespace),
// which pins through `Place` what must stay inside its lab. Not a suite: vitest collects *.test.ts.
import fc from 'fast-check';

/** A JSON value of any shape: what a confused runtime or a typo may put anywhere. */
const junk = fc.jsonValue({ maxDepth: 2 });

/** An object of the defined entries only (a field generated as undefined is absent). */
const compact = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

/** How a field may be generated: valid values (undefined: absent, where absence is valid) and invalid ones. */
export interface FieldSpec {
  valid: fc.Arbitrary<unknown>;
  invalid?: fc.Arbitrary<unknown>;
}

/** An input with the names of the fields that were replaced (a replacement may happen to be valid). */
export interface Corrupted {
  value: Record<string, unknown>;
  defects: string[];
}

/**
 * Objects that are valid but for a few defects: every field drawn valid, then (in 3 of 3 + cleanWeight
 * objects) 1 to `maxDefects` fields replaced by an invalid value, a JSON value of any shape, or nothing.
 */
export function corruptible(specs: Record<string, FieldSpec>, maxDefects = 3, cleanWeight = 2): fc.Arbitrary<Corrupted> {
  const keys = Object.keys(specs);
  const valid = fc.record(Object.fromEntries(keys.map((k) => [k, specs[k]!.valid])) as Record<string, fc.Arbitrary<unknown>>);
  const bad = fc.record(Object.fromEntries(keys.map((k) => [k, fc.oneof(
    { weight: 4, arbitrary: specs[k]!.invalid ?? junk },
    { weight: 1, arbitrary: junk },
    { weight: 1, arbitrary: fc.constant(undefined) },
  )])) as Record<string, fc.Arbitrary<unknown>>);
  const which = fc.oneof(
    { weight: cleanWeight, arbitrary: fc.constant([] as string[]) },
    { weight: 3, arbitrary: fc.shuffledSubarray(keys, { minLength: 1, maxLength: maxDefects }) },
  );
  return fc.tuple(valid, bad, which).map(([v, b, w]) => ({ value: compact({ ...v, ...Object.fromEntries(w.map((k) => [k, b[k]])) }), defects: w }));
}

const optional = <T>(a: fc.Arbitrary<T>, freq = 2) => fc.option(a, { nil: undefined, freq });
const hex = (n: number) => `0x${n.toString(16)}`;
const hexString = (minLength: number, maxLength: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength, maxLength });

export const VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

// ---- addresses and names ----------------------------------------------------------------------

const octet = fc.integer({ min: 0, max: 255 });
export const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
const group16 = fc.integer({ min: 0, max: 0xffff }).map((g) => g.toString(16));
export const ipv6 = fc.oneof(
  fc.array(group16, { minLength: 8, maxLength: 8 }).map((g) => g.join(':')),
  fc.tuple(fc.array(group16, { maxLength: 3 }), fc.array(group16, { maxLength: 3 })).map(([a, b]) => `${a.join(':')}::${b.join(':')}`),
  fc.constantFrom('fe80::1', 'fd00:244::5', '::1', '::', 'ff02::1', '::ffff:10.0.0.1', '2603:1062:0:1:fe80:1234:5678:9abc'),
);
export const cidr4 = fc.tuple(ipv4, fc.integer({ min: 0, max: 32 })).map(([a, l]) => `${a}/${l}`);
export const cidr6 = fc.tuple(ipv6, fc.integer({ min: 0, max: 128 })).map(([a, l]) => `${a}/${l}`);
export const badAddress = fc.constantFrom('', 'x', '10.0.0', '10.0.0.256', '1.2.3.4.5', 'fe80::1::2', ':::', '10.0.0.1 ', '01.2.3.4', 'gg::1',
  '10.0.0.1/33', 'fd00::/129', '/24', '10.0.0.1/', '10.0.0.1/24/1', '10.0.0.1/-1', '10.0.0.1/ 8', 'fe80::1%eth0');

/** Interface names of 1-15 safe characters. */
export const ifname = fc.oneof(
  fc.constantFrom('eth0', 'eth1', 'net1', 'veth1234abcd', 'cni0', 'vpn0', 'a', 'x.y@z-1_2', 'abcdefghijklmno'),
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}$/),
);
/** Names the kernel, a file name or a tool's input would choke on. */
export const badIfname = fc.constantFrom('', 'abcdefghijklmnop', 'eth 0', 'eth0;reboot', '-eth0', 'eth0"', 'eth0\n', '../x', 'ümlaut', '.', '..');

// ---- marks and routing ------------------------------------------------------------------------

/** A single-bit mark outside kube-proxy's 0xc000, as a number or a hex string. */
const bit = fc.integer({ min: 0, max: 31 }).filter((b) => b !== 14 && b !== 15).map((b) => (1 << b) >>> 0);
const markValue = fc.oneof(bit, bit.map(hex));
const anyU32 = fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(0, 0x4000, 0x8000, 0xc000, 0xffff0000, 0x80));
const badMark = fc.oneof(
  fc.constantFrom(-1, 1.5, 2 ** 32, '0x', '0x123456789', 'ten', '12345678901', '-0x10', '0X10', ' 16', true, null, 0, '0', 0x4000, 0xc000),
  anyU32, anyU32.map(hex), anyU32.map(String),
);
const table = fc.oneof(fc.integer({ min: 1, max: 252 }), fc.integer({ min: 256, max: 0xffffffff }), fc.constantFrom(100, 101, 123));
const badTable = fc.constantFrom(0, 253, 254, 255, -1, 1.5, 2 ** 32, '100');
const priority = fc.integer({ min: 2, max: 32765 });
const badPriority = fc.constantFrom(0, 1, 32766, 32767, 65535, -5, 2.5, '32765');

/** Kubernetes annotation keys, including names that are also properties of every JS object. */
export const annotationKey = fc.oneof(
  fc.constantFrom('cni.fwmark.net/name', 'example.com/route', 'route', 'constructor', 'toString', 'valueOf', 'hasOwnProperty'),
  fc.stringMatching(/^[a-z0-9]{1,10}\/[A-Za-z0-9]{1,10}$/),
);
const markName = fc.oneof(fc.constantFrom('vpn', 'egress', 'a', 'default', 'constructor'), fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,8}$/));

// ---- where things go ----------------------------------------------------------------------------

/** What a generated netconf may point markroute at: the e2e suite keeps state and logs in its lab. */
export interface Place {
  stateDir: FieldSpec;
  logFile: FieldSpec;
  /** Host-side interface names for prevResult (e.g. one that exists on the node, one that does not). */
  hostIf: fc.Arbitrary<string>;
  uplink: FieldSpec;
  gateway: FieldSpec;
  gateway6: FieldSpec;
  /** Values of `valid-attachments` entries' containerID. */
  containerId: fc.Arbitrary<string>;
}

export const unitPlace: Place = {
  stateDir: { valid: fc.constantFrom(undefined, '/var/lib/cni/markroute', '/run/markroute/state'), invalid: fc.constantFrom('relative/dir', '/with space', '', '/a/b;x') },
  logFile: { valid: fc.constantFrom(undefined, '/var/log/markroute.log', 'stderr'), invalid: fc.constantFrom('markroute.log', 'STDERR', '/tmp/x y.log') },
  hostIf: ifname,
  uplink: { valid: optional(ifname), invalid: badIfname },
  gateway: { valid: optional(ipv4), invalid: fc.oneof(ipv6, badAddress) },
  gateway6: { valid: optional(ipv6), invalid: fc.oneof(ipv4, badAddress) },
  containerId: hexString(1, 64),
};

// ---- prevResult, runtimeConfig ------------------------------------------------------------------

/** A main plugin's result: ptp-style (host veth + container interface) or bridge-style. */
export function prevResult(place: Place, containerIf: fc.Arbitrary<string>): fc.Arbitrary<Record<string, unknown>> {
  const ptp = fc.record({
    cniVersion: fc.constantFrom(...VERSIONS),
    host: place.hostIf,
    container: containerIf,
    v4: optional(fc.tuple(ipv4, fc.integer({ min: 8, max: 32 })), 4),
    v6: optional(fc.tuple(ipv6, fc.integer({ min: 64, max: 128 })), 2),
  }).map(({ cniVersion, host, container, v4, v6 }) => ({
    cniVersion,
    interfaces: [{ name: host, mac: '6e:1f:00:00:00:01' }, { name: container, mac: '0a:58:0a:f4:00:05', sandbox: '/run/netns/pod' }],
    ips: [...(v4 ? [{ address: `${v4[0]}/${v4[1]}`, gateway: '10.244.0.1', interface: 1 }] : []), ...(v6 ? [{ address: `${v6[0]}/${v6[1]}`, interface: 1 }] : [])],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  }));
  const bridge = fc.tuple(ipv4, place.hostIf, containerIf).map(([a, veth, container]) => ({
    cniVersion: '1.0.0',
    interfaces: [{ name: 'cni0', mac: '6e:1f:00:00:00:02' }, { name: veth, mac: '6e:1f:00:00:00:03' }, { name: container, sandbox: '/run/netns/pod' }],
    ips: [{ address: `${a}/24`, interface: 2, gateway: '10.244.1.1' }],
  }));
  return fc.oneof({ weight: 6, arbitrary: ptp }, { weight: 1, arbitrary: bridge });
}

/** prevResults that are not a usable main plugin's result: wrong shapes, bad names and addresses, no host side. */
export function badPrevResult(place: Place, containerIf: fc.Arbitrary<string>): fc.Arbitrary<unknown> {
  const iface = fc.record({
    name: fc.oneof({ weight: 4, arbitrary: place.hostIf }, { weight: 2, arbitrary: containerIf }, { weight: 1, arbitrary: badIfname }),
    mac: optional(fc.constant('6e:1f:00:00:00:01')),
    sandbox: optional(fc.constantFrom('/run/netns/pod', '/var/run/netns/x', ''), 1),
  }).map(compact);
  const ip = fc.record({
    address: fc.oneof({ weight: 3, arbitrary: cidr4 }, { weight: 2, arbitrary: cidr6 }, { weight: 2, arbitrary: badAddress }, { weight: 1, arbitrary: ipv4 }),
    interface: fc.oneof(fc.integer({ min: -1, max: 4 }), fc.constantFrom(undefined, 1.5, '1', null)),
  }).map(compact);
  return fc.oneof(
    fc.record({ cniVersion: optional(fc.constantFrom(...VERSIONS)), interfaces: optional(fc.array(iface, { maxLength: 4 })), ips: optional(fc.array(ip, { maxLength: 3 })) }).map(compact),
    prevResult(place, containerIf).chain((p) => corruptible({
      cniVersion: { valid: fc.constant(p.cniVersion), invalid: fc.constantFrom(2, '') },
      interfaces: { valid: fc.constant(p.interfaces), invalid: fc.oneof(fc.constant({}), fc.array(iface, { maxLength: 3 })) },
      ips: { valid: fc.constant(p.ips), invalid: fc.oneof(fc.constant('10.0.0.1/24'), fc.array(ip, { minLength: 1, maxLength: 2 })) },
    }, 2).map((c) => c.value)),
    junk,
  );
}

/** runtimeConfig: the pod's annotations, naming one of `names` (or not). */
const runtimeConfig = (names: fc.Arbitrary<string>) =>
  fc.oneof(
    fc.record({ 'io.kubernetes.cri.pod-annotations': fc.dictionary(annotationKey, names, { maxKeys: 3 }) }),
    fc.constant({}),
  );
const badRuntimeConfig = fc.oneof(
  fc.record({ 'io.kubernetes.cri.pod-annotations': fc.dictionary(annotationKey, junk, { minKeys: 1, maxKeys: 2 }) }),
  fc.record({ 'io.kubernetes.cri.pod-annotations': junk }),
  junk,
);

const markEntry = corruptible({
  mark: { valid: markValue, invalid: badMark },
  mask: { valid: fc.constant(undefined), invalid: badMark },
  table: { valid: optional(table), invalid: badTable },
  rulePriority: { valid: optional(priority, 4), invalid: badPriority },
  uplink: { valid: optional(ifname, 4), invalid: badIfname },
  gateway: { valid: optional(ipv4, 4), invalid: ipv6 },
  gateway6: { valid: optional(ipv6, 4), invalid: ipv4 },
}, 1, 8).map((c) => c.value);

// ---- the netconf and the environment -----------------------------------------------------------

/**
 * A netconf as a runtime sends it to markroute: a transparent-tunnel or an annotated one, valid
 * but for a few defects (an unknown field among them, which must be refused).
 */
export function netconf(place: Place, containerIf: fc.Arbitrary<string> = fc.constant('eth0'), cleanWeight = 3): fc.Arbitrary<Corrupted> {
  const common: Record<string, FieldSpec> = {
    cniVersion: { valid: fc.constantFrom(...VERSIONS), invalid: fc.constantFrom('2.0.0', '0.2.0', '1.0', '') },
    name: {
      valid: fc.oneof(fc.constantFrom('pods', 'k8s-pod-network', 'a'), fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/)),
      invalid: fc.constantFrom('', 'bad name', '-x', 'x'.repeat(65), 'ü', 'a/b'),
    },
    type: { valid: fc.constant('markroute') },
    uplink: place.uplink,
    gateway: place.gateway,
    gateway6: place.gateway6,
    serviceCIDRs: { valid: optional(fc.array(fc.oneof(cidr4, cidr6), { maxLength: 3 })), invalid: fc.array(fc.oneof(cidr4, badAddress), { minLength: 1, maxLength: 2 }) },
    excludeCIDRs: { valid: optional(fc.array(fc.oneof(cidr4, cidr6, ipv4), { maxLength: 3 })), invalid: fc.constantFrom('10.0.0.0/8', [1], {}, ['::/129']) },
    backend: { valid: optional(fc.constantFrom('auto', 'iptables', 'nftables')), invalid: fc.constantFrom('bpf', 'IPTABLES', '') },
    rpFilter: { valid: optional(fc.constantFrom('loose', 'unchanged')), invalid: fc.constantFrom('strict', 2) },
    driftCheckSeconds: { valid: optional(fc.integer({ min: 0, max: 86400 })), invalid: fc.constantFrom(-1, 0.5, 86401, '10') },
    logLevel: { valid: optional(fc.constantFrom('trace', 'debug', 'info', 'warn', 'error', 'silent')), invalid: fc.constantFrom('verbose', 3) },
    stateDir: place.stateDir,
    logFile: place.logFile,
    prevResult: { valid: prevResult(place, containerIf), invalid: fc.oneof(badPrevResult(place, containerIf), fc.constant(undefined)) },
    'cni.dev/valid-attachments': {
      valid: optional(fc.array(fc.record({ containerID: place.containerId, ifname: containerIf }), { maxLength: 2 }), 4),
      invalid: fc.constantFrom([{}], 'all', [{ containerID: 1, ifname: 'eth0' }]),
    },
    dns: { valid: optional(fc.constant({}), 4) },
    disableCheck: { valid: optional(fc.boolean(), 4), invalid: fc.constant('yes') },
    unknownField: { valid: fc.constant(undefined), invalid: fc.constantFrom({ bakend: 'nftables' }, { markk: 16 }, { ipMasq: true }) },
  };
  const tunnel: Record<string, FieldSpec> = {
    ...common,
    mode: { valid: fc.constantFrom(undefined, 'transparent-tunnel'), invalid: fc.constantFrom('TRANSPARENT', 'tunnel', 'annotated') },
    mark: { valid: markValue, invalid: badMark },
    mask: { valid: fc.constant('same'), invalid: badMark },
    table: { valid: optional(table), invalid: badTable },
    rulePriority: { valid: optional(priority), invalid: badPriority },
    suppressMainPrefixLength: { valid: optional(fc.integer({ min: 0, max: 128 }), 4), invalid: fc.constantFrom(-1, 129, 1.5) },
    linkGroup: { valid: optional(fc.integer({ min: 1, max: 0x7fffffff }), 6), invalid: fc.constantFrom(0, -1, 2 ** 31, 2 ** 32, 1.5) },
    ipv6ProbeRewrite: {
      valid: optional(fc.record({ from: fc.constantFrom('fe80::1234:5678:9abc', 'fe80::1'), to: fc.constantFrom('2603:1062:0:1:fe80:1234:5678:9abc', 'fd00:224::99') }), 15),
      invalid: fc.oneof(
        fc.record({ from: fc.oneof(ipv6, ipv4, badAddress), to: fc.oneof(ipv6, ipv4, badAddress) }),
        fc.constantFrom({}, { from: 'fe80::1' }, { from: 'fe80::1', to: '2603::1', extra: 1 }),
      ),
    },
    runtimeConfig: { valid: optional(runtimeConfig(markName), 6), invalid: badRuntimeConfig },
  };
  const annotated: Record<string, FieldSpec> = {
    ...common,
    mode: { valid: fc.constantFrom(undefined, 'annotated'), invalid: fc.constantFrom('fwmark', '') },
    annotation: { valid: optional(annotationKey), invalid: fc.constantFrom('', 'Bad Key', '/x', 'a/', '__proto__') },
    marks: { valid: fc.dictionary(markName, markEntry, { minKeys: 1, maxKeys: 3 }), invalid: fc.constantFrom({}, [], { '': { mark: 16 } }, { _x: { mark: 16 } }, { vpn: 16 }) },
    rulePriority: { valid: optional(priority, 4), invalid: badPriority },
    capabilities: { valid: fc.constant({ 'io.kubernetes.cri.pod-annotations': true }) },
    runtimeConfig: { valid: runtimeConfig(fc.oneof(markName, fc.constantFrom('vpn', 'egress'))), invalid: badRuntimeConfig },
  };
  return fc.oneof({ weight: 3, arbitrary: corruptible(tunnel, 3, cleanWeight) }, { weight: 1, arbitrary: corruptible(annotated, 3, cleanWeight) }).map(({ value, defects }) => {
    const conf = { ...value };
    if (conf.mask === 'same') conf.mask = conf.mark; // transparent-tunnel: a mask that holds the mark
    const extra = conf.unknownField as Record<string, unknown> | undefined;
    delete conf.unknownField;
    return { value: { ...conf, ...(extra && typeof extra === 'object' && !Array.isArray(extra) ? extra : {}) }, defects };
  });
}

/** The CNI_* environment as a runtime sends it, valid but for a few defects. */
export function environment(netnsPath: string, commands: fc.Arbitrary<string>): fc.Arbitrary<{ env: Record<string, string>; defects: string[] }> {
  return corruptible({
    CNI_COMMAND: { valid: commands, invalid: fc.constantFrom('add', '', 'UPDATE', 'ADD ') },
    CNI_CONTAINERID: { valid: hexString(64, 64), invalid: fc.constantFrom('', 'bad id', '-x', 'a'.repeat(129), 'x/../../y', 'ab\ncd') },
    CNI_IFNAME: { valid: fc.constantFrom('eth0', 'net1'), invalid: badIfname },
    CNI_NETNS: { valid: fc.constant(netnsPath), invalid: fc.constantFrom('', 'relative/ns') },
    CNI_ARGS: {
      valid: fc.tuple(fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/), fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/))
        .map(([ns, n]) => `K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${n};K8S_POD_UID=u;IgnoreUnknown=1`),
      invalid: fc.constantFrom('', 'IgnoreUnknown=1', 'junk', '=x', 'K8S_POD_NAME=A B;K8S_POD_NAMESPACE=Ü', ';;', 'a=b=c'),
    },
  }, 2, 9).map(({ value, defects }) => ({
    // the environment holds strings only: junk values are turned into their JSON text
    env: Object.fromEntries(Object.entries(value).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])),
    defects,
  }));
}

// Bad inputs fed to dist/markroute in one node namespace: every one is refused with exactly one
// CNI error object on stdout (the expected code, a message naming the field or the reason), a
// non-zero exit, a quiet stderr, and — over the whole table — no change at all to the namespace's
// iptables (nft and legacy), ipsets, nftables ruleset, ip rules and routes, and no attachment
// recorded. The table runs once per marking backend (iptables, nftables).
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createNodeNamespace, findPlugin, nsExec, parseStatus, REPO_ROOT, removeNamespace, run, snapshot, sweepStaleLabs, type Backend, type StatusJson } from '../lab/index.ts';
import { markrouteTables, nftPodElements } from '../lab/nft.ts';
import { nftTableName } from '../../src/plan.ts';

const SUPPORTED = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
const BACKENDS: Backend[] = ['iptables', 'nftables'];
const cniPath = process.env.MARKROUTE_CNI_PATH?.split(':') ?? [join(REPO_ROOT, 'dist')];
// Named like the lab's namespaces so that a killed run's leftovers are swept by the next lab.
const NS = `mr-p${process.pid}s${randomInt(100_000_000, 999_999_999)}-bad`;
const NETNS_PATH = `/var/run/netns/${NS}`;
const HOST_VETH = 'vethbad0';

const PREV = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: HOST_VETH, mac: '6e:1f:00:00:00:01' },
    { name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: NETNS_PATH },
  ],
  ips: [{ address: '10.244.0.5/24', gateway: '10.244.0.1', interface: 1 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};

let bin: string;
let dir: string;
let rowSeq = 0;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs dist/markroute inside the test namespace with exactly `env` (plus PATH); argv only, no shell. */
function plugin(env: Record<string, string | undefined>, stdin: string | Buffer): Run {
  const clean: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
  const r = spawnSync('ip', ['netns', 'exec', NS, bin], { input: stdin, env: clean, encoding: 'utf8', timeout: 30_000, maxBuffer: 16 << 20 });
  // The plugin may refuse a huge stdin before reading all of it: EPIPE on our side is expected then.
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'EPIPE') throw r.error;
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** The state as `markroute status --json` reports it. */
function status(stateDir: string): StatusJson {
  const r = spawnSync('ip', ['netns', 'exec', NS, bin, 'status', '--json', '--state-dir', stateDir], { encoding: 'utf8', timeout: 30_000 });
  return parseStatus({ code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' });
}

const newContainerId = () => randomBytes(32).toString('hex');

function baseEnv(command: string, containerId: string): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_IFNAME: 'eth0',
    CNI_NETNS: NETNS_PATH,
    CNI_PATH: cniPath.join(':'),
    CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad-inputs;K8S_POD_UID=2e21245c-dc03-46ea-8bfb-c151cd3bb89a;IgnoreUnknown=1',
  };
}

function baseNetconf(rowDir: string, backend: Backend): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: 'mrbad',
    type: 'markroute',
    backend,
    stateDir: join(rowDir, 'state'),
    logFile: join(rowDir, 'markroute.log'),
    prevResult: PREV,
  };
}

/** `base` with `extra` merged in; a key set to undefined is removed. */
function merge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base, ...extra };
  for (const [k, v] of Object.entries(extra)) if (v === undefined) delete out[k];
  return out;
}

/** What this test compares, as the tools print it: only iptables-save's date comments and packet counters are removed. */
function kernelState(): Record<string, string> {
  const out = (argv: string[]) => {
    const r = nsExec(NS, argv, { check: false });
    return `exit ${r.code}\n${r.stdout}${r.stderr}`;
  };
  const save = (tool: string) => out([tool]).split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]')).join('\n');
  return {
    'iptables-nft-save': save('iptables-nft-save'),
    'ip6tables-nft-save': save('ip6tables-nft-save'),
    'iptables-legacy-save': save('iptables-legacy-save'),
    'ip6tables-legacy-save': save('ip6tables-legacy-save'),
    'ipset list': out(['ipset', 'list']),
    'ip -4 -j rule': out(['ip', '-4', '-j', 'rule', 'show']),
    'ip -6 -j rule': out(['ip', '-6', '-j', 'rule', 'show']),
    'ip -4 -j route show table all': out(['ip', '-4', '-j', 'route', 'show', 'table', 'all']),
    'ip -6 -j route show table all': out(['ip', '-6', '-j', 'route', 'show', 'table', 'all']),
    'nft list ruleset': out(['nft', 'list', 'ruleset']).replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0'),
    rp_filter: out(['sysctl', 'net.ipv4.conf.all.rp_filter', 'net.ipv4.conf.default.rp_filter', 'net.ipv4.conf.eth0.rp_filter']),
  };
}

function records(stateDir: string): string[] {
  try {
    return readdirSync(join(stateDir, 'attachments'));
  } catch {
    return [];
  }
}

/** The one CNI error object a failed call must print: nothing else on stdout. */
function parseError(r: Run): { cniVersion: string; code: number; msg: string; details?: string } {
  expect(r.stdout.endsWith('\n'), `stdout: ${JSON.stringify(r.stdout)}`).toBe(true);
  expect(r.stdout.trimEnd().split('\n')).toHaveLength(1);
  const err = JSON.parse(r.stdout);
  expect(typeof err).toBe('object');
  expect(Array.isArray(err)).toBe(false);
  for (const k of Object.keys(err)) expect(['cniVersion', 'code', 'msg', 'details']).toContain(k);
  expect(SUPPORTED).toContain(err.cniVersion);
  expect(Number.isInteger(err.code)).toBe(true);
  expect(typeof err.msg).toBe('string');
  return err;
}

// ---------------------------------------------------------------------------------------------

interface Row {
  name: string;
  command?: 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'GC' | 'STATUS';
  /** Merged into the valid netconf (undefined removes a key). */
  netconf?: Record<string, unknown>;
  /** Raw stdin instead of a netconf; a function gets the valid netconf. */
  stdin?: string | ((valid: Record<string, unknown>) => string);
  /** Merged into the valid environment (undefined removes a variable). */
  env?: Record<string, string | undefined>;
  code: number;
  /** Substrings the message must contain: the field and/or the reason. */
  msg: string[];
  /** The netconf's own logFile receives the error (false when the netconf cannot be read, or the environment is refused first). */
  logged?: boolean;
}

const BIG = 1024 * 1024;
// An Azure load balancer's IPv6 probe source and the routable address it is rewritten to.
const PROBE = { from: 'fe80::1234:5678:9abc', to: '2603:1062:0:1:fe80:1234:5678:9abc' };
const shellNames = ['eth0;rm -rf /', '$(id)', 'eth 0', '`id`', 'eth0|true', 'x23456789abcdef0'];

const rows: Row[] = [
  // ---- stdin that is not a netconf
  { name: 'malformed JSON', stdin: '{"cniVersion": "1.0.0", "name": ', code: 6, msg: ['cannot decode the netconf on stdin'], logged: false },
  { name: 'empty stdin', stdin: '', code: 6, msg: ['cannot decode the netconf on stdin'], logged: false },
  { name: 'JSON followed by garbage', stdin: (v) => `${JSON.stringify(v)} trailing`, code: 6, msg: ['cannot decode the netconf on stdin'], logged: false },
  { name: 'JSON with single quotes', stdin: "{'cniVersion': '1.0.0'}", code: 6, msg: ['cannot decode the netconf on stdin'], logged: false },
  { name: 'huge JSON (> 1 MiB)', stdin: (v) => JSON.stringify({ ...v, pad: 'x'.repeat(BIG + 4096) }), code: 6, msg: ['larger than 1048576 bytes'], logged: false },
  { name: 'huge JSON (8 MiB)', stdin: (v) => JSON.stringify({ ...v, pad: 'x'.repeat(8 * BIG) }), code: 6, msg: ['larger than 1048576 bytes'], logged: false },
  { name: 'JSON array', stdin: '[{"cniVersion":"1.0.0"}]', code: 6, msg: ['not a JSON object'], logged: false },
  { name: 'JSON string', stdin: '"markroute"', code: 6, msg: ['not a JSON object'], logged: false },
  { name: 'JSON null', stdin: 'null', code: 6, msg: ['not a JSON object'], logged: false },
  { name: 'JSON number', stdin: '42', code: 6, msg: ['not a JSON object'], logged: false },

  // ---- wrong types
  { name: 'mark of the wrong type (boolean)', netconf: { mark: true }, code: 7, msg: ['invalid netconf', 'mark'] },
  { name: 'mask of the wrong type (list)', netconf: { mask: [16] }, code: 7, msg: ['invalid netconf', 'mask'] },
  { name: 'table as a string', netconf: { table: '100' }, code: 7, msg: ['table', 'expected number'] },
  { name: 'serviceCIDRs not a list', netconf: { serviceCIDRs: '10.0.0.0/16' }, code: 7, msg: ['serviceCIDRs', 'expected array'] },
  { name: 'prevResult not an object', netconf: { prevResult: 'yes' }, code: 7, msg: ['prevResult', 'expected object'] },
  { name: 'name of the wrong type', netconf: { name: 42 }, code: 7, msg: ['name'] },
  { name: 'cniVersion as a number', netconf: { cniVersion: 1.0 }, code: 7, msg: ['cniVersion'] },
  { name: 'capabilities as a list', netconf: { capabilities: ['portMappings'] }, code: 7, msg: ['capabilities'] },

  // ---- mark and mask
  { name: 'mark above 32 bits (number)', netconf: { mark: 0x100000000 }, code: 7, msg: ['mark'] },
  { name: 'mark above 32 bits (hex string)', netconf: { mark: '0x1ffffffff' }, code: 7, msg: ['mark must be a decimal or 0x-hex 32-bit number'] },
  { name: 'mask above 32 bits (decimal string)', netconf: { mask: '4294967296' }, code: 7, msg: ['mask: must fit in 32 bits'] },
  { name: 'negative mark', netconf: { mark: -16 }, code: 7, msg: ['mark'] },
  { name: 'mark with bits outside the mask', netconf: { mark: 0x30, mask: 0x10 }, code: 7, msg: ['mark: 0x30 has bits outside mask 0x10'] },
  { name: 'mark with bits outside the mask (hex strings)', netconf: { mark: '0x1000010', mask: '0xff' }, code: 7, msg: ['mark: 0x1000010 has bits outside mask 0xff'] },
  { name: 'zero mark', netconf: { mark: 0, mask: 0x10 }, code: 7, msg: ['mark: must not be 0'] },
  { name: 'zero mask', netconf: { mark: 0x10, mask: 0 }, code: 7, msg: ['mask: must not be 0'] },
  { name: "mask overlapping kube-proxy's 0x4000", netconf: { mark: 0x4000, mask: 0x4000 }, code: 7, msg: ['mask: 0x4000 overlaps kube-proxy', '0xc000'] },
  { name: 'all-ones mask (overlaps 0xc000)', netconf: { mark: '0x10', mask: '0xffffffff' }, code: 7, msg: ['mask: 0xffffffff overlaps kube-proxy'] },

  // ---- tables and priorities
  { name: 'table 253 (default)', netconf: { table: 253 }, code: 7, msg: ["table: 253 (default), 254 (main) and 255 (local) are the kernel's own tables"] },
  { name: 'table 254 (main)', netconf: { table: 254 }, code: 7, msg: ['table: 253 (default), 254 (main)'] },
  { name: 'table 255 (local)', netconf: { table: 255 }, code: 7, msg: ['table: 253 (default), 254 (main)'] },
  { name: 'table 0', netconf: { table: 0 }, code: 7, msg: ['table'] },
  { name: 'table 2^32', netconf: { table: 2 ** 32 }, code: 7, msg: ['table'] },
  { name: "rulePriority 32766 (main's)", netconf: { rulePriority: 32766 }, code: 7, msg: ['rulePriority'] },
  { name: 'rulePriority 0', netconf: { rulePriority: 0 }, code: 7, msg: ['rulePriority'] },
  { name: 'suppressMainPrefixLength 129', netconf: { suppressMainPrefixLength: 129 }, code: 7, msg: ['suppressMainPrefixLength'] },

  // ---- CIDRs and gateways
  { name: 'serviceCIDRs with a /33', netconf: { serviceCIDRs: ['10.0.0.0/16', '10.0.0.0/33'] }, code: 7, msg: ['serviceCIDRs.1', 'must be an IPv4 or IPv6 CIDR'] },
  { name: 'serviceCIDRs with an IPv6 /129', netconf: { serviceCIDRs: ['fd00:10::/129'] }, code: 7, msg: ['serviceCIDRs.0'] },
  { name: 'excludeCIDRs with a hostname', netconf: { excludeCIDRs: ['168.63.129.16/32', 'metadata.internal'] }, code: 7, msg: ['excludeCIDRs.1'] },
  { name: 'excludeCIDRs with shell metacharacters', netconf: { excludeCIDRs: ['10.0.0.0/8; iptables -F'] }, code: 7, msg: ['excludeCIDRs.0'] },
  { name: 'gateway of the wrong family (IPv6)', netconf: { gateway: 'fe80::1' }, code: 7, msg: ['gateway: must be an IPv4 address'] },
  { name: 'gateway6 of the wrong family (IPv4)', netconf: { gateway6: '10.224.0.1' }, code: 7, msg: ['gateway6: must be an IPv6 address'] },
  { name: 'gateway with a prefix', netconf: { gateway: '10.224.0.1/24' }, code: 7, msg: ['gateway: must be an IPv4 address'] },

  // ---- names with shell metacharacters, or too long
  ...shellNames.map((uplink): Row => ({ name: `uplink ${JSON.stringify(uplink)}`, netconf: { uplink }, code: 7, msg: ['uplink: must be an interface name'] })),
  ...shellNames.map((ifname): Row => ({
    name: `CNI_IFNAME ${JSON.stringify(ifname)}`, env: { CNI_IFNAME: ifname }, code: 4, msg: ['CNI_IFNAME must be an interface name'],
  })),
  {
    name: 'prevResult host interface with backticks',
    netconf: { prevResult: { ...PREV, interfaces: [{ name: 'veth`id`' }, PREV.interfaces[1]] } },
    code: 7, msg: ['prevResult.interfaces.0.name'],
  },
  { name: 'network name with a path', netconf: { name: '../../etc/cron.d' }, code: 7, msg: ['name: must be a CNI network name'] },

  // ---- unknown fields and versions
  { name: 'unknown field', netconf: { nonsense: 1 }, code: 7, msg: ['Unrecognized key: "nonsense"'] },
  { name: 'misspelt field (Uplink)', netconf: { Uplink: 'eth0' }, code: 7, msg: ['Unrecognized key: "Uplink"'] },
  { name: 'unknown mode', netconf: { mode: 'tunnel' }, code: 7, msg: ['mode'] },
  { name: 'unknown backend', netconf: { backend: 'ebpf' }, code: 7, msg: ['backend'] },
  { name: 'unknown rpFilter', netconf: { rpFilter: 'strict' }, code: 7, msg: ['rpFilter'] },
  { name: 'unknown logLevel', netconf: { logLevel: 'loud' }, code: 7, msg: ['logLevel'] },

  // ---- linkGroup: an interface group, 32 bits; 0 is every interface's default group
  { name: 'linkGroup 0 (every interface\'s default group)', netconf: { linkGroup: 0 }, code: 7, msg: ['invalid netconf: linkGroup: Too small', '>=1'] },
  { name: 'negative linkGroup', netconf: { linkGroup: -8 }, code: 7, msg: ['invalid netconf: linkGroup: Too small', '>=1'] },
  { name: 'linkGroup 2^32 (above 32 bits)', netconf: { linkGroup: 2 ** 32 }, code: 7, msg: ['invalid netconf: linkGroup: Too big'] },
  // The kernel's groups are 32-bit, but `ip link set group` (iproute2, which sets it) takes 0 to 2^31-1 only.
  { name: 'linkGroup 2^31 (more than ip link set group takes)', netconf: { linkGroup: 2 ** 31 }, code: 7, msg: ['invalid netconf: linkGroup'] },
  { name: 'linkGroup as a string', netconf: { linkGroup: '8' }, code: 7, msg: ['invalid netconf: linkGroup', 'expected number, received string'] },
  { name: 'fractional linkGroup', netconf: { linkGroup: 8.5 }, code: 7, msg: ['invalid netconf: linkGroup', 'expected int'] },

  // ---- ipv6ProbeRewrite: from a link-local (fe80::/10) source to a routable one, nftables only
  {
    name: 'ipv6ProbeRewrite from a routable address', netconf: { ipv6ProbeRewrite: { ...PROBE, from: '2603:1062:0:1::9abc' } },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite.from: must be a link-local (fe80::/10) address'],
  },
  {
    name: 'ipv6ProbeRewrite from an IPv4 address', netconf: { ipv6ProbeRewrite: { ...PROBE, from: '168.63.129.16' } },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite.from: must be an IPv6 address'],
  },
  {
    name: 'ipv6ProbeRewrite to a link-local address (fe80::2)', netconf: { ipv6ProbeRewrite: { ...PROBE, to: 'fe80::2' } },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite.to: must be a routable IPv6 address'],
  },
  // fe80::/10 runs from fe80:: to febf:ffff:...: the kernel gives febf::1 link-local scope and never forwards it.
  {
    name: 'ipv6ProbeRewrite to a link-local address (febf::1, in fe80::/10)', netconf: { ipv6ProbeRewrite: { ...PROBE, to: 'febf::1' } },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite.to: must be a routable IPv6 address'],
  },
  {
    name: 'ipv6ProbeRewrite to the loopback address', netconf: { ipv6ProbeRewrite: { ...PROBE, to: '::1' } },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite.to: must be a routable IPv6 address'],
  },
  {
    name: 'ipv6ProbeRewrite to a multicast address', netconf: { ipv6ProbeRewrite: { ...PROBE, to: 'ff02::1' } },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite.to: must be a routable IPv6 address'],
  },
  {
    name: 'ipv6ProbeRewrite with an extra key', netconf: { ipv6ProbeRewrite: { ...PROBE, uplink: 'eth0' } },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite: Unrecognized key: "uplink"'],
  },
  { name: 'ipv6ProbeRewrite without to', netconf: { ipv6ProbeRewrite: { from: PROBE.from } }, code: 7, msg: ['invalid netconf: ipv6ProbeRewrite.to', 'expected string'] },
  { name: 'ipv6ProbeRewrite as a string', netconf: { ipv6ProbeRewrite: PROBE.from }, code: 7, msg: ['invalid netconf: ipv6ProbeRewrite', 'expected object'] },
  {
    name: 'ipv6ProbeRewrite with backend iptables', netconf: { backend: 'iptables', ipv6ProbeRewrite: PROBE },
    code: 7, msg: ['invalid netconf: ipv6ProbeRewrite: needs the nftables backend', '"backend"'],
  },
  {
    name: 'ipv6ProbeRewrite with backend "ebpf"', netconf: { backend: 'ebpf', ipv6ProbeRewrite: PROBE },
    code: 7, msg: ['invalid netconf: backend: Invalid option', '"iptables"|"nftables"'],
  },
  { name: 'unsupported cniVersion 0.2.0', netconf: { cniVersion: '0.2.0' }, code: 1, msg: ['cniVersion 0.2.0 is not supported', '0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0'] },
  { name: 'unsupported cniVersion 2.0.0', netconf: { cniVersion: '2.0.0' }, code: 1, msg: ['cniVersion 2.0.0 is not supported'] },
  { name: 'missing cniVersion', netconf: { cniVersion: undefined }, code: 7, msg: ['cniVersion'] },

  // ---- prevResult
  { name: 'missing prevResult on ADD', netconf: { prevResult: undefined }, code: 7, msg: ['prevResult: missing', 'chained plugin'] },
  // CNI_NETNS is the node's own namespace here: its eth0 is a veth whose peer is in the same namespace.
  {
    name: 'prevResult naming no host side (azure-vnet\'s shape), CNI_IFNAME with no peer on the node',
    netconf: { prevResult: { ...PREV, interfaces: [{ name: 'eth0' }], ips: [{ address: '10.244.0.5/24' }] } },
    code: 7, msg: ['prevResult: eth0 in CNI_NETNS is a veth device', 'no host-side interface'],
  },
  {
    name: 'prevResult without a host-side interface (macvlan)',
    netconf: { prevResult: { ...PREV, interfaces: [PREV.interfaces[1]], ips: [{ address: '10.244.0.5/24', interface: 0 }] } },
    code: 7, msg: ['prevResult: eth0 in CNI_NETNS is a veth device', 'no host-side interface'],
  },
  {
    name: 'prevResult without an address for CNI_IFNAME, and no such interface in CNI_NETNS',
    env: { CNI_IFNAME: 'net9' },
    netconf: { prevResult: { ...PREV, interfaces: [PREV.interfaces[0], { name: 'net9', sandbox: NETNS_PATH }], ips: [{ address: '10.244.0.5/24', interface: 0 }] } },
    code: 7, msg: ['prevResult: no interface net9 in CNI_NETNS'],
  },
  {
    name: 'prevResult with two host interfaces and no bridge between them, CNI_IFNAME with no peer on the node',
    netconf: { prevResult: { ...PREV, interfaces: [{ name: 'nobridge0' }, ...PREV.interfaces], ips: [{ address: '10.244.0.5/24', interface: 2 }] } },
    code: 7, msg: ['prevResult: eth0 in CNI_NETNS is a veth device'],
  },
  {
    name: 'CNI_NETNS that does not exist, where the kernel must be asked',
    env: { CNI_NETNS: '/var/run/netns/mr-bad-inputs-no-such-netns' },
    netconf: { prevResult: { ...PREV, interfaces: [{ name: 'eth0' }], ips: [{ address: '10.244.0.5/24' }] } },
    code: 4, msg: ['CNI_NETNS /var/run/netns/mr-bad-inputs-no-such-netns cannot be entered'],
  },
  {
    name: 'prevResult with a malformed address',
    netconf: { prevResult: { ...PREV, ips: [{ address: '10.244.0.500/24', interface: 1 }] } },
    code: 7, msg: ['prevResult.ips.0.address'],
  },
  {
    name: 'an IPv6 pod on a node without an IPv6 default route',
    netconf: { prevResult: { ...PREV, ips: [...PREV.ips, { address: 'fd00:244::5/64', interface: 1 }] } },
    code: 102, msg: ['no IPv6 uplink', 'gateway6'],
  },

  // ---- the CNI environment
  { name: 'empty CNI_COMMAND', env: { CNI_COMMAND: '' }, code: 4, msg: ['CNI_COMMAND must be one of'] },
  { name: 'lower-case CNI_COMMAND', env: { CNI_COMMAND: 'add' }, code: 4, msg: ['CNI_COMMAND must be one of', 'got "add"'] },
  { name: 'unknown CNI_COMMAND', env: { CNI_COMMAND: 'UPGRADE' }, code: 4, msg: ['CNI_COMMAND must be one of'] },
  { name: 'missing CNI_CONTAINERID', env: { CNI_CONTAINERID: undefined }, code: 4, msg: ['CNI_CONTAINERID must be'] },
  { name: 'CNI_CONTAINERID with a path', env: { CNI_CONTAINERID: '../../etc/passwd' }, code: 4, msg: ['CNI_CONTAINERID must be'] },
  { name: 'CNI_CONTAINERID of 129 characters', env: { CNI_CONTAINERID: 'a'.repeat(129) }, code: 4, msg: ['CNI_CONTAINERID must be 1-128'] },
  { name: 'network name of 65 characters', netconf: { name: 'n'.repeat(65) }, code: 7, msg: ['name: Too big', '64'] },
  { name: 'missing CNI_IFNAME', env: { CNI_IFNAME: undefined }, code: 4, msg: ['CNI_IFNAME must be'] },
  { name: 'missing CNI_NETNS on ADD', env: { CNI_NETNS: undefined }, code: 4, msg: ['CNI_NETNS must be the absolute path', 'for ADD'] },
  { name: 'relative CNI_NETNS', env: { CNI_NETNS: 'var/run/netns/x' }, code: 4, msg: ['CNI_NETNS must be the absolute path'] },
  { name: 'malformed CNI_ARGS (no =)', env: { CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME' }, code: 4, msg: ['CNI_ARGS: "K8S_POD_NAME" is not KEY=VALUE'] },
  { name: 'malformed CNI_ARGS (no key)', env: { CNI_ARGS: '=default' }, code: 4, msg: ['CNI_ARGS: "=default" is not KEY=VALUE'] },

  // ---- paths
  { name: 'relative stateDir', netconf: { stateDir: 'var/lib/cni/markroute' }, code: 7, msg: ['stateDir: must be an absolute path'] },
  { name: 'stateDir with shell metacharacters', netconf: { stateDir: '/tmp/$(id)' }, code: 7, msg: ['stateDir'] },
  { name: 'relative logFile', netconf: { logFile: 'markroute.log' }, code: 7, msg: ['logFile: must be an absolute path'], logged: false },

  // ---- DEL, CHECK, VERSION
  { name: 'DEL with malformed JSON', command: 'DEL', stdin: '{"name":', code: 6, msg: ['cannot decode the netconf on stdin'], logged: false },
  { name: 'CHECK without prevResult', command: 'CHECK', netconf: { prevResult: undefined }, code: 7, msg: ['prevResult: CHECK needs the prevResult of ADD'] },
  { name: 'CHECK with an empty CNI_NETNS', command: 'CHECK', env: { CNI_NETNS: '' }, code: 4, msg: ['CNI_NETNS must be the absolute path', 'for CHECK'] },
  { name: 'CHECK of a container never added', command: 'CHECK', code: 3, msg: ['no markroute attachment mrbad_', 'never added'] },
  { name: 'VERSION with malformed JSON', command: 'VERSION', stdin: '{"cniVersion":', code: 6, msg: ['cannot decode the netconf on stdin'], logged: false },

  // ---- found by a probe of hostile and malformed inputs (issue 11): accepted, or answered 100/110
  // GC without the list would remove every attachment of the network (see also the GC test below).
  { name: 'GC without cni.dev/valid-attachments', command: 'GC', netconf: { cniVersion: '1.1.0', prevResult: undefined }, code: 7, msg: ['cni.dev/valid-attachments: missing', 'nothing is removed'] },
  // 0.0.0.0 installed `default dev eth0`, which CHECK never found as planned.
  { name: 'gateway 0.0.0.0', netconf: { gateway: '0.0.0.0' }, code: 7, msg: ['gateway: must be a unicast next hop'] },
  { name: 'gateway6 ::', netconf: { gateway6: '::' }, code: 7, msg: ['gateway6: must be a unicast next hop'] },
  { name: 'gateway 255.255.255.255 (broadcast)', netconf: { gateway: '255.255.255.255' }, code: 7, msg: ['gateway: must be a unicast next hop'] },
  { name: 'gateway 224.0.0.1 (multicast)', netconf: { gateway: '224.0.0.1' }, code: 7, msg: ['gateway: must be a unicast next hop'] },
  { name: 'gateway 127.0.0.1 (loopback)', netconf: { gateway: '127.0.0.1' }, code: 7, msg: ['gateway: must be a unicast next hop'] },
  {
    name: 'marks.vpn.gateway 0.0.0.0 (annotated)', netconf: { marks: { vpn: { mark: 16, table: 123, gateway: '0.0.0.0' } } },
    code: 7, msg: ['marks.vpn.gateway: must be a unicast next hop'],
  },
  // IPv6 zones reached the tools as fe80::NaN (100), or were dropped from serviceCIDRs.
  { name: 'gateway6 with a zone (fe80::1%eth0)', netconf: { uplink: 'eth0', gateway6: 'fe80::1%eth0' }, code: 7, msg: ['gateway6: must not carry an IPv6 zone', 'uplink'] },
  { name: 'gateway6 with a zone (fe80::%eth0)', netconf: { gateway6: 'fe80::%eth0' }, code: 7, msg: ['gateway6: must not carry an IPv6 zone'] },
  {
    name: 'prevResult address with a zone', netconf: { prevResult: { ...PREV, ips: [...PREV.ips, { address: 'fe80::5%eth0/64', interface: 1 }] } },
    code: 7, msg: ['prevResult.ips.1.address: must not carry an IPv6 zone'],
  },
  { name: 'ipv6ProbeRewrite.from with a zone', netconf: { ipv6ProbeRewrite: { ...PROBE, from: `${PROBE.from}%eth0` } }, code: 7, msg: ['ipv6ProbeRewrite.from: must not carry an IPv6 zone'] },
  { name: 'ipv6ProbeRewrite.to with a zone', netconf: { ipv6ProbeRewrite: { ...PROBE, to: `${PROBE.to}%eth0` } }, code: 7, msg: ['ipv6ProbeRewrite.to: must not carry an IPv6 zone'] },
  { name: 'serviceCIDRs with a zone', netconf: { serviceCIDRs: ['10.96.0.0/12', 'fd00:10::%eth0/108'] }, code: 7, msg: ['serviceCIDRs.1: must not carry an IPv6 zone'] },
  { name: 'excludeCIDRs with a zone', netconf: { excludeCIDRs: ['fe80::1%eth0'] }, code: 7, msg: ['excludeCIDRs.0: must not carry an IPv6 zone'] },
  // Names the kernel keeps for its sysctl defaults: `ip` failed (100), after rp_filter of "all" was read.
  { name: 'uplink "all"', netconf: { uplink: 'all', gateway: '10.224.0.1' }, code: 7, msg: ['uplink: must name an interface', '"all" and "default"'] },
  { name: 'uplink "default"', netconf: { uplink: 'default', gateway: '10.224.0.1' }, code: 7, msg: ['uplink: must name an interface'] },
  { name: 'marks.vpn.uplink "all"', netconf: { marks: { vpn: { mark: 16, table: 123, uplink: 'all' } } }, code: 7, msg: ['marks.vpn.uplink: must name an interface'] },
  // An uplink that does not exist: ADD 102 naming it (rp_filter found missing first, or the route's
  // "Cannot find device" mapped), and STATUS says the same before any pod is added.
  { name: 'uplink that does not exist', netconf: { uplink: 'nosuch0', gateway: '10.224.0.1' }, code: 102, msg: ['uplink nosuch0 does not exist'] },
  {
    name: 'uplink that does not exist, rp_filter left alone', netconf: { uplink: 'nosuch0', gateway: '10.224.0.1', rpFilter: 'unchanged' },
    code: 102, msg: ['uplink nosuch0 does not exist', '"uplink"'],
  },
  {
    name: 'STATUS with an uplink that does not exist', command: 'STATUS', netconf: { cniVersion: '1.1.0', uplink: 'nosuch0', gateway: '10.224.0.1', prevResult: undefined },
    code: 50, msg: ['uplink: uplink nosuch0 does not exist on this node', 'code 102'],
  },
  // A gateway the uplink cannot reach: refused by the kernel after the marking objects went in (rolled back).
  { name: 'gateway the uplink cannot reach', netconf: { uplink: 'eth0', gateway: '192.0.2.1' }, code: 7, msg: ['invalid netconf: gateway: the kernel refuses 192.0.2.1', 'Nexthop has invalid gateway', '"uplink"'] },
  // An annotation value that is not a string crashed (110); a marks key "__proto__" vanished.
  {
    name: 'pod annotation that is not a string (an object)',
    netconf: { marks: { vpn: { mark: 16 } }, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'cni.fwmark.net/name': { toString: 1 } } } },
    code: 7, msg: ['runtimeConfig["io.kubernetes.cri.pod-annotations"]["cni.fwmark.net/name"]: the pod annotation must be a string', 'got an object'],
  },
  {
    name: 'pod annotation that is not a string (a number)',
    netconf: { marks: { vpn: { mark: 16 } }, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'cni.fwmark.net/name': 16 } } },
    code: 7, msg: ['["cni.fwmark.net/name"]: the pod annotation must be a string', 'got a number'],
  },
  {
    name: 'pod annotations that are not an object',
    netconf: { marks: { vpn: { mark: 16 } }, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': ['cni.fwmark.net/name=vpn'] } },
    code: 7, msg: ['runtimeConfig["io.kubernetes.cri.pod-annotations"]: must be an object of pod annotations', 'got an array'],
  },
  // ---- namespaces (issue 16): names the runtime compares with K8S_POD_NAMESPACE, never passed to a tool
  { name: 'marks.vpn.namespaces with shell metacharacters', netconf: { marks: { vpn: { mark: 16, namespaces: ['team', '$(id)'] } } }, code: 7, msg: ['marks.vpn.namespaces.1: must be a Kubernetes namespace name'] },
  { name: 'excludeNamespaces with a path', netconf: { excludeNamespaces: ['../kube-system'] }, code: 7, msg: ['excludeNamespaces.0: must be a Kubernetes namespace name'] },
  {
    name: 'a namespace listed by two entries of marks',
    netconf: { marks: { a: { mark: 16, namespaces: ['team'] }, b: { mark: 32, namespaces: ['team'] } } },
    code: 7, msg: ['marks.b.namespaces.0: namespace team is also listed by marks.a.namespaces.0'],
  },
  { name: 'excludeNamespaces in annotated mode', netconf: { marks: { vpn: { mark: 16 } }, excludeNamespaces: ['kube-system'] }, code: 7, msg: ['excludeNamespaces: belongs to mode "transparent-tunnel"'] },
  {
    name: 'marks key "__proto__"',
    stdin: (v) => JSON.stringify({ ...v, marks: { vpn: { mark: 16 } } }).replace('"marks":{', '"marks":{"__proto__":{"mark":32,"table":123},'),
    code: 7, msg: ['invalid netconf: marks.__proto__: names must be'],
  },
];

/** The table for one backend: the rows above, and those whose answer depends on the backend. */
const rowsFor = (backend: Backend): Row[] => [
  ...rows,
  // The node namespace has no IPv6 default route: nftables plans the rewrite and finds no IPv6
  // uplink for it; iptables cannot rewrite at all.
  backend === 'nftables'
    ? { name: 'ipv6ProbeRewrite on a node without an IPv6 default route', netconf: { ipv6ProbeRewrite: PROBE }, code: 102, msg: ['no IPv6 uplink', 'gateway6'] }
    : { name: 'ipv6ProbeRewrite on a node without an IPv6 default route', netconf: { ipv6ProbeRewrite: PROBE }, code: 7, msg: ['invalid netconf: ipv6ProbeRewrite: needs the nftables backend'] },
];

// One namespace for the whole file: the table and the cases after it.
beforeAll(() => {
  bin = findPlugin('markroute', cniPath)!;
  expect(bin && existsSync(bin), `markroute not found in ${cniPath.join(':')}: run npm run build`).toBeTruthy();
  sweepStaleLabs();
  dir = mkdtempSync(join(tmpdir(), `${NS}-`));
  createNodeNamespace(NS);
  nsExec(NS, ['ip', 'link', 'add', HOST_VETH, 'type', 'veth', 'peer', 'name', `${HOST_VETH}p`]);
});

afterAll(() => {
  removeNamespace(NS);
  if (dir) rmSync(dir, { recursive: true, force: true });
  expect(run(['ip', 'netns', 'list']).stdout).not.toContain(NS);
});

describe.each(BACKENDS)('bad inputs to dist/markroute, backend %s', (backend) => {
  let before: Record<string, string>;
  const table = rowsFor(backend);

  test('a valid ADD installs and its DEL removes everything', () => {
    const rowDir = join(dir, `valid-${backend}`);
    const conf = baseNetconf(rowDir, backend);
    const cid = newContainerId();
    const pristine = snapshot(NS);

    const add = plugin(baseEnv('ADD', cid), JSON.stringify(conf));
    expect(add.stderr).toBe('');
    expect(add.status, add.stdout).toBe(0);
    expect(JSON.parse(add.stdout)).toEqual(PREV);
    const mid = kernelState();
    const s = snapshot(NS);
    if (backend === 'iptables') {
      expect(mid['ipset list']).toMatch(new RegExp(`^10\\.244\\.0\\.5,${HOST_VETH} comment "default/bad-inputs ${cid.slice(0, 12)} eth0"$`, 'm'));
      expect(markrouteTables(s)).toEqual([]);
    } else {
      // one table of our own, the pod as one element of its IPv4 set; no ipset, no iptables chain
      expect(markrouteTables(s)).toEqual([nftTableName('mrbad')]);
      expect(nftPodElements(s)).toEqual([
        { table: nftTableName('mrbad'), set: 'pods4', address: '10.244.0.5', iface: HOST_VETH, comment: `default/bad-inputs ${cid.slice(0, 12)} eth0` },
      ]);
      expect(s.ipset).toBe(pristine.ipset);
      expect(s.iptables).toEqual(pristine.iptables);
    }
    expect(mid['ip -4 -j rule']).toContain('"priority":32765,"src":"all","fwmark":"0x10","fwmask":"0x10","table":"100"');
    expect(JSON.parse(nsExec(NS, ['ip', '-j', 'route', 'show', 'table', '100']).stdout)).toEqual([
      { dst: 'default', gateway: '10.224.0.1', dev: 'eth0', flags: [] },
    ]);
    expect(nsExec(NS, ['sysctl', '-n', 'net.ipv4.conf.eth0.rp_filter']).stdout.trim()).toBe('2');
    expect(records(join(rowDir, 'state'))).toHaveLength(1);

    const del = plugin(baseEnv('DEL', cid), JSON.stringify(conf));
    expect(del.stderr).toBe('');
    expect(del.status, del.stdout).toBe(0);
    expect(del.stdout).toBe('');
    expect(snapshot(NS)).toEqual(pristine);
    expect(records(join(rowDir, 'state'))).toEqual([]);
    before = kernelState();
  });

  test(`the table has at least 30 rows (${table.length})`, () => {
    expect(table.length).toBeGreaterThanOrEqual(30);
    expect(new Set(table.map((r) => r.name)).size).toBe(table.length);
  });

  test.each(table.map((r) => [r.name, r] as const))('%s', (_name, row) => {
    const rowDir = join(dir, `row${++rowSeq}`);
    mkdirSync(rowDir, { recursive: true });
    const valid = baseNetconf(rowDir, backend);
    const conf = merge(valid, row.netconf ?? {});
    const stdin = row.stdin === undefined ? JSON.stringify(conf) : typeof row.stdin === 'string' ? row.stdin : row.stdin(valid);
    const env = merge(baseEnv(row.command ?? 'ADD', newContainerId()), row.env ?? {}) as Record<string, string | undefined>;

    const r = plugin(env, stdin);

    expect(r.status, `stdout: ${r.stdout}`).toBe(1);
    const err = parseError(r);
    expect({ code: err.code, msg: err.msg }).toEqual({ code: row.code, msg: expect.any(String) });
    for (const part of row.msg) expect(err.msg).toContain(part);
    // A bad input is refused by validation, not by a crash or a kernel tool.
    expect(err.msg).not.toMatch(/internal error|\n\s+at |TypeError|ReferenceError/);
    if (row.stdin === undefined && row.code !== 4 && conf.cniVersion === '1.0.0') expect(err.cniVersion).toBe('1.0.0');
    expect(records(join(rowDir, 'state'))).toEqual([]);
    // Logged where the netconf asks; one that cannot be decoded, or names no valid place, on stderr.
    const logged = row.logged ?? true ? readFileSync(join(rowDir, 'markroute.log'), 'utf8') : r.stderr;
    if (row.logged ?? true) expect(r.stderr).toBe('');
    expect(JSON.parse(logged.trim().split('\n').at(-1)!)).toMatchObject({ level: 50, outcome: 'error', code: row.code, msg: err.msg });
  });

  // libcni stops a DEL chain at the first error, so a DEL markroute refused would keep the main
  // plugin's IPAM from releasing the pod's address (podman re-reads the conflist for its DEL).
  test('DEL never blocks the chain\'s cleanup: a netconf that no longer validates, malformed CNI_ARGS, names no ADD accepted: 0, and the record is removed', () => {
    const rowDir = join(dir, `del-lenient-${backend}`);
    const stateDir = join(rowDir, 'state');
    const valid = baseNetconf(rowDir, backend);
    // after one valid ADD and DEL, as the table's `before` (iptables-nft keeps the mangle table it made)
    const warmUp = newContainerId();
    for (const command of ['ADD', 'DEL']) expect(plugin(baseEnv(command, warmUp), JSON.stringify(valid)).status).toBe(0);
    const baseline = kernelState();
    const cases: [string, Record<string, unknown>, Record<string, string | undefined>][] = [
      ['a typo in mark', { mark: '0xZZ' }, {}],
      ['a zero mark', { mark: 0 }, {}],
      ['an unsupported cniVersion', { cniVersion: '0.1.0', prevResult: undefined }, {}],
      ['an unknown field', { nosuchfield: 1 }, {}],
      ['malformed CNI_ARGS', {}, { CNI_ARGS: 'K8S_POD_NAME' }],
    ];
    for (const [what, netconf, env] of cases) {
      const cid = newContainerId();
      const add = plugin(baseEnv('ADD', cid), JSON.stringify(valid));
      expect(add.status, `${what}: ADD ${add.stdout}`).toBe(0);
      expect(records(stateDir), what).toHaveLength(1);
      const del = plugin(merge(baseEnv('DEL', cid), env) as Record<string, string | undefined>, JSON.stringify(merge(valid, netconf)));
      expect([del.status, del.stdout, del.stderr], what).toEqual([0, '', '']);
      expect(records(stateDir), what).toEqual([]);
      const line = JSON.parse(readFileSync(join(rowDir, 'markroute.log'), 'utf8').trim().split('\n').at(-1)!);
      expect(line, what).toMatchObject({ command: 'DEL', outcome: 'ok', removed: expect.arrayContaining([expect.stringMatching(/^(element|nftElement)\//)]) });
      const after = kernelState();
      for (const key of Object.keys(baseline)) expect(after[key], `${what}: ${key}`).toBe(baseline[key]);
    }
    // Nothing can be recorded under what ADD never accepted: nothing to remove, and success.
    for (const [what, env, netconf] of [
      ['CNI_IFNAME "$(id)"', { CNI_IFNAME: '$(id)', CNI_NETNS: '' }, {}],
      ['a CNI_CONTAINERID with a path', { CNI_CONTAINERID: 'x/../../y' }, {}],
      ['a network name with a path', {}, { name: '../../etc' }],
      ['a stateDir with ..', {}, { stateDir: '/var/lib/../../etc' }],
    ] as [string, Record<string, string>, Record<string, unknown>][]) {
      const del = plugin(merge(baseEnv('DEL', newContainerId()), env) as Record<string, string | undefined>, JSON.stringify(merge(valid, netconf)));
      expect([del.status, del.stdout, del.stderr], what).toEqual([0, '', '']);
      expect(JSON.parse(readFileSync(join(rowDir, 'markroute.log'), 'utf8').trim().split('\n').at(-1)!).msg, what).toMatch(/^DEL ok: nothing to remove: /);
    }
    expect(kernelState()).toEqual(baseline);
  });

  test('after the whole table the namespace is byte-for-byte as before (iptables, ipset, nft ruleset, rules, routes, rp_filter)', () => {
    expect(before, 'the valid ADD+DEL must pass first').toBeDefined();
    expect(Object.keys(before)).toContain('nft list ruleset');
    const after = kernelState();
    for (const key of Object.keys(before)) expect(after[key], key).toBe(before[key]);
  });

  test('without CNI_COMMAND the binary is the CLI: usage on stderr, nothing on stdout, nothing changed', () => {
    const { CNI_COMMAND: _c, ...env } = baseEnv('ADD', newContainerId());
    const r = plugin(env, JSON.stringify(baseNetconf(join(dir, `cli-${backend}`), backend)));
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: markroute /);
    expect(kernelState()).toEqual(before);
  });

  test('DEL with an empty CNI_NETNS and no prevResult of a container never added succeeds silently', () => {
    const rowDir = join(dir, `del-never-added-${backend}`);
    const r = plugin({ ...baseEnv('DEL', newContainerId()), CNI_NETNS: '' }, JSON.stringify(merge(baseNetconf(rowDir, backend), { prevResult: undefined })));
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
    expect(records(join(rowDir, 'state'))).toEqual([]);
    expect(kernelState()).toEqual(before);
  });

  test('DEL repeated, and DEL with no CNI_ARGS at all, of a container never added succeed silently', () => {
    const rowDir = join(dir, `del-twice-${backend}`);
    const cid = newContainerId();
    for (const env of [baseEnv('DEL', cid), baseEnv('DEL', cid), { ...baseEnv('DEL', cid), CNI_ARGS: undefined }]) {
      const r = plugin(env, JSON.stringify(baseNetconf(rowDir, backend)));
      expect([r.status, r.stdout, r.stderr]).toEqual([0, '', '']);
    }
    expect(kernelState()).toEqual(before);
  });
});

// Inputs that pass validation but that the node cannot carry out. These run after the table and
// compare normalised snapshots (so they also hold when run alone, e.g. with -t). They may leave
// the namespace changed when they fail, so each has its own network name and policy table: one's
// leftovers do not disturb another's before/after comparison (the nftables runs add 10 to the
// table and "-nft" to the name).
describe.each(BACKENDS)('inputs validation lets through, backend %s', (backend) => {
  const sfx = backend === 'iptables' ? '' : '-nft';
  const tbl = (t: number) => (backend === 'iptables' ? t : t + 10);
  const cleanRun = (stateDir: string, env: Record<string, string | undefined>, conf: Record<string, unknown>) => {
    const r = plugin(env, JSON.stringify(conf));
    return { ...r, records: records(stateDir) };
  };

  // The longest names validation accepts (network 64, container ID 128, interface 15) must still
  // fit the state record's file name (NAME_MAX 255, with ".json.<pid>.tmp" while written). Before
  // 5762340 a 250-character ID passed validation and ADD failed with ENAMETOOLONG (code 101),
  // leaving a dirty index that made every later DEL fail.
  test('the longest names validation accepts can be added and deleted', () => {
    const rowDir = join(dir, `long-names${sfx}`);
    const stateDir = join(rowDir, 'state');
    const ifname = 'e23456789abcdef';
    const prevResult = { ...PREV, interfaces: [PREV.interfaces[0], { ...PREV.interfaces[1], name: ifname }] };
    const conf = merge(baseNetconf(rowDir, backend), { name: 'n'.repeat(64), prevResult });
    const env = (command: string) => ({ ...baseEnv(command, 'c'.repeat(128)), CNI_IFNAME: ifname });
    const before = snapshot(NS);
    const add = cleanRun(stateDir, env('ADD'), conf);
    expect(add.stderr).toBe('');
    expect(add.status, add.stdout).toBe(0);
    expect(JSON.parse(add.stdout)).toEqual(prevResult);
    expect(add.records).toEqual([`${'n'.repeat(64)}_${'c'.repeat(128)}_${ifname}.json`]);
    const del = cleanRun(stateDir, env('DEL'), conf);
    expect([del.status, del.stdout, del.stderr]).toEqual([0, '', '']);
    expect(del.records).toEqual([]);
    expect(snapshot(NS)).toEqual(before);
  });

  // CNI_ARGS is free text; only Kubernetes-valid pod names may reach the element's comment (which
  // is quoted inside an `ipset restore` or `nft -f` batch).
  test('pod names in CNI_ARGS that are not Kubernetes names stay out of the element comment', () => {
    const rowDir = join(dir, `args-injection${sfx}`);
    const stateDir = join(rowDir, 'state');
    const conf = merge(baseNetconf(rowDir, backend), { name: `mrargs${sfx}`, table: tbl(104) });
    const cid = newContainerId();
    const env = (command: string) => ({
      ...baseEnv(command, cid),
      CNI_ARGS: 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"\nflush\ncreate x hash:ip comment "$(id)`id`;IgnoreUnknown=1',
    });
    const before = snapshot(NS);
    const add = cleanRun(stateDir, env('ADD'), conf);
    expect([add.status, add.stderr]).toEqual([0, '']);
    if (backend === 'iptables') {
      const members = nsExec(NS, ['ipset', 'save']).stdout.split('\n').filter((l) => l.startsWith('add ') || l.startsWith('create '));
      expect(members.filter((l) => l.startsWith('add '))).toEqual([expect.stringMatching(new RegExp(`^add mr4-[0-9a-f]{8} 10\\.244\\.0\\.5,${HOST_VETH} comment "${cid.slice(0, 12)} eth0"$`))]);
      expect(members.filter((l) => l.startsWith('create '))).toHaveLength(1);
    } else {
      const s = snapshot(NS);
      expect(markrouteTables(s)).toEqual([nftTableName(`mrargs${sfx}`)]);
      expect(nftPodElements(s)).toEqual([
        { table: nftTableName(`mrargs${sfx}`), set: 'pods4', address: '10.244.0.5', iface: HOST_VETH, comment: `${cid.slice(0, 12)} eth0` },
      ]);
      // nothing else got into the ruleset: our table has its four sets and one chain, no more
      const ours = (s.nft as any[]).filter((i) => (Object.values(i)[0] as any).table === nftTableName(`mrargs${sfx}`));
      expect(ours.filter((i) => i.set).map((i) => i.set.name).sort()).toEqual(['exempt4', 'exempt6', 'pods4', 'pods6']);
      expect(ours.filter((i) => i.chain).map((i) => i.chain.name)).toEqual(['prerouting']);
    }
    const del = cleanRun(stateDir, env('DEL'), conf);
    expect([del.status, del.stdout, del.stderr]).toEqual([0, '', '']);
    expect(snapshot(NS)).toEqual(before);
  });

  // An ADD the kernel refuses half-way (here `ip route replace default via 192.0.2.1` fails after
  // the ipset and the mangle chain are installed) must not make the runtime's DEL fail on every
  // retry (libcni would then never release the pod's IP): the ADD rolls back, and DEL succeeds.
  // The refusal names the netconf field (7), the kernel's words and the route in details.
  test('after an ADD the kernel refused (unreachable gateway), the runtime\'s DEL succeeds and cleans up', () => {
    const rowDir = join(dir, `bad-gateway${sfx}`);
    const stateDir = join(rowDir, 'state');
    const conf = merge(baseNetconf(rowDir, backend), { name: `mrgateway${sfx}`, table: tbl(101), uplink: 'eth0', gateway: '192.0.2.1' });
    const cid = newContainerId();
    const before = snapshot(NS);
    const add = cleanRun(stateDir, baseEnv('ADD', cid), conf);
    expect(add.status).toBe(1);
    const err = parseError(add);
    expect(err.code, err.msg).toBe(7);
    expect(err.msg).toMatch(new RegExp(`^invalid netconf: gateway: the kernel refuses 192\\.0\\.2\\.1 as the next hop on uplink eth0 for table ${tbl(101)} `));
    expect(err.details).toContain(`route replace default via 192.0.2.1 dev eth0 table ${tbl(101)}: Error: Nexthop has invalid gateway.`);
    expect(add.records).toEqual([]);
    const del = cleanRun(stateDir, baseEnv('DEL', cid), merge(conf, { prevResult: undefined }));
    expect(del.stdout).toBe('');
    expect(del.status).toBe(0);
    expect(del.records).toEqual([]);
    expect(snapshot(NS)).toEqual(before);
  });
});

// GC without `cni.dev/valid-attachments` (nor the older `cni.dev/attachments`) removed every
// attachment of the network: it is refused and removes nothing; an empty list still means "none valid".
describe.each(BACKENDS)('GC without the list of valid attachments, backend %s', (backend) => {
  test('is code 7 and leaves the attachment; with an empty list it goes', () => {
    const rowDir = join(dir, `gc-${backend}`);
    const stateDir = join(rowDir, 'state');
    const conf = merge(baseNetconf(rowDir, backend), { cniVersion: '1.1.0', name: `mrgc-${backend}`, table: backend === 'iptables' ? 108 : 118 });
    const cid = newContainerId();
    const pristine = snapshot(NS);
    const add = plugin(baseEnv('ADD', cid), JSON.stringify(conf));
    expect([add.status, add.stderr], add.stdout).toEqual([0, '']);
    const attached = snapshot(NS);
    const recorded = records(stateDir);
    expect(recorded).toHaveLength(1);
    const gcConf = merge(conf, { prevResult: undefined });
    const refused = plugin({ ...baseEnv('GC', ''), CNI_CONTAINERID: undefined, CNI_IFNAME: undefined, CNI_NETNS: undefined }, JSON.stringify(gcConf));
    expect(refused.status).toBe(1);
    const err = parseError(refused);
    expect([err.code, err.cniVersion]).toEqual([7, '1.1.0']);
    expect(err.msg).toMatch(/^invalid netconf: cni\.dev\/valid-attachments: missing; .* nothing is removed/);
    expect(refused.stderr).toBe('');
    expect(records(stateDir)).toEqual(recorded);
    expect(snapshot(NS)).toEqual(attached);
    const gc = plugin({ ...baseEnv('GC', ''), CNI_CONTAINERID: undefined, CNI_IFNAME: undefined, CNI_NETNS: undefined },
      JSON.stringify({ ...gcConf, 'cni.dev/valid-attachments': [] }));
    expect([gc.status, gc.stdout, gc.stderr]).toEqual([0, '', '']);
    expect(records(stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(pristine);
  });
});

// ipv6ProbeRewrite's `from` is a link-local source: all of fe80::/10 (fe80:: to febf:ffff:...), as
// the kernel scopes it and as the refusal message itself says, not only addresses spelt "fe80:".
describe('ipv6ProbeRewrite sources across fe80::/10 (nftables)', () => {
  test.each(['fe80::1234:5678:9abc', 'FE80::1', 'fe90::1', 'febf:ffff::1'])('from %s is accepted and rewritten', (from) => {
    const rowDir = join(dir, `probe-from-${from.replace(/:/g, '_')}`);
    const stateDir = join(rowDir, 'state');
    // The node has no IPv6 default route: name the uplink and its IPv6 gateway.
    const conf = merge(baseNetconf(rowDir, 'nftables'), {
      name: 'mrprobe', table: 105, uplink: 'eth0', gateway6: 'fe80::1', ipv6ProbeRewrite: { from, to: PROBE.to },
    });
    const cid = newContainerId();
    const before = snapshot(NS);
    const add = plugin(baseEnv('ADD', cid), JSON.stringify(conf));
    expect([add.status, add.stderr], add.stdout).toEqual([0, '']);
    const rules = nsExec(NS, ['nft', 'list', 'chain', 'inet', nftTableName('mrprobe'), 'probe-in']).stdout;
    expect(rules).toContain(`iifname "eth0" ip6 saddr ${from.toLowerCase()} ip6 saddr set ${PROBE.to}`);
    const del = plugin(baseEnv('DEL', cid), JSON.stringify(conf));
    expect([del.status, del.stdout, del.stderr]).toEqual([0, '', '']);
    expect(records(stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(before);
  });
});

// linkGroup is set on the host interface prevResult names: one that does not exist makes the
// kernel refuse the ADD after the marking objects went in; the ADD rolls back, DEL succeeds.
describe.each(BACKENDS)('linkGroup on a host interface that does not exist, backend %s', (backend) => {
  test('ADD is refused by the kernel (code 100) and changes nothing; DEL succeeds', () => {
    const rowDir = join(dir, `group-gone-${backend}`);
    const stateDir = join(rowDir, 'state');
    const prevResult = { ...PREV, interfaces: [{ name: 'vethgone0' }, PREV.interfaces[1]] };
    const conf = merge(baseNetconf(rowDir, backend), { name: `mrgroup-${backend}`, table: backend === 'iptables' ? 106 : 116, linkGroup: 8, prevResult });
    const cid = newContainerId();
    const before = snapshot(NS);
    const add = plugin(baseEnv('ADD', cid), JSON.stringify(conf));
    expect(add.status).toBe(1);
    const err = parseError(add);
    expect(err.code, err.msg).toBe(100);
    expect(err.details).toContain('link set dev vethgone0 group 8');
    expect(add.stderr).toBe('');
    expect(records(stateDir)).toEqual([]);
    expect(snapshot(NS)).toEqual(before);
    const del = plugin({ ...baseEnv('DEL', cid), CNI_NETNS: '' }, JSON.stringify(merge(conf, { prevResult: undefined })));
    expect([del.status, del.stdout, del.stderr]).toEqual([0, '', '']);
    expect(snapshot(NS)).toEqual(before);
  });
});

// The largest group `ip link set group` takes (iproute2 reads it as a signed 32-bit number).
describe.each(BACKENDS)('linkGroup 2^31-1, backend %s', (backend) => {
  test('is set on the host interface and matched; DEL puts the default group back', () => {
    const GROUP = 2 ** 31 - 1;
    const rowDir = join(dir, `group-max-${backend}`);
    const conf = merge(baseNetconf(rowDir, backend), { name: `mrgroupmax-${backend}`, table: backend === 'iptables' ? 107 : 117, linkGroup: GROUP });
    const cid = newContainerId();
    const before = snapshot(NS);
    const group = () => (JSON.parse(nsExec(NS, ['ip', '-j', 'link', 'show', 'dev', HOST_VETH]).stdout) as { group: string }[])[0]!.group;
    const add = plugin(baseEnv('ADD', cid), JSON.stringify(conf));
    expect([add.status, add.stderr], add.stdout).toEqual([0, '']);
    expect(group()).toBe(String(GROUP));
    if (backend === 'nftables') {
      expect(nsExec(NS, ['nft', 'list', 'table', 'inet', nftTableName(`mrgroupmax-${backend}`)]).stdout).toContain(`iifgroup ${GROUP} meta mark set`);
    } else {
      expect(nsExec(NS, ['ipset', 'list']).stdout).toContain(`10.244.0.5,${HOST_VETH} comment`);
    }
    const del = plugin(baseEnv('DEL', cid), JSON.stringify(conf));
    expect([del.status, del.stdout, del.stderr]).toEqual([0, '', '']);
    expect(group()).toBe('default');
    expect(snapshot(NS)).toEqual(before);
  });
});

// Deeply nested JSON parses (V8's JSON.parse is iterative) but cannot be printed back
// (JSON.stringify recurses): a prevResult carrying such a value must be refused before anything
// changes, not fail when the result is printed.
describe('a deeply nested value inside prevResult', () => {
  // Were it accepted, printing the result would throw RangeError after the kernel changed.
  test('is refused before anything changes', () => {
    const rowDir = join(dir, 'deep');
    const depth = 200_000;
    // Refused while parsing, before any backend is chosen: one backend is enough.
    const conf = merge(baseNetconf(rowDir, 'iptables'), { name: 'mrdeep', table: 102 });
    const text = JSON.stringify(conf).replace('"dns":{}', `"dns":{"options":${'['.repeat(depth)}${']'.repeat(depth)}}`);
    expect(text.length).toBeLessThan(BIG);
    const before = snapshot(NS);
    const r = plugin(baseEnv('ADD', newContainerId()), text);
    expect(r.status).toBe(1);
    const err = parseError(r);
    expect(err.code, err.msg.slice(0, 2000)).not.toBe(110);
    expect([6, 7]).toContain(err.code);
    expect(records(join(rowDir, 'state'))).toEqual([]);
    expect(snapshot(NS)).toEqual(before);
  });
});

// The state directory is an input too: what a killed ADD leaves there must not wedge DEL.
describe.each(BACKENDS)('state left by an ADD killed before it changed the kernel, backend %s', (backend) => {
  const sfx = backend === 'iptables' ? '' : '-nft';
  // An ADD SIGKILLed (libcni kills plugins when the runtime's context is cancelled) after it wrote
  // the dirty index but before its record and the kernel change leaves an index listing objects
  // that were never installed, a set among them. The next operation reconciles and removes them:
  // removing what is not there must succeed.
  test('the DEL that follows succeeds, and leaves nothing', () => {
    const rowDir = join(dir, `killed-add${sfx}`);
    const stateDir = join(rowDir, 'state');
    const conf = merge(baseNetconf(rowDir, backend), { name: `mrkilled${sfx}`, table: backend === 'iptables' ? 103 : 113 });
    const cid = newContainerId();
    const before = snapshot(NS);
    // A real ADD gives the index exactly as Session.attach writes it before touching the kernel ...
    const add = plugin(baseEnv('ADD', cid), JSON.stringify(conf));
    expect([add.status, add.stderr]).toEqual([0, '']);
    const index = JSON.parse(readFileSync(join(stateDir, 'index.json'), 'utf8'));
    expect(Object.keys(index.refs).filter((k) => k.startsWith(backend === 'iptables' ? 'element/' : 'nftElement/'))).toHaveLength(1);
    // the index lists the shared objects of this backend only: a set and a chain, or a table
    const shared = Object.keys(index.objects).map((k) => k.split('/')[0]).filter((k) => ['ipset', 'markChain', 'nftTable'].includes(k!)).sort();
    expect(shared).toEqual(backend === 'iptables' ? ['ipset', 'markChain'] : ['nftTable']);
    const del = plugin(baseEnv('DEL', cid), JSON.stringify(conf));
    expect([del.status, del.stdout]).toEqual([0, '']);
    expect(snapshot(NS)).toEqual(before);
    // ... then killed: dirty index, no record yet, kernel untouched.
    writeFileSync(join(stateDir, 'index.json'), JSON.stringify({ ...index, dirty: true }));
    expect(records(stateDir)).toEqual([]);

    const retry = plugin({ ...baseEnv('DEL', cid), CNI_NETNS: '' }, JSON.stringify(merge(conf, { prevResult: undefined })));
    expect(retry.stdout).toBe('');
    expect(retry.status).toBe(0);
    expect(snapshot(NS)).toEqual(before);
    expect(status(stateDir)).toMatchObject({ indexNeedsRecovery: false, attachments: [], objects: [] });
    // the counts themselves: status lists no key that neither the index's objects nor a record holds
    expect(JSON.parse(readFileSync(join(stateDir, 'index.json'), 'utf8'))).toMatchObject({ dirty: false, objects: {}, refs: {} });
  });
});

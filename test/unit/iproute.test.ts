// readRouting: a family's ip rules and its policy tables' routes from one `ip -batch`, each output
// line matched to its command; a batch that fails or prints a line short is read command by command.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderRouteBatch, readRouting, routeBatchError, type RouteBatch } from '../../src/backend/iproute.ts';
import { applyChange } from '../../src/backend/apply.ts';
import { CniError } from '../../src/cni/errors.ts';
import { useToolRunner, type ToolOutput, type ToolRunner } from '../../src/kernel/exec.ts';

const calls: { argv: string[]; input?: string }[] = [];
let answers: ToolOutput[] = [];
const fake: ToolRunner = {
  run(argv, input) {
    calls.push({ argv: [...argv], input });
    const answer = answers.shift();
    if (!answer) throw new Error(`unexpected tool run: ${argv.join(' ')}`);
    return answer;
  },
};
let previous: ToolRunner;
beforeEach(() => {
  previous = useToolRunner(fake);
});
afterEach(() => {
  useToolRunner(previous);
});

const ok = (stdout: string): ToolOutput => ({ status: 0, stdout, stderr: '' });
const RULES = '[{"priority":0,"src":"all","table":"local"},{"priority":32765,"src":"all","fwmark":"0x10","fwmask":"0x10","table":"100"}]';
const ROUTE_100 = '[{"dst":"default","gateway":"10.224.0.1","dev":"eth0"}]';

beforeEach(() => {
  calls.length = 0;
  answers = [];
});

describe('readRouting', () => {
  it('reads rules and every table in one batch, in the family asked, each line to its command', () => {
    answers = [ok(`${RULES}\n${ROUTE_100}\n[]\n`)];
    const r = readRouting(6, [100, 200]);
    expect(calls).toEqual([{ argv: ['ip', '-j', '-6', '-force', '-batch', '-'], input: 'rule show\nroute show table 100\nroute show table 200\n' }]);
    expect(r.rules.map((x) => x.priority)).toEqual([0, 32765]);
    expect(r.routes.get(100)).toEqual([{ dst: 'default', gateway: '10.224.0.1', dev: 'eth0' }]);
    expect(r.routes.get(200)).toEqual([]);
  });

  it('with no table, reads the rules alone', () => {
    answers = [ok(`${RULES}\n`)];
    expect(readRouting(4, []).routes.size).toBe(0);
    expect(calls[0]!.input).toBe('rule show\n');
  });

  it('a batch that fails (a table the kernel never had) is read command by command, the missing table empty', () => {
    answers = [
      { status: 1, stdout: `${RULES}\n[${ROUTE_100}\n`, stderr: 'Error: ipv4: FIB table does not exist.\nDump terminated\n' },
      ok(RULES),
      { status: 2, stdout: '[', stderr: 'Error: ipv4: FIB table does not exist.\nDump terminated\n' },
      ok(ROUTE_100),
    ];
    const r = readRouting(4, [200, 100]);
    expect(calls.slice(1).map((c) => c.argv.join(' '))).toEqual([
      'ip -j -4 rule show', 'ip -j -4 route show table 200', 'ip -j -4 route show table 100',
    ]);
    expect(r.routes.get(200)).toEqual([]);
    expect(r.routes.get(100)).toEqual([{ dst: 'default', gateway: '10.224.0.1', dev: 'eth0' }]);
    expect(r.rules).toHaveLength(2);
  });

  it('a batch that prints a line short is not trusted either', () => {
    answers = [ok(`${RULES}\n`), ok(RULES), ok(ROUTE_100)];
    expect(readRouting(4, [100]).routes.get(100)).toHaveLength(1);
    expect(calls).toHaveLength(3);
  });
});

// A policy route the kernel refuses for its gateway or uplink was a bare tool failure (code 100):
// it names the netconf field now, with the tool's words in details.
describe('routeBatchError: a refused policy route names the field', () => {
  const route4 = { kind: 'route' as const, family: 4 as const, table: 101, gateway: '192.0.2.1', dev: 'eth0' };
  const rule4 = { kind: 'rule' as const, family: 4 as const, priority: 32765, mark: 16, mask: 16, table: 101 };
  const batch = (over: Partial<RouteBatch>): RouteBatch =>
    ({ addRules: [], delRules: [], addSuppress: [], delSuppress: [], replaceRoutes: [], delRoutes: [], ...over });
  const failure = (stderr: string, family: 4 | 6 = 4, b = batch({ replaceRoutes: [route4], addRules: [rule4] })) => {
    const err = routeBatchError(family, b, renderRouteBatch(family, b)!, { status: 1, stdout: '', stderr });
    expect(err).toBeInstanceOf(CniError);
    return err;
  };
  it.each([
    'Error: Nexthop has invalid gateway.\nCommand failed -:1\n',
    'RTNETLINK answers: Network is unreachable\nCommand failed -:1\n',
    'Error: Gateway can not be a local address.\nCommand failed -:1\n',
  ])('%j: code 7 naming gateway and uplink', (stderr) => {
    const err = failure(stderr);
    expect(err.code).toBe(7);
    expect(err.message).toMatch(/^invalid netconf: gateway: the kernel refuses 192\.0\.2\.1 as the next hop on uplink eth0 for table 101 \(/);
    expect(err.message).toContain('"uplink"');
    expect(err.details).toBe(`ip -4 route replace default via 192.0.2.1 dev eth0 table 101: ${stderr.split('\n')[0]}`);
  });

  it('IPv6: names gateway6', () => {
    const route6 = { ...route4, family: 6 as const, gateway: 'fd01::1' };
    const err = failure('RTNETLINK answers: No route to host\nCommand failed -:1\n', 6, batch({ replaceRoutes: [route6] }));
    expect(err.code).toBe(7);
    expect(err.message).toMatch(/^invalid netconf: gateway6: the kernel refuses fd01::1 as the next hop on uplink eth0 /);
    expect(err.details).toContain('No route to host');
  });

  it('an uplink that does not exist: 102 naming uplink', () => {
    const err = failure('Cannot find device "eth9"\nCommand failed -:1\n');
    expect(err.code).toBe(102);
    expect(err.message).toBe('uplink eth0 does not exist on this node (netconf field "uplink"): the policy route of table 101 needs it');
  });

  it('a failure on a rule line, or without a line number, stays the tool failure (code 100) with the batch', () => {
    const onRule = failure('RTNETLINK answers: Network is unreachable\nCommand failed -:2\n');
    expect(onRule.code).toBe(100);
    expect(onRule.details).toContain('rule add fwmark');
    const unknown = failure('Segmentation fault\n');
    expect(unknown.code).toBe(100);
    expect(unknown.message).toMatch(/^ip -4 -batch - failed \(exit 1\): Segmentation fault/);
  });
});

describe('applyChange: link groups', () => {
  const group = (dev: string) => ({ kind: 'linkGroup' as const, dev, group: 7 });

  it('re-applying every record, a pod interface already gone is left alone when the batch is refused: the others get their group', () => {
    answers = [
      { status: 1, stdout: '', stderr: 'Cannot find device "vethgone"\nCommand failed -:2\n' },
      ok('[{"ifname":"lo"},{"ifname":"vethhere","group":"default"}]'),
      ok(''),
    ];
    applyChange([group('vethhere'), group('vethgone')], [], { reapply: true });
    expect(calls.map((c) => c.input)).toEqual([
      'link set dev vethhere group 7\nlink set dev vethgone group 7\n',
      undefined,
      'link set dev vethhere group 7\n',
    ]);
  });

  it('an ADD\'s own link group on a missing interface is its error', () => {
    answers = [{ status: 1, stdout: '', stderr: 'Cannot find device "vethgone"\nCommand failed -:1\n' }];
    expect(() => applyChange([group('vethgone')], [])).toThrow(/Cannot find device/);
    expect(calls).toHaveLength(1);
  });

  it('any other refusal is the operation\'s error', () => {
    answers = [{ status: 2, stdout: '', stderr: 'RTNETLINK answers: Operation not permitted\n' }];
    expect(() => applyChange([group('vethhere')], [])).toThrow(/Operation not permitted/);
  });
});

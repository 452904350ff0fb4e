// readRouting: a family's ip rules and its policy tables' routes from one `ip -batch`, each output
// line matched to its command; a batch that fails or prints a line short is read command by command.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { ToolOutput } from '../../src/kernel/exec.ts';

const calls: { argv: string[]; input?: string }[] = [];
let answers: ToolOutput[] = [];

vi.mock('../../src/kernel/exec.ts', async (original) => {
  const real = await original<typeof import('../../src/kernel/exec.ts')>();
  const runTool = (argv: readonly string[], input?: string): ToolOutput => {
    calls.push({ argv: [...argv], input });
    const answer = answers.shift();
    if (!answer) throw new Error(`unexpected tool run: ${argv.join(' ')}`);
    return answer;
  };
  return {
    ...real,
    runTool,
    mustRun: (argv: readonly string[], input?: string) => {
      const out = runTool(argv, input);
      if (out.status !== 0) throw real.toolFailure(argv, out, input);
      return out.stdout;
    },
  };
});

const { readRouting } = await import('../../src/backend/iproute.ts');

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

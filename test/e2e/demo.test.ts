// scripts/demo.sh, as a newcomer runs it (README: the two commands), for both backends and the
// default, with its output piped as in CI: exit 0, every section, the backend's objects, plain
// text (no escape codes), and nothing left behind: its namespaces mr-demo-<pid>-* and temp dir
// /tmp/mr-demo-<pid>.*, also when it is stopped (SIGTERM) or killed (SIGKILL) half-way.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname;
const ESC = '\x1b';


interface DemoRun {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the demo with piped output; `stopAt` sends `signal` once stdout shows that text. */
function runDemo(args: string[], o: { timeoutMs?: number; stopAt?: string; signal?: NodeJS.Signals; path?: string } = {}): Promise<DemoRun> {
  const env = { ...process.env };
  delete env.NO_COLOR; // plain text must come from the pipe alone
  if (o.path) env.PATH = o.path;
  const child = spawn('bash', ['scripts/demo.sh', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const run: DemoRun = { pid: child.pid!, code: null, signal: null, stdout: '', stderr: '' };
  const timer = setTimeout(() => child.kill('SIGTERM'), o.timeoutMs ?? 100_000);
  child.stdout.on('data', (d: Buffer) => {
    run.stdout += d.toString();
    if (o.stopAt && run.stdout.includes(o.stopAt)) {
      o.stopAt = undefined;
      child.kill(o.signal ?? 'SIGTERM');
    }
  });
  child.stderr.on('data', (d: Buffer) => (run.stderr += d.toString()));
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      Object.assign(run, { code, signal });
      resolve(run);
    }),
  );
}

/** What a run may leave: its namespaces and its temp dir. */
function leftovers(pid: number): string[] {
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`mr-demo-${pid}-`));
  const dirs = readdirSync(tmpdir()).filter((d) => d.startsWith(`mr-demo-${pid}.`));
  return [...ns, ...dirs];
}

/** The root namespace's policy state the demo must never change. */
const rootState = (): string =>
  ['ip -4 rule', 'ip -6 rule', 'nft list tables']
    .map((c) => spawnSync('sh', ['-c', c], { encoding: 'utf8' }).stdout)
    .join('\n');

const nftWorks = spawnSync('nft', ['list', 'tables']).status === 0;

const SECTIONS = [
  '== node, fabric and pod namespaces',
  '== backend: ',
  '== ADD pod1: ptp, then markroute',
  '== ADD pod2: ptp, then markroute',
  '== what markroute installed in the node namespace',
  '== pod1 -> pod2',
  'fabric NSG counted 6 pod-to-pod packets',
  "== the fabric's NSG denies pod1 -> pod2",
  'ping blocked at the fabric',
  '== DEL both pods',
  '== teardown check',
  'ok  nftables tables markroute-*: none',
  'ok  iptables chains MARKROUTE-* and jumps to them',
  'ok  ipsets mr4-*/mr6-*: none',
  'ok  ip rules with fwmark (IPv4, IPv6): none',
  'ok  routes in table 100 (IPv4, IPv6): none',
  'ok  iptables, ipsets, nft tables, ip rules, routes and rp_filter are as before the pods',
];

describe('scripts/demo.sh', () => {
  test.each([
    { name: 'demo.sh nftables', args: ['nftables'], backend: 'nftables', why: 'as asked' },
    { name: 'demo.sh iptables', args: ['iptables'], backend: 'iptables', why: 'as asked' },
    { name: 'demo.sh (default)', args: [], backend: nftWorks ? 'nftables' : 'iptables', why: 'default: `nft list tables`' },
  ])('$name runs end to end with the $backend backend, plain text, nothing left', async ({ args, backend, why }) => {
    const root = rootState();
    const r = await runDemo(args);
    const out = r.stdout;
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    let at = -1;
    for (const s of SECTIONS) {
      const i = out.indexOf(s, at + 1);
      expect(i, `"${s}" after position ${at} of:\n${out}`).toBeGreaterThan(at);
      at = i;
    }
    expect(out).toContain(`== backend: ${backend} (${why}`);
    expect(out).toContain(`== what markroute installed in the node namespace (${backend} backend)`);
    if (backend === 'nftables') {
      expect(out).toMatch(/^table inet markroute-[0-9a-f]{8} \{$/m);
      expect(out).not.toMatch(/^:MARKROUTE-/m);
    } else {
      expect(out).toMatch(/^-A PREROUTING -j MARKROUTE-[0-9a-f]{8}$/m);
      expect(out).toMatch(/^# ipset list mr4-[0-9a-f]{8} \(members\)$/m);
      expect(out).not.toMatch(/^table inet markroute-/m);
    }
    expect(out).toMatch(/^32765:\s+from all fwmark 0x10\/0x10 lookup 100$/m);
    expect(out).toMatch(/^default via 10\.224\.0\.1 dev eth0/m);
    expect(out).toContain(`demo OK (${backend} backend)`);
    expect(out).toMatch(new RegExp(`^cleanup: namespaces mr-demo-${r.pid}-\\* and /tmp/mr-demo-${r.pid}\\.\\S+ removed$`, 'm'));
    expect(out + r.stderr).not.toContain(ESC);
    expect(leftovers(r.pid)).toEqual([]);
    expect(rootState()).toBe(root);
  }, 120_000); // seconds normally; a stale dist/markroute is rebuilt first

  test('stopped half-way (SIGTERM): says so, exits 143, removes everything before it exits', async () => {
    const r = await runDemo(['nftables'], { stopAt: '== ADD pod2', signal: 'SIGTERM' });
    expect(r.code).toBe(143);
    expect(r.stderr).toContain('scripts/demo.sh: stopped by SIGTERM');
    expect(r.stdout).toMatch(/^cleanup: namespaces .* removed$/m);
    expect(r.stdout + r.stderr).not.toContain(ESC);
    expect(leftovers(r.pid)).toEqual([]);
  });

  test('killed half-way (SIGKILL): its watcher removes the namespaces and the temp dir', async () => {
    const r = await runDemo(['iptables'], { stopAt: '== ADD pod2', signal: 'SIGKILL' });
    expect(r.signal).toBe('SIGKILL');
    const deadline = Date.now() + 10_000;
    while (leftovers(r.pid).length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    expect(leftovers(r.pid)).toEqual([]);
  });

  test('a failing command is named with its step and line; exit non-zero, nothing left', async () => {
    // A sysctl that fails, found on PATH by `ip netns exec` while the namespaces are set up.
    const bin = mkdtempSync(join(tmpdir(), 'markroute-demo-test-'));
    try {
      writeFileSync(join(bin, 'sysctl'), '#!/bin/sh\necho "sysctl: permission denied (test)" >&2\nexit 1\n', { mode: 0o755 });
      const r = await runDemo(['nftables'], { path: `${bin}:${process.env.PATH}` });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('sysctl: permission denied (test)');
      expect(r.stderr).toMatch(/^scripts\/demo\.sh: FAILED \(node, fabric and pod namespaces \(mr-demo-\d+-\*\)\): line \d+: `ip netns exec "\$NODE" "\$@"` exited 1 in in_node, called from line \d+: in_node sysctl -qw /m);
      expect(r.stdout + r.stderr).not.toContain(ESC);
      expect(leftovers(r.pid)).toEqual([]);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  test('an unknown backend: usage, exit 2', async () => {
    const r = await runDemo(['bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('usage: scripts/demo.sh [nftables|iptables]');
  });
});

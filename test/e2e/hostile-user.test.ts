// An unprivileged process of the node's network namespace (a hostNetwork pod, a local user: uid
// 65534 here) tries every way it can see to block or misdirect markroute while ADD, CHECK, DEL and
// GC run: it binds the socket name markroute's lock used to be (an abstract socket anyone could
// bind, which once stalled every pod of the node), and tries to open, lock, create and symlink
// under the state directory. The state directory's parent is traversable (as /var/lib/cni is), the
// state directory is root's and owner-only. Every operation must succeed in under 2 s, and the
// node end as it was.
import { chmodSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fnv1a } from '../../src/net/hash.ts';
import { DirectNode, type Started } from '../lab/direct.ts';
import type { Backend, Snapshot } from '../lab/index.ts';

const NOBODY = '65534';

const ATTACKER = `
const fs = require('fs'), net = require('net'), cp = require('child_process');
const { STATE, OLD_LOCK } = process.env;
const tried = {};
const attempt = (what, fn) => { try { fn(); tried[what] = 'done'; } catch (e) { tried[what] = e.code || String(e.message); } };
attempt('open the lock file', () => fs.openSync(STATE + '/lock', 'r'));
attempt('create the lock file', () => fs.openSync(STATE + '/lock', 'wx'));
attempt('flock the lock file', () => { const r = cp.spawnSync('flock', ['-n', STATE + '/lock', 'true'], { encoding: 'utf8' }); if (r.status !== 0) throw new Error(r.stderr.includes('Permission denied') ? 'EACCES' : r.stderr.trim()); });
attempt('list the state directory', () => fs.readdirSync(STATE));
attempt('create a record', () => fs.writeFileSync(STATE + '/attachments/evil.json', '{}'));
attempt('symlink the index', () => fs.symlinkSync('/etc/passwd', STATE + '/index.json'));
attempt('replace the state directory', () => fs.renameSync(STATE, STATE + '.old'));
attempt('make a state directory beside it', () => fs.mkdirSync(STATE + '2'));
const servers = [];
const bind = (name) => new Promise((done) => {
  const s = net.createServer();
  s.once('error', (e) => { tried['bind ' + name] = e.code; done(); });
  s.listen('\\0' + name, () => { tried['bind ' + name] = 'done'; servers.push(s); done(); });
});
Promise.all([bind(OLD_LOCK), bind('markroute'), bind('markroute/lock')]).then(() => {
  console.log(JSON.stringify(tried));
  setInterval(() => {}, 1 << 30);
});
`;

/** Waits for the attacker's report of what it managed. */
const report = (o: Started) =>
  new Promise<Record<string, string>>((resolve, reject) => {
    let seen = '';
    o.child.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes('\n')) resolve(JSON.parse(seen));
    });
    void o.done.then((e) => reject(new Error(`attacker exited ${e.code ?? e.signal}: ${e.stderr}`)));
  });

describe.each(['nftables', 'iptables'] as Backend[])('a hostile unprivileged process in the node namespace (%s backend)', (backend) => {
  let node: DirectNode;
  let baseline: Snapshot;
  let attacker: Started;
  let tried: Record<string, string>;

  beforeAll(async () => {
    node = new DirectNode(`hostile-${backend.slice(0, 3)}`, backend);
    chmodSync(node.dir, 0o755);
    baseline = node.snapshot();
    // a first pod makes the state directory, as on a node that has run pods
    const first = node.pod();
    expect((await node.run('ADD', first)).code).toBe(0);
    expect((await node.run('DEL', first)).code).toBe(0);
    attacker = node.spawnIn(['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', ATTACKER],
      { PATH: process.env.PATH ?? '', STATE: node.stateDir, OLD_LOCK: `markroute/${fnv1a(node.stateDir)}/${node.stateDir.slice(-64)}` }, '', 'attacker');
    tried = await report(attacker);
  });

  afterAll(() => {
    attacker?.child.kill('SIGKILL');
    node?.destroy();
  });

  test('it can bind socket names (markroute uses none), and nothing under the state directory', () => {
    expect(tried).toEqual({
      'open the lock file': 'EACCES',
      'create the lock file': 'EACCES',
      'flock the lock file': 'EACCES',
      'list the state directory': 'EACCES',
      'create a record': 'EACCES',
      'symlink the index': 'EACCES',
      'replace the state directory': 'EACCES',
      'make a state directory beside it': 'EACCES',
      [`bind markroute/${fnv1a(node.stateDir)}/${node.stateDir.slice(-64)}`]: 'done',
      'bind markroute': 'done',
      'bind markroute/lock': 'done',
    });
  });

  test('while it runs, ADD, CHECK, GC and DEL each succeed in under 2 s, and the node ends as it was', async () => {
    const pod = node.pod('dual');
    const other = node.pod();
    for (const [what, call] of [
      ['ADD', () => node.run('ADD', pod)],
      ['ADD other', () => node.run('ADD', other)],
      ['CHECK', () => node.run('CHECK', pod)],
      ['GC', () => node.run('GC', undefined, { netconf: { 'cni.dev/valid-attachments': [{ containerID: pod.containerId, ifname: 'eth0' }] } })],
      ['DEL', () => node.run('DEL', pod)],
    ] as const) {
      const e = await call();
      expect(e.code, `${what}: ${e.stdout}`).toBe(0);
      expect(e.ms, what).toBeLessThan(2000);
    }
    expect(node.records()).toEqual([]);
    expect(node.snapshot()).toEqual(baseline);
    expect(node.lockHolders()).toEqual([]);
    expect(attacker.child.exitCode).toBeNull(); // still there, still trying
  });
});

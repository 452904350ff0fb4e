// Logging never fails an operation or changes its outcome: the CNI answer is written first, and a
// log that cannot be written (a full filesystem, a device) or must not be (a symlink, another
// user's file, /dev/stdout) costs a note on stderr, nothing else. The full filesystem is a 16 KiB
// tmpfs mounted in a mount namespace of its own (unshare: nothing is mounted on the host), filled
// before markroute runs.
import { spawnSync } from 'node:child_process';
import { chownSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DirectNode } from '../lab/direct.ts';
import type { Snapshot } from '../lab/index.ts';

/** Runs markroute in the node namespace, inside a mount namespace where `full` is a full tmpfs. */
const FULL_DISK_RUNNER = `
const { spawnSync } = require('child_process');
const { writeFileSync } = require('fs');
const [full, ns, bin] = process.argv.slice(1);
const must = (argv) => { const r = spawnSync(argv[0], argv.slice(1)); if (r.status !== 0) throw new Error(argv.join(' ') + ': ' + r.stderr); };
must(['mount', '-t', 'tmpfs', '-o', 'size=16k,mode=0700', 'markroute-full', full]);
try { writeFileSync(full + '/filler', Buffer.alloc(64 * 1024)); } catch {}
const r = spawnSync('ip', ['netns', 'exec', ns, bin], { input: require('fs').readFileSync(0), encoding: 'utf8' });
process.stdout.write(JSON.stringify({ status: r.status, stdout: r.stdout, stderr: r.stderr }));
`;

describe('a log that cannot or must not be written', () => {
  let node: DirectNode;
  let baseline: Snapshot;

  beforeAll(() => {
    node = new DirectNode('logging', 'nftables');
    baseline = node.snapshot();
  });
  afterAll(() => node?.destroy());

  const netconfWith = (pod: ReturnType<DirectNode['pod']>, logFile: string) => JSON.stringify({ ...node.netconf(pod), logFile });

  test('on a full filesystem: ADD and DEL answer as always (the result first), one note on stderr, the pod added and removed', () => {
    const full = join(node.dir, 'full');
    mkdirSync(full, { mode: 0o700 });
    const pod = node.pod();
    const run = (command: string) => {
      const env = { ...process.env, ...node.env(command as 'ADD', pod) };
      const r = spawnSync('unshare', ['--mount', '--propagation', 'private', process.execPath, '-e', FULL_DISK_RUNNER, full, node.ns, node.bin],
        { input: netconfWith(pod, join(full, 'markroute.log')), env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { status: number; stdout: string; stderr: string };
    };
    const add = run('ADD');
    expect(add.status, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toEqual(node.prevResult(pod));
    expect(add.stderr).toMatch(/^markroute: cannot write the log: ENOSPC/);
    expect(node.records()).toHaveLength(1);
    const del = run('DEL');
    expect([del.status, del.stdout]).toEqual([0, '']);
    expect(del.stderr).toMatch(/^markroute: cannot write the log: ENOSPC/);
    expect(node.records()).toEqual([]);
    expect(node.snapshot()).toEqual(baseline);
  });

  test.each([
    ['/dev/full (a device)', () => '/dev/full', /log file \/dev\/full is not a regular file/],
    ['/dev/stdout (a symlink; a line there would come before the result)', () => '/dev/stdout', /ELOOP/],
    ['a symlink to another user\'s file', () => {
      const victim = join(node.dir, 'victim.log');
      writeFileSync(victim, 'theirs\n', { mode: 0o644 });
      chownSync(victim, 65534, 65534);
      symlinkSync(victim, join(node.dir, 'link.log'));
      return join(node.dir, 'link.log');
    }, /ELOOP/],
    ['another user\'s file', () => {
      const theirs = join(node.dir, 'theirs.log');
      writeFileSync(theirs, '', { mode: 0o600 });
      chownSync(theirs, 65534, 65534);
      return theirs;
    }, /is owned by uid 65534/],
  ])('logFile %s: the operation succeeds, stdout holds only the result, the log goes to stderr', async (_, logFile, why) => {
    const file = logFile();
    const pod = node.pod();
    const add = await node.run('ADD', pod, { stdin: netconfWith(pod, file) });
    expect(add.code, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toEqual(node.prevResult(pod));
    expect(add.stderr).toMatch(why);
    expect(add.stderr).toMatch(/"msg":"ADD ok"/);
    const del = await node.run('DEL', pod, { stdin: netconfWith(pod, file) });
    expect([del.code, del.stdout]).toEqual([0, '']);
    if (file.endsWith('link.log')) {
      expect(readFileSync(join(node.dir, 'victim.log'), 'utf8')).toBe('theirs\n');
      expect(lstatSync(join(node.dir, 'victim.log')).mode & 0o777).toBe(0o644);
    }
    expect(node.snapshot()).toEqual(baseline);
  });
});

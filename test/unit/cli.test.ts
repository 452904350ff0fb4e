// The CLI over state directories it must not create or misread (issue 11, point 6): what it
// prints on stderr and its exit status. Nothing here reaches a kernel tool: each case is refused
// before the kernel is read.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { cli } from '../../src/cli.ts';

let dir: string;
let stderr: string;
let stdout: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mr-unit-cli-'));
  stderr = '';
  stdout = '';
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
});

afterEach(() => {
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

describe('markroute reconcile', () => {
  test('a state directory that does not exist is refused, exit 1, and not created', async () => {
    const stateDir = join(dir, 'no-such-state');
    expect(await cli(['reconcile', '--state-dir', stateDir])).toBe(1);
    expect(stderr).toBe(`markroute: state directory ${stateDir} does not exist (or holds no attachments directory): nothing was attached with it, nothing to reconcile\n`);
    expect(stdout).toBe('');
    expect(existsSync(stateDir)).toBe(false);
  });

  test('nor is an attachments directory made in one that has none', async () => {
    const stateDir = join(dir, 'empty');
    mkdirSync(stateDir, { mode: 0o700 });
    expect(await cli(['reconcile', '--state-dir', stateDir])).toBe(1);
    expect(stderr).toMatch(/^markroute: state directory .* does not exist \(or holds no attachments directory\)/);
    expect(existsSync(join(stateDir, 'attachments'))).toBe(false);
  });
});

// A record that is valid JSON of the wrong shape printed a TypeError naming no file. The check is
// store.readRecord's (src/state/store.ts): every reader of records (DEL, GC, status, reconcile)
// then gets code 101 naming the file.
describe('markroute status with a malformed record', () => {
  test.each(['{}', '{"objects": 5}', 'null', '[]', '"record"', '{"id": "bad", "objects": [], "attachment": {}}'])('%s: names the file, exit 1', async (text) => {
    const stateDir = join(dir, 'state');
    mkdirSync(join(stateDir, 'attachments'), { recursive: true, mode: 0o700 });
    const path = join(stateDir, 'attachments', 'bad.json');
    writeFileSync(path, text, { mode: 0o600 });
    expect(await cli(['status', '--state-dir', stateDir])).toBe(1);
    expect(stderr).toMatch(new RegExp(`^markroute: record ${path.replace(/[.\\/]/g, '\\$&')} is malformed: \\S`));
    expect(stderr).not.toMatch(/TypeError|\n\s+at /);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(stdout).toBe('');
  });
});

describe('markroute status on a node with nothing attached', () => {
  // the CLI prints its reports with console.log, which vitest would otherwise capture
  beforeEach(() => void vi.spyOn(console, 'log').mockImplementation((s) => void (stdout += `${String(s)}\n`)));

  test('no state directory yet: says so, exit 0, and creates nothing', async () => {
    const stateDir = join(dir, 'never-used');
    expect(await cli(['status', '--state-dir', stateDir])).toBe(0);
    expect(stdout).toBe(`state directory: ${stateDir}\nnothing is attached on this node: no pod has been added with this state directory, or all were deleted\n`);
    expect(existsSync(stateDir)).toBe(false);
  });

  test('--json: valid JSON with no attachments and no objects', async () => {
    expect(await cli(['status', '--json', '--state-dir', join(dir, 'never-used')])).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ indexNeedsRecovery: false, attachments: [], objects: [] });
  });
});

describe('markroute agent', () => {
  test.each(['0', '-1', 'soon', '86401'])('--resync %s is refused, exit 1, before anything starts', async (resync) => {
    expect(await cli(['agent', '--state-dir', join(dir, 'state'), '--resync', resync])).toBe(1);
    expect(stderr).toBe(`markroute: --resync ${resync}: expected seconds, from 1 to 86400\n`);
    expect(existsSync(join(dir, 'state'))).toBe(false);
  });

  test('an unusable --listen is refused, exit 1, naming it, before anything starts', async () => {
    expect(await cli(['agent', '--state-dir', join(dir, 'state'), '--conf-dir', dir, '--log-file', join(dir, 'log'), '--listen', 'localhost'])).toBe(1);
    expect(stderr).toContain('--listen "localhost": expected ADDR:PORT, [ADDR]:PORT (IPv4 or IPv6) or :PORT');
  });
});

// The state directory and the log's directory: refused when anyone but root could redirect or
// write them, checked before anything is created. Runs as root (as the suite does) in a temp dir.
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { isSafePath } from '../../src/config.ts';
import { secureDirectory } from '../../src/state/safe-path.ts';
import { StateStore } from '../../src/state/store.ts';
import { cniError } from './helpers.ts';

const NOBODY = 65534;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mr-safe-path-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fresh = (name: string) => {
  const d = join(dir, name);
  mkdirSync(d, { mode: 0o700 });
  return d;
};

describe.runIf(process.getuid?.() === 0)('secureDirectory', () => {
  test('makes what is missing owner-only', () => {
    const d = join(fresh('make'), 'a', 'b');
    expect(secureDirectory(d, true)).toBe(true);
    expect(lstatSync(d).mode & 0o777).toBe(0o700);
    expect(lstatSync(join(dir, 'make', 'a')).mode & 0o777).toBe(0o700);
  });

  test('a reader does not make it', () => {
    const d = join(fresh('reader'), 'state');
    expect(secureDirectory(d, false)).toBe(false);
    expect(existsSync(d)).toBe(false);
  });

  test('a state directory that is a symlink is refused, and nothing is made through it', () => {
    const base = fresh('symlink');
    const target = fresh('symlink-target');
    symlinkSync(target, join(base, 'state'));
    const store = new StateStore(join(base, 'state'));
    expect(cniError(() => store.ensure(true)).message).toBe(`${join(base, 'state')} is a symlink; refusing to use it`);
    expect(existsSync(join(target, 'attachments'))).toBe(false);
  });

  test('a symlink on the way that another user owns is refused; root\'s is followed', () => {
    const base = fresh('parent-link');
    const target = fresh('parent-link-target');
    symlinkSync(target, join(base, 'theirs'));
    lchownSync(join(base, 'theirs'), NOBODY, NOBODY);
    expect(cniError(() => secureDirectory(join(base, 'theirs', 'state'), true)).message).toContain(`${join(base, 'theirs')} is a symlink owned by uid ${NOBODY}`);
    expect(existsSync(join(target, 'state'))).toBe(false);
    symlinkSync(target, join(base, 'roots'));
    expect(secureDirectory(join(base, 'roots', 'state'), true)).toBe(true);
    expect(existsSync(join(target, 'state'))).toBe(true);
  });

  test('a directory on the way that another user owns, or others can write to, is refused; a sticky one (like /tmp) is not', () => {
    const theirs = fresh('theirs');
    chownSync(theirs, NOBODY, NOBODY);
    expect(cniError(() => secureDirectory(join(theirs, 'state'), true)).message).toContain(`${theirs} is owned by uid ${NOBODY}`);
    const open = fresh('open');
    chmodSync(open, 0o777);
    expect(cniError(() => secureDirectory(join(open, 'state'), true)).message).toContain(`${open} is writable by group or others (mode 777)`);
    const sticky = fresh('sticky');
    chmodSync(sticky, 0o1777);
    expect(secureDirectory(join(sticky, 'state'), true)).toBe(true);
    expect(existsSync(join(open, 'state')) || existsSync(join(theirs, 'state'))).toBe(false);
  });

  test('the directory itself writable by others, or owned by another user, is refused', () => {
    const d = join(fresh('self'), 'state');
    mkdirSync(d, { mode: 0o700 });
    chmodSync(d, 0o1777);
    expect(cniError(() => secureDirectory(d, true)).message).toBe(`${d} is writable by group or others (mode 1777); refusing to use it`);
    chmodSync(d, 0o700);
    chownSync(d, NOBODY, NOBODY);
    expect(cniError(() => secureDirectory(d, true)).code).toBe(101);
  });
});

test('stateDir and logFile values: absolute, below /, no . or .. component', () => {
  for (const ok of ['/var/lib/cni/markroute', '/run/x', '/a.b/c-d_e/']) expect(isSafePath(ok), ok).toBe(true);
  for (const bad of ['/', '//', 'relative', '/var/lib/../../etc', '/a/./b', '/a/..', '/a b', '/a\nb', '']) expect(isSafePath(bad), JSON.stringify(bad)).toBe(false);
});

// A bare clone installs with `npm ci`, as the README's Install section and scripts/lib/deps.sh do it:
// the repository is cloned into an empty temp dir (nothing beside it), this checkout's package.json
// and package-lock.json are put in (so an uncommitted lock is what gets tested), and `npm ci` runs
// there with this machine's npm and with npm 10.8.2, the npm Node 20 ships. npm fetches from its
// registry (reachable here and in CI; its cache makes a second run quick). ~20 s.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const NODE20_NPM = '10.8.2';
let dir: string;
let clone: string;

/** The environment without what a parent npm/npx exported (npm_config_*, npm_lifecycle_*, …). */
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { cwd: clone, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} exited ${e.status}:\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mr-clone-'));
  clone = join(dir, 'markroute');
  execFileSync('git', ['clone', '--quiet', '--no-hardlinks', ROOT, clone], { env, stdio: 'pipe' });
  for (const f of ['package.json', 'package-lock.json']) copyFileSync(join(ROOT, f), join(clone, f));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('npm ci in a bare clone', { timeout: 240_000 }, () => {
  const lockBefore = () => readFileSync(join(ROOT, 'package-lock.json'), 'utf8');

  test("this machine's npm installs exactly the lock, and the tools the scripts run work", () => {
    run('npm', ['ci', '--no-audit', '--no-fund']);
    expect(readFileSync(join(clone, 'package-lock.json'), 'utf8'), 'npm ci left the lock as it was').toBe(lockBefore());
    expect(existsSync(join(clone, 'node_modules/.package-lock.json'))).toBe(true);
    const pinned = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).devDependencies;
    expect(run('node_modules/.bin/tsc', ['--version'])).toContain(pinned.typescript);
    expect(run('node_modules/.bin/esbuild', ['--version']).trim()).toBe(pinned.esbuild);
    expect(run('node_modules/.bin/vitest', ['--version'])).toContain(`vitest/${pinned.vitest}`);
  });

  test(`npm ${NODE20_NPM} (Node 20's) accepts the lock too`, () => {
    expect(run('npx', ['--yes', `npm@${NODE20_NPM}`, '--version']).trim()).toBe(NODE20_NPM);
    run('npx', ['--yes', `npm@${NODE20_NPM}`, 'ci', '--no-audit', '--no-fund']);
    expect(readFileSync(join(clone, 'package-lock.json'), 'utf8')).toBe(lockBefore());
  });
});

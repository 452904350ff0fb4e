// package-lock.json is complete: every dependency any locked package declares (optional ones
// included: rollup's and esbuild's per-platform binaries, for every platform, not only this one's)
// is in the lock, and the root's exact pins are the locked versions. npm 11's `npm ci` rejects a
// lock that lacks another platform's optional package, and scripts/lib/deps.sh runs `npm ci` only.
// Offline and instant; test/repo/npm-ci.test.ts runs the real `npm ci` in a bare clone.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';

interface LockEntry {
  version?: string;
  link?: boolean;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

const ROOT = join(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as LockEntry;
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
  lockfileVersion: number;
  packages: Record<string, LockEntry>;
};
const EXACT = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;
const REGENERATE = 'regenerate with the same pins: rm -rf node_modules && npm install --package-lock-only';

/** The lock key `name` resolves to from the package at `from` (Node's lookup: own node_modules, then up). */
function resolve(from: string, name: string): string | undefined {
  let base = from;
  for (;;) {
    const key = `${base ? `${base}/` : ''}node_modules/${name}`;
    if (lock.packages[key]) return key;
    if (base === '') return undefined;
    base = base.slice(0, base.lastIndexOf('node_modules/')).replace(/\/$/, '');
  }
}

test('the lock is npm 7+ format (lockfileVersion 3: packages only) and its root matches package.json', () => {
  expect(lock.lockfileVersion).toBe(3);
  const root = lock.packages['']!;
  for (const field of ['dependencies', 'devDependencies', 'optionalDependencies'] as const) {
    expect(root[field] ?? {}, `lock root ${field} differs from package.json: ${REGENERATE}`).toEqual(pkg[field] ?? {});
  }
});

test('every dependency of every locked package is in the lock, for every platform (with its exact version when pinned)', () => {
  const problems: string[] = [];
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (entry.link) continue;
    const wants: Record<string, string> = {
      ...(key === '' ? entry.devDependencies : {}),
      ...entry.dependencies,
      ...entry.optionalDependencies,
      ...Object.fromEntries(
        Object.entries(entry.peerDependencies ?? {}).filter(([n]) => !entry.peerDependenciesMeta?.[n]?.optional),
      ),
    };
    for (const [name, range] of Object.entries(wants)) {
      const at = resolve(key, name);
      const who = key || 'package.json';
      if (!at) problems.push(`${who} needs ${name}@${range}: not in the lock`);
      else if (EXACT.test(range) && lock.packages[at]!.version !== range)
        problems.push(`${who} needs ${name}@${range}: the lock has ${lock.packages[at]!.version} at ${at}`);
    }
  }
  expect(problems, `package-lock.json is incomplete (npm ci would refuse it); ${REGENERATE}`).toEqual([]);
});

test("rollup's and esbuild's platform packages are all locked (the gap npm 11 leaves when it writes a lock from one platform)", () => {
  for (const parent of ['node_modules/rollup', 'node_modules/esbuild']) {
    const optional = Object.keys(lock.packages[parent]?.optionalDependencies ?? {});
    expect(optional.length, `${parent} declares its platform packages`).toBeGreaterThan(10);
    expect(optional.filter((n) => !resolve(parent, n)), REGENERATE).toEqual([]);
  }
});

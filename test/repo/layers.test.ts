// The layer rules docs/ARCHITECTURE.md states, checked over the sources so they cannot erode
// silently: who may open the state store, who may start processes, and which e2e suites may touch
// the index file instead of reading the state through `markroute status --json`.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, test } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)))
    .sort();
}

/** The files under `dir` whose text (comments aside) matches `pattern`. */
function filesUsing(dir: string, pattern: RegExp): string[] {
  return sources(dir).filter((f) => {
    const code = readFileSync(join(ROOT, f), 'utf8').split('\n').filter((l) => !/^\s*(\/\/|\*|\/\*)/.test(l)).join('\n');
    return pattern.test(code);
  });
}

describe('layers (docs/ARCHITECTURE.md)', () => {
  test('the check can fail: it finds what it looks for', () => {
    expect(filesUsing('src', /^import (?!type )[^;]*from "\.\/state\/store\.js"/m)).toEqual(['src/engine.ts']);
  });

  test('only the engine and the state modules open the store: everyone else reads a StateView or acts through a Session', () => {
    // a type (a record's shape) is no access: only value imports count
    const users = filesUsing('src', /^import (?!type )[^;]*from "[./]*(state\/)?store\.js"/m).filter((f) => !f.startsWith('src/state/'));
    expect(users).toEqual(['src/engine.ts']);
  });

  test('processes start in the tool runner, and only where a tool run cannot do: each such place with its reason', () => {
    const why: Record<string, string> = {
      'src/kernel/exec.ts': 'the tool runner: every batch and kernel read',
      'src/state/lock.ts': 'the `flock --wait` child, while another process holds the lock',
      'src/agent/watch.ts': 'the agent\'s monitors (`ip monitor`, `nft monitor`), which run as long as it does',
    };
    expect(Object.fromEntries(filesUsing('src', /node:child_process/).map((f) => [f, why[f] ?? 'no reason given']))).toEqual(why);
  });

  test('e2e suites read the state through `status --json`; the index file only where a suite reproduces what something else left', () => {
    const why: Record<string, string> = {
      'test/e2e/agent-load.test.ts': 'injects the agent\'s kill at the index\'s temporary file',
      'test/e2e/bad-inputs.test.ts': 'writes back the dirty index a killed ADD leaves, and checks the counts status does not list',
      'test/e2e/concurrency.test.ts': 'kills an operation the moment the index turns dirty (polled far faster than a status run), and checks the counts status does not list',
      'test/e2e/crash.test.ts': 'injects the kill at the index\'s temporary file, and checks the counts status does not list',
      'test/e2e/explain.test.ts': 'writes the dirty index an operation that died midway leaves',
      'test/e2e/hostile-user.test.ts': 'an unprivileged user tries to replace the index',
      'test/e2e/upgrade.test.ts': 'writes an older version\'s index, with this boot\'s identity',
    };
    expect(Object.fromEntries(filesUsing('test/e2e', /index\.json/).map((f) => [f, why[f] ?? 'no reason given']))).toEqual(why);
  });
});

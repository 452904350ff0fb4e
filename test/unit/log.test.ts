// The log line's shape (pino's, which operators' jq filters and shippers expect) and the level
// threshold, written by src/log.ts itself since pino left the CNI path. Runs as root in a temp dir.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { openLog } from '../../src/log.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'mr-log-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const lines = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

test.runIf(process.getuid?.() === 0)('one JSON line per call: level number, time, pid, hostname, the fields, msg, in that order', () => {
  const file = join(dir, 'shape.log');
  const before = Date.now();
  openLog(file, 'info').warn({ command: 'ADD', durationMs: 1.5 }, 'ADD ok: a warning');
  const [line] = lines(file);
  expect(Object.keys(line!)).toEqual(['level', 'time', 'pid', 'hostname', 'command', 'durationMs', 'msg']);
  expect(line).toMatchObject({ level: 40, pid: process.pid, hostname: hostname(), command: 'ADD', durationMs: 1.5, msg: 'ADD ok: a warning' });
  expect(line!.time).toBeGreaterThanOrEqual(before);
});

test.runIf(process.getuid?.() === 0).each([
  ['trace', [30, 40, 50]],
  ['info', [30, 40, 50]],
  ['warn', [40, 50]],
  ['error', [50]],
  ['fatal', []],
  ['silent', []],
] as const)('logLevel %s writes levels %j', (level, written) => {
  const file = join(dir, `${level}.log`);
  const log = openLog(file, level);
  log.info({}, 'i');
  log.warn({}, 'w');
  log.error({}, 'e');
  const text = readFileSync(file, 'utf8');
  expect(text ? text.trim().split('\n').map((l) => (JSON.parse(l) as { level: number }).level) : []).toEqual(written);
});

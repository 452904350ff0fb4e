// cni/request: the CNI_* environment (error 4 naming the variable), CNI_ARGS, stdin and its decoding.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { COMMANDS, decodeNetconf, parseCniArgs, parseEnvironment, readStdin } from '../../src/cni/request.ts';
import { cniError } from './helpers.ts';

const CID = '7e84a9894ae7dbed813078e2f9d81cc1ec9056ee50e90ee6e2da49e589fe9e9e';
const ok = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: CID, CNI_IFNAME: 'eth0', CNI_NETNS: '/var/run/netns/cni-1', CNI_PATH: '/opt/cni/bin' };

const envError = (env: Record<string, string | undefined>) => {
  const err = cniError(() => parseEnvironment(env));
  expect(err.code).toBe(4);
  return err.message;
};

describe('parseEnvironment', () => {
  test('an overlong CNI_CONTAINERID is quoted only in part', () => {
    const message = envError({ ...ok, CNI_CONTAINERID: 'x'.repeat(5000) });
    expect(message).toBe(`CNI_CONTAINERID must be 1-128 of letters, digits, _ . - starting with a letter or digit, got "${'x'.repeat(200)}"`);
  });

  test('a runtime ADD', () => {
    const req = parseEnvironment({ ...ok, CNI_ARGS: 'K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-1;IgnoreUnknown=1' });
    expect(req).toEqual({
      command: 'ADD',
      containerId: CID,
      ifName: 'eth0',
      netns: '/var/run/netns/cni-1',
      args: new Map([['K8S_POD_NAMESPACE', 'team-a'], ['K8S_POD_NAME', 'web-1'], ['IgnoreUnknown', '1']]),
    });
  });

  test('the commands', () => {
    expect(COMMANDS).toEqual(['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS']);
  });

  test.each([undefined, '', 'add', 'Add', 'FOO', 'ADD ', 'ADD;DEL'])('CNI_COMMAND %j is error 4', (cmd) => {
    expect(envError({ ...ok, CNI_COMMAND: cmd })).toBe(`CNI_COMMAND must be one of ADD, DEL, CHECK, VERSION, GC, STATUS, got "${cmd ?? ''}"`);
  });

  test.each([undefined, '', '-abc', '.abc', '_abc', 'a/b', '../../etc/passwd', 'a b', 'a;b', '$(id)', 'x'.repeat(129)])(
    'CNI_CONTAINERID %j is error 4 on ADD',
    (id) => {
      expect(envError({ ...ok, CNI_CONTAINERID: id })).toBe(
        `CNI_CONTAINERID must be 1-128 of letters, digits, _ . - starting with a letter or digit, got "${id ?? ''}"`,
      );
    },
  );

  test('CNI_CONTAINERID of 1 and 128 characters is accepted', () => {
    expect(parseEnvironment({ ...ok, CNI_CONTAINERID: 'a' }).containerId).toBe('a');
    expect(parseEnvironment({ ...ok, CNI_CONTAINERID: 'a'.repeat(128) }).containerId).toBe('a'.repeat(128));
    expect(parseEnvironment({ ...ok, CNI_CONTAINERID: 'a-b.c_d' }).containerId).toBe('a-b.c_d');
  });

  test.each([undefined, '', 'eth0;rm -rf /', '$(id)', '`id`', 'eth 0', 'x234567890123456', '-eth0', 'eth/0'])('CNI_IFNAME %j is error 4', (ifname) => {
    for (const command of ['ADD', 'DEL', 'CHECK']) {
      expect(envError({ ...ok, CNI_COMMAND: command, CNI_IFNAME: ifname })).toBe(
        `CNI_IFNAME must be an interface name of 1-15 letters, digits, _ . @ -, got "${ifname ?? ''}"`,
      );
    }
  });

  test.each([undefined, '', 'proc/1/ns/net', './ns', 'dummy'])('CNI_NETNS %j is error 4 on ADD and CHECK', (netns) => {
    for (const command of ['ADD', 'CHECK']) {
      expect(envError({ ...ok, CNI_COMMAND: command, CNI_NETNS: netns })).toBe(
        `CNI_NETNS must be the absolute path of the container's network namespace for ${command}, got "${netns ?? ''}"`,
      );
    }
  });

  test('DEL accepts an empty CNI_NETNS (RemovePodSandbox)', () => {
    expect(parseEnvironment({ ...ok, CNI_COMMAND: 'DEL', CNI_NETNS: '' })).toEqual({
      command: 'DEL', containerId: CID, ifName: 'eth0', netns: '', args: new Map(),
    });
    expect(parseEnvironment({ ...ok, CNI_COMMAND: 'DEL', CNI_NETNS: undefined }).netns).toBe('');
  });

  test("VERSION, GC and STATUS ignore the per-attachment variables (podman's VERSION probe)", () => {
    const probe = { CNI_ARGS: '', CNI_COMMAND: 'VERSION', CNI_CONTAINERID: '', CNI_IFNAME: 'dummy', CNI_NETNS: 'dummy', CNI_PATH: 'dummy' };
    expect(parseEnvironment(probe)).toEqual({ command: 'VERSION', containerId: '', ifName: 'dummy', netns: 'dummy', args: new Map() });
    expect(parseEnvironment({ CNI_COMMAND: 'GC' })).toEqual({ command: 'GC', containerId: '', ifName: '', netns: '', args: new Map() });
    expect(parseEnvironment({ CNI_COMMAND: 'STATUS', CNI_IFNAME: 'x;y' }).command).toBe('STATUS');
  });

  test('malformed CNI_ARGS is error 4 for every command', () => {
    expect(envError({ ...ok, CNI_ARGS: 'K8S_POD_NAME' })).toBe('CNI_ARGS: "K8S_POD_NAME" is not KEY=VALUE');
    expect(envError({ CNI_COMMAND: 'VERSION', CNI_ARGS: '=x' })).toBe('CNI_ARGS: "=x" is not KEY=VALUE');
  });

  test('the checks run in order: command, container ID, interface, netns', () => {
    expect(envError({ CNI_COMMAND: 'ADD' })).toMatch(/^CNI_CONTAINERID /);
    expect(envError({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc' })).toMatch(/^CNI_IFNAME /);
    expect(envError({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0' })).toMatch(/^CNI_NETNS /);
  });
});

describe('parseCniArgs', () => {
  test('pairs, in order; empty pairs skipped; "=" inside the value kept', () => {
    expect([...parseCniArgs('A=1;B=2=3;;C=;')]).toEqual([['A', '1'], ['B', '2=3'], ['C', '']]);
    expect([...parseCniArgs('')]).toEqual([]);
    expect(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=spyc1;MAC=02:42:ac:11:00:42;IP=10.89.99.50').get('MAC')).toBe('02:42:ac:11:00:42');
  });

  test('a later duplicate wins', () => {
    expect(parseCniArgs('K=1;K=2').get('K')).toBe('2');
  });

  test.each(['A', 'A=1;B', '=1', 'A=1;=2'])('%j is error 4', (text) => {
    const err = cniError(() => parseCniArgs(text));
    expect(err.code).toBe(4);
    expect(err.message).toMatch(/^CNI_ARGS: ".*" is not KEY=VALUE$/);
  });
});

describe('decodeNetconf', () => {
  test('a JSON object', () => {
    expect(decodeNetconf('{"cniVersion":"1.0.0","name":"n"}')).toEqual({ cniVersion: '1.0.0', name: 'n' });
    expect(decodeNetconf(' \n{}\n')).toEqual({});
  });

  test.each([
    ['', 'cannot decode the netconf on stdin: Unexpected end of JSON input'],
    ['{"a":', 'cannot decode the netconf on stdin: Unexpected end of JSON input'],
    ['[]', 'cannot decode the netconf on stdin: not a JSON object'],
    ['[{}]', 'cannot decode the netconf on stdin: not a JSON object'],
    ['null', 'cannot decode the netconf on stdin: not a JSON object'],
    ['1', 'cannot decode the netconf on stdin: not a JSON object'],
    ['"x"', 'cannot decode the netconf on stdin: not a JSON object'],
    ['true', 'cannot decode the netconf on stdin: not a JSON object'],
  ])('%j is error 6', (text, message) => {
    const err = cniError(() => decodeNetconf(text));
    expect(err.code).toBe(6);
    expect(err.message).toBe(message);
  });

  test('non-JSON is error 6 with the parser\'s words', () => {
    const err = cniError(() => decodeNetconf("{'a': 1}"));
    expect(err.code).toBe(6);
    expect(err.message).toMatch(/^cannot decode the netconf on stdin: .*JSON/);
  });
});

describe('readStdin', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mr-unit-stdin-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const readFile = (name: string, content: string | Buffer) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    const fd = openSync(path, 'r');
    try {
      return readStdin(fd);
    } finally {
      closeSync(fd);
    }
  };

  test('reads everything, across read chunks, as UTF-8', () => {
    const text = JSON.stringify({ pad: 'é'.repeat(100_000) });
    expect(readFile('big-ok', text)).toBe(text);
    expect(readFile('empty', '')).toBe('');
  });

  test('exactly 1 MiB is accepted; one byte more is error 6', () => {
    expect(readFile('1mib', Buffer.alloc(1024 * 1024, 0x20)).length).toBe(1024 * 1024);
    const err = cniError(() => readFile('1mib+1', Buffer.alloc(1024 * 1024 + 1, 0x20)));
    expect(err.code).toBe(6);
    expect(err.message).toBe('netconf on stdin is larger than 1048576 bytes');
  });

  test('a bad descriptor is error 5', () => {
    const err = cniError(() => readStdin(987654));
    expect(err.code).toBe(5);
    expect(err.message).toMatch(/^cannot read stdin: EBADF/);
  });
});

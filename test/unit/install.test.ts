// `markroute install` / `uninstall` (src/install.ts, src/install/) on real files in a temp dir: which conflist the
// runtime uses, where the entry goes, idempotency down to the mtime, the backup, atomic writes, a
// single-plugin .conf, loud errors. The last block runs the built binary in a lab's node namespace:
// install, a pod ADDed through the installed conflist, then `markroute uninstall` leaves the node
// clean. Never the real /opt/cni/bin or /etc/cni/net.d, never the root namespace's network.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { install, uninstall } from '../../src/install.ts';
import { BACKUP_SUFFIX, findConflist, withEntry } from '../../src/install/conf-dir.ts';
import { readEntry } from '../../src/install/entry.ts';
import {
  createLab, loadPtpConflist, markrouteObjects, NO_MARKROUTE, REPO_ROOT, run, type Lab,
} from '../lab/index.ts';

const ENTRY = {
  type: 'markroute', mode: 'transparent-tunnel', mark: '0x10', mask: '0x10', table: 100,
  serviceCIDRs: ['10.96.0.0/12'], excludeCIDRs: ['168.63.129.16/32', '169.254.169.254/32'],
};

const PTP = {
  cniVersion: '1.0.0',
  name: 'pods',
  plugins: [
    { type: 'ptp', ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }] } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

const BRIDGE = {
  cniVersion: '0.4.0',
  name: 'bridged',
  plugins: [
    { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: true, ipam: { type: 'host-local', subnet: '10.244.1.0/24' } },
    { type: 'portmap', capabilities: { portMappings: true }, snat: true },
    { type: 'bandwidth', capabilities: { bandwidth: true } },
  ],
};

// k3s's flannel conflist (the delegate's keys in the order flannel writes them).
const FLANNEL = {
  name: 'cbr0',
  cniVersion: '1.0.0',
  plugins: [
    { type: 'flannel', delegate: { hairpinMode: true, forceAddress: true, isDefaultGateway: true } },
    { type: 'portmap', capabilities: { portMappings: true } },
    { type: 'bandwidth', capabilities: { bandwidth: true } },
  ],
};

const SINGLE_CONF = { cniVersion: '0.3.1', name: 'single', type: 'ptp', ipMasq: true, ipam: { type: 'host-local', subnet: '10.244.2.0/24' } };

let root: string;
let binDir: string;
let confDir: string;
let source: string;

/** A directory listing with sizes and mtimes: what "changes nothing" compares. */
function fingerprint(dir: string): Record<string, { bytes: string; mtimeMs: number; mode: number }> {
  return Object.fromEntries(readdirSync(dir).sort().map((n) => {
    const st = statSync(join(dir, n));
    return [n, { bytes: readFileSync(join(dir, n), 'latin1'), mtimeMs: st.mtimeMs, mode: st.mode & 0o7777 }];
  }));
}

const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const write = (name: string, content: unknown, mode = 0o644) => {
  const path = join(confDir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content, null, 2) + '\n', { mode });
  return path;
};
const types = (path: string) => (readJson(path).plugins as { type: string }[]).map((p) => p.type);

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'mr-install-'));
  binDir = join(root, 'opt/cni/bin');
  confDir = join(root, 'etc/cni/net.d');
  mkdirSync(binDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  // A stand-in for the executable (installing the real ~90 MB one in every test is slow).
  source = join(root, 'markroute-build');
  writeFileSync(source, '#!/bin/sh\necho markroute\n' + 'x'.repeat(3 << 20), { mode: 0o700 });
});

afterEach(() => rmSync(root, { recursive: true, force: true }));

describe('install', () => {
  test.each([
    ['ptp', PTP, ['ptp', 'markroute', 'portmap']],
    ['bridge', BRIDGE, ['bridge', 'markroute', 'portmap', 'bandwidth']],
    ['flannel', FLANNEL, ['flannel', 'markroute', 'portmap', 'bandwidth']],
  ])('%s: the entry goes right after the main plugin; the other plugins, their keys and their order stay', (_, list, expected) => {
    const path = write('10-pods.conflist', list);
    const original = readFileSync(path, 'utf8');
    const report = install({ binDir, confDir, entry: ENTRY, source });

    expect(report.conflist).toEqual({ path, action: 'inserted', backup: path + BACKUP_SUFFIX });
    expect(types(path)).toEqual(expected);
    const after = readJson(path);
    expect(Object.keys(after)).toEqual(Object.keys(list));
    expect(after.plugins[1]).toEqual(ENTRY);
    expect(after.plugins.filter((p: { type: string }) => p.type !== 'markroute')).toEqual(list.plugins);
    // Key order inside the other plugins too: the text of each is as before.
    for (const p of list.plugins) expect(JSON.stringify(after.plugins.find((q: { type: string }) => q.type === p.type))).toBe(JSON.stringify(p));
    expect(readFileSync(path + BACKUP_SUFFIX, 'utf8')).toBe(original);
    expect(statSync(path).mode & 0o777).toBe(0o644);

    expect(report.binary).toEqual({ path: join(binDir, 'markroute'), action: 'installed' });
    expect(readFileSync(join(binDir, 'markroute')).equals(readFileSync(source))).toBe(true); // not toEqual: byte by byte, slow
    expect(statSync(join(binDir, 'markroute')).mode & 0o777).toBe(0o755);
    // Atomic writes leave nothing behind.
    expect(readdirSync(binDir)).toEqual(['markroute']);
    expect(readdirSync(confDir).sort()).toEqual(['10-pods.conflist', '10-pods.conflist' + BACKUP_SUFFIX]);
  });

  test('a second run changes nothing: bytes, modes and mtimes of every file', async () => {
    write('10-pods.conflist', PTP);
    install({ binDir, confDir, entry: ENTRY, source });
    const bin = fingerprint(binDir);
    const conf = fingerprint(confDir);
    await new Promise((r) => setTimeout(r, 20)); // a rewrite would show in the mtime
    const again = install({ binDir, confDir, entry: { ...ENTRY }, source });
    expect(again.binary.action).toBe('unchanged');
    expect(again.conflist).toEqual({ path: join(confDir, '10-pods.conflist'), action: 'unchanged' });
    expect(fingerprint(binDir)).toEqual(bin);
    expect(fingerprint(confDir)).toEqual(conf);
  });

  test('an entry without `type` gets it (first); the result is the same as with it', () => {
    const path = write('10-pods.conflist', PTP);
    const { type: _, ...untyped } = ENTRY;
    install({ binDir, confDir, entry: untyped, source });
    expect(Object.keys(readJson(path).plugins[1])[0]).toBe('type');
    expect(install({ binDir, confDir, entry: ENTRY, source }).conflist.action).toBe('unchanged');
  });

  test('an existing markroute entry is replaced where it stands; the backup keeps the very first original', () => {
    const path = write('10-pods.conflist', PTP);
    const original = readFileSync(path, 'utf8');
    install({ binDir, confDir, entry: ENTRY, source });
    // Someone moved it last; a new version of the entry replaces it there.
    const moved = readJson(path);
    moved.plugins = [moved.plugins[0], moved.plugins[2], moved.plugins[1]];
    writeFileSync(path, JSON.stringify(moved, null, 2) + '\n');
    const changed = { ...ENTRY, table: 200, logLevel: 'debug' };
    const report = install({ binDir, confDir, entry: changed, source });
    expect(report.conflist).toEqual({ path, action: 'replaced' });
    expect(types(path)).toEqual(['ptp', 'portmap', 'markroute']);
    expect(readJson(path).plugins[2]).toEqual(changed);
    expect(readFileSync(path + BACKUP_SUFFIX, 'utf8')).toBe(original);
  });

  test('a conflist that already has markroute (hand-installed) gets no second entry; duplicates go', () => {
    const path = write('10-pods.conflist', { ...PTP, plugins: [PTP.plugins[0], { type: 'markroute' }, PTP.plugins[1], { type: 'markroute', table: 7 }] });
    expect(install({ binDir, confDir, entry: ENTRY, source }).conflist.action).toBe('replaced');
    expect(types(path)).toEqual(['ptp', 'markroute', 'portmap']);
    expect(withEntry([{ type: 'a' }], { type: 'markroute' })).toEqual([{ type: 'a' }, { type: 'markroute' }]);
  });

  test("the file the runtime uses: the lexicographically first *.conf/*.conflist/*.json that loads (libcni's ConfFiles, sorted)", () => {
    write('00-broken.conflist', '{ not json');
    write('01-noplugins.conflist', { cniVersion: '1.0.0', name: 'x' });
    write('02-conflist-named.conf', PTP); // a conflist under .conf: no type, skipped by the runtimes
    write('03-notes.txt', 'not a network');
    write('04-old.conflist' + BACKUP_SUFFIX, PTP);
    const chosen = write('10-bridge.conflist', BRIDGE);
    const later = write('20-pods.conflist', PTP);
    const laterText = readFileSync(later, 'utf8');
    expect(findConflist(confDir).path).toBe(chosen);
    install({ binDir, confDir, entry: ENTRY, source });
    expect(types(chosen)).toEqual(['bridge', 'markroute', 'portmap', 'bandwidth']);
    expect(readFileSync(later, 'utf8')).toBe(laterText);
    expect(readFileSync(join(confDir, '00-broken.conflist'), 'utf8')).toBe('{ not json');
  });

  test('a .json network file counts, in name order with the others', () => {
    const json = write('05-net.json', { ...SINGLE_CONF, name: 'jsonnet' });
    write('10-pods.conflist', PTP);
    expect(findConflist(confDir).path).toBe(json);
  });

  test('a single-plugin .conf becomes <name>.conflist with `plugins`; the .conf goes, its backup stays', async () => {
    const conf = write('10-single.conf', SINGLE_CONF, 0o600);
    const original = readFileSync(conf, 'utf8');
    write('20-pods.conflist', PTP);
    const report = install({ binDir, confDir, entry: ENTRY, source });
    const list = join(confDir, '10-single.conflist');
    expect(report.conflist).toEqual({ path: list, action: 'inserted', convertedFrom: conf, backup: conf + BACKUP_SUFFIX });
    expect(existsSync(conf)).toBe(false);
    expect(readFileSync(conf + BACKUP_SUFFIX, 'utf8')).toBe(original);
    const { cniVersion, name, ...plugin } = SINGLE_CONF;
    expect(readJson(list)).toEqual({ cniVersion, name, plugins: [plugin, ENTRY] });
    expect(statSync(list).mode & 0o777).toBe(0o600);
    expect(findConflist(confDir).path).toBe(list);
    // and then it is idempotent like any conflist
    const before = fingerprint(confDir);
    await new Promise((r) => setTimeout(r, 20));
    expect(install({ binDir, confDir, entry: ENTRY, source }).conflist.action).toBe('unchanged');
    expect(fingerprint(confDir)).toEqual(before);
  });

  test('a .conf is not converted over an existing .conflist of the same name', () => {
    const conf = write('10-single.conf', SINGLE_CONF);
    write('10-single.conflist', PTP);
    expect(() => install({ binDir, confDir, entry: ENTRY, source })).toThrow(/10-single\.conflist exists already/);
    expect(readJson(conf)).toEqual(SINGLE_CONF);
  });

  test('loud errors that name the file, and nothing changes', () => {
    expect(() => install({ binDir, confDir: join(root, 'nope'), entry: ENTRY, source })).toThrow(`CNI conf dir ${join(root, 'nope')} does not exist`);
    expect(() => install({ binDir, confDir, entry: ENTRY, source })).toThrow(`no usable CNI network configuration in ${confDir}`);
    write('00-broken.conflist', '{');
    expect(() => install({ binDir, confDir, entry: ENTRY, source })).toThrow(/skipped: 00-broken\.conflist: not JSON/);
    const path = write('10-pods.conflist', PTP);
    const text = readFileSync(path, 'utf8');
    expect(() => install({ binDir: join(root, 'nobin'), confDir, entry: ENTRY, source })).toThrow(`CNI bin dir ${join(root, 'nobin')} does not exist`);
    expect(() => install({ binDir, confDir, entry: ENTRY, source: join(root, 'missing') })).toThrow(`cannot read the executable to install, ${join(root, 'missing')}`);
    // an invalid entry is refused before anything is written (no binary either)
    rmSync(join(binDir, 'markroute'), { force: true });
    expect(() => install({ binDir, confDir, entry: { ...ENTRY, mark: '0x4000', mask: '0xc000' }, source }))
      .toThrow(new RegExp(`not valid in ${path}.*mask: 0xc000 overlaps kube-proxy`));
    expect(() => install({ binDir, confDir, entry: { type: 'ptp' }, source })).toThrow(/must be "markroute"/);
    expect(readdirSync(binDir)).toEqual([]);
    expect(readFileSync(path, 'utf8')).toBe(text);
    expect(existsSync(path + BACKUP_SUFFIX)).toBe(false);
    // a conflist that is a symlink is not replaced by a file behind the admin's back
    rmSync(path);
    writeFileSync(join(root, 'real.conflist'), text);
    run(['ln', '-s', join(root, 'real.conflist'), path]);
    expect(() => install({ binDir, confDir, entry: ENTRY, source })).toThrow(`${path} is a symlink`);
  });

  test('a write that fails says which file and leaves the conflist as it was', () => {
    const path = write('10-pods.conflist', PTP);
    install({ binDir, confDir, entry: ENTRY, source });
    const text = readFileSync(path, 'utf8');
    // Something that cannot be replaced where this process's temporary file goes (root ignores modes).
    const tmp = join(confDir, `.10-pods.conflist.markroute-tmp-${process.pid}`);
    mkdirSync(join(tmp, 'busy'), { recursive: true });
    expect(() => install({ binDir, confDir, entry: { ...ENTRY, table: 300 }, source })).toThrow(`cannot write ${path}: `);
    expect(readFileSync(path, 'utf8')).toBe(text);
    rmSync(tmp, { recursive: true });
    expect(install({ binDir, confDir, entry: { ...ENTRY, table: 300 }, source }).conflist.action).toBe('replaced');
    expect(readdirSync(confDir).filter((n) => n.includes('tmp'))).toEqual([]);
  });

  test("temporary files of a dead installer are swept; a live one's are not", () => {
    write('10-pods.conflist', PTP);
    const dead = 2 ** 22 + 12345; // above pid_max's default: no such process
    writeFileSync(join(binDir, `.markroute.tmp-${dead}`), 'half');
    writeFileSync(join(confDir, `.10-pods.conflist.markroute-tmp-${dead}`), '{');
    writeFileSync(join(binDir, `.markroute.tmp-1`), 'init is alive');
    install({ binDir, confDir, entry: ENTRY, source });
    expect(readdirSync(binDir).sort()).toEqual(['.markroute.tmp-1', 'markroute']);
    expect(readdirSync(confDir).some((n) => n.includes('markroute-tmp'))).toBe(false);
  });

  test('the binary is replaced by rename (a running copy keeps its inode) and only when it differs', () => {
    write('10-pods.conflist', PTP);
    install({ binDir, confDir, entry: ENTRY, source });
    const inode = statSync(join(binDir, 'markroute')).ino;
    writeFileSync(source, 'a new build');
    expect(install({ binDir, confDir, entry: ENTRY, source }).binary.action).toBe('installed');
    expect(statSync(join(binDir, 'markroute')).ino).not.toBe(inode);
    expect(readFileSync(join(binDir, 'markroute'), 'utf8')).toBe('a new build');
    // a wrong mode is put right
    chmodSync(join(binDir, 'markroute'), 0o644);
    expect(install({ binDir, confDir, entry: ENTRY, source }).binary.action).toBe('installed');
    expect(statSync(join(binDir, 'markroute')).mode & 0o777).toBe(0o755);
  });
});

describe('readEntry', () => {
  test('from --entry or --entry-file, exactly one, a JSON object', () => {
    expect(readEntry({ entry: '{"type":"markroute"}' })).toEqual({ type: 'markroute' });
    const file = join(root, 'entry.json');
    writeFileSync(file, JSON.stringify(ENTRY));
    expect(readEntry({ entryFile: file })).toEqual(ENTRY);
    expect(() => readEntry({})).toThrow(/exactly one of --entry/);
    expect(() => readEntry({ entry: '{}', entryFile: file })).toThrow(/exactly one of --entry/);
    expect(() => readEntry({ entry: '[1]' })).toThrow(/--entry: must be a JSON object/);
    expect(() => readEntry({ entry: '{' })).toThrow(/--entry: not JSON/);
    expect(() => readEntry({ entryFile: join(root, 'none.json') })).toThrow(`cannot read the entry file ${join(root, 'none.json')}`);
  });
});

describe('uninstall (no attachments)', () => {
  test('the plugin list is as before markroute; the binary goes; a second run changes nothing', async () => {
    const path = write('10-pods.conflist', FLANNEL);
    const stateDir = join(root, 'state-never-used');
    install({ binDir, confDir, entry: { ...ENTRY, stateDir }, source });
    const report = await uninstall({ binDir, confDir });
    expect(report).toEqual({
      conflists: [{ path, action: 'removed' }], stateDir, attachments: [],
      binary: { path: join(binDir, 'markroute'), action: 'removed' },
    });
    expect(readJson(path)).toEqual(FLANNEL);
    expect(JSON.stringify(readJson(path))).toBe(JSON.stringify(FLANNEL));
    expect(existsSync(stateDir)).toBe(false); // not created by uninstall
    expect(readdirSync(binDir)).toEqual([]);
    const conf = fingerprint(confDir);
    await new Promise((r) => setTimeout(r, 20));
    expect(await uninstall({ binDir, confDir, stateDir })).toEqual({
      conflists: [], stateDir, attachments: [], binary: { path: join(binDir, 'markroute'), action: 'absent' },
    });
    expect(fingerprint(confDir)).toEqual(conf);
  });

  test('markroute entries leave every conflist of the dir, not only the first', async () => {
    const a = write('10-a.conflist', { ...PTP, plugins: [PTP.plugins[0], { type: 'markroute' }, PTP.plugins[1]] });
    const b = write('20-b.conflist', { ...BRIDGE, plugins: [...BRIDGE.plugins, { type: 'markroute' }] });
    const report = await uninstall({ binDir, confDir, stateDir: join(root, 'none') });
    expect(report.conflists).toEqual([{ path: a, action: 'removed' }, { path: b, action: 'removed' }]);
    expect(readJson(a)).toEqual(PTP);
    expect(readJson(b)).toEqual(BRIDGE);
  });

  test('an empty state directory is fine; a missing conf dir is an error naming it', async () => {
    write('10-pods.conflist', PTP);
    const stateDir = join(root, 'state');
    mkdirSync(stateDir, { mode: 0o700 });
    expect((await uninstall({ binDir, confDir, stateDir })).attachments).toEqual([]);
    await expect(uninstall({ binDir, confDir: join(root, 'gone'), stateDir })).rejects.toThrow(`CNI conf dir ${join(root, 'gone')} does not exist`);
  });
});

// ---- the built binary, in a lab: install, a pod through the installed conflist, uninstall -------

const BIN = join(REPO_ROOT, 'dist/markroute');

describe.skipIf(process.getuid?.() !== 0 || !existsSync(BIN))('dist/markroute install / uninstall in a node namespace', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await createLab();
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  test('install puts itself and its entry in place; after an ADD, uninstall removes every kernel object, the record, the entry and the binary', async () => {
    const hostBin = join(lab.dir, 'opt/cni/bin');
    const hostConf = join(lab.dir, 'etc/cni/net.d');
    mkdirSync(hostBin, { recursive: true });
    mkdirSync(hostConf, { recursive: true });
    // The node's conflist before markroute: the lab's ptp network alone (its IPAM and paths in the lab).
    const shipped = loadPtpConflist(lab, 'iptables');
    const entry = shipped.plugins.find((p) => p.type === 'markroute')!;
    const before = { ...shipped, plugins: shipped.plugins.filter((p) => p.type !== 'markroute') };
    writeFileSync(join(hostConf, '10-ptp.conflist'), JSON.stringify(before, null, 2) + '\n');
    const entryFile = join(lab.dir, 'entry.json');
    writeFileSync(entryFile, JSON.stringify(entry));
    const baseline = lab.snapshot();

    const inNode = (argv: string[]) => lab.exec(lab.ns.node, argv, { check: false });
    const installed = inNode([BIN, 'install', '--bin-dir', hostBin, '--conf-dir', hostConf, '--entry-file', entryFile]);
    expect(installed.stderr).toBe('');
    expect(installed.code).toBe(0);
    expect(installed.stdout).toContain(`binary ${join(hostBin, 'markroute')}: installed`);
    expect(readFileSync(join(hostBin, 'markroute')).equals(readFileSync(BIN))).toBe(true);
    const list = readJson(join(hostConf, '10-ptp.conflist'));
    expect(list.plugins.map((p: { type: string }) => p.type)).toEqual(['ptp', 'markroute']);

    // A pod through the installed conflist and the installed binary.
    const cniPath = (lab as unknown as { cniPath: string[] }).cniPath;
    (lab as unknown as { cniPath: string[] }).cniPath = [hostBin, '/usr/lib/cni'];
    const pod = await lab.addPod('a', list);
    expect(pod.add!.runs.map((r) => r.type)).toEqual(['ptp', 'markroute']);
    expect(markrouteObjects(lab.snapshot())).not.toEqual(NO_MARKROUTE);
    const stateDir = entry.stateDir as string;
    expect(readdirSync(join(stateDir, 'attachments'))).toHaveLength(1);

    const removed = inNode([BIN, 'uninstall', '--bin-dir', hostBin, '--conf-dir', hostConf]);
    expect(removed.stderr).toBe('');
    expect(removed.code).toBe(0);
    expect(removed.stdout).toContain(`state ${stateDir}: 1 attachment(s) removed`);
    expect(removed.stdout).toContain(`binary ${join(hostBin, 'markroute')}: removed`);
    const after = lab.snapshot();
    expect(markrouteObjects(after)).toEqual(NO_MARKROUTE);
    // the uplink's rp_filter is back to strict (the pod's veth is still there: compare the node's own)
    for (const dev of ['all', 'default', 'eth0']) expect(after.rpFilter[dev]).toBe(baseline.rpFilter[dev]);
    expect(readdirSync(join(stateDir, 'attachments'))).toEqual([]);
    expect(readJson(join(hostConf, '10-ptp.conflist'))).toEqual(before);
    expect(readdirSync(hostBin)).toEqual([]);

    // Idempotent: again, nothing to do, success.
    const again = inNode([BIN, 'uninstall', '--bin-dir', hostBin, '--conf-dir', hostConf, '--state-dir', stateDir]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('no markroute entry');
    expect(again.stdout).toContain('0 attachment(s) removed');
    // The pod itself is still there (its ptp veth); the runtime's DEL of the markroute-free conflist takes it down.
    (lab as unknown as { cniPath: string[] }).cniPath = cniPath;
    const del = await lab.delPod(pod, { conflist: before });
    expect(del.ok).toBe(true);
  });

  test('a real error is loud: exit 1 and a message naming the path', () => {
    const r = lab.exec(lab.ns.node, [BIN, 'install', '--conf-dir', join(lab.dir, 'nope'), '--bin-dir', lab.dir, '--entry', '{}'], { check: false });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`markroute: CNI conf dir ${join(lab.dir, 'nope')} does not exist: is this the node's conf dir (containerd's conf_dir, CRI-O's network_dir)?\n`);
    expect(r.stdout).toBe('');
  });
});

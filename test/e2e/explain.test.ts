// `markroute explain`: the verdict on one packet, from what is installed and from the kernel's own
// routing decision (`ip route get … mark …`), for both backends.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLab, FABRIC_IP, findPlugin, loadPtpConflist, parseStatus, type Backend, type Lab, type Pod } from '../lab/index.ts';

describe.each(['iptables', 'nftables'] as Backend[])('markroute explain (%s backend)', (backend) => {
  let lab: Lab;
  let a: Pod;
  let b: Pod;
  let bin: string;
  const stateDir = () => join(lab.dir, 'state');
  const explain = (args: string[]) => lab.exec(lab.ns.node, [bin, 'explain', ...args, '--state-dir', stateDir()], { check: false });

  beforeAll(async () => {
    lab = await createLab();
    bin = findPlugin('markroute', lab.cniPath)!;
    const list = loadPtpConflist(lab, backend);
    a = await lab.addPod('a', list);
    b = await lab.addPod('b', list);
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  test('a pod to another pod: marked, the fwmark rule decides, the kernel routes it to the fabric', () => {
    const out = explain([a.containerId.slice(0, 12), '--to', b.ip4!]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain(`packet ${a.ip4} -> ${b.ip4} arriving on ${a.hostIf}:`);
    expect(out.stdout).toMatch(/marked 0x10\/0x10 \(mark "default"\) by the set element/);
    expect(out.stdout).toContain('ip rule 32765: fwmark 0x10/0x10 lookup 100 decides');
    expect(out.stdout).toContain(`the kernel routes it via ${FABRIC_IP} dev eth0 (table 100)`);
  });

  test('to a service CIDR: exempt, routed by the main table to the pod\'s own veth', () => {
    const out = explain(['--from', a.ip4!, '--iif', a.hostIf!, '--to', '10.96.0.10']);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain('is in the exempt CIDR 10.96.0.0/12');
    expect(out.stdout).toContain('lookup main decides');
  });

  test('a source that is not an attached pod: not marked, and says how to check', () => {
    const out = explain(['--from', '10.244.0.250', '--iif', a.hostIf!, '--to', b.ip4!]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain('is in none of its sets: not marked');
    expect(out.stdout).toContain('lookup main decides');
  });

  test('an unknown attachment is a clear error', () => {
    const out = explain(['nope', '--to', b.ip4!]);
    expect(out.code).toBe(1);
    expect(out.stderr).toBe('markroute: no recorded attachment nope; `markroute status` lists them\n');
  });

  test('status and explain only read: a state directory that does not exist stays absent (status: nothing attached, exit 0; explain: an error naming it)', () => {
    const missing = join(lab.dir, 'no-state');
    const status = lab.exec(lab.ns.node, [bin, 'status', '--state-dir', missing], { check: false });
    expect([status.code, status.stdout]).toEqual([0, `state directory: ${missing}\nnothing is attached on this node: no pod has been added with this state directory, or all were deleted\n`]);
    const out = lab.exec(lab.ns.node, [bin, 'explain', '--from', a.ip4!, '--iif', a.hostIf!, '--to', b.ip4!, '--state-dir', missing], { check: false });
    expect(out.code).toBe(1);
    expect(out.stderr).toBe(`markroute: state directory ${missing} does not exist (or holds no attachments directory): nothing was attached with it\n`);
    expect(existsSync(missing)).toBe(false);
  });

  test('status shows a dirty index as found and leaves healing it to the next CNI operation', async () => {
    const indexPath = join(stateDir(), 'index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8'));
    writeFileSync(indexPath, JSON.stringify({ ...index, dirty: true })); // as left by an operation that died midway
    const before = lab.snapshot();
    const out = lab.exec(lab.ns.node, [bin, 'status', '--state-dir', stateDir()]);
    expect(out.stdout).toContain('note: the index is dirty or missing (an operation died midway, or the node rebooted)');
    const needsRecovery = () => parseStatus(lab.exec(lab.ns.node, [bin, 'status', '--json', '--state-dir', stateDir()], { check: false })).indexNeedsRecovery;
    expect(needsRecovery()).toBe(true);
    expect(lab.snapshot()).toEqual(before);
    expect((await lab.cni('CHECK', a)).ok).toBe(true); // the next operation heals it
    expect(needsRecovery()).toBe(false);
  });
});

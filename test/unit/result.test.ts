// cni/result: prevResult re-printed in the netconf's cniVersion.
import { describe, expect, test } from 'vitest';
import { resultInVersion } from '../../src/cni/result.ts';
import type { PrevResult } from '../../src/config.ts';

const prev: PrevResult = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'cni0', mac: '1e:a1:3c:75:09:44' },
    { name: 'veth615a6f01', mac: '86:2d:75:11:7b:5e' },
    { name: 'eth0', mac: 'ba:98:ce:8e:d2:ff', sandbox: '/var/run/netns/cni-a34a' },
  ],
  ips: [
    { address: '10.88.77.47/24', gateway: '10.88.77.1', interface: 2 },
    { address: 'fd00:88::47/64', gateway: 'fd00:88::1', interface: 2 },
  ],
  routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
  dns: { nameservers: ['10.96.0.10'] },
};
const frozen = JSON.stringify(prev);

describe('resultInVersion', () => {
  test.each(['0.3.0', '0.3.1', '0.4.0'])('%s: ips carry "version", everything else as it was', (v) => {
    const r = resultInVersion(prev, v);
    expect(r).toEqual({
      cniVersion: v,
      interfaces: prev.interfaces,
      ips: [
        { version: '4', address: '10.88.77.47/24', gateway: '10.88.77.1', interface: 2 },
        { version: '6', address: 'fd00:88::47/64', gateway: 'fd00:88::1', interface: 2 },
      ],
      routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
      dns: { nameservers: ['10.96.0.10'] },
    });
    // as printed: version first in each ip, like the Go types
    expect(JSON.stringify((r as { ips: unknown[] }).ips[0])).toBe('{"version":"4","address":"10.88.77.47/24","gateway":"10.88.77.1","interface":2}');
  });

  test.each(['1.0.0', '1.1.0'])('%s: no "version" in ips, even when prevResult had one', (v) => {
    const withVersions: PrevResult = { ...prev, cniVersion: '0.4.0', ips: prev.ips.map((ip, i) => ({ version: i ? '6' : '4', ...ip })) };
    for (const p of [prev, withVersions]) {
      expect(resultInVersion(p, v)).toEqual({
        cniVersion: v,
        interfaces: prev.interfaces,
        ips: [
          { address: '10.88.77.47/24', gateway: '10.88.77.1', interface: 2 },
          { address: 'fd00:88::47/64', gateway: 'fd00:88::1', interface: 2 },
        ],
        routes: prev.routes,
        dns: prev.dns,
      });
    }
  });

  test('0.x: the version follows the address, not what prevResult claimed', () => {
    const wrong: PrevResult = { ...prev, ips: [{ version: '6', address: '10.1.0.5/24' }] };
    expect((resultInVersion(wrong, '0.4.0') as { ips: unknown[] }).ips).toEqual([{ version: '4', address: '10.1.0.5/24' }]);
  });

  test('an empty result stays empty', () => {
    expect(resultInVersion({ interfaces: [], ips: [] }, '0.3.1')).toEqual({ cniVersion: '0.3.1', interfaces: [], ips: [] });
    expect(resultInVersion({ interfaces: [], ips: [] }, '1.0.0')).toEqual({ cniVersion: '1.0.0', interfaces: [], ips: [] });
  });

  test('prevResult is not modified', () => {
    resultInVersion(prev, '0.3.0');
    resultInVersion(prev, '1.1.0');
    expect(JSON.stringify(prev)).toBe(frozen);
  });
});

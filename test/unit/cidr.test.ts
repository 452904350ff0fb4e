// net/cidr: canonical text exactly as `ip` and iptables-save print it, and refusal of bad input.
import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { canonicalAddress, cidrRange, compareWords, familyOf, hasZone, hostAddress, inCidr, parseCidr } from '../../src/net/cidr.ts';

describe('parseCidr', () => {
  test.each([
    ['10.1.2.3/8', 4, '10.0.0.0/8'],
    ['10.1.2.3/24', 4, '10.1.2.0/24'],
    ['10.1.2.3/32', 4, '10.1.2.3/32'],
    ['10.1.2.3', 4, '10.1.2.3/32'],
    ['0.0.0.0/0', 4, '0.0.0.0/0'],
    ['255.255.255.255/1', 4, '128.0.0.0/1'],
    ['168.63.129.16/32', 4, '168.63.129.16/32'],
    ['192.168.7.200/27', 4, '192.168.7.192/27'],
    ['2001:DB8::1/32', 6, '2001:db8::/32'],
    ['fd00:10::/108', 6, 'fd00:10::/108'],
    ['fd00:10:0:0:0:0:1:ffff/108', 6, 'fd00:10::/108'],
    ['fd00:10:0:0:0:0:1:ffff/112', 6, 'fd00:10::1:0/112'],
    ['::/0', 6, '::/0'],
    ['::1', 6, '::1/128'],
    ['::', 6, '::/128'],
    ['2001:db8:0:0:1:0:0:1/128', 6, '2001:db8::1:0:0:1/128'], // two equal zero runs: the leftmost
    ['2001:0:0:1:0:0:0:1', 6, '2001:0:0:1::1/128'], // the longest run wins
    ['2001:db8:0:0:1:0:0:0/112', 6, '2001:db8:0:0:1::/112'], // as ip6tables-save prints it
    ['2001:db8:0:1:1:1:1:1', 6, '2001:db8:0:1:1:1:1:1/128'], // a single zero group is not compressed
    ['1:2:3:4:5:6:7:8/64', 6, '1:2:3:4::/64'],
    ['fe80::1/10', 6, 'fe80::/10'],
    ['FD00:0244:0000:0001::0005/64', 6, 'fd00:244:0:1::/64'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/127', 6, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127'],
  ])('%s -> IPv%d %s', (input, family, text) => {
    expect(parseCidr(input)).toEqual({ family, text });
  });

  test.each([
    ['10.0.0.0/33', '"10.0.0.0/33" has a prefix length outside 0-32'],
    ['fd00::/129', '"fd00::/129" has a prefix length outside 0-128'],
    ['10.0.0.0/', '"10.0.0.0/" has a prefix length outside 0-32'],
    ['10.0.0.0/-1', '"10.0.0.0/-1" has a prefix length outside 0-32'],
    ['10.0.0.0/ 8', '"10.0.0.0/ 8" has a prefix length outside 0-32'],
    ['10.0.0.0/8.0', '"10.0.0.0/8.0" has a prefix length outside 0-32'],
    ['10.0.0.0/0x8', '"10.0.0.0/0x8" has a prefix length outside 0-32'],
    ['10.0.0.0/1000', '"10.0.0.0/1000" has a prefix length outside 0-32'],
    ['10.0.0.0/16/8', '"10.0.0.0/16/8" is not an IPv4 or IPv6 CIDR'],
    ['10.0.0/8', '"10.0.0/8" is not an IPv4 or IPv6 CIDR'],
    ['10.0.0.256/8', '"10.0.0.256/8" is not an IPv4 or IPv6 CIDR'],
    ['010.1.1.1/8', '"010.1.1.1/8" is not an IPv4 or IPv6 CIDR'],
    [' 10.0.0.0/8', '" 10.0.0.0/8" is not an IPv4 or IPv6 CIDR'],
    ['fd00::1::2/64', '"fd00::1::2/64" is not an IPv4 or IPv6 CIDR'],
    ['gggg::/16', '"gggg::/16" is not an IPv4 or IPv6 CIDR'],
    ['/24', '"/24" is not an IPv4 or IPv6 CIDR'],
    ['', '"" is not an IPv4 or IPv6 CIDR'],
    ['localhost', '"localhost" is not an IPv4 or IPv6 CIDR'],
  ])('%j is refused', (input, message) => {
    expect(() => parseCidr(input)).toThrow(new Error(message));
  });

  // The Cidr.text contract is "as iptables-save and ip print it", i.e. glibc's inet_ntop: IPv4-mapped
  // (::ffff:0:0/96) and IPv4-compatible (::/96 with a two-group tail) addresses end dotted, and
  // nothing else does. Expected values checked against ip6tables-nft-save, ip6tables-legacy-save
  // and inet_ntop on this machine.
  test.each([
    ['::ffff:1.2.3.4/120', '::ffff:1.2.3.0/120'],
    ['::ffff:0:0/96', '::ffff:0.0.0.0/96'],
    ['::ffff:0:1', '::ffff:0.0.0.1/128'],
    ['::1.2.3.4', '::1.2.3.4/128'],
    ['::1:0', '::0.1.0.0/128'],
    ['::1', '::1/128'],
    ['::/96', '::/96'],
    ['1::ffff:1.2.3.4', '1::ffff:102:304/128'],
    // A single non-zero last group is not an IPv4 tail: inet_ntop, ip and ip6tables-save print ::2.
    ['::2', '::2/128'],
    ['::a/127', '::a/127'],
    ['::ffff', '::ffff/128'],
  ])('%s prints as inet_ntop does: %s', (input, text) => {
    expect(parseCidr(input)).toEqual({ family: 6, text });
  });
});

describe('canonicalAddress and familyOf', () => {
  test.each([
    ['10.0.0.1', '10.0.0.1'],
    ['FE80::A', 'fe80::a'],
    ['fe80:0:0:0:0:0:0:1', 'fe80::1'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['2001:db8::0:1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:ff00:0042:8329', '2001:db8::ff00:42:8329'],
  ])('%s -> %s', (input, text) => {
    expect(canonicalAddress(input)).toBe(text);
  });

  test('non-addresses are refused', () => {
    for (const a of ['x', '10.0.0.1/32', '', '1.2.3', '::g']) expect(() => canonicalAddress(a)).toThrow(`"${a}" is not an IP address`);
  });

  test('familyOf', () => {
    expect(familyOf('10.0.0.1')).toBe(4);
    expect(familyOf('fd00::1')).toBe(6);
    expect(familyOf('::ffff:10.0.0.1')).toBe(6);
    expect(familyOf('10.0.0.1/24')).toBeUndefined();
    expect(familyOf('eth0')).toBeUndefined();
    expect(familyOf('')).toBeUndefined();
  });

  // familyOf parses addresses itself (node:net is slow to load under Bun): it must agree with
  // node:net's isIP on everything without a zone, the tricky shapes and random strings alike.
  const agreesWithNode = (a: string) => expect(familyOf(a) ?? 0, a).toBe(hasZone(a) ? 0 : isIP(a));
  test.each([
    '0.0.0.0', '255.255.255.255', '256.0.0.1', '01.2.3.4', '1.2.3.04', '1.2.3', '1.2.3.4.5', '1..2.3', ' 1.2.3.4', '1.2.3.4 ',
    '::', '::1', '1::', ':1::', '1::2:', ':::', '1:::2', '1::2::3', '::ffff:1.2.3.4', '::1.2.3.4', ':1.2.3.4', '1.2.3.4::',
    '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1::3:4:5:6:7:8',
    '1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:1.2.3.4', '1:2:3:4:5:6:7:1.2.3.4', '1::1.2.3.4', '1::256.2.3.4', 'ffff::1.2.3',
    '12345::', 'g::', 'FFFF::ffff', '0:0:0:0:0:0:0:0', '::0:0:0:0:0:0:0', '::0:0:0:0:0:0:0:0', '1:2:3:4:5:6:1.2.3.4::',
  ])('familyOf agrees with node:net on %j', agreesWithNode);

  test('familyOf agrees with node:net on random strings of address characters', () => {
    const chars = fc.constantFrom(...'0123456789abcdefABCDEFg:.');
    const groups = fc.array(fc.oneof(fc.constant(''), fc.string({ unit: fc.constantFrom(...'0123456789abcdefF'), minLength: 1, maxLength: 5 }), fc.ipV4()), { maxLength: 10 }).map((g) => g.join(':'));
    fc.assert(fc.property(fc.oneof(fc.string({ unit: chars, maxLength: 45 }), groups, fc.ipV6(), fc.ipV4()), (a) => { agreesWithNode(a); }), { numRuns: 20000 });
  });
});

describe('hostAddress', () => {
  test('splits an interface address into its canonical host address', () => {
    expect(hostAddress('10.244.0.5/24')).toEqual({ family: 4, address: '10.244.0.5' });
    expect(hostAddress('FD00:244:0:0::5/64')).toEqual({ family: 6, address: 'fd00:244::5' });
    expect(hostAddress('10.244.0.5')).toEqual({ family: 4, address: '10.244.0.5' });
  });

  test('refuses what is not an address', () => {
    expect(() => hostAddress('pod/24')).toThrow('"pod/24" is not an IP address');
  });
});

// node:net's isIPv6 accepts a zone ("fe80::1%eth0"); the words parser read it as fe80::NaN. An
// address with a zone is no address here, wherever it comes from.
describe('IPv6 zones', () => {
  test.each(['fe80::1%eth0', 'fe80::%eth0', 'fe80::1%2', 'fd00::1%lo', '::ffff:10.0.0.1%eth0'])('%s is not an address', (a) => {
    expect(hasZone(a)).toBe(true);
    expect(familyOf(a)).toBeUndefined();
    expect(() => canonicalAddress(a)).toThrow(`"${a}" is not an IP address`);
    expect(() => parseCidr(a)).toThrow(`"${a}" carries an IPv6 zone (%...): not allowed here`);
    expect(() => parseCidr(`${a}/64`)).toThrow('carries an IPv6 zone');
    expect(() => hostAddress(`${a}/64`)).toThrow('is not an IP address');
    expect(inCidr(a, 'fe80::/10')).toBe(false);
  });

  test('a zone after the prefix length is refused too', () => {
    expect(() => parseCidr('fe80::/64%eth0')).toThrow('has a prefix length outside 0-128');
  });
});

describe('inCidr and cidrRange', () => {
  test('inCidr: containment of a bare address, per family', () => {
    expect(inCidr('10.1.2.3', '10.0.0.0/8')).toBe(true);
    expect(inCidr('11.0.0.0', '10.0.0.0/8')).toBe(false);
    expect(inCidr('0.0.0.0', '0.0.0.0/8')).toBe(true);
    expect(inCidr('febf:ffff::1', 'fe80::/10')).toBe(true);
    expect(inCidr('fec0::1', 'fe80::/10')).toBe(false);
    expect(inCidr('::ffff:1.2.3.4', '::ffff:0.0.0.0/96')).toBe(true);
    expect(inCidr('10.0.0.1', '::/0')).toBe(false);
    expect(inCidr('x', '0.0.0.0/0')).toBe(false);
  });

  test('cidrRange: first and last address as words', () => {
    expect(cidrRange('10.1.2.3/22')).toEqual({ family: 4, prefix: 22, first: [10, 1, 0, 0], last: [10, 1, 3, 255] });
    expect(cidrRange('0.0.0.0/0')).toEqual({ family: 4, prefix: 0, first: [0, 0, 0, 0], last: [255, 255, 255, 255] });
    expect(cidrRange('10.0.0.1')).toMatchObject({ prefix: 32, first: [10, 0, 0, 1], last: [10, 0, 0, 1] });
    expect(cidrRange('fd00:10::/108')).toEqual({
      family: 6, prefix: 108, first: [0xfd00, 0x10, 0, 0, 0, 0, 0, 0], last: [0xfd00, 0x10, 0, 0, 0, 0, 0xf, 0xffff],
    });
    expect(cidrRange('::/0').last).toEqual(Array(8).fill(0xffff));
  });

  test('compareWords orders as the addresses', () => {
    expect(compareWords([10, 0, 0, 1], [10, 0, 0, 2])).toBeLessThan(0);
    expect(compareWords([11, 0, 0, 0], [10, 255, 255, 255])).toBeGreaterThan(0);
    expect(compareWords([1, 2, 3, 4], [1, 2, 3, 4])).toBe(0);
  });
});

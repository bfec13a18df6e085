import { describe, expect, it } from 'vitest';
import { addressKey, hostAddress, ipv6Groups } from './client-address.js';
import { defaultMaxConnections } from '../http/connection-guard.js';

describe('addressKey', () => {
  it('is an IPv4 address as it is, an IPv4-mapped IPv6 one as IPv4', () => {
    expect(addressKey('203.0.113.9')).toBe('203.0.113.9');
    expect(addressKey('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(addressKey('::FFFF:10.0.0.1')).toBe('10.0.0.1');
  });

  it("is an IPv6 address's /64, however it is written", () => {
    const key = '2001:db8:0:1::/64';
    for (const a of ['2001:db8:0:1::1', '2001:0db8:0000:0001:ffff:ffff:ffff:ffff', '2001:DB8:0:1:a:b:c:d', '2001:db8::1:0:0:0:9'])
      expect(addressKey(a), a).toBe(key);
    expect(addressKey('2001:db8:0:2::1')).not.toBe(key);
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });

  it('is the IPv4 address an IPv6 one carries: NAT64 (64:ff9b::/96) and SIIT (::ffff:0:0:0/96), dotted or not', () => {
    expect(addressKey('64:ff9b::192.0.2.1')).toBe('192.0.2.1');
    expect(addressKey('64:ff9b::c000:201')).toBe('192.0.2.1');
    expect(addressKey('64:ff9b::198.51.100.7')).toBe('198.51.100.7');
    expect(addressKey('::ffff:0:a00:1')).toBe('10.0.0.1');
    expect(addressKey('::ffff:0:10.0.0.1')).toBe('10.0.0.1');
    expect(addressKey('::ffff:a00:1')).toBe('10.0.0.1');
    // Not a prefix that carries one: a /64 as any other.
    expect(addressKey('64:ff9b:1::c000:201')).toBe('64:ff9b:1:0::/64');
  });

  it('leaves what is not an address as it is', () => {
    expect(addressKey('1:2:3')).toBe('1:2:3');
    expect(addressKey('1::2::3')).toBe('1::2::3');
    expect(ipv6Groups('::ffff:300.1.1.1')).toBeNull();
  });

  it('is empty for no address (a socket already closed)', () => {
    expect(addressKey(undefined)).toBe('');
    expect(addressKey('')).toBe('');
  });
});

describe('hostAddress', () => {
  it('is one host exactly: IPv4-mapped as IPv4, IPv6 in full', () => {
    expect(hostAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(hostAddress('10.1.2.3')).toBe('10.1.2.3');
    expect(hostAddress('FD00::7')).toBe('fd00:0:0:0:0:0:0:7');
    expect(hostAddress('fd00:0::7')).toBe(hostAddress('fd00::0:7'));
    expect(hostAddress(undefined)).toBe('');
  });
});

describe('defaultMaxConnections', () => {
  it('is half the open-file limit, at least 64, and 4,096 where the limit is unknown', () => {
    expect(defaultMaxConnections(20_000)).toBe(10_000);
    expect(defaultMaxConnections(100)).toBe(64);
    expect(defaultMaxConnections(null)).toBe(4_096);
  });
});

import { describe, expect, it } from 'vitest';
import { addressKey } from './client-address.js';
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

  it('is empty for no address (a socket already closed)', () => {
    expect(addressKey(undefined)).toBe('');
    expect(addressKey('')).toBe('');
  });
});

describe('defaultMaxConnections', () => {
  it('is half the open-file limit, at least 64, and 4,096 where the limit is unknown', () => {
    expect(defaultMaxConnections(20_000)).toBe(10_000);
    expect(defaultMaxConnections(100)).toBe(64);
    expect(defaultMaxConnections(null)).toBe(4_096);
  });
});

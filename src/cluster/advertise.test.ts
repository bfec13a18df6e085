import type { NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { defaultAdvertiseUrl, type Interfaces } from './advertise.js';

function v4(address: string, internal = false): NetworkInterfaceInfo {
  return { address, netmask: '255.255.255.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal, cidr: `${address}/24` };
}
function v6(address: string, scopeid = 0): NetworkInterfaceInfo {
  return {
    address,
    netmask: 'ffff:ffff:ffff:ffff::',
    family: 'IPv6',
    mac: '00:00:00:00:00:00',
    internal: false,
    cidr: `${address}/64`,
    scopeid,
  };
}

const LO: Interfaces = { lo: [v4('127.0.0.1', true)] };
const HOST: Interfaces = {
  lo: [v4('127.0.0.1', true)],
  eth0: [v6('fe80::1', 2), v4('169.254.3.4'), v4('10.0.0.2')],
  eth1: [v4('192.168.1.2')],
};
const V6_ONLY: Interfaces = { lo: [v4('127.0.0.1', true)], eth0: [v6('fe80::1', 2), v6('2001:db8::2')] };

describe('defaultAdvertiseUrl', () => {
  const cases: Array<[string, 'http' | 'https', string, Interfaces, string]> = [
    ['a named listen address is advertised as it is', 'http', '10.0.0.7', HOST, 'http://10.0.0.7:3000'],
    ['the loopback default stays loopback', 'http', '127.0.0.1', HOST, 'http://127.0.0.1:3000'],
    ['0.0.0.0 advertises the first routable IPv4 address', 'http', '0.0.0.0', HOST, 'http://10.0.0.2:3000'],
    [':: advertises the first routable IPv4 address too', 'https', '::', HOST, 'https://10.0.0.2:3000'],
    ['without IPv4 a global IPv6 address, bracketed', 'http', '0.0.0.0', V6_ONLY, 'http://[2001:db8::2]:3000'],
    ['a machine with loopback alone advertises 127.0.0.1', 'http', '0.0.0.0', LO, 'http://127.0.0.1:3000'],
    ['an IPv6 listen address is bracketed', 'http', 'fd00::5', HOST, 'http://[fd00::5]:3000'],
    ['a host name is kept', 'https', 'git-a.internal', HOST, 'https://git-a.internal:3000'],
  ];
  for (const [name, scheme, host, interfaces, url] of cases) {
    it(name, () => {
      expect(defaultAdvertiseUrl(scheme, host, 3000, interfaces)).toBe(url);
    });
  }
});

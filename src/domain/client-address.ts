/**
 * EMBEDDED_IPV4 are the IPv6 prefixes (their first 96 bits, as six groups) whose last 32 bits are
 * an IPv4 client's address: IPv4-mapped (`::ffff:0:0/96`, a dual-stack socket's), IPv4-translated
 * (`::ffff:0:0:0/96`, SIIT) and the NAT64 well-known prefix (`64:ff9b::/96`). Keyed by their /64,
 * every IPv4 client behind a NAT64 would be one client.
 */
const IPV4_MAPPED = '0:0:0:0:0:ffff';
const EMBEDDED_IPV4 = [IPV4_MAPPED, '0:0:0:0:ffff:0', '64:ff9b:0:0:0:0'];

/**
 * ipv6Groups expands an IPv6 address into its eight groups (lower case, without leading zeros),
 * a dotted IPv4 tail as two groups; null if it is not one.
 */
export function ipv6Groups(address: string): string[] | null {
  let bare = address.split('%')[0]!.toLowerCase();
  const dotted = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(bare);
  if (dotted) {
    const b = dotted.slice(2, 6).map(Number);
    if (b.some((x) => x > 255)) return null;
    bare = `${dotted[1]}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const parts = bare.split('::');
  if (parts.length > 2) return null;
  const left = parts[0] === '' ? [] : parts[0]!.split(':');
  const right = parts.length === 1 || parts[1] === '' ? [] : parts[1]!.split(':');
  const fill = 8 - left.length - right.length;
  if (parts.length === 1 ? fill !== 0 : fill < 1) return null;
  const groups = [...left, ...Array<string>(parts.length === 1 ? 0 : fill).fill('0'), ...right];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return null;
  return groups.map((g) => g.replace(/^0+(?=.)/, ''));
}

/**
 * addressKey is the client a connection's address names, for every per-client limit (HTTP
 * connections, git slots, failed sign-ins, SSH sign-ins pending): an IPv4 address (also when an
 * IPv6 one carries it: EMBEDDED_IPV4), or the /64 of any other IPv6 one, which one host is
 * usually given whole (counted by address, it would have 2^64 shares).
 */
export function addressKey(address: string | undefined): string {
  if (!address) return '';
  if (!address.includes(':')) return address;
  const groups = ipv6Groups(address);
  if (!groups) return address;
  if (EMBEDDED_IPV4.includes(groups.slice(0, 6).join(':'))) {
    const [hi, lo] = [parseInt(groups[6]!, 16), parseInt(groups[7]!, 16)];
    return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
  }
  return `${groups.slice(0, 4).join(':')}::/64`;
}

/**
 * hostAddress is one host's exact address (a cluster member's, remembered as it connects):
 * an IPv4-mapped IPv6 address as IPv4, any other IPv6 address in its full lower-case form.
 */
export function hostAddress(address: string | undefined): string {
  if (!address) return '';
  if (!address.includes(':')) return address;
  const groups = ipv6Groups(address);
  if (!groups) return address.toLowerCase();
  return groups.slice(0, 6).join(':') === IPV4_MAPPED ? addressKey(address) : groups.join(':');
}

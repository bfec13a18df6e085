import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

/** Interfaces is the shape of `os.networkInterfaces()`. */
export type Interfaces = NodeJS.Dict<NetworkInterfaceInfo[]>;

const WILDCARDS = new Set(['0.0.0.0', '::', '']);

/**
 * defaultAdvertiseUrl is the URL a node gives its peers when no `--advertise-url` is set: the
 * listen address, or for a wildcard listen address (`0.0.0.0`, `::`) the machine's first
 * address that is not loopback or link-local (IPv4 first), so a node on its own machine is
 * reachable by the others without the flag. 127.0.0.1 only when the machine has no such
 * address. IPv6 hosts are bracketed.
 */
export function defaultAdvertiseUrl(
  scheme: 'http' | 'https',
  host: string,
  port: number,
  interfaces: Interfaces = networkInterfaces(),
): string {
  const address = WILDCARDS.has(host) ? machineAddress(interfaces) : host;
  return `${scheme}://${address.includes(':') ? `[${address}]` : address}:${port}`;
}

function machineAddress(interfaces: Interfaces): string {
  const all = Object.values(interfaces)
    .flatMap((list) => list ?? [])
    .filter((a) => !a.internal);
  const v4 = all.find((a) => a.family === 'IPv4' && !a.address.startsWith('169.254.'));
  const v6 = all.find((a) => a.family === 'IPv6' && a.scopeid === 0 && !/^fe80:/i.test(a.address));
  return v4?.address ?? v6?.address ?? '127.0.0.1';
}

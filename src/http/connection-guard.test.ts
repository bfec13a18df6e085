import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connectFrom } from '../../test/helpers/sockets.js';
import { Metrics } from '../metrics.js';
import { guardConnections, PeerAddresses, peerReserve, resolvePeerAddresses } from './connection-guard.js';

const quiet = { warn: () => undefined } as unknown as Parameters<typeof guardConnections>[5];

describe('PeerAddresses', () => {
  it('knows the addresses the members URLs name and those a member call came from, IPv4-mapped or not', async () => {
    const peers = new PeerAddresses();
    peers.name(await resolvePeerAddresses(['http://10.1.2.3:3000', 'https://[fd00::7]:3000', 'not a url', 'http://localhost:1']));
    expect(peers.has('10.1.2.3')).toBe(true);
    expect(peers.has('::ffff:10.1.2.3')).toBe(true);
    expect(peers.has('fd00::7')).toBe(true);
    expect(peers.has('fd00:0:0::7')).toBe(true);
    expect(peers.has('127.0.0.1') || peers.has('::1')).toBe(true);
    expect(peers.has('10.1.2.4')).toBe(false);
    peers.learn('::ffff:192.0.2.9');
    expect(peers.has('192.0.2.9')).toBe(true);
    // A host whose lookup fails keeps what it resolved to before.
    peers.name(new Map([['peer.example', ['10.9.9.9']]]));
    expect(peers.has('10.9.9.9')).toBe(true);
    peers.name(new Map([['peer.example', null]]));
    expect(peers.has('10.9.9.9')).toBe(true);
    // Named again: the learned stay, the named are replaced.
    peers.name(new Map());
    expect(peers.has('10.9.9.9')).toBe(false);
    expect(peers.has('10.1.2.3')).toBe(false);
    expect(peers.has('192.0.2.9')).toBe(true);
  });
});

describe('guardConnections', () => {
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  async function start(max: number, perAddress: number, peers: PeerAddresses): Promise<number> {
    const server = createServer((_req, res) => res.end('ok'));
    servers.push(server);
    guardConnections(server, { max, perAddress, firstRequestMs: 60_000 }, peers, false, new Metrics(), quiet);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return (server.address() as AddressInfo).port;
  }

  /** open connects from `from` and says whether the server closed it within 300 ms. */
  async function open(port: number, from: string): Promise<boolean> {
    const { socket, closed } = await connectFrom(port, from);
    sockets.push(socket);
    return closed;
  }

  async function openMany(port: number, from: string, n: number): Promise<number> {
    const closed = await Promise.all(Array.from({ length: n }, () => open(port, from)));
    return closed.filter((c) => !c).length;
  }

  it("a member's connections pass the per-address cap, and have a reserve above the clients' cap", async () => {
    const peers = new PeerAddresses();
    peers.learn('127.0.0.9');
    const port = await start(10, 4, peers);
    // A client address: its share, no more.
    expect(await openMany(port, '127.0.0.8', 6)).toBe(4);
    // Clients from other addresses fill the rest of the cap in all.
    expect(await openMany(port, '127.0.0.7', 4)).toBe(4);
    expect(await openMany(port, '127.0.0.6', 4)).toBe(2);
    expect(await open(port, '127.0.0.5')).toBe(true);
    // The member still gets in, past its address's share and the clients' cap, up to the reserve.
    expect(peerReserve(10)).toBe(64);
    expect(await openMany(port, '127.0.0.9', 70)).toBe(64);
  });
});

import { readFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import type { Server } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { addressKey, hostAddress } from '../domain/client-address.js';
import type { Logger } from '../domain/logger.js';
import type { Metrics } from '../metrics.js';

/** ConnectionLimits bounds the TCP connections the HTTP server holds. */
export interface ConnectionLimits {
  /** max: client connections open at once; past it a new one is closed at once (the members have a reserve above it). */
  readonly max: number;
  /** perAddress: connections one client address (an IPv6 /64) may hold at once; 0: no cap. */
  readonly perAddress: number;
  /** firstRequestMs: a connection that has sent no complete request this long after it opened is closed. */
  readonly firstRequestMs: number;
}

/**
 * openFilesLimit reads the process's limit on open files (the soft RLIMIT_NOFILE, which Node
 * raises to the hard limit at start) from /proc; null where it cannot be read.
 */
export function openFilesLimit(): number | null {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
    return line === undefined || line === 'unlimited' ? null : Number(line);
  } catch {
    return null;
  }
}

/**
 * defaultMaxConnections is half the open-file limit (the rest is the node's own: git processes'
 * pipes, packs, peer connections, the store), 4,096 where the limit is unknown, 16,384 at most
 * (a container's limit of a million would otherwise let memory run out first).
 */
export function defaultMaxConnections(limit = openFilesLimit()): number {
  return Math.max(64, Math.min(16_384, Math.floor((limit ?? 8_192) / 2)));
}

/** LEARNED_PEER_MS is how long an address a verified member call came from counts as a peer's. */
const LEARNED_PEER_MS = 3_600_000;

/**
 * PeerAddresses are the addresses the cluster's members connect from, whose connections the
 * caps on clients must not turn away (a flood of client connections would otherwise cut a node
 * off from its peers, and two such nodes off a write quorum): those a call signed by a member
 * came from in the last hour (learned, so a member's outbound address counts even where it is
 * not the one it advertises), and those the members' URLs name (resolved, so a node that starts
 * under a flood still lets its peers in).
 */
export class PeerAddresses {
  private readonly learned = new Map<string, number>();
  /** named are the addresses each member URL's host resolved to, at its last lookup that worked. */
  private named = new Map<string, readonly string[]>();
  private namedSet = new Set<string>();

  /** has says whether connections from `address` are a peer's. */
  has(address: string | undefined): boolean {
    const a = hostAddress(address);
    if (this.namedSet.has(a)) return true;
    const at = this.learned.get(a);
    return at !== undefined && Date.now() - at < LEARNED_PEER_MS;
  }

  /** learn notes the address a call verified as a member's came from. */
  learn(address: string | undefined): void {
    const a = hostAddress(address);
    if (!a) return;
    // Bounded (members are few; this only guards against a leak): the expired go, then the least recently seen.
    if (!this.learned.has(a) && this.learned.size >= 1_024) {
      for (const [k, at] of this.learned) if (Date.now() - at >= LEARNED_PEER_MS) this.learned.delete(k);
      if (this.learned.size >= 1_024) this.learned.delete(this.learned.keys().next().value!);
    }
    this.learned.delete(a);
    this.learned.set(a, Date.now());
  }

  /**
   * name sets the members' hosts and what each resolved to (null: its lookup failed, and it keeps
   * what it resolved to before: a passing DNS failure must not take the members' allowance away).
   */
  name(resolved: ReadonlyMap<string, readonly string[] | null>): void {
    const next = new Map<string, readonly string[]>();
    for (const [host, addresses] of resolved) next.set(host, addresses ?? this.named.get(host) ?? []);
    this.named = next;
    this.namedSet = new Set([...next.values()].flat().map(hostAddress));
  }
}

/**
 * resolvePeerAddresses resolves the hosts of the members' URLs (an IP literal as itself; null for
 * a host whose lookup failed or took over 5 s).
 */
export async function resolvePeerAddresses(urls: readonly string[]): Promise<Map<string, readonly string[] | null>> {
  const hosts = new Set<string>();
  for (const u of urls) {
    try {
      hosts.add(new URL(u).hostname.replace(/^\[(.*)\]$/, '$1'));
    } catch {
      // not a URL: nothing to resolve
    }
  }
  const out = new Map<string, readonly string[] | null>();
  await Promise.all(
    [...hosts].map(async (h) => {
      if (isIP(h)) return out.set(h, [h]);
      const timeout = new Promise<null>((r) => setTimeout(() => r(null), 5_000).unref());
      const found = lookup(h, { all: true }).then(
        (all) => all.map((a) => a.address),
        () => null,
      );
      return out.set(h, await Promise.race([found, timeout]));
    }),
  );
  return out;
}

/**
 * guardConnections bounds what connections alone can hold of a node. Without it one client that
 * opened 20,000 connections and sent nothing took every file descriptor of the node (Node closes
 * such a connection after its headers timeout, looked at every 30 s, so opening them again was
 * enough to keep them): the node stopped answering, and failed its part of every transaction. Now:
 * - a connection that has not sent a complete request within `firstRequestMs` is closed, on the
 *   dot (once a request began, Node's headers timeout applies; between requests, the keep-alive
 *   timeout);
 * - one address (an IPv6 /64) holds at most `perAddress` connections: more are closed at once;
 * - the server holds at most `max` client connections: more are closed at once, and the node
 *   keeps the descriptors it needs for its own work.
 * The cluster's members (`peers`) are not clients: their connections pass the per-address cap,
 * and have `peerReserve` more above `max` (an outside attack filled `max` from 20 addresses and
 * cut the node off from its peers; two such nodes, and no push had a quorum).
 * For HTTPS, the wait for the first request starts once the TLS handshake is done (the handshake
 * has its own timeout, `firstRequestMs` too).
 */
export function guardConnections(
  server: Server,
  limits: ConnectionLimits,
  peers: PeerAddresses,
  tls: boolean,
  metrics: Metrics,
  logger: Logger,
): void {
  const reserve = peerReserve(limits.max);
  // Node's own cap is the backstop: it closes a connection past it before any listener sees it.
  server.maxConnections = limits.max + reserve;
  const served = new WeakSet<Socket>();
  const open = new Map<string, number>();
  let total = 0;
  const warned = { max: 0, per_address: 0 };
  const refused = (reason: 'max' | 'per_address', key: string): void => {
    metrics.httpConnectionsRefused.inc({ reason });
    // One line a minute per reason at most: a flood must not flood the log too. It names the
    // address holding the most connections (the one refused may be anyone's, at the cap in all).
    if (Date.now() - warned[reason] < 60_000) return;
    warned[reason] = Date.now();
    let top = key;
    for (const [k, n] of open) if (n > (open.get(top) ?? 0)) top = k;
    logger.warn(
      { reason, address: top, held: open.get(top) ?? 0, open: total, max: limits.max, perAddress: limits.perAddress },
      reason === 'max' ? 'HTTP connections at their limit: new ones closed' : 'an address holds its most HTTP connections: new ones closed',
    );
  };
  server.on('drop', (data?: { remoteAddress?: string }) => refused('max', addressKey(data?.remoteAddress)));
  server.on('request', (req: { socket: Socket }) => served.add(req.socket));
  server.on('connection', (socket: Socket) => {
    const key = addressKey(socket.remoteAddress);
    const peer = peers.has(socket.remoteAddress);
    if (total >= limits.max + (peer ? reserve : 0)) {
      refused('max', key);
      socket.destroy();
      return;
    }
    const held = open.get(key) ?? 0;
    if (!peer && limits.perAddress > 0 && held >= limits.perAddress) {
      refused('per_address', key);
      socket.destroy();
      return;
    }
    total++;
    open.set(key, held + 1);
    metrics.httpConnections.inc();
    socket.once('close', () => {
      total--;
      metrics.httpConnections.dec();
      const left = (open.get(key) ?? 1) - 1;
      if (left <= 0) open.delete(key);
      else open.set(key, left);
    });
  });
  server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    if (socket.destroyed) return;
    const timer = setTimeout(() => {
      if (served.has(socket)) return;
      metrics.httpConnectionsRefused.inc({ reason: 'no_request' });
      socket.destroy();
    }, limits.firstRequestMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  });
}

/** peerReserve is how many connections the members may hold above the clients' `max`: a quarter of it, at least 64. */
export function peerReserve(max: number): number {
  return Math.max(64, Math.floor(max / 4));
}

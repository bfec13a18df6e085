import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { addressKey } from '../domain/client-address.js';
import type { Logger } from '../domain/logger.js';
import type { Metrics } from '../metrics.js';

/** ConnectionLimits bounds the TCP connections the HTTP server holds. */
export interface ConnectionLimits {
  /** max: connections open at once; past it a new one is closed at once (the server's maxConnections). */
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
 * pipes, packs, peer connections, the store), 4,096 where the limit is unknown.
 */
export function defaultMaxConnections(limit = openFilesLimit()): number {
  return Math.max(64, Math.floor((limit ?? 8_192) / 2));
}

/**
 * guardConnections bounds what connections alone can hold of a node. Without it one client that
 * opened 20,000 connections and sent nothing took every file descriptor of the node for as long
 * as it kept them (Node times out headers only once a request has begun): the node stopped
 * answering, and failed its part of every transaction. Now:
 * - a connection that has not sent a complete request within `firstRequestMs` is closed (once a
 *   request began, Node's headers timeout applies; between requests, the keep-alive timeout);
 * - one address (an IPv6 /64) holds at most `perAddress` connections: more are closed at once;
 * - the server holds at most `max`: more are closed at once, and the node keeps the descriptors
 *   it needs for its own work.
 * For HTTPS, the wait for the first request starts once the TLS handshake is done (the handshake
 * has its own timeout, `firstRequestMs` too).
 */
export function guardConnections(server: Server, limits: ConnectionLimits, tls: boolean, metrics: Metrics, logger: Logger): void {
  server.maxConnections = limits.max;
  const served = new WeakSet<Socket>();
  const open = new Map<string, number>();
  let warned = 0;
  const refused = (reason: 'max' | 'per_address', key: string): void => {
    metrics.httpConnectionsRefused.inc({ reason });
    // One line a minute at most: a flood must not flood the log too.
    if (Date.now() - warned < 60_000) return;
    warned = Date.now();
    logger.warn(
      { reason, address: key, max: limits.max, perAddress: limits.perAddress },
      reason === 'max' ? 'HTTP connections at their limit: new ones closed' : 'an address holds its most HTTP connections: new ones closed',
    );
  };
  server.on('drop', (data?: { remoteAddress?: string }) => refused('max', addressKey(data?.remoteAddress)));
  server.on('request', (req: { socket: Socket }) => served.add(req.socket));
  server.on('connection', (socket: Socket) => {
    metrics.httpConnections.inc();
    socket.once('close', () => metrics.httpConnections.dec());
    if (limits.perAddress <= 0) return;
    const key = addressKey(socket.remoteAddress);
    const held = open.get(key) ?? 0;
    if (held >= limits.perAddress) {
      refused('per_address', key);
      socket.destroy();
      return;
    }
    open.set(key, held + 1);
    socket.once('close', () => {
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

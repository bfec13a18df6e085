import type { FastifyInstance } from 'fastify';
import { isAdmin } from '../auth/tokens.js';
import type { NodeDeps } from './deps.js';

const ANYONE = { access: 'anonymous' } as const;

/** registerHealthRoutes adds `/health` (the seed's shape plus store state), `/ready` and `/metrics`. */
export function registerHealthRoutes(app: FastifyInstance, deps: NodeDeps): void {
  app.get('/health', { config: ANYONE }, async (req) => {
    const peers = deps.membership.peers();
    const storeOk = deps.membership.storeReachable;
    deps.metrics.gitProcesses.set(deps.git.runningCount);
    return {
      status: storeOk ? 'healthy' : 'degraded',
      server_id: deps.nodeId,
      timestamp: new Date().toISOString(),
      load: deps.load.load(),
      peers: peers.filter((p) => p.live).length,
      peer_nodes: peers,
      // The store's error text can name hosts and paths: admins only.
      store: { kind: deps.store.kind, reachable: storeOk, ...(isAdmin(req.caller) ? { error: deps.membership.storeError } : {}) },
      writes: storeOk ? 'available' : 'unavailable: coordination store unreachable',
      git_processes: deps.git.runningCount,
      open_transactions: deps.participant.openCount,
      version: deps.config.version,
    };
  });

  app.get('/ready', { config: ANYONE }, async (_req, reply) => {
    if (deps.lifecycle.draining) return reply.code(503).send({ ready: false, reason: 'shutting down' });
    if (!deps.membership.storeReachable) return reply.code(503).send({ ready: false, reason: 'coordination store unreachable' });
    return { ready: true };
  });

  app.get('/metrics', { config: ANYONE }, async (_req, reply) => {
    deps.metrics.gitProcesses.set(deps.git.runningCount);
    reply.header('content-type', deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });
}

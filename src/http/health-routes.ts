import type { FastifyInstance } from 'fastify';
import { isAdmin } from '../auth/tokens.js';
import type { NodeDeps } from './deps.js';

const ANYONE = { access: 'anonymous' } as const;

/**
 * writeBlockers lists why this node cannot complete a write now (empty: it can): shutting down,
 * the store unreachable, its disk full, or fewer live nodes than a write quorum. The quorum
 * check is per node, not per repo: with more nodes than replicas, a repo whose own replicas are
 * down still fails its pushes while others succeed.
 */
function writeBlockers(deps: NodeDeps): string[] {
  const out: string[] = [];
  if (deps.lifecycle.draining) out.push('shutting down');
  if (!deps.membership.storeReachable) out.push('coordination store unreachable');
  const disk = deps.disk.shortage();
  if (disk) out.push(disk);
  const known = deps.membership.knownIds().length;
  const live = deps.membership.liveIds().length;
  const w = deps.coordinator.writeQuorumFor(Math.min(deps.config.replicationFactor, known));
  if (live < w) out.push(`${live} of ${known} nodes live, a write needs ${w}`);
  return out;
}

/** registerHealthRoutes adds `/health` (the seed's shape plus store state), `/ready` and `/metrics`. */
export function registerHealthRoutes(app: FastifyInstance, deps: NodeDeps): void {
  app.get('/health', { config: ANYONE }, async (req) => {
    const peers = deps.membership.peers();
    const storeOk = deps.membership.storeReachable;
    const blockers = writeBlockers(deps);
    deps.metrics.gitProcesses.set(deps.git.runningCount);
    return {
      // 200 while reads work. `status` keeps the seed's meaning (the node and its store);
      // `writes` (and /ready) say whether a write could complete here, and why not.
      status: storeOk && !deps.lifecycle.draining ? 'healthy' : 'degraded',
      server_id: deps.nodeId,
      timestamp: new Date().toISOString(),
      load: deps.load.load(),
      peers: peers.filter((p) => p.live).length,
      peer_nodes: peers,
      // The store's error text can name hosts and paths: admins only.
      store: { kind: deps.store.kind, reachable: storeOk, ...(isAdmin(req.caller) ? { error: deps.membership.storeError } : {}) },
      writes: blockers.length === 0 ? 'available' : `unavailable: ${blockers.join('; ')}`,
      disk_free_bytes: deps.disk.freeBytes,
      git_processes: deps.git.runningCount,
      git_waiting: deps.git.waitingCount,
      open_transactions: deps.participant.openCount,
      staged_packs: deps.participant.stagedCount,
      version: deps.config.version,
    };
  });

  app.get('/ready', { config: ANYONE }, async (_req, reply) => {
    const blockers = writeBlockers(deps);
    if (blockers.length > 0) return reply.code(503).send({ ready: false, reason: blockers.join('; ') });
    return { ready: true };
  });

  app.get('/metrics', { config: ANYONE }, async (_req, reply) => {
    deps.metrics.gitProcesses.set(deps.git.runningCount);
    reply.header('content-type', deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });
}

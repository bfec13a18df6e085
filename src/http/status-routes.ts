import type { FastifyInstance, FastifyRequest } from 'fastify';
import { request } from 'undici';
import { isInSync, type RepoRecord } from '../store/types.js';
import type { NodeDeps } from './deps.js';
import { visibleRepos } from './listing.js';
import { STATUS_PAGE, STATUS_PAGE_CSP } from './status-page.js';

/** PAGE_REPOS is how many repos one status answer lists by default; `limit` asks for 1 to MAX_REPOS. */
const PAGE_REPOS = 100;
const MAX_REPOS = 200;
/** PEER_PROGRESS_MS bounds the wait for a peer's repair progress; a slow peer's is left out. */
const PEER_PROGRESS_MS = 800;

/** ReplicaStatus is one replica as the status page shows it. */
interface ReplicaStatus {
  node: string;
  state: string;
  generation: number | null;
  live: boolean;
  repair?: unknown;
}

/**
 * registerStatusRoutes adds the status page at `/` (one self-contained HTML page, served by every
 * node) and the JSON it polls, `/status.json`: the nodes with liveness, load and version, and the
 * repos the caller may read with each replica's state, generation and repair progress. What a
 * caller sees follows the same rules as `GET /repos`: anonymous callers see public repos only.
 */
export function registerStatusRoutes(app: FastifyInstance, deps: NodeDeps): void {
  app.get('/', { config: { access: 'anonymous' } }, async (_req, reply) => {
    return reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', STATUS_PAGE_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-store')
      .send(STATUS_PAGE);
  });

  app.get<{ Querystring: { limit?: string; cursor?: string } }>(
    '/status.json',
    { config: { access: 'anonymous' }, schema: statusSchema },
    async (req, reply) => {
      void reply.header('cache-control', 'no-store');
      const limit = Math.min(MAX_REPOS, Math.max(1, Number(req.query.limit ?? PAGE_REPOS)));
      const { visible, next } = await visibleRepos(deps, req.caller?.principal ?? null, req.query.cursor, limit);
      const repos = await Promise.all(
        visible.map(async ({ repo, visibility }) => ({
          repo_id: repo.repoId,
          visibility,
          generation: repo.generation,
          write_quorum: deps.coordinator.writeQuorumFor(repo.replicas.length),
          replicas: await replicasOf(deps, req, repo),
        })),
      );
      return {
        node: deps.nodeId,
        version: deps.config.version,
        time: new Date().toISOString(),
        user: req.caller?.principal.user ?? null,
        store: { kind: deps.store.kind, reachable: deps.membership.storeReachable },
        nodes: deps.membership.view(deps.load.load()).map((n) => ({
          id: n.id,
          url: n.url,
          version: n.version,
          started_at: n.startedAt,
          live: n.live,
          self: n.self,
          load: n.load,
          down_for_ms: n.downForMs,
        })),
        repos,
        cursor: req.query.cursor ?? null,
        next_cursor: next,
      };
    },
  );
}

const statusSchema = {
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: { limit: { type: 'string', pattern: '^[0-9]{1,3}$' }, cursor: { type: 'string', maxLength: 400 } },
  },
} as const;

/**
 * replicasOf lists a repo's replicas with their state; a replica being repaired on this node
 * shows its progress, and one on a live peer asks that peer (with the caller's own credentials,
 * so the peer decides again what the caller may see).
 */
async function replicasOf(deps: NodeDeps, req: FastifyRequest, repo: RepoRecord): Promise<ReplicaStatus[]> {
  const byNode = new Map((await deps.store.getReplicas(repo.repoId)).map((r) => [r.nodeId, r]));
  const out = repo.replicas.map((n): ReplicaStatus => {
    const r = byNode.get(n);
    const state = isInSync(repo, r) ? 'in_sync' : r?.state === 'in_sync' ? 'stale' : (r?.state ?? 'missing');
    const progress = n === deps.nodeId ? deps.repair.progressOf(repo.repoId) : undefined;
    return {
      node: n,
      state,
      generation: r?.generation ?? null,
      live: deps.membership.isLive(n),
      ...(progress ? { repair: progress } : {}),
    };
  });
  await Promise.all(
    out.map(async (r) => {
      if (r.state === 'in_sync' || r.node === deps.nodeId || !r.live) return;
      const progress = await peerProgress(deps, req, r.node, repo.repoId);
      if (progress) r.repair = progress;
    }),
  );
  return out;
}

async function peerProgress(deps: NodeDeps, req: FastifyRequest, node: string, repoId: string): Promise<unknown> {
  const url = deps.membership.urlOf(node);
  if (!url) return undefined;
  const auth = req.headers.authorization;
  try {
    const res = await request(`${url}/repos/${repoId}`, {
      dispatcher: deps.peers.dispatcher,
      headers: auth ? { authorization: auth } : {},
      signal: AbortSignal.timeout(PEER_PROGRESS_MS),
    });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return undefined;
    }
    const body = (await res.body.json()) as { replicas?: Array<{ node?: string; repair?: unknown }> };
    return body.replicas?.find((r) => r.node === node)?.repair;
  } catch {
    return undefined;
  }
}

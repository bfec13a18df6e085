import type { FastifyInstance } from 'fastify';
import { notFound } from '../domain/errors.js';
import { placeReplicas } from '../domain/placement.js';
import { parseRepoId } from '../domain/repo-id.js';
import { DECOMMISSIONED_PREFIX, REBALANCE_KEY } from '../store/types.js';
import { AUDIT_KEEP } from '../auth/audit.js';
import { ADMIN_USER } from '../auth/directory.js';
import type { Role } from '../auth/tokens.js';
import type { NodeDeps } from './deps.js';

const ADMIN = { access: 'admin' } as const;
const tokenSchema = {
  body: {
    type: 'object',
    required: ['name', 'role'],
    additionalProperties: false,
    properties: {
      name: { type: 'string', minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._@-]+$' },
      role: { type: 'string', enum: ['read', 'write', 'admin'] },
      user: { type: 'string', minLength: 1, maxLength: 100 },
      expires_at: { type: 'string', maxLength: 40 },
    },
  },
} as const;

/** registerAdminRoutes adds cluster operations: tokens, node list, decommission, rebalance; each route is admin-only. */
export function registerAdminRoutes(app: FastifyInstance, deps: NodeDeps): void {
  // The cluster-role API of before users: a token of the built-in admin user (or of `user`).
  app.post<{ Body: { name: string; role: Role; user?: string; expires_at?: string } }>(
    '/admin/tokens',
    { config: ADMIN, schema: tokenSchema },
    async (req, reply) => {
      const made = await deps.auth.create(req.body.user ?? ADMIN_USER, req.body.name, req.body.role, req.body.expires_at);
      deps.audit.record({
        action: 'token.create',
        user: req.caller?.principal.user ?? '',
        token: req.caller?.token.name ?? '',
        detail: { id: made.info.id, name: made.info.name, for: made.info.user, scope: made.info.scope },
      });
      return reply.code(201).send({ name: req.body.name, role: req.body.role, user: made.info.user, id: made.info.id, token: made.token });
    },
  );

  app.get<{ Querystring: { limit?: string } }>(
    '/admin/audit',
    {
      config: ADMIN,
      schema: {
        querystring: { type: 'object', additionalProperties: false, properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' } } },
      },
    },
    async (req) => {
      const limit = Math.min(AUDIT_KEEP, Math.max(1, Number(req.query.limit ?? 100)));
      return { events: await deps.audit.recent(limit) };
    },
  );

  app.get('/admin/nodes', { config: ADMIN }, async () => {
    const decommissioned = new Set(
      (await deps.store.listMeta(DECOMMISSIONED_PREFIX)).map((m) => m.key.slice(DECOMMISSIONED_PREFIX.length)),
    );
    const nodes = await deps.store.allNodes();
    const counts = new Map<string, number>();
    const repos = await deps.store.listRepos();
    for (const r of repos) for (const n of r.replicas) counts.set(n, (counts.get(n) ?? 0) + 1);
    // misplaced: repos whose replica set is not yet rendezvous placement over the live nodes,
    // what `rebalance` moves toward (and its CLI follows).
    const eligible = nodes.filter((n) => !decommissioned.has(n.id));
    const live = eligible.filter((n) => n.live).map((n) => n.id);
    const r = Math.min(deps.config.replicationFactor, eligible.length);
    const misplaced = repos.filter((repo) => {
      const want = placeReplicas(repo.repoId, live, r);
      return want.length !== repo.replicas.length || want.some((n) => !repo.replicas.includes(n));
    }).length;
    return {
      nodes: nodes.map((n) => ({
        id: n.id,
        url: n.url,
        live: n.live,
        decommissioned: decommissioned.has(n.id),
        replicas: counts.get(n.id) ?? 0,
      })),
      rebalance: (await deps.store.getMeta(REBALANCE_KEY)) !== null,
      repos: repos.length,
      misplaced,
    };
  });

  app.post<{ Params: { id: string } }>('/admin/nodes/:id/decommission', { config: ADMIN }, async (req) => {
    const nodes = await deps.store.allNodes();
    if (!nodes.some((n) => n.id === req.params.id)) throw notFound(`node ${req.params.id} not found`);
    await deps.store.setMeta(`${DECOMMISSIONED_PREFIX}${req.params.id}`, new Date().toISOString());
    return { node: req.params.id, decommissioned: true };
  });

  // This node's replica of one repo: verify it now (checksum and fsck), or repair it now.
  app.post<{ Params: { owner: string; repo: string } }>('/admin/replicas/:owner/:repo/verify', { config: ADMIN }, async (req) => {
    const repoId = parseRepoId(`${req.params.owner}/${req.params.repo}`);
    return { node: deps.nodeId, repo_id: repoId, result: await deps.replicaVerifier.verifyOne(repoId, true) };
  });

  app.post<{ Params: { owner: string; repo: string } }>('/admin/replicas/:owner/:repo/repair', { config: ADMIN }, async (req) => {
    const repoId = parseRepoId(`${req.params.owner}/${req.params.repo}`);
    const repo = await deps.store.getRepo(repoId);
    if (!repo) throw notFound(`repository ${repoId} not found`);
    if (!repo.replicas.includes(deps.nodeId)) throw notFound(`node ${deps.nodeId} holds no replica of ${repoId}`);
    return { node: deps.nodeId, repo_id: repoId, in_sync: await deps.repair.catchUp(repoId) };
  });

  app.post('/admin/rebalance', { config: ADMIN }, async () => {
    await deps.store.setMeta(REBALANCE_KEY, new Date().toISOString());
    return { rebalance: true };
  });
}

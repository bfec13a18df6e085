import type { FastifyInstance } from 'fastify';
import { notFound } from '../domain/errors.js';
import { parseRepoId } from '../domain/repo-id.js';
import { hasRole } from '../auth/tokens.js';
import { isInSync } from '../store/types.js';
import type { NodeDeps } from './deps.js';

interface RepoParams { owner: string; repo: string }

const createSchema = {
  body: {
    type: 'object',
    required: ['repo_id'],
    additionalProperties: false,
    properties: { repo_id: { type: 'string', minLength: 3, maxLength: 201 } },
  },
} as const;

/** registerRepoRoutes adds the seed's repository API: create, read, list, and delete. */
export function registerRepoRoutes(app: FastifyInstance, deps: NodeDeps): void {
  app.post<{ Body: { repo_id: string } }>('/repos', { config: { access: 'write' }, schema: createSchema }, async (req, reply) => {
    const repoId = parseRepoId(req.body.repo_id);
    const result = await deps.coordinator.createRepo(repoId);
    return reply.code(201).send(result);
  });

  app.get('/repos', { config: { access: 'anonymous' } }, async () => {
    const repos = await deps.store.listRepos();
    return { repos: repos.map((r) => r.repoId), count: repos.length };
  });

  app.get<{ Params: RepoParams }>('/repos/:owner/:repo', { config: { access: 'anonymous' } }, async (req) => {
    const repoId = parseRepoId(`${req.params.owner}/${req.params.repo}`);
    const repo = await deps.store.getRepo(repoId);
    if (!repo) throw notFound(`repository ${repoId} not found`);
    const replicas = await deps.store.getReplicas(repoId);
    const byNode = new Map(replicas.map((r) => [r.nodeId, r]));
    // Where a replica lives on disk and who holds the lock are for operators only.
    const admin = hasRole(req.caller, 'admin');
    return {
      repo_id: repoId,
      exists: true,
      ...(admin ? { path: repo.replicas.includes(deps.nodeId) ? deps.storage.repoPath(repoId) : null } : {}),
      incarnation: repo.incarnation,
      generation: repo.generation,
      checksum: repo.checksum,
      created_at: repo.createdAt,
      write_quorum: deps.coordinator.writeQuorumFor(repo.replicas.length),
      ...(admin ? { lock: await deps.store.getLock(repoId).then((l) => (l ? { holder: l.holder, token: l.token } : null)) } : {}),
      replicas: repo.replicas.map((n) => {
        const r = byNode.get(n);
        return {
          node: n,
          generation: r?.generation ?? null,
          checksum: r?.checksum ?? null,
          state: isInSync(repo, r) ? 'in_sync' : r?.state === 'in_sync' ? 'stale' : (r?.state ?? 'missing'),
          live: deps.membership.isLive(n),
          ...(n === deps.nodeId && deps.repair.inProgress.has(repoId) ? { repair: deps.repair.inProgress.get(repoId) } : {}),
        };
      }),
    };
  });

  app.delete<{ Params: RepoParams }>('/repos/:owner/:repo', { config: { access: 'admin' } }, async (req) => {
    const repoId = parseRepoId(`${req.params.owner}/${req.params.repo}`);
    return deps.coordinator.deleteRepo(repoId);
  });
}

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { decideFor } from '../auth/authorize.js';
import { checkPrincipal, RECHECK_MS } from '../auth/directory.js';
import { canCreateIn, type Role, type Visibility } from '../auth/policy.js';
import { isAdmin, type Caller } from '../auth/tokens.js';
import { AppError, badRequest, forbidden, notFound } from '../domain/errors.js';
import { refNameProblem } from '../domain/ref-name.js';
import { parseRepoId, type RepoId } from '../domain/repo-id.js';
import { isInSync } from '../store/types.js';
import type { NodeDeps } from './deps.js';
import { visibleRepos } from './listing.js';

interface RepoParams {
  owner: string;
  repo: string;
}

const VISIBILITY = { type: 'string', enum: ['public', 'private'] } as const;
const ROLE = { type: 'string', enum: ['read', 'write', 'admin'] } as const;

const createSchema = {
  body: {
    type: 'object',
    required: ['repo_id'],
    additionalProperties: false,
    properties: { repo_id: { type: 'string', minLength: 3, maxLength: 201 }, visibility: VISIBILITY },
  },
} as const;

const listSchema = {
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' }, cursor: { type: 'string', maxLength: 400 } },
  },
} as const;

/** callerOf is the authenticated caller a route's access hook found (the hook ran: it is set). */
function callerOf(req: FastifyRequest): Caller {
  if (!req.caller) throw new Error('route without an authenticated caller');
  return req.caller;
}

function repoIdOf(req: FastifyRequest): RepoId {
  const p = req.params as RepoParams;
  return parseRepoId(`${p.owner}/${p.repo}`);
}

/** registerRepoRoutes adds the seed's repository API (create, read, list, delete) and visibility and grants. */
export function registerRepoRoutes(app: FastifyInstance, deps: NodeDeps): void {
  const { directory, audit } = deps;
  /**
   * boundTo is the incarnation an admin's grant, visibility or default-branch change, or delete,
   * is for: the one the caller's access was decided on (a policy read up to a second ago), or,
   * for a cluster admin, whose access reads no policy, the repository as it is (undefined). If
   * the repository is no longer that one (deleted, perhaps created again, since), access is
   * decided again on a fresh policy and binds to the repository as it is now if that allows:
   * a former admin's stale view gets a 404, its owner's own change right after a delete and
   * re-create through another node does not.
   */
  const boundTo = async (req: FastifyRequest): Promise<string | undefined> => {
    const decided = req.repoDecided;
    if (decided === null || decided.incarnation === undefined) return undefined;
    const now = (await deps.store.getRepo(decided.repoId))?.incarnation ?? null;
    if ((await decideFor(directory, decided, now)) !== 'allow') throw notFound(`repository ${decided.repoId} not found`);
    // A repository that is gone binds to none ('': no repository is that one).
    return now ?? '';
  };
  const who = (req: FastifyRequest): { user: string; token: string } => ({
    user: req.caller?.principal.user ?? 'anonymous',
    token: req.caller?.token.name ?? '',
  });

  app.post<{ Body: { repo_id: string; visibility?: Visibility } }>(
    '/repos',
    { config: { access: 'write' }, schema: createSchema },
    async (req, reply) => {
      const repoId = parseRepoId(req.body.repo_id);
      const caller = callerOf(req);
      const owner = repoId.split('/')[0]!;
      // A refusal is checked again on a fresh view (RECHECK_MS): an organisation made, or a
      // membership given, a moment ago through another node lets its user create at once.
      let p = caller.principal;
      if (!canCreateIn(p, owner)) p = await directory.principal({ name: p.user, admin: p.admin }, RECHECK_MS);
      if (!canCreateIn(p, owner)) throw forbidden(`user ${p.user} may not create repositories under '${owner}'`);
      // The namespace as it is now (createdFits checks it again once the repository is made).
      let held: string | null = null;
      if (!p.admin) {
        held = await directory.namespaceStamp(owner);
        if (held === null) throw notFound(`no user or organisation named '${owner}'`);
        await directory.roomForRepo(owner);
      }
      const visibility = req.body.visibility ?? 'private';
      // A create is whole or not at all: one whose record was written and that did not fit (an
      // organisation deleted meanwhile, creates racing past the owner's cap: createdFits), or
      // whose visibility or creator's grant failed, is deleted again (by its incarnation: never
      // another create's repository of the name), and the client told why.
      const takeBack = async (incarnation: string, why: unknown): Promise<never> => {
        // Bound to the incarnation, a delete of a repository no longer this one is a 404: nothing to take back.
        await deps.coordinator
          .deleteRepo(repoId, () => directory.forgetRepo(repoId), incarnation)
          .catch((err: unknown) => {
            if (err instanceof AppError && err.statusCode === 404) return;
            req.log.warn({ repoId, err: String(err), why: String(why) }, 'a create that failed could not be taken back');
            throw err;
          });
        throw why;
      };
      const finish = async (incarnation: string): Promise<void> => {
        try {
          if (held !== null) await directory.createdFits(owner, held);
          if (visibility === 'public') await directory.setVisibility(repoId, 'public', incarnation);
          // A member who creates a repository in an organisation administers it (members only read the rest).
          if (!p.admin && p.user !== owner && p.orgs.get(owner) !== 'owner')
            await directory.grantCreator(repoId, owner, p.user, incarnation);
        } catch (err) {
          await takeBack(incarnation, err);
        }
        audit.record({ action: 'repo.create', ...who(req), repo: repoId, detail: { visibility } });
      };
      let recorded: string | null = null;
      // What a deleted repository of this name left (its visibility, its grants) is cleared first.
      const created = await deps.coordinator
        .createRepo(
          repoId,
          () => directory.forgetRepo(repoId),
          (incarnation) => (recorded = incarnation),
        )
        .catch(async (err: unknown) => {
          // Its record may be written all the same (an outcome not known, too few replicas in
          // time): if it was, it is finished as any create (or taken back past the cap, or into
          // an organisation deleted meanwhile), and the client is told what it was told before.
          const made: string | null = recorded;
          if (made !== null && (await deps.store.getRepo(repoId).catch(() => null))?.incarnation === made) await finish(made);
          throw err;
        });
      const { incarnation, ...result } = created;
      await finish(incarnation);
      return reply.code(201).send({ ...result, visibility });
    },
  );

  app.get<{ Querystring: { limit?: string; cursor?: string } }>(
    '/repos',
    { config: { access: 'anonymous' }, schema: listSchema },
    async (req) => {
      const limit = Math.min(1000, Math.max(1, Number(req.query.limit ?? 100)));
      // One page of what the caller may read, from at most MAX_SCAN_PAGES store pages (listing.ts).
      const { visible, next } = await visibleRepos(deps, req.caller?.principal ?? null, req.query.cursor, limit);
      const page = visible.map((v) => v.repo.repoId);
      return { repos: page, count: page.length, next_cursor: next };
    },
  );

  app.get<{ Params: RepoParams }>('/repos/:owner/:repo', { config: { access: { repo: 'read', via: 'rest' } } }, async (req) => {
    const repoId = repoIdOf(req);
    const repo = await deps.store.getRepo(repoId);
    if (!repo) throw notFound(`repository ${repoId} not found`);
    const replicas = await deps.store.getReplicas(repoId);
    const byNode = new Map(replicas.map((r) => [r.nodeId, r]));
    const policy = await directory.policy(repoId);
    // Where a replica lives on disk and who holds the lock are for operators only.
    const admin = isAdmin(req.caller);
    return {
      repo_id: repoId,
      exists: true,
      visibility: policy.visibility,
      default_branch: await deps.storage.headTarget(repoId).then(
        (h) => (h?.startsWith('refs/heads/') ? h.slice('refs/heads/'.length) : null),
        () => null,
      ),
      ...(admin ? { path: repo.replicas.includes(deps.nodeId) ? deps.storage.repoPath(repoId) : null } : {}),
      incarnation: repo.incarnation,
      generation: repo.generation,
      checksum: repo.checksum,
      created_at: repo.createdAt,
      write_quorum: deps.coordinator.writeQuorumFor(repo.replicas.length),
      ...(admin ? { lock: await deps.store.getLock(repoId).then((l) => (l ? { holder: l.holder, token: l.token } : null)) } : {}),
      replicas: repo.replicas.map((n) => {
        const r = byNode.get(n);
        const progress = n === deps.nodeId ? deps.repair.progressOf(repoId) : undefined;
        return {
          node: n,
          generation: r?.generation ?? null,
          checksum: r?.checksum ?? null,
          state: isInSync(repo, r) ? 'in_sync' : r?.state === 'in_sync' ? 'stale' : (r?.state ?? 'missing'),
          live: deps.membership.isLive(n),
          ...(progress ? { repair: progress } : {}),
        };
      }),
    };
  });

  app.patch<{ Params: RepoParams; Body: { visibility?: Visibility; default_branch?: string } }>(
    '/repos/:owner/:repo',
    {
      config: { access: { repo: 'admin', via: 'rest' } },
      schema: {
        body: {
          type: 'object',
          minProperties: 1,
          additionalProperties: false,
          properties: { visibility: VISIBILITY, default_branch: { type: 'string', minLength: 1, maxLength: 255 } },
        },
      },
    },
    async (req) => {
      const repoId = repoIdOf(req);
      if (!(await deps.store.getRepo(repoId))) throw notFound(`repository ${repoId} not found`);
      const bound = await boundTo(req);
      const out: Record<string, string> = { repo_id: repoId };
      if (req.body.default_branch !== undefined) {
        const name = req.body.default_branch;
        const ref = name.startsWith('refs/') ? name : `refs/heads/${name}`;
        if (!ref.startsWith('refs/heads/') || refNameProblem(ref) !== null)
          throw badRequest(`'${name.slice(0, 100)}' is not a branch name`);
        await deps.coordinator.setDefaultBranch(repoId, ref, bound);
        audit.record({ action: 'repo.default_branch', ...who(req), repo: repoId, detail: { default_branch: ref } });
        out.default_branch = ref.slice('refs/heads/'.length);
      }
      if (req.body.visibility !== undefined) {
        await directory.setVisibility(repoId, req.body.visibility, bound);
        audit.record({ action: 'repo.visibility', ...who(req), repo: repoId, detail: { visibility: req.body.visibility } });
        out.visibility = req.body.visibility;
      }
      return out;
    },
  );

  app.delete<{ Params: RepoParams }>('/repos/:owner/:repo', { config: { access: { repo: 'admin', via: 'rest' } } }, async (req) => {
    const repoId = repoIdOf(req);
    const result = await deps.coordinator.deleteRepo(repoId, () => directory.forgetRepo(repoId), await boundTo(req));
    audit.record({ action: 'repo.delete', ...who(req), repo: repoId });
    return result;
  });

  app.get<{ Params: RepoParams }>('/repos/:owner/:repo/grants', { config: { access: { repo: 'admin', via: 'rest' } } }, async (req) => {
    const repoId = repoIdOf(req);
    const policy = await directory.policy(repoId);
    return {
      repo_id: repoId,
      owner: policy.owner,
      visibility: policy.visibility,
      grants: [...policy.grants].map(([grantee, role]) => ({ grantee, role })),
    };
  });

  app.put<{ Params: RepoParams & { grantee: string }; Body: { role: Role } }>(
    '/repos/:owner/:repo/grants/:grantee',
    {
      config: { access: { repo: 'admin', via: 'rest' } },
      schema: { body: { type: 'object', required: ['role'], additionalProperties: false, properties: { role: ROLE } } },
    },
    async (req) => {
      const repoId = repoIdOf(req);
      const grantee = checkPrincipal(req.params.grantee);
      const [kind, name] = grantee.split(':') as [string, string];
      const exists = kind === 'user' ? (await directory.user(name)) !== null : await directory.orgExists(name);
      if (!exists) throw badRequest(`no ${kind === 'user' ? 'user' : 'organisation'} named '${name}'`);
      await directory.grant(repoId, grantee, req.body.role, await boundTo(req));
      audit.record({ action: 'repo.grant', ...who(req), repo: repoId, detail: { grantee, role: req.body.role } });
      return { repo_id: repoId, grantee, role: req.body.role };
    },
  );

  app.delete<{ Params: RepoParams & { grantee: string } }>(
    '/repos/:owner/:repo/grants/:grantee',
    { config: { access: { repo: 'admin', via: 'rest' } } },
    async (req) => {
      const repoId = repoIdOf(req);
      const grantee = checkPrincipal(req.params.grantee);
      await directory.grant(repoId, grantee, null, await boundTo(req));
      audit.record({ action: 'repo.grant', ...who(req), repo: repoId, detail: { grantee, role: null } });
      return { repo_id: repoId, grantee, role: null };
    },
  );
}

import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { authorizeRepo } from '../auth/authorize.js';
import type { Role } from '../auth/policy.js';
import { appError, badRequest, conflict, notFound } from '../domain/errors.js';
import { parseRepoId, repoIdFromUrl, type RepoId } from '../domain/repo-id.js';
import { checkLockPath, MAX_LOCK_PATH, MAX_LOCKS_PAGE } from '../lfs/locks.js';
import { LFS_OID } from '../domain/lfs-ids.js';
import { header, refusal } from './access.js';
import { chain, IdleGuard, tooLarge } from './body-guards.js';
import type { NodeDeps } from './deps.js';
import { slotFor } from './git-routes.js';

/** LFS_TYPE is the media type of the Git LFS batch API's requests and answers. */
export const LFS_TYPE = 'application/vnd.git-lfs+json';

/** LFS_BATCH_MAX is the most objects one batch request may name (git-lfs sends 100 at a time). */
export const LFS_BATCH_MAX = 1_000;

/** isLfsRoute says whether a matched route is one of the Git LFS endpoints (their errors are LFS JSON). */
export function isLfsRoute(req: FastifyRequest): boolean {
  return /\/info\/lfs\//.test(req.routeOptions.url ?? '');
}

interface RepoParams {
  owner: string;
  repo: string;
}

interface BatchBody {
  operation: 'upload' | 'download';
  transfers?: string[];
  ref?: { name?: string };
  objects: Array<{ oid: string; size: number }>;
  hash_algo?: string;
}

const BATCH_SCHEMA = {
  body: {
    type: 'object',
    required: ['operation', 'objects'],
    properties: {
      operation: { type: 'string', enum: ['upload', 'download'] },
      transfers: { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 64 } },
      ref: { type: 'object', properties: { name: { type: 'string', maxLength: 4096 } } },
      objects: {
        type: 'array',
        maxItems: LFS_BATCH_MAX,
        items: {
          type: 'object',
          required: ['oid', 'size'],
          properties: {
            oid: { type: 'string', pattern: LFS_OID.source },
            size: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
          },
        },
      },
      hash_algo: { type: 'string', maxLength: 64 },
    },
  },
} as const;

const LOCK_CREATE_SCHEMA = {
  body: {
    type: 'object',
    required: ['path'],
    properties: { path: { type: 'string', minLength: 1, maxLength: MAX_LOCK_PATH }, ref: { type: 'object' } },
  },
} as const;

const LOCK_VERIFY_SCHEMA = {
  body: {
    type: 'object',
    properties: {
      cursor: { type: 'string', maxLength: 64 },
      limit: { type: 'integer', minimum: 1, maximum: MAX_LOCKS_PAGE },
      ref: { type: 'object' },
    },
  },
} as const;

const LOCK_UNLOCK_SCHEMA = {
  body: { type: 'object', properties: { force: { type: 'boolean' }, ref: { type: 'object' } } },
} as const;

/** limitOf reads a listing's `limit` (default 100, at most MAX_LOCKS_PAGE); 400 for anything but a positive integer. */
function limitOf(v: unknown): number {
  if (v === undefined || v === '') return 100;
  if (typeof v !== 'string' || !/^[0-9]{1,6}$/.test(v) || Number(v) < 1) throw badRequest('limit must be a positive integer');
  return Math.min(Number(v), MAX_LOCKS_PAGE);
}

/** HOST is a Host header this node names in the links it gives (a name or address, and a port). */
const HOST = /^[A-Za-z0-9.-]{1,253}(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](?::\d{1,5})?$/;

/**
 * registerLfsRoutes adds the Git LFS API (the batch API and the `basic` transfer) under each
 * repository's git URL, `/<owner>/<repo>.git/info/lfs/`: git-lfs finds it there from the remote's
 * URL and signs in with the remote's credentials. Reading needs `read` on the repository,
 * uploading `write`, by the same rules as git. The links a batch answer gives point at this node
 * (as the client named it, or `--public-url`) and carry the batch request's own Authorization.
 * File locks (lfs/locks.ts) are served beside them.
 */
export function registerLfsRoutes(app: FastifyInstance, deps: NodeDeps): void {
  void app.register(async (lfs) => {
    lfs.addContentTypeParser(LFS_TYPE, { parseAs: 'string', bodyLimit: 1024 * 1024 }, (_req, body, done) => {
      try {
        done(null, JSON.parse(body as string));
      } catch {
        done(badRequest('batch request is not valid JSON'));
      }
    });
    lfs.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

    lfs.post<{ Params: RepoParams; Body: BatchBody }>(
      '/:owner/:repo/info/lfs/objects/batch',
      { config: { access: { repo: 'read', via: 'git' } }, schema: BATCH_SCHEMA },
      async (req, reply) => {
        const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
        const body = req.body;
        const upload = body.operation === 'upload';
        // The route let the caller in to read; an upload needs write.
        if (upload) await needAlso(deps, req, repoId, 'write');
        if (body.transfers !== undefined && !body.transfers.includes('basic'))
          throw badRequest(`no transfer adapter in common: this server speaks 'basic'`);
        if (body.hash_algo !== undefined && body.hash_algo !== 'sha256')
          throw conflict(`hash algorithm '${body.hash_algo.slice(0, 64)}' is not supported: sha256 is`);
        const t = await deps.lfs.target(repoId, decidedIncarnation(req));
        const states = await deps.lfs.states(t, body.objects, upload ? t.writeQuorum : 1);
        const base = `${deps.config.publicUrl ?? `${req.protocol}://${hostOf(req)}`}/${repoId}.git/info/lfs/objects/`;
        const auth = header(req, 'authorization');
        // A link is good for an hour, or as long as the credential it carries (an LFS ticket's 10 minutes).
        const expiresAt = req.caller?.token.expiresAt;
        const left = expiresAt ? Math.floor((Date.parse(expiresAt) - Date.now()) / 1000) : 3600;
        const action = (oid: string): Record<string, unknown> => ({
          href: `${base}${oid}`,
          ...(auth ? { header: { Authorization: auth } } : {}),
          expires_in: Math.max(1, Math.min(3600, left)),
        });
        const objects = states.map((s, i) => {
          const size = body.objects[i]!.size;
          if (upload && size > deps.config.maxLfsObjectBytes)
            return {
              oid: s.oid,
              size,
              error: { code: 422, message: `larger than the limit of ${deps.config.maxLfsObjectBytes} bytes (--max-lfs-object-size)` },
            };
          if (upload)
            return s.holders >= t.writeQuorum
              ? { oid: s.oid, size }
              : { oid: s.oid, size, authenticated: true, actions: { upload: action(s.oid) } };
          if (s.size === null) return { oid: s.oid, size, error: { code: 404, message: 'Object does not exist' } };
          return { oid: s.oid, size: s.size, authenticated: true, actions: { download: action(s.oid) } };
        });
        deps.metrics.lfsBatches.inc({ operation: body.operation });
        return reply.type(LFS_TYPE).send({ transfer: 'basic', objects, hash_algo: 'sha256' });
      },
    );

    // Every object the repository's replicas hold, for backups and for users: `complete` says
    // enough replicas that hold every acknowledged object answered (LfsService.catalogue).
    lfs.get<{ Params: RepoParams }>('/repos/:owner/:repo/lfs', { config: { access: { repo: 'read', via: 'rest' } } }, async (req) => {
      const repoId = parseRepoId(`${req.params.owner}/${req.params.repo}`);
      const t = await deps.lfs.target(repoId, decidedIncarnation(req));
      const { objects, complete } = await deps.lfs.catalogue(t);
      const list = [...objects].sort(([a], [b]) => (a < b ? -1 : 1)).map(([oid, size]) => ({ oid, size }));
      return {
        repo_id: repoId,
        incarnation: t.incarnation,
        objects: list,
        count: list.length,
        bytes: list.reduce((n, o) => n + o.size, 0),
        complete,
      };
    });

    // File locking (the Git LFS locking API): `git lfs lock|unlock|locks`, and the check of a push.
    const who = (req: FastifyRequest): string => req.caller?.principal.user ?? 'anonymous';
    lfs.post<{ Params: RepoParams; Body: { path: string } }>(
      '/:owner/:repo/info/lfs/locks',
      { config: { access: { repo: 'write', via: 'git' } }, schema: LOCK_CREATE_SCHEMA },
      async (req, reply) => {
        const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
        await deps.lfs.target(repoId, decidedIncarnation(req));
        const lock = await deps.lfsLocks.create(repoId, checkLockPath(req.body.path), who(req));
        return reply.code(201).type(LFS_TYPE).send({ lock });
      },
    );

    lfs.get<{ Params: RepoParams; Querystring: { path?: string; id?: string; cursor?: string; limit?: string } }>(
      '/:owner/:repo/info/lfs/locks',
      { config: { access: { repo: 'read', via: 'git' } } },
      async (req, reply) => {
        const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
        const q = req.query;
        const page = await deps.lfsLocks.list(repoId, {
          ...(typeof q.path === 'string' ? { path: checkLockPath(q.path) } : {}),
          ...(typeof q.id === 'string' ? { id: q.id } : {}),
          ...(typeof q.cursor === 'string' && q.cursor !== '' ? { cursor: q.cursor } : {}),
          limit: limitOf(q.limit),
        });
        return reply.type(LFS_TYPE).send({ locks: page.locks, next_cursor: page.next ?? '' });
      },
    );

    lfs.post<{ Params: RepoParams; Body: { cursor?: string; limit?: number } }>(
      '/:owner/:repo/info/lfs/locks/verify',
      { config: { access: { repo: 'write', via: 'git' } }, schema: LOCK_VERIFY_SCHEMA },
      async (req, reply) => {
        const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
        const page = await deps.lfsLocks.list(repoId, {
          ...(req.body.cursor ? { cursor: req.body.cursor } : {}),
          limit: req.body.limit ?? MAX_LOCKS_PAGE,
        });
        const user = who(req);
        return reply.type(LFS_TYPE).send({
          ours: page.locks.filter((l) => l.owner.name === user),
          theirs: page.locks.filter((l) => l.owner.name !== user),
          next_cursor: page.next ?? '',
        });
      },
    );

    lfs.post<{ Params: RepoParams & { id: string }; Body: { force?: boolean } }>(
      '/:owner/:repo/info/lfs/locks/:id/unlock',
      { config: { access: { repo: 'write', via: 'git' } }, schema: LOCK_UNLOCK_SCHEMA },
      async (req, reply) => {
        const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
        const force = req.body.force === true;
        // Another user's lock goes only by force, which needs admin on the repository.
        if (force) await needAlso(deps, req, repoId, 'admin');
        const lock = await deps.lfsLocks.unlock(repoId, req.params.id, who(req), force);
        return reply.type(LFS_TYPE).send({ lock });
      },
    );

    lfs.get<{ Params: RepoParams & { oid: string } }>(
      '/:owner/:repo/info/lfs/objects/:oid',
      { config: { access: { repo: 'read', via: 'git' } } },
      async (req, reply) => {
        const { repoId, oid } = objectOf(req);
        const t = await deps.lfs.target(repoId, decidedIncarnation(req));
        const gone = new AbortController();
        reply.raw.on('close', () => gone.abort());
        // A transfer holds one of the client's git slots, as a git request does: uploads that trickle hold at most the client's share.
        reply.raw.once('close', await slotFor(deps, req));
        const got = await deps.lfs.download(t, oid, gone.signal);
        if (!got) throw notFound(`LFS object ${oid} does not exist in ${repoId}`);
        got.body.on('error', () => reply.raw.destroy());
        deps.metrics.lfsBytes.inc({ direction: 'out' }, got.size);
        return reply.type('application/octet-stream').header('content-length', String(got.size)).send(got.body);
      },
    );

    lfs.put<{ Params: RepoParams & { oid: string } }>(
      '/:owner/:repo/info/lfs/objects/:oid',
      { config: { access: { repo: 'write', via: 'git' }, guardsBody: true } },
      async (req, reply) => {
        const { repoId, oid } = objectOf(req);
        const type = (header(req, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
        if (type !== 'application/octet-stream') throw appError('ERR_CONTENT_TYPE', ['an LFS object is sent as application/octet-stream']);
        const length = header(req, 'content-length');
        if (length === undefined || !/^\d{1,16}$/.test(length)) throw badRequest('an LFS object upload needs its Content-Length');
        const size = Number(length);
        const max = deps.config.maxLfsObjectBytes;
        if (size > max) throw tooLarge(`LFS object of ${size} bytes is larger than the limit of ${max} bytes (--max-lfs-object-size)`);
        // git-lfs sends objects as they are: with an encoding, Content-Length would not be the object's size.
        const encoding = header(req, 'content-encoding');
        if (encoding !== undefined && encoding !== 'identity') throw appError('ERR_CONTENT_ENCODING', [encoding.slice(0, 40)]);
        // A body that stops arriving ends with 408; its size is checked as it arrives (LfsObjects.receive).
        const body = chain(req.body as Readable, new IdleGuard(deps.config.limits.bodyIdleMs));
        const t = await deps.lfs.target(repoId, decidedIncarnation(req));
        reply.raw.once('close', await slotFor(deps, req));
        await deps.lfs.upload(t, oid, size, body);
        deps.metrics.lfsBytes.inc({ direction: 'in' }, size);
        return reply.type(LFS_TYPE).send({});
      },
    );
  });
}

/**
 * needAlso refuses a request its route let in for less than it turns out to need (a batch that
 * uploads, an unlock by force), deciding again by the same rules (authorizeRepo).
 */
async function needAlso(deps: NodeDeps, req: FastifyRequest, repoId: RepoId, need: Role): Promise<void> {
  const { decision } = await authorizeRepo(deps.directory, req.caller?.principal ?? null, req.caller?.token.scope ?? null, repoId, need);
  if (decision !== 'allow') throw refusal(decision, repoId, need, 'git');
}

/** decidedIncarnation is the incarnation the route's access was decided on (null: none read, a cluster admin's). */
function decidedIncarnation(req: FastifyRequest): string | null {
  return req.repoDecided?.incarnation ?? null;
}

/** objectOf reads an object route's repository and oid. */
function objectOf(req: FastifyRequest<{ Params: RepoParams & { oid: string } }>): { repoId: RepoId; oid: string } {
  const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
  const oid = req.params.oid;
  if (!LFS_OID.test(oid)) throw badRequest(`'${oid.slice(0, 80)}' is not an LFS object id (64 lower-case hex digits)`);
  return { repoId, oid };
}

/** hostOf is the Host the client named (the links point back at it); 400 for one that is not a host name. */
function hostOf(req: FastifyRequest): string {
  const host = req.host;
  if (!HOST.test(host)) throw badRequest('the Host header must name a host');
  return host;
}

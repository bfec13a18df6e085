import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler, RouteOptions } from 'fastify';
import { bodyDigest, HOP_HEADER, isRepairHopFor, PEER_AUTH_HEADER } from '../auth/peer-signature.js';
import { authorizeRepo, deniedMessage, type Decided } from '../auth/authorize.js';
import type { Decision, Role } from '../auth/policy.js';
import type { Caller } from '../auth/tokens.js';
import { appError, type AppError, forbidden, notFound, unauthorized } from '../domain/errors.js';
import { addressKey } from '../domain/client-address.js';
import { parseRepoId, repoIdFromUrl, type RepoId } from '../domain/repo-id.js';
import { formatRange, PROTOCOL_HEADER } from '../cluster/protocol.js';
import type { NodeDeps } from './deps.js';

/**
 * RepoAccess is the policy of a route that acts on one repository (`:owner/:repo` in its path):
 * the role it needs there, and whether it is a git route (whose clients need a 401 to ask for
 * credentials) or a REST one (where a private repository is simply not found).
 */
export interface RepoAccess {
  readonly repo: Role | ((req: FastifyRequest) => Role);
  readonly via: 'git' | 'rest';
}

/**
 * Access is a route's authorisation policy, declared in its options (`config.access`):
 * - `anonymous`: anyone; the caller's token, if any, is still read (some answers show more to admins);
 * - a role: a client token with at least that scope (`admin`: also a cluster admin's);
 * - `{ repo, via }`: a role on the repository the path names, decided by the one set of rules in
 *   auth/policy.ts (visibility, ownership, organisations, grants, the token's scope);
 * - `peer`: a call signed by a cluster member for this node's incarnation (the signature's body
 *   digest is checked against the body once it is read);
 * - a function of the request, for routes whose need depends on it (info/refs: the service).
 */
export type Access = 'anonymous' | 'peer' | Role | RepoAccess;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** access is the route's authorisation policy; a route without one is refused at start. */
    access?: Access;
    /**
     * unmetered: a write the write rate (WriteRate) does not count: revoking a credential (a
     * leaked token spending its user's writes must not keep the user from revoking it).
     */
    unmetered?: boolean;
    /** guardsBody: the route reads its (streamed) body itself, with its own guards (an LFS object's upload). */
    guardsBody?: boolean;
  }
  interface FastifyRequest {
    /** caller is the authenticated client, when the request carried a valid token. */
    caller: Caller | null;
    /** peerDigest is the body digest a verified peer signature vouches for. */
    peerDigest: string | null;
    /** hopClient is the client a member-signed hop header names (a proxied request or a repair fetch), verified once per request. */
    hopClient: string | null;
    /**
     * repoDecided is the decision that let a repository route's request in, for work bound to the
     * incarnation it was made on (decideFor): null for a repair fetch, which no policy decided.
     */
    repoDecided: Decided | null;
  }
}

/**
 * enforceAccess makes authorisation a property of each route, never of a URL prefix: every route
 * registered after it MUST declare `config.access`, and gets its own onRequest hook, placed first,
 * that enforces it. Fastify matches routes on the decoded path, and so does this check, because
 * it is attached to the route that matched (`/%61dmin/tokens` is the admin route, and admin's).
 */
export function enforceAccess(app: FastifyInstance, deps: NodeDeps): void {
  app.decorateRequest('caller', null);
  app.decorateRequest('peerDigest', null);
  app.decorateRequest('hopClient', null);
  app.decorateRequest('repoDecided', null);
  app.addHook('onRoute', (route: RouteOptions) => {
    const access = route.config?.access;
    if (access === undefined) throw new Error(`route ${String(route.method)} ${route.url} declares no access policy`);
    const kind = access === 'peer' ? 'peer' : typeof access === 'object' ? 'repo' : 'client';
    const decide =
      access === 'peer' ? verifyPeer(deps) : typeof access === 'object' ? requireRepo(deps, access) : requireClient(deps, access);
    const check: onRequestAsyncHookHandler = async function (this: FastifyInstance, req, reply) {
      const started = process.hrtime.bigint();
      try {
        await decide.call(this, req, reply);
      } finally {
        deps.metrics.authSeconds.observe({ kind }, Number(process.hrtime.bigint() - started) / 1e9);
      }
    };
    const existing = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest];
    route.onRequest = [check, ...existing];
    if (access === 'peer') {
      const existingPre =
        route.preValidation === undefined ? [] : Array.isArray(route.preValidation) ? route.preValidation : [route.preValidation];
      route.preValidation = [checkJsonDigest, ...existingPre];
    }
  });
}

function requireClient(deps: NodeDeps, access: 'anonymous' | Role): onRequestAsyncHookHandler {
  return async (req) => {
    if (access === 'anonymous') req.caller = await deps.auth.identify(req.headers.authorization, addressKey(req.ip));
    else req.caller = await deps.auth.require(req.headers.authorization, access, addressKey(req.ip));
    if (req.caller?.onlyLfs !== undefined) throw unauthorized(LFS_TICKET_ONLY);
    spendWrite(deps, req);
  };
}

/** LFS_TICKET_ONLY is the refusal of an LFS ticket anywhere but its repository's LFS API. */
const LFS_TICKET_ONLY = "an LFS ticket is good only for its repository's Git LFS API: use a token";

/** LFS_ROUTE matches the Git LFS API's routes (lfs-routes.ts), the only ones an LFS ticket opens. */
const LFS_ROUTE = /^\/:owner\/:repo\/info\/lfs\//;

/** WRITES are the methods of REST calls that change something. */
const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * spendWrite takes a REST write from its caller's share (WriteRate), once the caller is known:
 * a user over it gets 429. Cluster admins (their scripts restore whole clusters) and anonymous
 * callers (who may write nothing) are not counted.
 */
function spendWrite(deps: NodeDeps, req: FastifyRequest): void {
  const p = req.caller?.principal;
  if (!p || p.admin || !WRITES.has(req.method) || req.routeOptions.config.unmetered === true) return;
  const refused = deps.writeRate.take(p.user);
  if (refused) throw refused;
}

/** repoOf reads the repository a route's path names. */
function repoOf(req: FastifyRequest, via: 'git' | 'rest'): RepoId {
  const { owner, repo } = req.params as { owner?: string; repo?: string };
  return via === 'git' ? repoIdFromUrl(owner ?? '', repo ?? '') : parseRepoId(`${owner ?? ''}/${repo ?? ''}`);
}

function requireRepo(deps: NodeDeps, access: RepoAccess): onRequestAsyncHookHandler {
  return async (req) => {
    const need = typeof access.repo === 'function' ? access.repo(req) : access.repo;
    const repoId = repoOf(req, access.via);
    req.hopClient = deps.hops.verify(header(req, HOP_HEADER));
    // A repair fetch from a peer (a signed hop naming a repair of this repository) reads the
    // replica. The hop names the repository: one captured on the wire (without TLS) read every
    // private repository on every node for its minute.
    if (need === 'read' && isRepairHopFor(req.hopClient, repoId)) return;
    // A proxied request's failed sign-ins count against the client the member's hop names, not
    // against the member: one client's bad tokens through a node must not throttle every
    // client that node proxies (an outside review got node-1 to answer 429 to all of node-3's).
    const caller = await deps.auth.identify(req.headers.authorization, req.hopClient ?? addressKey(req.ip));
    if (caller?.onlyLfs !== undefined && (caller.onlyLfs !== repoId || !LFS_ROUTE.test(req.routeOptions.url ?? '')))
      throw unauthorized(LFS_TICKET_ONLY);
    req.caller = caller;
    const principal = caller?.principal ?? null;
    const scope = caller?.token.scope ?? null;
    const { decision, incarnation } = await authorizeRepo(deps.directory, principal, scope, repoId, need);
    if (decision === 'allow') {
      req.repoDecided = { principal, scope, repoId, need, incarnation };
      // A git push is not a REST write (its POST is git's), and it is not counted.
      if (access.via === 'rest') spendWrite(deps, req);
      return;
    }
    throw refusal(decision, repoId, need, access.via);
  };
}

/** refusal is the error a route answers for a decision other than `allow`. */
export function refusal(decision: Exclude<Decision, 'allow'>, repoId: RepoId, need: Role, via: 'git' | 'rest'): AppError {
  // A REST read of a private repository is simply not found; git needs the 401 to ask.
  if (decision === 'unauthenticated' && !(via === 'rest' && need === 'read'))
    return unauthorized(`authentication required for ${repoId}: use a token as the password (git) or a Bearer token`);
  const message = deniedMessage(decision, repoId, need);
  return decision === 'forbidden' ? forbidden(message) : notFound(message);
}

/** header reads a request header that should appear once (the first of repeats). */
export function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function verifyPeer(deps: NodeDeps): onRequestAsyncHookHandler {
  return async (req) => {
    const header = req.headers[PEER_AUTH_HEADER];
    const lenHeader = req.headers['content-length'];
    const len = lenHeader === undefined ? null : Number(lenHeader);
    const path = req.url.split('?')[0] ?? req.url;
    const v = await deps.verifier.verify(
      typeof header === 'string' ? header : undefined,
      req.method,
      path,
      Number.isSafeInteger(len) ? len : null,
    );
    if (!v.ok) throw unauthorized(v.reason);
    // A member's signed call (single use, unlike a hop header, which may be replayed for its
    // minute) says where that member connects from (connection-guard.ts).
    deps.peerAddresses.learn(req.socket.remoteAddress);
    // A call names its protocol version (none: 1); one this node does not speak is refused.
    const named = req.headers[PROTOCOL_HEADER];
    const version = typeof named === 'string' && /^\d{1,4}$/.test(named) ? Number(named) : 1;
    if (version < deps.protocol.min || version > deps.protocol.max) {
      req.log.error(
        { peer: v.nodeId, version, protocol: formatRange(deps.protocol) },
        'refused a peer call in a protocol version this node does not speak',
      );
      throw appError('ERR_PROTOCOL', [v.nodeId, version, formatRange(deps.protocol)]);
    }
    req.peerDigest = v.digest;
  };
}

/** RAW_BODY keeps the raw JSON text of a peer call, for the digest check. */
const RAW_BODY = Symbol('rawBody');

/**
 * parseSignedJson is the JSON parser of the peer routes: it keeps the raw text so the signature's
 * digest can be checked against the bytes actually received.
 */
export function parseSignedJson(req: FastifyRequest, body: string, done: (err: Error | null, value?: unknown) => void): void {
  (req as unknown as Record<symbol, string>)[RAW_BODY] = body;
  try {
    done(null, body === '' ? undefined : JSON.parse(body));
  } catch {
    done(appError('ERR_BAD_JSON', []));
  }
}

async function checkJsonDigest(req: FastifyRequest): Promise<void> {
  const raw = (req as unknown as Record<symbol, string | undefined>)[RAW_BODY];
  // Streamed bodies (a prepare's frame) are checked where the frame is read.
  if (raw === undefined) return;
  if (bodyDigest(raw) !== req.peerDigest) throw unauthorized('peer signature does not match the body');
}

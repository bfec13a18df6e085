import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler, RouteOptions } from 'fastify';
import { bodyDigest, PEER_AUTH_HEADER } from '../auth/peer-signature.js';
import type { Role, TokenInfo } from '../auth/tokens.js';
import { unauthorized } from '../domain/errors.js';
import type { NodeDeps } from './deps.js';

/**
 * Access is a route's authorisation policy, declared in its options (`config.access`):
 * - `anonymous`: anyone; the caller's token, if any, is still read (some answers show more to admins);
 * - a role: a client token with at least that role;
 * - `peer`: a call signed by a cluster member for this node's incarnation (the signature's body
 *   digest is checked against the body once it is read);
 * - a function of the request, for routes whose need depends on it (info/refs: the service).
 */
export type Access = 'anonymous' | 'peer' | Role | ((req: FastifyRequest) => 'anonymous' | Role);

declare module 'fastify' {
  interface FastifyContextConfig {
    /** access is the route's authorisation policy; a route without one is refused at start. */
    access?: Access;
  }
  interface FastifyRequest {
    /** caller is the authenticated client token, when the request carried a valid one. */
    caller: TokenInfo | null;
    /** peerDigest is the body digest a verified peer signature vouches for. */
    peerDigest: string | null;
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
  app.addHook('onRoute', (route: RouteOptions) => {
    const access = route.config?.access;
    if (access === undefined) throw new Error(`route ${String(route.method)} ${route.url} declares no access policy`);
    const check: onRequestAsyncHookHandler = access === 'peer' ? verifyPeer(deps) : requireClient(deps, access);
    const existing = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest];
    route.onRequest = [check, ...existing];
    if (access === 'peer') {
      const existingPre = route.preValidation === undefined ? [] : Array.isArray(route.preValidation) ? route.preValidation : [route.preValidation];
      route.preValidation = [checkJsonDigest, ...existingPre];
    }
  });
}

function requireClient(deps: NodeDeps, access: Exclude<Access, 'peer'>): onRequestAsyncHookHandler {
  return async (req) => {
    const need = typeof access === 'function' ? access(req) : access;
    if (need === 'anonymous') {
      req.caller = await deps.auth.identify(req.headers.authorization);
      return;
    }
    req.caller = await deps.auth.require(req.headers.authorization, need);
  };
}

function verifyPeer(deps: NodeDeps): onRequestAsyncHookHandler {
  return async (req) => {
    const header = req.headers[PEER_AUTH_HEADER];
    const lenHeader = req.headers['content-length'];
    const len = lenHeader === undefined ? null : Number(lenHeader);
    const path = req.url.split('?')[0] ?? req.url;
    const v = await deps.verifier.verify(typeof header === 'string' ? header : undefined, req.method, path, Number.isSafeInteger(len) ? len : null);
    if (!v.ok) throw unauthorized(v.reason);
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
    const err = new Error('body is not valid JSON') as Error & { statusCode: number; code: string };
    err.statusCode = 400;
    err.code = 'ERR_BAD_JSON';
    done(err);
  }
}

async function checkJsonDigest(req: FastifyRequest): Promise<void> {
  const raw = (req as unknown as Record<symbol, string | undefined>)[RAW_BODY];
  // Streamed bodies (a prepare's frame) are checked where the frame is read.
  if (raw === undefined) return;
  if (bodyDigest(raw) !== req.peerDigest) throw unauthorized('peer signature does not match the body');
}

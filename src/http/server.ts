import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { AppError, appError, clientErrorOf, errorMessage, notFound } from '../domain/errors.js';
import { enforceAccess } from './access.js';
import { chain, IdleGuard } from './body-guards.js';
import type { NodeDeps } from './deps.js';
import { registerAdminRoutes } from './admin-routes.js';
import { registerBackupRoutes } from './backup-routes.js';
import { GIT_REQUEST_TYPES, registerGitRoutes } from './git-routes.js';
import { registerHealthRoutes } from './health-routes.js';
import { isLfsRoute, LFS_TYPE, registerLfsRoutes } from './lfs-routes.js';
import { registerReplicateRoutes } from './replicate-routes.js';
import { registerRepoRoutes } from './repo-routes.js';
import { registerSshRoutes } from './ssh-routes.js';
import { registerStatusRoutes } from './status-routes.js';
import { registerUserRoutes } from './user-routes.js';

/**
 * guardedByRoute says whether a request's body is left to its route: git's POSTs with a git body
 * (guardBody), and the peer routes, which only a member reaches (its signature is checked before
 * the body is read) and which guard their packs themselves.
 */
function guardedByRoute(req: FastifyRequest): boolean {
  if (req.routeOptions.config?.access === 'peer' || req.routeOptions.config?.guardsBody === true) return true;
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  return GIT_REQUEST_TYPES.includes(type) && /\/(git-upload-pack|git-receive-pack)$/.test(req.routeOptions.url ?? '');
}

/** hasBody says whether a request comes with a body (chunked, or a length above 0). */
function hasBody(req: FastifyRequest): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

/** isGitRoute says whether a matched route is one of the smart-HTTP endpoints git clients call. */
function isGitRoute(req: FastifyRequest): boolean {
  return /\/(info\/refs|git-upload-pack|git-receive-pack)$/.test(req.routeOptions.url ?? '');
}

/**
 * buildHttpApp assembles the Fastify app: one route group per file, and one error handler that
 * turns AppErrors and Fastify's own client errors (bad JSON, schema, size) into 4xx answers with
 * a message, and anything else into a logged 500. With `tls` it listens with HTTPS.
 */
export function buildHttpApp(
  deps: NodeDeps,
  logger: FastifyInstance['log'] | boolean,
  tls: { cert: Buffer; key: Buffer } | null = null,
): FastifyInstance {
  // A request's headers must arrive within headersTimeoutMs once begun (slow-loris); a TLS
  // handshake gets as long (Node's default: 2 minutes); a connection's first request too (connection-guard.ts).
  const headersTimeout = deps.config.limits.headersTimeoutMs;
  const server = { headersTimeout };
  const app = Fastify({
    loggerInstance: typeof logger === 'boolean' ? undefined : logger,
    bodyLimit: deps.config.bodyLimit,
    // A whole push may take longer than any fixed request timeout; idle bodies are cut per
    // request instead (git-routes).
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 65_000,
    http: server,
    // With a certificate and key the same routes are served over HTTPS (Fastify then ignores `http`).
    ...(tls ? { https: { ...tls, ...server, handshakeTimeout: headersTimeout } } : {}),
    routerOptions: { maxParamLength: 256 },
    // Bodies are validated as sent: `{"repo_id":["o/x"]}` is a 400, not coerced to a string.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
    logController: new LogController({ disableRequestLogging: true }),
    // A malformed URL or an over-long path parameter is answered from the catalogue too.
    frameworkErrors: (err, req, reply) => {
      void sendError(clientErrorOf(err.statusCode ?? 400, truncate(err.message)), req, reply);
    },
  });
  enforceAccess(app, deps);
  // Only JSON and the git and peer types are read; a text/plain body is a 415, not a parse attempt.
  app.removeContentTypeParser('text/plain');
  // A body Fastify reads whole (JSON, on any route or none) is cut when its client stops sending
  // (bodyIdleMs) or, for a route that takes no more than the default body limit, sends it too
  // slowly (twice that in all; an import of a large export may take longer, if it keeps coming):
  // without, a client that sends `{` and nothing more holds its connection and the bytes it sent
  // for as long as it likes. Bodies guarded by their routes pass (guardedByRoute); a git type sent
  // to any other route (or none) is guarded here too.
  const idleMs = deps.config.limits.bodyIdleMs;
  const defaultLimit = deps.config.bodyLimit;
  app.addHook('preParsing', async (req, _reply, payload) => {
    if (!hasBody(req) || guardedByRoute(req)) return payload;
    return chain(payload, new IdleGuard(idleMs, req.routeOptions.bodyLimit > defaultLimit ? undefined : 2 * idleMs));
  });
  app.setErrorHandler((err, req, reply) => {
    if (err instanceof AppError) return sendError(err, req, reply);
    const status = (err as { statusCode?: unknown }).statusCode;
    // Fastify's own client errors (bad JSON, schema, size, content type) get the catalogue's code.
    if (typeof status === 'number' && status >= 400 && status < 500) return sendError(clientErrorOf(status, errorMessage(err)), req, reply);
    req.log.error({ err }, 'unexpected error');
    return sendError(appError('ERR_INTERNAL', []), req, reply);
  });
  app.setNotFoundHandler((req, reply) =>
    sendError(notFound(`no route for ${req.method} ${truncate(req.url.split('?')[0] ?? '')}`), req, reply),
  );
  registerHealthRoutes(app, deps);
  registerStatusRoutes(app, deps);
  registerRepoRoutes(app, deps);
  registerAdminRoutes(app, deps);
  registerBackupRoutes(app, deps);
  registerUserRoutes(app, deps);
  registerSshRoutes(app, deps);
  registerReplicateRoutes(app, deps);
  registerGitRoutes(app, deps);
  registerLfsRoutes(app, deps);
  return app;
}

/**
 * sendError answers a catalogued error: JSON `{error, code, ...data}` on the REST and replication
 * APIs, the message as text on the git endpoints (git prints a refused request's body as
 * "remote:" lines only when it is text/plain).
 */
function sendError(err: AppError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const retry = err.data.retryAfter;
  if (typeof retry === 'number') void reply.header('retry-after', String(retry));
  // git asks its credential helper for a token only when the 401 names a Basic realm.
  if (err.code === 'ERR_UNAUTHORIZED' && req.routeOptions.config?.access !== 'peer')
    void reply.header('www-authenticate', 'Basic realm="git-replication"');
  if (err.statusCode >= 500 && err.code !== 'ERR_INTERNAL')
    req.log.warn({ code: err.code, msg: err.message, data: err.data }, 'request failed');
  // A failed git command's arguments and stderr name server paths: they stay in the node's log.
  if (err.code === 'ERR_GIT') err = new AppError('ERR_GIT', ['command', 'on the server', 'see the node log']);
  // The rest of a body not read (cut for its time, or a refusal before it was read) is not read
  // after the answer either: the connection closes. (Node would read and drop it to keep the
  // connection, each byte a client trickles keeping it for another keep-alive time.)
  if (err.code === 'ERR_BODY_TIMEOUT' || err.code === 'ERR_BODY_SLOW' || !req.raw.complete) void reply.header('connection', 'close');
  if (isGitRoute(req)) return reply.code(err.statusCode).type('text/plain; charset=utf-8').send(`${err.message}\n`);
  // git-lfs shows an error answer's `message`.
  if (isLfsRoute(req))
    return reply
      .code(err.statusCode)
      .type(LFS_TYPE)
      .send({ ...err.data, message: err.message, code: err.code });
  return reply.code(err.statusCode).send({ ...err.data, error: err.message, code: err.code });
}

function truncate(s: string): string {
  return s.length > 100 ? `${s.slice(0, 97)}...` : s;
}

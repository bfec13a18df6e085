import type { FastifyInstance, FastifyRequest } from 'fastify';
import { expiryWithin, isAdmin, needAdminScope, type Caller } from '../auth/tokens.js';
import { forbidden, notFound } from '../domain/errors.js';
import { HOST_KEY_META, hostPublicKey } from '../ssh/server.js';
import type { NodeDeps } from './deps.js';

function callerOf(req: FastifyRequest): Caller {
  if (!req.caller) throw new Error('route without an authenticated caller');
  return req.caller;
}

/** ownKeysOnly lets a user manage their own keys and a cluster admin anyone's. */
function ownKeysOnly(c: Caller, user: string, what: string): void {
  if (user !== c.principal.user && !isAdmin(c)) throw forbidden(`only a cluster admin may ${what} another user's SSH keys`);
}

const keySchema = {
  body: {
    type: 'object',
    required: ['name', 'key'],
    additionalProperties: false,
    properties: {
      name: { type: 'string', minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._@-]+$' },
      key: { type: 'string', minLength: 1, maxLength: 16384 },
      expires_at: { type: 'string', maxLength: 40 },
    },
  },
} as const;

/**
 * registerSshRoutes adds the cluster's public SSH host key (anyone, to write known_hosts) and
 * users' SSH keys: `GET/POST /users/:name/keys`, `DELETE /users/:name/keys/:id` (id or
 * `SHA256:` fingerprint, URL-encoded).
 */
export function registerSshRoutes(app: FastifyInstance, deps: NodeDeps): void {
  const { sshKeys, audit } = deps;

  app.get('/ssh/host-key', { config: { access: 'anonymous' } }, async () => {
    const pem = await deps.store.getMeta(HOST_KEY_META);
    if (!pem) throw notFound('SSH is not enabled on this cluster');
    return { key: hostPublicKey(pem).line, port: deps.ssh.port };
  });

  app.get<{ Params: { name: string } }>('/users/:name/keys', { config: { access: 'read' } }, async (req) => {
    ownKeysOnly(callerOf(req), req.params.name, 'list');
    return { keys: await sshKeys.list(req.params.name) };
  });

  app.post<{ Params: { name: string }; Body: { name: string; key: string; expires_at?: string } }>(
    '/users/:name/keys',
    { config: { access: 'read' }, schema: keySchema },
    async (req, reply) => {
      const c = callerOf(req);
      ownKeysOnly(c, req.params.name, 'add');
      // A key acts with its user's full role, and outlives no token that adds it.
      needAdminScope(c, "adding an SSH key (which acts with the user's full role)");
      const expiresAt = expiryWithin(c, req.body.expires_at, 'add an SSH key');
      const made = await sshKeys.add(req.params.name, req.body.name, req.body.key, expiresAt);
      audit.record({
        action: 'ssh-key.add',
        user: c.principal.user,
        token: c.token.name,
        detail: { for: made.user, name: made.name, fingerprint: made.fingerprint, expiresAt: made.expiresAt ?? null },
      });
      return reply.code(201).send(made);
    },
  );

  app.delete<{ Params: { name: string; id: string } }>(
    '/users/:name/keys/:id',
    { config: { access: 'write', unmetered: true } },
    async (req) => {
      const c = callerOf(req);
      ownKeysOnly(c, req.params.name, 'remove');
      needAdminScope(c, 'removing an SSH key');
      const removed = await sshKeys.remove(req.params.name, req.params.id);
      audit.record({
        action: 'ssh-key.remove',
        user: c.principal.user,
        token: c.token.name,
        detail: { of: removed.user, name: removed.name, fingerprint: removed.fingerprint },
      });
      return { removed: removed.id, fingerprint: removed.fingerprint, name: removed.name, user: removed.user };
    },
  );
}

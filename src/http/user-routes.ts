import type { FastifyInstance, FastifyRequest } from 'fastify';
import { checkName, type Directory } from '../auth/directory.js';
import { atLeast, type OrgRole, type Role } from '../auth/policy.js';
import { expiryWithin, isAdmin, needAdminScope, type Caller } from '../auth/tokens.js';
import { forbidden, notFound } from '../domain/errors.js';
import type { NodeDeps } from './deps.js';

const ROLE = { type: 'string', enum: ['read', 'write', 'admin'] } as const;
const NAME = { type: 'string', minLength: 1, maxLength: 100 } as const;

/**
 * orgOwnerOnly lets an organisation's owners (and cluster admins) change its members, with an
 * admin-scoped token: an owner administers every repository of the organisation, so a token
 * capped below admin must not make one (a leaked CI write token made its holder's other account
 * an owner, and removed co-owners).
 */
async function orgOwnerOnly(directory: Directory, c: Caller, org: string): Promise<void> {
  // Read past the cache: an owner of an organisation deleted a moment ago (and perhaps made
  // again by someone else) is still one in a node's cached view for a second.
  if (!c.principal.admin && (await directory.memberRoleNow(org, c.principal.user)) !== 'owner')
    throw forbidden(`only an owner of ${org} may change its members`);
  needAdminScope(c, "changing an organisation's members");
}

function callerOf(req: FastifyRequest): Caller {
  if (!req.caller) throw new Error('route without an authenticated caller');
  return req.caller;
}

const tokenSchema = {
  body: {
    type: 'object',
    required: ['name', 'scope'],
    additionalProperties: false,
    properties: {
      name: { type: 'string', minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._@-]+$' },
      scope: ROLE,
      user: NAME,
      expires_at: { type: 'string', maxLength: 40 },
    },
  },
} as const;

/**
 * registerUserRoutes adds users (cluster admins manage them), organisations and their members
 * (their owners manage them), and tokens (each user their own; cluster admins anyone's).
 */
export function registerUserRoutes(app: FastifyInstance, deps: NodeDeps): void {
  const { directory, auth, audit } = deps;
  const who = (req: FastifyRequest): { user: string; token: string } => ({
    user: req.caller?.principal.user ?? '',
    token: req.caller?.token.name ?? '',
  });

  app.post<{ Body: { name: string; admin?: boolean } }>(
    '/users',
    {
      config: { access: 'admin' },
      schema: {
        body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: NAME, admin: { type: 'boolean' } } },
      },
    },
    async (req, reply) => {
      const user = await directory.addUser(checkName(req.body.name, 'user name'), req.body.admin === true);
      audit.record({ action: 'user.add', ...who(req), detail: { name: user.name, admin: user.admin } });
      return reply.code(201).send(user);
    },
  );

  app.get('/users', { config: { access: 'admin' } }, async () => ({ users: await directory.listUsers() }));

  for (const [verb, disabled] of [
    ['disable', true],
    ['enable', false],
  ] as const) {
    app.post<{ Params: { name: string } }>(`/users/:name/${verb}`, { config: { access: 'admin' } }, async (req) => {
      const user = await directory.setDisabled(req.params.name, disabled);
      audit.record({ action: disabled ? 'user.disable' : 'user.enable', ...who(req), detail: { name: user.name } });
      return user;
    });
  }

  app.get('/user', { config: { access: 'read' } }, async (req) => {
    const c = callerOf(req);
    return {
      user: c.principal.user,
      admin: c.principal.admin,
      orgs: Object.fromEntries(c.principal.orgs),
      token: { id: c.token.id, name: c.token.name, scope: c.token.scope, expires_at: c.token.expiresAt ?? null },
    };
  });

  app.post<{ Body: { name: string } }>(
    '/orgs',
    {
      config: { access: 'write' },
      schema: { body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: NAME } } },
    },
    async (req, reply) => {
      const c = callerOf(req);
      const org = await directory.createOrg(req.body.name, c.principal.user, { byAdmin: isAdmin(c) });
      audit.record({ action: 'org.create', ...who(req), detail: { name: org.name } });
      return reply.code(201).send({ ...org, owner: c.principal.user });
    },
  );

  app.get<{ Params: { org: string } }>('/orgs/:org', { config: { access: 'read' } }, async (req) => {
    const c = callerOf(req);
    // Only its members (and cluster admins) learn who is in an organisation; one made or joined
    // a moment ago through another node is its members' at once (read past the cache).
    if (
      !c.principal.admin &&
      !c.principal.orgs.has(req.params.org) &&
      (await directory.memberRoleNow(req.params.org, c.principal.user)) === null
    )
      throw notFound(`organisation ${req.params.org} not found`);
    return { name: req.params.org, members: await directory.members(req.params.org) };
  });

  app.delete<{ Params: { org: string } }>('/orgs/:org', { config: { access: 'write' } }, async (req) => {
    const c = callerOf(req);
    const org = req.params.org;
    // Its owners' (read past the cache: one demoted a moment ago through another node is not,
    // one made a moment ago is) and cluster admins'. Only its members learn that it exists.
    if (!c.principal.admin) {
      const role = await directory.memberRoleNow(org, c.principal.user);
      if (role === null) throw notFound(`organisation ${org} not found`);
      if (role !== 'owner') throw forbidden(`only an owner of ${org} may delete it`);
    }
    needAdminScope(c, 'deleting an organisation');
    await directory.deleteOrg(org);
    audit.record({ action: 'org.delete', ...who(req), detail: { name: org } });
    return { name: org, deleted: true };
  });

  app.put<{ Params: { org: string; user: string }; Body: { role: OrgRole } }>(
    '/orgs/:org/members/:user',
    {
      config: { access: 'write' },
      schema: {
        body: {
          type: 'object',
          required: ['role'],
          additionalProperties: false,
          properties: { role: { type: 'string', enum: ['member', 'owner'] } },
        },
      },
    },
    async (req) => {
      await orgOwnerOnly(directory, callerOf(req), req.params.org);
      await directory.setMember(req.params.org, req.params.user, req.body.role);
      audit.record({ action: 'org.member', ...who(req), detail: { org: req.params.org, member: req.params.user, role: req.body.role } });
      return { org: req.params.org, user: req.params.user, role: req.body.role };
    },
  );

  app.delete<{ Params: { org: string; user: string } }>('/orgs/:org/members/:user', { config: { access: 'write' } }, async (req) => {
    const c = callerOf(req);
    // A member may leave (an owner too, while another owner remains: removeMember keeps one);
    // removing anyone else is an owner's. (A member added without asking could not leave.)
    if (req.params.user === c.principal.user && !c.principal.admin) needAdminScope(c, 'leaving an organisation');
    else await orgOwnerOnly(directory, c, req.params.org);
    await directory.removeMember(req.params.org, req.params.user);
    audit.record({ action: 'org.member', ...who(req), detail: { org: req.params.org, member: req.params.user, role: null } });
    return { org: req.params.org, user: req.params.user, role: null };
  });

  app.post<{ Body: { name: string; scope: Role; user?: string; expires_at?: string } }>(
    '/tokens',
    { config: { access: 'read' }, schema: tokenSchema },
    async (req, reply) => {
      const c = callerOf(req);
      const user = req.body.user ?? c.principal.user;
      if (user !== c.principal.user && !isAdmin(c)) throw forbidden('only a cluster admin may create tokens for another user');
      // A token never makes a stronger one: its own scope bounds what it may create.
      if (!atLeast(c.token.scope, req.body.scope))
        throw forbidden(`token '${c.token.name}' has scope ${c.token.scope} and may not create a ${req.body.scope} token`);
      // Nor one that outlives it.
      const expiresAt = expiryWithin(c, req.body.expires_at, 'create a token');
      const made = await auth.create(user, req.body.name, req.body.scope, expiresAt);
      audit.record({
        action: 'token.create',
        ...who(req),
        detail: { id: made.info.id, name: made.info.name, for: user, scope: made.info.scope },
      });
      return reply.code(201).send({ ...made.info, token: made.token });
    },
  );

  app.get<{ Querystring: { user?: string } }>(
    '/tokens',
    {
      config: { access: 'read' },
      schema: { querystring: { type: 'object', additionalProperties: false, properties: { user: NAME } } },
    },
    async (req) => {
      const c = callerOf(req);
      const user = req.query.user ?? c.principal.user;
      if (user !== c.principal.user && !isAdmin(c)) throw forbidden("only a cluster admin may list another user's tokens");
      return { tokens: await auth.list(user) };
    },
  );

  app.delete<{ Params: { id: string } }>('/tokens/:id', { config: { access: 'read', unmetered: true } }, async (req) => {
    const c = callerOf(req);
    // A token revokes itself or tokens of its scope or below: a leaked read token cannot take a
    // user's write and admin tokens away.
    const revoked = await auth.revoke(req.params.id, isAdmin(c) ? null : c.principal.user, c.token);
    audit.record({ action: 'token.revoke', ...who(req), detail: { id: revoked.id, name: revoked.name, of: revoked.user } });
    return { revoked: revoked.id, name: revoked.name, user: revoked.user };
  });
}

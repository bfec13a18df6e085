import type { FastifyInstance } from 'fastify';
import { ADMIN_USER, checkName, checkPrincipal } from '../auth/directory.js';
import { TOKEN_PREFIX } from '../auth/tokens.js';
import { badRequest, conflict } from '../domain/errors.js';
import { parseRepoId } from '../domain/repo-id.js';
import type { ClusterStore } from '../store/types.js';
import type { NodeDeps } from './deps.js';

/** EXPORT_VERSION is the version of the records format `GET /admin/export` writes and `POST /admin/import` reads. */
export const EXPORT_VERSION = 1;
/** MAX_IMPORT_BYTES bounds an import's body (the node's default body limit is 1 MiB). */
const MAX_IMPORT_BYTES = 256 * 1024 * 1024;
const SSH_KEY_PREFIX = 'ssh-keys/';

/**
 * DirectoryExport is the store's records of who may do what: users, organisations, memberships,
 * repository visibility and grants, token records (SHA-256 hashes of tokens, never tokens) and
 * SSH public keys. User, organisation, token and key records are the stored JSON, parsed.
 */
export interface DirectoryExport {
  readonly version: number;
  readonly exported_at: string;
  readonly users: Array<Record<string, unknown>>;
  readonly orgs: Array<Record<string, unknown>>;
  readonly members: Array<{ user: string; org: string; role: string }>;
  readonly visibility: Array<{ repo: string; visibility: string }>;
  readonly grants: Array<{ repo: string; grantee: string; role: string }>;
  readonly tokens: Array<{ hash: string; record: Record<string, unknown> }>;
  readonly ssh_keys: Array<{ id: string; record: Record<string, unknown> }>;
}

const NAME = { type: 'string', minLength: 1, maxLength: 100 } as const;
const RECORD = { type: 'object' } as const;
const ROLE = { type: 'string', enum: ['read', 'write', 'admin'] } as const;
const list = (items: object): object => ({ type: 'array', maxItems: 1_000_000, items });
const obj = (required: string[], properties: Record<string, object>): object => ({
  type: 'object',
  required,
  additionalProperties: false,
  properties,
});

const importSchema = {
  querystring: obj([], { merge: { type: 'string', enum: ['true', 'false'] } }),
  body: obj(['users'], {
    version: { type: 'integer', const: EXPORT_VERSION },
    exported_at: { type: 'string' },
    users: list({ type: 'object', required: ['name'], properties: { name: NAME } }),
    orgs: list({ type: 'object', required: ['name'], properties: { name: NAME } }),
    members: list(obj(['user', 'org', 'role'], { user: NAME, org: NAME, role: { type: 'string', enum: ['member', 'owner'] } })),
    visibility: list(
      obj(['repo', 'visibility'], {
        repo: { type: 'string', maxLength: 201 },
        visibility: { type: 'string', enum: ['public', 'private'] },
      }),
    ),
    grants: list(
      obj(['repo', 'grantee', 'role'], {
        repo: { type: 'string', maxLength: 201 },
        grantee: { type: 'string', maxLength: 110 },
        role: ROLE,
      }),
    ),
    tokens: list(obj(['hash', 'record'], { hash: { type: 'string', pattern: '^[0-9a-f]{64}$' }, record: RECORD })),
    ssh_keys: list(obj(['id', 'record'], { id: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' }, record: RECORD })),
  }),
} as const;

/** parsedRecords lists the settings under `prefix` as (rest of key, parsed JSON value). */
async function parsedRecords(store: ClusterStore, prefix: string): Promise<Array<{ id: string; record: Record<string, unknown> }>> {
  return (await store.listMeta(prefix)).map((m) => ({
    id: m.key.slice(prefix.length),
    record: JSON.parse(m.value) as Record<string, unknown>,
  }));
}

/** exportDirectory reads every directory record from the store. */
export async function exportDirectory(store: ClusterStore): Promise<DirectoryExport> {
  const members = (await store.listMeta('members/')).map((m) => {
    const [, user = '', org = ''] = m.key.split('/');
    return { user, org, role: m.value };
  });
  const visibility = (await store.listMeta('visibility/')).map((m) => ({ repo: m.key.slice('visibility/'.length), visibility: m.value }));
  const grants = (await store.listMeta('grants/')).map((m) => {
    const rest = m.key.slice('grants/'.length);
    const cut = rest.lastIndexOf('/');
    return { repo: rest.slice(0, cut), grantee: rest.slice(cut + 1), role: m.value };
  });
  return {
    version: EXPORT_VERSION,
    exported_at: new Date().toISOString(),
    users: (await parsedRecords(store, 'users/')).map((u) => u.record),
    orgs: (await parsedRecords(store, 'orgs/')).map((o) => o.record),
    members,
    visibility,
    grants,
    tokens: (await parsedRecords(store, TOKEN_PREFIX)).map((t) => ({ hash: t.id, record: t.record })),
    ssh_keys: await parsedRecords(store, SSH_KEY_PREFIX),
  };
}

type ImportBody = Partial<DirectoryExport> & Pick<DirectoryExport, 'users'>;

/**
 * importEntries checks an import's names by the server's own rules and returns the settings it
 * writes: users first, so that nothing names a user who does not exist yet.
 */
function importEntries(body: ImportBody): Array<[string, string]> {
  const userName = (v: unknown): string => (v === ADMIN_USER ? ADMIN_USER : checkName(v, 'user name'));
  const out: Array<[string, string]> = [];
  for (const u of body.users) out.push([`users/${userName(u.name)}`, JSON.stringify(u)]);
  for (const o of body.orgs ?? []) out.push([`orgs/${checkName(o.name, 'organisation name')}`, JSON.stringify(o)]);
  for (const m of body.members ?? []) out.push([`members/${userName(m.user)}/${checkName(m.org, 'organisation name')}`, m.role]);
  for (const v of body.visibility ?? []) if (v.visibility === 'public') out.push([`visibility/${parseRepoId(v.repo)}`, 'public']);
  for (const g of body.grants ?? []) out.push([`grants/${parseRepoId(g.repo)}/${checkPrincipal(g.grantee)}`, g.role]);
  for (const t of body.tokens ?? []) out.push([`${TOKEN_PREFIX}${t.hash}`, JSON.stringify(t.record)]);
  for (const k of body.ssh_keys ?? []) out.push([`${SSH_KEY_PREFIX}${k.id}`, JSON.stringify(k.record)]);
  return out;
}

/**
 * registerBackupRoutes adds the export and import of the store's directory records (users,
 * organisations, memberships, visibility, grants, token records, SSH keys), for
 * `git-replication backup` and `restore`; both routes are cluster-admin only.
 */
export function registerBackupRoutes(app: FastifyInstance, deps: NodeDeps): void {
  app.get('/admin/export', { config: { access: 'admin' } }, async () => exportDirectory(deps.store));

  app.post<{ Body: ImportBody; Querystring: { merge?: string } }>(
    '/admin/import',
    {
      config: { access: 'admin' },
      schema: importSchema,
      bodyLimit: MAX_IMPORT_BYTES,
    },
    async (req) => {
      const merge = req.query.merge === 'true';
      const existing = (await deps.store.listMeta('users/')).map((m) => m.key.slice('users/'.length)).filter((n) => n !== ADMIN_USER);
      if (existing.length > 0 && !merge) {
        throw conflict(
          `the cluster has users already (${existing.slice(0, 5).join(', ')}${existing.length > 5 ? ', …' : ''}): import into an empty cluster, or merge with ?merge=true`,
        );
      }
      const entries = importEntries(req.body);
      if (entries.length === 0) throw badRequest('nothing to import');
      for (const [key, value] of entries) await deps.store.setMeta(key, value);
      deps.directory.invalidate();
      const counts = {
        users: req.body.users.length,
        orgs: req.body.orgs?.length ?? 0,
        members: req.body.members?.length ?? 0,
        visibility: req.body.visibility?.length ?? 0,
        grants: req.body.grants?.length ?? 0,
        tokens: req.body.tokens?.length ?? 0,
        ssh_keys: req.body.ssh_keys?.length ?? 0,
      };
      deps.audit.record({
        action: 'admin.import',
        user: req.caller?.principal.user ?? '',
        token: req.caller?.token.name ?? '',
        detail: { merge, ...counts },
      });
      return { imported: counts, merged: merge };
    },
  );
}

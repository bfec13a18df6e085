/**
 * The authorisation rules, as pure functions: who may do what to a repository. The git routes,
 * the REST API and (later) SSH all decide through `repoRole` and `canCreateIn`; nothing else
 * holds a copy of these rules.
 */

/** Role is a level of access: to a repository, or the scope of a token. */
export type Role = 'read' | 'write' | 'admin';

/** OrgRole is a user's role in an organisation. */
export type OrgRole = 'member' | 'owner';

/** Visibility says whether anonymous callers may read a repository. */
export type Visibility = 'public' | 'private';

const RANK: Record<Role, number> = { read: 0, write: 1, admin: 2 };

/** atLeast says whether `have` includes `need` (null is no access). */
export function atLeast(have: Role | null, need: Role): boolean {
  return have !== null && RANK[have] >= RANK[need];
}

/** lower is the smaller of two roles (null, no access, is smallest). */
export function lower(a: Role | null, b: Role | null): Role | null {
  if (a === null || b === null) return null;
  return RANK[a] <= RANK[b] ? a : b;
}

function higher(a: Role | null, b: Role | null): Role | null {
  if (a === null) return b;
  if (b === null) return a;
  return RANK[a] >= RANK[b] ? a : b;
}

/** Principal is an authenticated user as the rules see it. */
export interface Principal {
  readonly user: string;
  /** admin: a cluster admin, who may do everything. */
  readonly admin: boolean;
  /** orgs maps each organisation the user belongs to to the user's role in it. */
  readonly orgs: ReadonlyMap<string, OrgRole>;
}

/** RepoPolicy is what the rules need to know of a repository. */
export interface RepoPolicy {
  readonly owner: string;
  readonly visibility: Visibility;
  /** grants maps `user:<name>` and `org:<name>` to the role granted. */
  readonly grants: ReadonlyMap<string, Role>;
}

/**
 * repoRole is a principal's role on a repository (null: no access; for a private repository
 * that also means it must not learn the repository exists). The rules, highest wins:
 * 1. a cluster admin has admin;
 * 2. the namespace's owner (the user of that name, or an owner of the organisation) has admin;
 * 3. a member of the owning organisation has read;
 * 4. a grant to the user, or to an organisation the user belongs to, gives its role;
 * 5. anyone, signed in or not, may read a public repository.
 */
export function repoRole(p: Principal | null, repo: RepoPolicy): Role | null {
  let role: Role | null = repo.visibility === 'public' ? 'read' : null;
  if (p === null) return role;
  if (p.admin || p.user === repo.owner) return 'admin';
  const inOwner = p.orgs.get(repo.owner);
  if (inOwner === 'owner') return 'admin';
  if (inOwner === 'member') role = higher(role, 'read');
  role = higher(role, repo.grants.get(`user:${p.user}`) ?? null);
  for (const org of p.orgs.keys()) role = higher(role, repo.grants.get(`org:${org}`) ?? null);
  return role;
}

/** canCreateIn says whether a principal may create repositories under `owner`. */
export function canCreateIn(p: Principal, owner: string): boolean {
  return p.admin || p.user === owner || p.orgs.has(owner);
}

/**
 * maxScope is the highest token scope a user may hold. A scope only caps what the user may do:
 * `admin` on a user who is not a cluster admin reaches the repositories that user administers,
 * and no cluster operation (those need a cluster admin as well).
 */
export function maxScope(_p: Principal): Role {
  return 'admin';
}

/**
 * Decision is what a route does with a request for `need` on a repository: go on, or refuse so
 * that a private repository's existence is never shown to someone who may not read it.
 */
export type Decision = 'allow' | 'unauthenticated' | 'not_found' | 'forbidden';

/**
 * decide turns a role into a route's answer: without credentials and without access, ask for
 * them (git's credential helper reacts to a 401); with credentials but no read access, the
 * repository does not exist for this caller (404, as for one that does not); with read but not
 * enough, 403.
 */
export function decide(role: Role | null, need: Role, authenticated: boolean): Decision {
  if (atLeast(role, need)) return 'allow';
  if (role === null) return authenticated ? 'not_found' : 'unauthenticated';
  return authenticated ? 'forbidden' : 'unauthenticated';
}

import { randomUUID } from 'node:crypto';
import { AppError, badRequest, conflict, notFound, StoreUnavailableError } from '../domain/errors.js';
import { RESERVED_OWNERS, type RepoId } from '../domain/repo-id.js';
import { LfsLocks } from '../lfs/locks.js';
import type { ClusterStore } from '../store/types.js';
import type { OrgRole, Principal, RepoPolicy, Role, Visibility } from './policy.js';

/** User is a user account as the store keeps it. */
export interface User {
  readonly name: string;
  readonly admin: boolean;
  readonly disabled: boolean;
  readonly createdAt: string;
}

/** OrgRecord is an organisation as the store keeps it (`meta/orgs/<name>`). */
interface OrgRecord {
  readonly name: string;
  readonly createdAt: string;
  /** id is this creation's (absent on records made before it was written). */
  readonly id?: string;
  /** createdBy names the user who created it, for maxOrgsPerUser (absent: made before it was written). */
  readonly createdBy?: string;
  /** deleting marks one deleteOrg has begun to remove. */
  readonly deleting?: boolean;
}

/** ADMIN_USER is the built-in cluster admin; tokens made before users existed belong to it. */
export const ADMIN_USER = 'admin';

/** CACHE_MS bounds how stale a node's view of users, memberships and grants may be. */
export const DIRECTORY_CACHE_MS = 1_000;

/**
 * RECHECK_MS bounds how stale a view a refusal may rest on (authorizeRepo reads again what is
 * older): a grant, a membership or a repository made a moment ago through another node lets
 * its user in at once, while a denied caller's requests read the store at most this often per
 * repository and user.
 */
export const RECHECK_MS = 100;

/**
 * NamespaceLimits bound what one account may make (0: no cap); cluster admins are not held to
 * them. An ordinary user made 2,000 repositories in a minute, each some inodes and KB on every
 * replica and a record every background pass reads: without a cap, a script fills a node's disk.
 */
export interface NamespaceLimits {
  /** maxReposPerOwner: repositories one user or organisation may hold. */
  readonly maxReposPerOwner: number;
  /** maxOrgsPerUser: organisations one user may have created that exist. */
  readonly maxOrgsPerUser: number;
}

/** DEFAULT_NAMESPACE_LIMITS are the settings' defaults (maxReposPerOwner, maxOrgsPerUser in config.ts). */
export const DEFAULT_NAMESPACE_LIMITS: NamespaceLimits = { maxReposPerOwner: 10_000, maxOrgsPerUser: 100 };

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** checkName validates a user or organisation name: the same rules as a repo id's owner. */
export function checkName(name: unknown, what: string): string {
  if (typeof name !== 'string' || !NAME.test(name) || name.includes('..') || /\.(git|lock)$/i.test(name)) {
    throw badRequest(`${what} must be 1-100 characters of A-Z a-z 0-9 . _ - starting with a letter or digit`);
  }
  if (RESERVED_OWNERS.has(name.toLowerCase())) throw badRequest(`${what} '${name}' is reserved`);
  return name;
}

/** checkPrincipal validates a grantee: `user:<name>` or `org:<name>`. */
export function checkPrincipal(value: unknown): string {
  const m = typeof value === 'string' ? /^(user|org):(.+)$/.exec(value) : null;
  if (!m) throw badRequest("grantee must be 'user:<name>' or 'org:<name>'");
  return `${m[1]}:${m[2] === ADMIN_USER ? ADMIN_USER : checkName(m[2], m[1] === 'user' ? 'user name' : 'organisation name')}`;
}

/**
 * Directory keeps users, organisations, memberships, repository visibility and grants in the
 * cluster store (so every node sees the same), read through a cache of DIRECTORY_CACHE_MS:
 * a change made on one node holds on every node within that time, and at once on the node that
 * made it. Keys: `users/<name>`, `orgs/<name>`, `members/<user>/<org>` (role),
 * `visibility/<owner>/<repo>` (`public`; absent is private), `grants/<owner>/<repo>/<grantee>`.
 */
export class Directory {
  private readonly cache = new Map<string, { at: number; value: Promise<unknown> }>();
  /** lastGood keeps the last value read of each key, for reads while the store is unreachable. */
  private readonly lastGood = new Map<string, unknown>();

  constructor(
    private readonly store: ClusterStore,
    private readonly limits: NamespaceLimits = DEFAULT_NAMESPACE_LIMITS,
  ) {}

  /**
   * cached reads through the cache. While the store cannot be reached, the last value this node
   * read stands (reads go on through an outage, as the router serves the last state it saw,
   * DESIGN §6); a key never read fails closed.
   */
  private cached<T>(key: string, load: () => Promise<T>, maxAgeMs = DIRECTORY_CACHE_MS): Promise<T> {
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < maxAgeMs) return hit.value as Promise<T>;
    const value = load().then(
      (v) => {
        this.lastGood.set(key, v);
        if (this.lastGood.size > 10_000) this.lastGood.clear();
        return v;
      },
      (err: unknown) => {
        this.cache.delete(key);
        if (err instanceof StoreUnavailableError && this.lastGood.has(key)) return this.lastGood.get(key) as T;
        throw err;
      },
    );
    this.cache.set(key, { at: Date.now(), value });
    if (this.cache.size > 10_000) this.cache.clear();
    return value;
  }

  private forget(): void {
    this.cache.clear();
  }

  /** forgetPolicy drops this node's cached policy of one repository (it is read afresh next). */
  forgetPolicy(repoId: RepoId): void {
    this.cache.delete(`repo:${repoId}`);
  }

  /** invalidate drops this node's cached view, for a change written to the store directly (an import). */
  invalidate(): void {
    this.forget();
  }

  /** user reads a user; the built-in admin exists even before its record is written. */
  async user(name: string): Promise<User | null> {
    return this.cached(`user:${name}`, async () => {
      const raw = await this.store.getMeta(`users/${name}`);
      if (raw) return JSON.parse(raw) as User;
      return name === ADMIN_USER ? { name, admin: true, disabled: false, createdAt: '' } : null;
    });
  }

  /** principal is what the rules need of a user: admin flag and organisations (read at most `maxAgeMs` ago). */
  async principal(user: Pick<User, 'name' | 'admin'>, maxAgeMs = DIRECTORY_CACHE_MS): Promise<Principal> {
    const orgs = await this.cached(
      `orgs-of:${user.name}`,
      async () => {
        const prefix = `members/${user.name}/`;
        return new Map((await this.store.listMeta(prefix)).map((m) => [m.key.slice(prefix.length), m.value as OrgRole]));
      },
      maxAgeMs,
    );
    return { user: user.name, admin: user.admin, orgs };
  }

  /**
   * policy reads what the rules need of a repository, and the incarnation it holds for (null: no
   * such repository). The record is read before the policy: a repository deleted and created
   * again between the two reads pairs the old incarnation with the new policy, which a write
   * bound to it then refuses (forIncarnation); the other order could pair a deleted
   * repository's grants with the new one.
   */
  async policy(repoId: RepoId, maxAgeMs = DIRECTORY_CACHE_MS): Promise<RepoPolicy & { readonly incarnation: string | null }> {
    const key = `repo:${repoId}`;
    const policy = await this.cached(
      key,
      async () => {
        const repo = await this.store.getRepo(repoId);
        // No repository, nothing to read: what its name may hold (a delete cut short) is no one's.
        const [visibility, grants] = repo
          ? await Promise.all([this.store.getMeta(`visibility/${repoId}`), this.store.listMeta(`grants/${repoId}/`)])
          : [null, []];
        const prefix = `grants/${repoId}/`;
        return {
          owner: repoId.split('/')[0] ?? '',
          visibility: visibility === 'public' ? 'public' : 'private',
          grants: new Map(grants.map((g) => [g.key.slice(prefix.length), g.value as Role])),
          incarnation: repo?.incarnation ?? null,
        } satisfies RepoPolicy & { incarnation: string | null };
      },
      maxAgeMs,
    );
    // A missing repository is not remembered (one store read each time): one created a moment
    // later through another node is found at once (a cached "none" bound its owner's next grant
    // to no repository: a 404 for a read, create, configure sequence through a load balancer).
    if (policy.incarnation === null) this.cache.delete(key);
    return policy;
  }

  /**
   * policies returns a function giving every repository's policy from two store reads (all
   * visibilities, all grants), for listings: one read per repository would make a page of
   * 10,000 cost 10,000 reads.
   */
  async policies(): Promise<(repoId: string) => RepoPolicy> {
    const [vis, grants] = await this.cached('all-policies', () =>
      Promise.all([this.store.listMeta('visibility/'), this.store.listMeta('grants/')]),
    );
    const publicRepos = new Set(vis.filter((v) => v.value === 'public').map((v) => v.key.slice('visibility/'.length)));
    const byRepo = new Map<string, Map<string, Role>>();
    for (const g of grants) {
      // grants/<owner>/<name>/<grantee>
      const rest = g.key.slice('grants/'.length);
      const cut = rest.indexOf('/', rest.indexOf('/') + 1);
      const repo = rest.slice(0, cut);
      if (!byRepo.has(repo)) byRepo.set(repo, new Map());
      byRepo.get(repo)!.set(rest.slice(cut + 1), g.value as Role);
    }
    return (repoId) => ({
      owner: repoId.split('/')[0] ?? '',
      visibility: publicRepos.has(repoId) ? 'public' : 'private',
      grants: byRepo.get(repoId) ?? new Map(),
    });
  }

  /**
   * orgStamp reads an organisation's record as the store holds it, past the cache: null for none,
   * or one being deleted (deleteOrg). Work that adds to an organisation (a member, a grant, a
   * repository) reads it before and after its write: a different answer after means the
   * organisation went (or went and was made again) meanwhile, and the write is taken back.
   */
  async orgStamp(name: string): Promise<string | null> {
    const raw = await this.store.getMeta(`orgs/${name}`);
    return raw === null || (JSON.parse(raw) as OrgRecord).deleting === true ? null : raw;
  }

  /** orgExists says whether an organisation of this name exists (and is not being deleted). */
  async orgExists(name: string): Promise<boolean> {
    return (await this.orgStamp(name)) !== null;
  }

  /**
   * namespaceStamp is orgStamp for a user's name too (users are never deleted: their stamp is
   * their name): null when no user or organisation holds it.
   */
  async namespaceStamp(name: string): Promise<string | null> {
    return (await this.store.getMeta(`users/${name}`)) !== null ? `user:${name}` : this.orgStamp(name);
  }

  /**
   * takenAlike names the user or organisation whose name differs from `name` in case only, if
   * any: names that look the same to a reader are one namespace (no `Alice` beside `alice`).
   */
  private async takenAlike(name: string): Promise<string | null> {
    const lower = name.toLowerCase();
    for (const prefix of ['users/', 'orgs/'] as const) {
      for (const m of await this.store.listMeta(prefix)) {
        const other = m.key.slice(prefix.length);
        if (other !== name && other.toLowerCase() === lower) return other;
      }
    }
    return null;
  }

  /**
   * claimName takes a user or organisation name, in any case, for good (`meta/names/<lower
   * case>`, by compare-and-swap): of two creations racing for `Acme` and `acme` (or a user and an
   * organisation of one name), one wins. takenAlike finds the names made before claims.
   */
  private async claimName(name: string, kind: 'user' | 'org'): Promise<void> {
    const alike = await this.takenAlike(name);
    if (alike !== null) throw conflict(`'${name}' differs from the existing name '${alike}' in case only`);
    const mine = `${kind}:${name}`;
    const held = await this.store.setMetaIfAbsent(`names/${name.toLowerCase()}`, mine);
    if (held === mine) return;
    const [heldKind, heldName] = [held.slice(0, held.indexOf(':')), held.slice(held.indexOf(':') + 1)];
    if (heldName !== name) throw conflict(`'${name}' differs from the existing name '${heldName}' in case only`);
    throw conflict(`'${name}' is ${heldKind === 'user' ? 'a user' : 'an organisation'}`);
  }

  /** addUser creates a user; 409 if the name is a user or an organisation already (in any case). */
  async addUser(name: string, admin: boolean): Promise<User> {
    checkName(name, 'user name');
    if (await this.store.getMeta(`orgs/${name}`)) throw conflict(`'${name}' is an organisation`);
    await this.claimName(name, 'user');
    const user: User = { name, admin, disabled: false, createdAt: new Date().toISOString() };
    const stored = await this.store.setMetaIfAbsent(`users/${name}`, JSON.stringify(user));
    if (stored !== JSON.stringify(user)) throw conflict(`user ${name} already exists`);
    this.forget();
    return user;
  }

  /** ensureAdminUser records the built-in admin (idempotent). */
  async ensureAdminUser(): Promise<void> {
    await this.store.setMetaIfAbsent(
      `users/${ADMIN_USER}`,
      JSON.stringify({ name: ADMIN_USER, admin: true, disabled: false, createdAt: new Date().toISOString() } satisfies User),
    );
  }

  /** listUsers lists every user. */
  async listUsers(): Promise<User[]> {
    return (await this.store.listMeta('users/')).map((m) => JSON.parse(m.value) as User);
  }

  /** setDisabled disables (or enables) a user: its tokens stop working on every node. */
  async setDisabled(name: string, disabled: boolean): Promise<User> {
    const raw = await this.store.getMeta(`users/${name}`);
    if (!raw) throw notFound(`user ${name} not found`);
    if (name === ADMIN_USER && disabled) throw badRequest('the built-in admin user cannot be disabled');
    const user: User = { ...(JSON.parse(raw) as User), disabled };
    await this.store.setMeta(`users/${name}`, JSON.stringify(user));
    this.forget();
    return user;
  }

  /**
   * roomForRepo refuses (409) a repository under an owner that holds maxReposPerOwner of them
   * already (`made`: counting one just made, so more than that). Checked before a create, and
   * again after it (createdFits): creates racing past the first count each passed it (60 at
   * once made 60 under a cap of 3).
   */
  async roomForRepo(owner: string, made = false): Promise<void> {
    const cap = this.limits.maxReposPerOwner;
    if (cap > 0 && (await this.store.countRepos(owner)) >= cap + (made ? 1 : 0))
      throw conflict(`'${owner}' holds ${cap} repositories, the most one owner may (--max-repos-per-owner): delete one first`);
  }

  /**
   * createdFits is what a create by a user who is not a cluster admin checks once its record is
   * written: the namespace is the one it checked before (`stamp`, namespaceStamp: an
   * organisation deleted meanwhile is not), and the owner within its cap. A create that fails
   * it is taken back by its caller. Each create counts after its own write, so creates racing
   * past the first count leave at most the cap between them (the last of them to count sees all
   * that stay).
   */
  async createdFits(owner: string, stamp: string): Promise<void> {
    if ((await this.namespaceStamp(owner)) !== stamp) throw notFound(`no user or organisation named '${owner}'`);
    await this.roomForRepo(owner, true);
  }

  /**
   * createOrg creates an organisation with its first owner. A cluster admin's (`byAdmin`) may
   * take a name its repositories were made under, and is not held to maxOrgsPerUser.
   */
  async createOrg(name: string, owner: string, opts: { byAdmin?: boolean } = {}): Promise<{ name: string; createdAt: string }> {
    checkName(name, 'organisation name');
    if (await this.store.getMeta(`users/${name}`)) throw conflict(`'${name}' is a user`);
    const capped = !opts.byAdmin && this.limits.maxOrgsPerUser > 0;
    if (capped) await this.roomForOrg(owner, 0);
    // Repositories a cluster admin made under a name nobody holds yet are not anyone's to take:
    // the organisation's owner would administer them all.
    if (!opts.byAdmin && (await this.store.countRepos(name)) > 0)
      throw conflict(`repositories exist under '${name}' already: only a cluster admin may create that organisation`);
    await this.claimName(name, 'org');
    const org = { name, createdAt: new Date().toISOString() };
    // The record carries an id of this creation: two creations of one name in the same
    // millisecond wrote the same record, each took the other's for its own, and both creators
    // became owners. It names its creator, for maxOrgsPerUser.
    const mine = JSON.stringify({ ...org, id: randomUUID(), createdBy: owner } satisfies OrgRecord);
    const held = await this.store.setMetaIfAbsent(`orgs/${name}`, mine);
    if (held !== mine)
      throw conflict(`organisation ${name} ${(JSON.parse(held) as OrgRecord).deleting ? 'is being deleted' : 'already exists'}`);
    await this.store.setMeta(`members/${owner}/${name}`, 'owner');
    this.forget();
    if (capped) {
      // Counted again with this one made: creations racing past the first count.
      await this.roomForOrg(owner, 1).catch(async (err: unknown) => {
        // The record first: cut short between the two, no organisation is left without an owner.
        if (await this.store.compareAndSetMeta(`orgs/${name}`, mine, null)) await this.store.deleteMeta(`members/${owner}/${name}`);
        this.forget();
        throw err;
      });
    }
    return org;
  }

  /**
   * roomForOrg refuses (409) an organisation to a user who created maxOrgsPerUser that still
   * exist (`made`: counting those just made). The creator counts, not the owners: an owner may
   * add others as owners and step down, and anyone may be made an owner without asking.
   */
  private async roomForOrg(user: string, made: number): Promise<void> {
    const cap = this.limits.maxOrgsPerUser;
    let created = 0;
    for (const m of await this.store.listMeta('orgs/')) {
      const org = JSON.parse(m.value) as OrgRecord;
      if (org.createdBy === user && org.deleting !== true) created++;
    }
    if (created >= cap + made) throw conflict(`${user} has created ${cap} organisations, the most one user may (--max-orgs-per-user)`);
  }

  /**
   * deleteOrg removes an organisation that holds no repository (404 for none; 409 while it holds
   * any). Its record is marked as being deleted first (by compare-and-swap on the record read):
   * from then on it takes no member, grant or repository (orgStamp: one whose write raced the
   * mark takes it back), and it cannot be created again (409). The repositories are counted
   * again after the mark (a create that committed before it: the mark is taken back, 409).
   * Then the grants it holds on other repositories and its memberships go, and its record last,
   * if it is still the marked one: whoever creates it again starts with nothing of the old one.
   * A delete cut short is finished by the next, counting again; one that finds the record is
   * no longer its marked one (another delete finished, and the name may be another
   * organisation's now) stops before its sweeps. The name's claim stays (names are taken for
   * good): it can be created again as an organisation of that exact name.
   */
  async deleteOrg(name: string): Promise<void> {
    const key = `orgs/${name}`;
    const raw = await this.store.getMeta(key);
    if (raw === null) throw notFound(`organisation ${name} not found`);
    const record = JSON.parse(raw) as OrgRecord;
    const resumed = record.deleting === true;
    const marked = resumed ? raw : JSON.stringify({ ...record, deleting: true } satisfies OrgRecord);
    const holding = async (): Promise<void> => {
      const held = await this.store.countRepos(name);
      if (held > 0) throw conflict(`organisation ${name} holds ${held} repositories: delete them first`);
    };
    const gone = (): AppError => notFound(`organisation ${name} not found`);
    try {
      await holding();
      if (!resumed) {
        if (!(await this.store.compareAndSetMeta(key, raw, marked))) throw conflict(`organisation ${name} changed meanwhile: try again`);
        await holding().catch(async (err: unknown) => {
          await this.store.compareAndSetMeta(key, marked, raw);
          throw err;
        });
      }
      if ((await this.store.getMeta(key)) !== marked) throw gone();
      for (const g of await this.store.listMeta('grants/')) if (g.key.endsWith(`/org:${name}`)) await this.store.deleteMeta(g.key);
      for (const m of await this.store.listMeta('members/')) if (m.key.split('/')[2] === name) await this.store.deleteMeta(m.key);
      if (!(await this.store.compareAndSetMeta(key, marked, null))) throw gone();
    } finally {
      this.forget();
    }
  }

  /**
   * setMember adds a user to an organisation, or changes the user's role in it; taken back (404)
   * if the organisation went meanwhile (orgStamp): a member written as it was deleted would have
   * been a member of the next organisation of that name.
   */
  async setMember(org: string, user: string, role: OrgRole): Promise<void> {
    const stamp = await this.orgStamp(org);
    if (stamp === null) throw notFound(`organisation ${org} not found`);
    if (!(await this.user(user))) throw notFound(`user ${user} not found`);
    if (role !== 'owner') await this.keepAnOwner(org, user);
    const key = `members/${user}/${org}`;
    const before = await this.store.getMeta(key);
    await this.store.setMeta(key, role);
    this.forget();
    if (before === 'owner' && role !== 'owner' && !(await this.anyOwner(org))) {
      // Another owner stepped down or was removed at once (each checked before the other wrote).
      // Put back whatever happened to the key since (a removal too): an organisation keeps an owner.
      await this.store.setMeta(key, before);
      this.forget();
      throw conflict(`${user} is the last owner of ${org}: make another member an owner first`);
    }
    if ((await this.orgStamp(org)) !== stamp) {
      // Back to what it was (a role kept, a member still one, if the organisation stays), unless changed since.
      await this.store.compareAndSetMeta(key, role, before);
      this.forget();
      throw notFound(`organisation ${org} not found`);
    }
  }

  /** removeMember takes a user out of an organisation, with their grants on its repositories (404s for an unknown organisation or member; 409 for its last owner). */
  async removeMember(org: string, user: string): Promise<void> {
    if (!(await this.orgExists(org))) throw notFound(`organisation ${org} not found`);
    if ((await this.memberRoleNow(org, user)) === null) throw notFound(`user ${user} is not a member of ${org}`);
    await this.keepAnOwner(org, user);
    try {
      // Their grants on the organisation's repositories go with them, the admin grant a member
      // gets on a repository they create included (a removed member kept administering those:
      // making them public, deleting them, granting others). An outside collaborator is granted
      // again after the removal. The grants go first: a removal cut short is tried again while
      // the user is still a member.
      const dropGrants = async (): Promise<void> => {
        for (const g of await this.store.listMeta(`grants/${org}/`))
          if (g.key.endsWith(`/user:${user}`)) await this.store.deleteMeta(g.key);
      };
      await dropGrants();
      const key = `members/${user}/${org}`;
      const role = await this.store.getMeta(key);
      await this.store.deleteMeta(key);
      if (role === 'owner' && !(await this.anyOwner(org))) {
        // Two owners removing each other (or themselves) at once each passed keepAnOwner before
        // the other's removal: the one that finds no owner left puts its owner back.
        await this.store.setMeta(key, 'owner');
        throw conflict(`${user} is the last owner of ${org}: make another member an owner first`);
      }
      // Once more: a repository the member created meanwhile, through a node that still saw
      // them a member, got its creator's grant after the first pass.
      await dropGrants();
    } finally {
      this.forget();
    }
  }

  /** memberRoleNow reads a user's role in an organisation from the store, past the cache (null: not a member). */
  async memberRoleNow(org: string, user: string): Promise<OrgRole | null> {
    return (await this.store.getMeta(`members/${user}/${org}`)) as OrgRole | null;
  }

  /** anyOwner says whether an organisation has an owner, read from the store now. */
  private async anyOwner(org: string): Promise<boolean> {
    return (await this.memberList(org)).some((m) => m.role === 'owner');
  }

  /**
   * keepAnOwner refuses (409) to remove or demote an organisation's last owner. Two owners
   * removing each other at once each pass it; setMember and removeMember look again after their
   * write and put their owner back when none is left.
   */
  private async keepAnOwner(org: string, leaving: string): Promise<void> {
    const owners = (await this.members(org)).filter((m) => m.role === 'owner').map((m) => m.user);
    if (owners.length === 1 && owners[0] === leaving)
      throw conflict(`${leaving} is the last owner of ${org}: make another member an owner first`);
  }

  /** members lists an organisation's members with their roles. */
  async members(org: string): Promise<Array<{ user: string; role: OrgRole }>> {
    if (!(await this.orgExists(org))) throw notFound(`organisation ${org} not found`);
    return this.memberList(org);
  }

  /** memberList reads an organisation's members with their roles from the store, whether or not it exists. */
  private async memberList(org: string): Promise<Array<{ user: string; role: OrgRole }>> {
    const out: Array<{ user: string; role: OrgRole }> = [];
    for (const m of await this.store.listMeta('members/')) {
      const [, user, o] = m.key.split('/');
      if (o === org && user) out.push({ user, role: m.value as OrgRole });
    }
    return out;
  }

  /** setVisibility makes a repository public or private (forIncarnation: 404 for a missing one, or one deleted meanwhile). */
  async setVisibility(repoId: RepoId, visibility: Visibility, incarnation?: string): Promise<void> {
    const key = `visibility/${repoId}`;
    const open = visibility === 'public';
    await this.forIncarnation(
      repoId,
      incarnation,
      () => (open ? this.store.setMeta(key, 'public') : this.store.deleteMeta(key)),
      open ? () => this.store.deleteMeta(key) : null,
    );
  }

  /**
   * grant gives a user or organisation a role on a repository (null removes the grant; 404 if
   * there is none, and as forIncarnation). A grant to an organisation is taken back (400) if
   * the organisation went meanwhile (orgStamp): the next one of its name would have held it.
   */
  async grant(repoId: RepoId, grantee: string, role: Role | null, incarnation?: string): Promise<void> {
    const org = role !== null && grantee.startsWith('org:') ? grantee.slice('org:'.length) : null;
    if (org === null) return this.grantOnly(repoId, grantee, role, incarnation);
    const stamp = await this.orgStamp(org);
    if (stamp === null) throw badRequest(`no organisation named '${org}'`);
    const key = `grants/${repoId}/${grantee}`;
    const before = await this.store.getMeta(key);
    await this.grantOnly(repoId, grantee, role, incarnation);
    if ((await this.orgStamp(org)) !== stamp) {
      // Back to what it was, unless changed since.
      await this.store.compareAndSetMeta(key, role, before);
      this.forgetPolicy(repoId);
      throw badRequest(`no organisation named '${org}'`);
    }
  }

  /** grantOnly writes or removes a grant, as forIncarnation, with no look at the grantee. */
  private async grantOnly(repoId: RepoId, grantee: string, role: Role | null, incarnation?: string): Promise<void> {
    const key = `grants/${repoId}/${grantee}`;
    const remove = async (): Promise<void> => {
      if ((await this.store.getMeta(key)) === null) throw notFound(`${grantee} has no grant on ${repoId}`);
      await this.store.deleteMeta(key);
    };
    await this.forIncarnation(
      repoId,
      incarnation,
      role !== null ? () => this.store.setMeta(key, role) : remove,
      role !== null ? () => this.store.deleteMeta(key) : null,
    );
  }

  /**
   * grantCreator gives a member who created a repository in an organisation admin on it, if they
   * are a member still (read past the cache: another node's cached view may still have had a
   * member removed a moment ago), and takes it back if a removal ran meanwhile (its sweep may
   * have come before the grant; a grant it took already is no error).
   */
  async grantCreator(repoId: RepoId, org: string, user: string, incarnation: string): Promise<void> {
    // An owner administers every repository of the organisation: a grant would outlast a demotion.
    const role = await this.memberRoleNow(org, user);
    if (role === null || role === 'owner') return;
    await this.grant(repoId, `user:${user}`, 'admin', incarnation);
    if ((await this.memberRoleNow(org, user)) !== null) return;
    await this.grant(repoId, `user:${user}`, null, incarnation).catch((err: unknown) => {
      if (!(err instanceof AppError && err.statusCode === 404)) throw err;
    });
  }

  /**
   * forIncarnation makes a policy write for the repository as it is now (or as `incarnation`, if
   * given; '' is none): 404 if there is no such repository. The repository is read again after the write, and
   * a write that found it deleted (or deleted and created again) by then is undone and answered
   * 404: a grant or a public visibility never outlives the repository it was given on. (A create
   * clears what a deleted repository of its name left, under the repository's lock, before its
   * record is written; a write that came after that clear is caught here.)
   */
  private async forIncarnation(
    repoId: RepoId,
    incarnation: string | undefined,
    write: () => Promise<void>,
    undo: (() => Promise<void>) | null,
  ): Promise<void> {
    const before = await this.store.getRepo(repoId);
    if (!before || (incarnation !== undefined && before.incarnation !== incarnation)) throw notFound(`repository ${repoId} not found`);
    try {
      await write();
      const after = await this.store.getRepo(repoId);
      if (after?.incarnation !== before.incarnation) {
        await undo?.();
        throw notFound(`repository ${repoId} was deleted meanwhile`);
      }
    } finally {
      this.forget();
    }
  }

  /**
   * forgetRepo drops a repository's visibility and grants: a deleted one's, and, before a create
   * writes its record, whatever one deleted before left (a delete whose forgetRepo failed or was
   * cut short): a re-created repository starts private, with no grants.
   */
  async forgetRepo(repoId: RepoId): Promise<void> {
    await this.store.deleteMeta(`visibility/${repoId}`);
    // The note that it holds LFS objects (lfs/service.ts): a re-created repository holds none.
    await this.store.deleteMeta(`lfs/${repoId}`);
    // Its Git LFS file locks: a re-created repository starts with none.
    await new LfsLocks(this.store).forget(repoId);
    for (const g of await this.store.listMeta(`grants/${repoId}/`)) await this.store.deleteMeta(g.key);
    this.forget();
  }
}

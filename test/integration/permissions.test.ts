import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signHop } from '../../src/auth/peer-signature.js';
import { TestCluster, sleep, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, tempDir, workRepo } from '../helpers/git.js';

/**
 * The permission matrix: every kind of caller × a public and a private repository × every
 * operation, through the real git client and the REST API, on different nodes. Each cell names
 * the exact answer.
 */

type Who = 'anonymous' | 'reader' | 'writer' | 'repo-admin' | 'cluster-admin' | 'non-member' | 'org-member' | 'expired' | 'revoked';
type Vis = 'public' | 'private';
type Op = 'ls-remote' | 'clone' | 'fetch' | 'push' | 'create' | 'delete' | 'grant' | 'list';

/** Git outcomes: ok, or the line git prints for a 401 without credentials, bad credentials, 404, 403. */
const GIT = {
  ok: null,
  prompt: /could not read Username|terminal prompts disabled/,
  badCreds: /Authentication failed/,
  notFound: /repository '.*' not found|returned error: 404/,
  forbidden: /returned error: 403|permission denied/,
} as const;
type GitOutcome = keyof typeof GIT;

const WHO: Who[] = ['anonymous', 'reader', 'writer', 'repo-admin', 'cluster-admin', 'non-member', 'org-member', 'expired', 'revoked'];

// [who] → expected per visibility: git reads (ls-remote, clone, fetch), push, create, delete, grant, list.
interface Row {
  read: GitOutcome;
  push: GitOutcome;
  create: number;
  delete: number;
  grant: number;
  list: boolean | 401;
}
const EXPECTED: Record<Vis, Record<Who, Row>> = {
  private: {
    anonymous: { read: 'prompt', push: 'prompt', create: 401, delete: 401, grant: 401, list: false },
    reader: { read: 'ok', push: 'forbidden', create: 403, delete: 403, grant: 403, list: true },
    writer: { read: 'ok', push: 'ok', create: 403, delete: 403, grant: 403, list: true },
    'repo-admin': { read: 'ok', push: 'ok', create: 201, delete: 200, grant: 200, list: true },
    'cluster-admin': { read: 'ok', push: 'ok', create: 201, delete: 200, grant: 200, list: true },
    'non-member': { read: 'notFound', push: 'notFound', create: 403, delete: 404, grant: 404, list: false },
    'org-member': { read: 'ok', push: 'forbidden', create: 201, delete: 403, grant: 403, list: true },
    expired: { read: 'badCreds', push: 'badCreds', create: 401, delete: 401, grant: 401, list: 401 },
    revoked: { read: 'badCreds', push: 'badCreds', create: 401, delete: 401, grant: 401, list: 401 },
  },
  public: {
    anonymous: { read: 'ok', push: 'prompt', create: 401, delete: 401, grant: 401, list: true },
    reader: { read: 'ok', push: 'forbidden', create: 403, delete: 403, grant: 403, list: true },
    writer: { read: 'ok', push: 'ok', create: 403, delete: 403, grant: 403, list: true },
    'repo-admin': { read: 'ok', push: 'ok', create: 201, delete: 200, grant: 200, list: true },
    'cluster-admin': { read: 'ok', push: 'ok', create: 201, delete: 200, grant: 200, list: true },
    'non-member': { read: 'ok', push: 'forbidden', create: 403, delete: 403, grant: 403, list: true },
    'org-member': { read: 'ok', push: 'forbidden', create: 201, delete: 403, grant: 403, list: true },
    // git sends credentials only when a 401 asks for them: a public read never does.
    expired: { read: 'ok', push: 'badCreds', create: 401, delete: 401, grant: 401, list: 401 },
    revoked: { read: 'ok', push: 'badCreds', create: 401, delete: 401, grant: 401, list: 401 },
  },
};

describe('permission matrix: callers × public and private × operations', () => {
  let c: TestCluster;
  let admin = '';
  const tokens = new Map<Who, string | null>();
  let work = '';
  let head = '';
  let seq = 0;

  function call(
    node: number,
    method: string,
    path: string,
    token: string | null,
    body?: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> }> {
    return c.api(node, method, path, body, token);
  }

  async function ok(node: number, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const r = await call(node, method, path, admin, body);
    expect(r.status, `${method} ${path}: ${JSON.stringify(r.json)}`).toBeLessThan(300);
    return r.json;
  }

  async function userToken(user: string, scope: string, extra: Record<string, unknown> = {}): Promise<{ token: string; id: string }> {
    const j = await ok(1, 'POST', '/tokens', { name: `${user}-${scope}-${seq++}`, scope, user, ...extra });
    return { token: j.token as string, id: j.id as string };
  }

  /** makeRepo creates acme/<name> with the matrix's grants: erin reads, carol writes. */
  async function makeRepo(name: string, vis: Vis): Promise<void> {
    await ok(1, 'POST', '/repos', { repo_id: `acme/${name}`, visibility: vis });
    await ok(2, 'PUT', `/repos/acme/${name}/grants/user:erin`, { role: 'read' });
    await ok(3, 'PUT', `/repos/acme/${name}/grants/user:carol`, { role: 'write' });
  }

  function gitUrl(node: number, repo: string, who: Who): string {
    const u = new URL(`${c.url(node)}/${repo}.git`);
    const t = tokens.get(who);
    if (t) {
      u.username = 'x';
      u.password = t;
    }
    return u.toString();
  }

  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { AUTH: 'tokens' } });
    admin = await c.adminToken();
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) await ok(1, 'POST', '/users', { name: u });
    const alice = await userToken('alice', 'admin');
    // alice makes the organisation (its owner) and adds bob as a member.
    expect((await call(2, 'POST', '/orgs', alice.token, { name: 'acme' })).status).toBe(201);
    expect((await call(3, 'PUT', '/orgs/acme/members/bob', alice.token, { role: 'member' })).status).toBe(200);
    tokens.set('anonymous', null);
    tokens.set('reader', (await userToken('erin', 'write')).token);
    tokens.set('writer', (await userToken('carol', 'write')).token);
    tokens.set('repo-admin', alice.token);
    tokens.set('cluster-admin', admin);
    tokens.set('non-member', (await userToken('dave', 'write')).token);
    tokens.set('org-member', (await userToken('bob', 'write')).token);
    tokens.set('expired', (await userToken('alice', 'write', { expires_at: new Date(Date.now() + 1_500).toISOString() })).token);
    const revoked = await userToken('alice', 'write');
    tokens.set('revoked', revoked.token);
    // Used once, so it is cached on node 1 before it is revoked through node 2.
    expect((await call(1, 'GET', '/user', revoked.token)).status).toBe(200);
    expect((await call(2, 'DELETE', `/tokens/${revoked.id}`, alice.token)).status).toBe(200);
    await makeRepo('public', 'public');
    await makeRepo('private', 'private');
    work = await workRepo();
    head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    for (const v of ['public', 'private'])
      await gitOk(['push', '-q', gitUrl(1, `acme/${v}`, 'cluster-admin'), 'HEAD:refs/heads/main'], { cwd: work });
    // Past the expiry and the 1 s caches.
    await sleep(1_600);
  });
  afterAll(async () => {
    await c?.destroy();
  });

  function expectGit(r: { code: number; stderr: string }, outcome: GitOutcome): void {
    const want = GIT[outcome];
    if (want === null) expect(r.code, r.stderr).toBe(0);
    else {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(want);
    }
  }

  const cells: Array<[Who, Vis, Op]> = [];
  for (const vis of ['public', 'private'] as const)
    for (const who of WHO)
      for (const op of ['ls-remote', 'clone', 'fetch', 'push', 'create', 'delete', 'grant', 'list'] as const) cells.push([who, vis, op]);

  it.each(cells)('%s × %s × %s', async (who, vis, op) => {
    const row = EXPECTED[vis][who];
    const repo = `acme/${vis}`;
    const node = (cells.findIndex(([w, v, o]) => w === who && v === vis && o === op) % 3) + 1;
    const token = tokens.get(who) ?? null;
    switch (op) {
      case 'ls-remote': {
        const r = await git(['ls-remote', gitUrl(node, repo, who)]);
        expectGit(r, row.read);
        if (row.read === 'ok') expect(r.stdout).toContain(`${head}\trefs/heads/main`);
        break;
      }
      case 'clone': {
        const r = await git(['clone', '-q', gitUrl(node, repo, who), join(await tempDir(), 'c')]);
        expectGit(r, row.read);
        break;
      }
      case 'fetch': {
        const r = await git(['fetch', '-q', gitUrl(node, repo, who), 'main'], { cwd: work });
        expectGit(r, row.read);
        break;
      }
      case 'push': {
        const branch = `refs/heads/m-${who}-${vis}`;
        const r = await git(['push', gitUrl(node, repo, who), `HEAD:${branch}`], { cwd: work });
        expectGit(r, row.push);
        const refs = await gitOk(['ls-remote', gitUrl((node % 3) + 1, repo, 'cluster-admin')]);
        expect(refs.includes(branch)).toBe(row.push === 'ok');
        break;
      }
      case 'create': {
        const id = `acme/new-${who}-${vis}`;
        const r = await call(node, 'POST', '/repos', token, { repo_id: id, visibility: vis });
        expect(r.status, JSON.stringify(r.json)).toBe(row.create);
        expect((await call((node % 3) + 1, 'GET', `/repos/${id}`, admin)).status).toBe(row.create === 201 ? 200 : 404);
        break;
      }
      case 'delete': {
        const name = `del-${who}-${vis}`;
        await makeRepo(name, vis);
        const r = await call(node, 'DELETE', `/repos/acme/${name}`, token);
        expect(r.status, JSON.stringify(r.json)).toBe(row.delete);
        expect((await call((node % 3) + 1, 'GET', `/repos/acme/${name}`, admin)).status).toBe(row.delete === 200 ? 404 : 200);
        break;
      }
      case 'grant': {
        const r = await call(node, 'PUT', `/repos/${repo}/grants/user:frank`, token, { role: 'read' });
        expect(r.status, JSON.stringify(r.json)).toBe(row.grant);
        if (r.status === 200) await ok(node, 'DELETE', `/repos/${repo}/grants/user:frank`);
        break;
      }
      case 'list': {
        const r = await call(node, 'GET', '/repos?limit=1000', token);
        if (row.list === 401) expect(r.status).toBe(401);
        else {
          expect(r.status).toBe(200);
          expect((r.json.repos as string[]).includes(repo)).toBe(row.list);
        }
        break;
      }
    }
  });

  it('a grant made through one node holds on every other node within a second', async () => {
    await makeRepo('late', 'private');
    const url = (n: number): string => gitUrl(n, 'acme/late', 'non-member');
    expectGit(await git(['ls-remote', url(3)]), 'notFound');
    await ok(1, 'PUT', '/repos/acme/late/grants/user:dave', { role: 'read' });
    // On the server's clock (node 3 caches what it read for 1 s), not timed through git's spawns.
    await new Promise((r) => setTimeout(r, 1_200));
    expect((await git(['ls-remote', url(3)])).code).toBe(0);
    await ok(2, 'DELETE', '/repos/acme/late/grants/user:dave');
    await waitFor(async () => (await git(['ls-remote', url(3)])).code !== 0, 3_000, 'the removal seen on node 3');
  });

  it("a disabled user's tokens fail on every node", async () => {
    const t = await userToken('frank', 'write');
    expect((await call(3, 'GET', '/user', t.token)).status).toBe(200);
    await ok(1, 'POST', '/users/frank/disable');
    await waitFor(async () => (await call(3, 'GET', '/user', t.token)).status === 401, 3_000, 'disabled user refused on node 3');
    await ok(1, 'POST', '/users/frank/enable');
  });

  it('a member who creates a repository in the organisation administers it', async () => {
    const bob = tokens.get('org-member')!;
    expect((await call(1, 'POST', '/repos', bob, { repo_id: 'acme/bobs' })).status).toBe(201);
    await gitOk(['push', '-q', gitUrl(2, 'acme/bobs', 'org-member'), 'HEAD:refs/heads/main'], { cwd: work });
    const grants = (await ok(3, 'GET', '/repos/acme/bobs/grants')).grants as Array<{ grantee: string; role: string }>;
    expect(grants).toContainEqual({ grantee: 'user:bob', role: 'admin' });
    // bob's token has scope write: it pushes, but it does not administer.
    expect((await call(3, 'PATCH', '/repos/acme/bobs', bob, { visibility: 'public' })).status).toBe(403);
    await ok(3, 'PATCH', '/repos/acme/bobs', { visibility: 'public' });
    // Anyone else (carol has no grant here) only reads it, now that it is public.
    expectGit(await git(['push', gitUrl(1, 'acme/bobs', 'writer'), 'HEAD:refs/heads/c'], { cwd: work }), 'forbidden');
  });

  it("an owner's write-scoped token cannot change members; a removed member's grants on the organisation's repositories go with them", async () => {
    await ok(1, 'POST', '/users', { name: 'gina' });
    const aliceWrite = (await userToken('alice', 'write')).token;
    const put = await call(2, 'PUT', '/orgs/acme/members/gina', aliceWrite, { role: 'owner' });
    expect(put.status).toBe(403);
    expect(put.json.error).toMatch(/needs an admin-scoped token/);
    expect((await call(2, 'PUT', '/orgs/acme/members/gina', tokens.get('repo-admin')!, { role: 'member' })).status).toBe(200);
    const gina = (await userToken('gina', 'admin')).token;
    expect((await call(1, 'POST', '/repos', gina, { repo_id: 'acme/ginas' })).status).toBe(201);
    await ok(1, 'PUT', '/repos/acme/public/grants/user:gina', { role: 'write' });
    expect((await call(3, 'DELETE', '/orgs/acme/members/gina', aliceWrite)).status).toBe(403);
    expect((await call(3, 'DELETE', '/orgs/acme/members/gina', tokens.get('repo-admin')!)).status).toBe(200);
    expect((await ok(1, 'GET', '/repos/acme/ginas/grants')).grants).toEqual([]);
    expect((await ok(1, 'GET', '/repos/acme/public/grants')).grants).not.toContainEqual({ grantee: 'user:gina', role: 'write' });
    await sleep(1_100);
    expect((await call(2, 'PATCH', '/repos/acme/ginas', gina, { visibility: 'public' })).status).toBe(404);
  });

  it('an organisation keeps an owner; removing what is not there is a 404', async () => {
    const alice = tokens.get('repo-admin')!;
    expect((await call(1, 'DELETE', '/orgs/acme/members/alice', alice)).status).toBe(409);
    expect((await call(1, 'PUT', '/orgs/acme/members/alice', alice, { role: 'member' })).status).toBe(409);
    expect((await call(1, 'DELETE', '/orgs/acme/members/dave', alice)).status).toBe(404);
    expect((await call(1, 'DELETE', '/repos/acme/private/grants/user:dave', alice)).status).toBe(404);
    expect((await call(1, 'DELETE', '/repos/acme/nope/grants/user:dave', admin)).status).toBe(404);
  });

  it('a member may leave an organisation (with an admin-scoped token), not remove another member', async () => {
    await ok(1, 'POST', '/users', { name: 'hank' });
    expect((await call(1, 'PUT', '/orgs/acme/members/hank', tokens.get('repo-admin')!, { role: 'member' })).status).toBe(200);
    const hankWrite = (await userToken('hank', 'write')).token;
    const hankAdmin = (await userToken('hank', 'admin')).token;
    expect((await call(2, 'DELETE', '/orgs/acme/members/bob', hankAdmin)).status).toBe(403);
    const scoped = await call(2, 'DELETE', '/orgs/acme/members/hank', hankWrite);
    expect(scoped.status).toBe(403);
    expect(scoped.json.error).toMatch(/needs an admin-scoped token/);
    expect((await call(3, 'DELETE', '/orgs/acme/members/hank', hankAdmin)).status).toBe(200);
    expect((await ok(1, 'GET', '/orgs/acme')).members).not.toContainEqual(expect.objectContaining({ user: 'hank' }));
    expect((await call(3, 'DELETE', '/orgs/acme/members/hank', hankAdmin)).status).toBe(404);
  });

  it("an organisation's owner deletes it once it holds no repository: its grants and members go, and its name is free", async () => {
    await ok(1, 'POST', '/users', { name: 'ivy' });
    await ok(1, 'POST', '/users', { name: 'jon' });
    const ivyWrite = (await userToken('ivy', 'write')).token;
    const ivyAdmin = (await userToken('ivy', 'admin')).token;
    const jonAdmin = (await userToken('jon', 'admin')).token;
    const carolAdmin = (await userToken('carol', 'admin')).token;
    expect((await call(1, 'POST', '/orgs', ivyWrite, { name: 'ivy-co' })).status).toBe(201);
    expect((await call(2, 'PUT', '/orgs/ivy-co/members/jon', ivyAdmin, { role: 'member' })).status).toBe(200);
    expect((await call(1, 'POST', '/repos', ivyWrite, { repo_id: 'ivy-co/app' })).status).toBe(201);
    expect((await call(1, 'POST', '/repos', ivyWrite, { repo_id: 'ivy/tools' })).status).toBe(201);
    expect((await call(3, 'PUT', '/repos/ivy/tools/grants/org:ivy-co', ivyAdmin, { role: 'read' })).status).toBe(200);
    // A member, a stranger, a token below admin: not theirs. Its repository first.
    expect((await call(2, 'DELETE', '/orgs/ivy-co', jonAdmin)).status).toBe(403);
    expect((await call(2, 'DELETE', '/orgs/ivy-co', carolAdmin)).status).toBe(404);
    const scoped = await call(2, 'DELETE', '/orgs/ivy-co', ivyWrite);
    expect(scoped.status).toBe(403);
    expect(scoped.json.error).toMatch(/needs an admin-scoped token/);
    const holding = await call(3, 'DELETE', '/orgs/ivy-co', ivyAdmin);
    expect(holding.status).toBe(409);
    expect(holding.json.error).toMatch(/holds 1 repositories: delete them first/);
    expect((await call(1, 'DELETE', '/repos/ivy-co/app', ivyAdmin)).status).toBe(200);
    expect((await call(3, 'DELETE', '/orgs/ivy-co', ivyAdmin)).status).toBe(200);
    expect((await call(1, 'GET', '/orgs/ivy-co', admin)).status).toBe(404);
    expect((await call(2, 'DELETE', '/orgs/ivy-co', admin)).status).toBe(404);
    const grantees = async (node: number): Promise<string[]> =>
      ((await ok(node, 'GET', '/repos/ivy/tools/grants')).grants as Array<{ grantee: string }>).map((g) => g.grantee);
    // Through another node's cached policy, within a second.
    await waitFor(async () => !(await grantees(2)).includes('org:ivy-co'), 5_000, "the organisation's grant gone");
    await waitFor(async () => !('ivy-co' in ((await call(1, 'GET', '/user', jonAdmin)).json.orgs as object)), 5_000, 'jon out of ivy-co');
    // Its name is free: whoever creates it again starts with nothing of the old one.
    expect((await call(2, 'POST', '/orgs', carolAdmin, { name: 'ivy-co' })).status).toBe(201);
    expect(((await ok(3, 'GET', '/orgs/ivy-co')).members as Array<{ user: string }>).map((m) => m.user)).toEqual(['carol']);
    expect(await grantees(1)).not.toContain('org:ivy-co');
  });

  it('a former owner, through a node whose view of her is a moment old, does not change the members of the organisation made again in its name', async () => {
    await ok(1, 'POST', '/users', { name: 'kim' });
    const kim = (await userToken('kim', 'admin')).token;
    const carolAdmin = (await userToken('carol', 'admin')).token;
    // The node's view lasts a second: an attempt counts when the view after the change still had
    // kim an owner (else it was read afresh, and proves nothing); five attempts.
    for (let attempt = 0; ; attempt++) {
      const org = `kim-co-${attempt}`;
      expect((await call(1, 'POST', '/orgs', kim, { name: org })).status).toBe(201);
      expect((await call(1, 'GET', '/user', kim)).json.orgs).toHaveProperty(org);
      expect((await call(3, 'DELETE', `/orgs/${org}`, kim)).status).toBe(200);
      expect((await call(2, 'POST', '/orgs', carolAdmin, { name: org })).status).toBe(201);
      const put = await call(1, 'PUT', `/orgs/${org}/members/kim`, kim, { role: 'owner' });
      const stale = org in ((await call(1, 'GET', '/user', kim)).json.orgs as object);
      expect(put.status, JSON.stringify(put.json)).toBe(403);
      expect(((await ok(2, 'GET', `/orgs/${org}`)).members as Array<{ user: string }>).map((m) => m.user)).toEqual(['carol']);
      if (stale) break;
      if (attempt === 4) throw new Error('five attempts took over a second each: the stale view was never tried');
    }
  });

  it('an organisation made a moment ago through another node lets its owner push and create through this one at once', async () => {
    await ok(1, 'POST', '/users', { name: 'lee' });
    const lee = (await userToken('lee', 'admin')).token;
    /**
     * attempt makes an organisation through node 2 once node 1's view of lee is 150 ms old (a
     * refusal reads again what is older than RECHECK_MS), then does `then` through node 1; it
     * counts when node 1's view still lacked the organisation (else it proves nothing): five tries.
     */
    const attempt = async (prefix: string, then: (org: string) => Promise<void>): Promise<void> => {
      for (let i = 0; ; i++) {
        const org = `${prefix}-${i}`;
        expect((await call(1, 'GET', '/user', lee)).status).toBe(200);
        await sleep(150);
        expect((await call(2, 'POST', '/orgs', lee, { name: org })).status).toBe(201);
        expect((await call(2, 'POST', '/repos', lee, { repo_id: `${org}/made` })).status).toBe(201);
        const stale = !(org in ((await call(1, 'GET', '/user', lee)).json.orgs as object));
        await then(org);
        if (stale) return;
        if (i === 4) throw new Error("five attempts took over a second each: node 1's stale view was never tried");
      }
    };
    // A push through node 1 into the organisation's repository (was 404 for up to a second).
    await attempt('lee-push', async (org) => {
      const work = await workRepo();
      await commitFile(work, 'f.txt', 'x', 'x');
      const url = new URL(c.repoUrl(1, `${org}/made`));
      url.username = 'lee';
      url.password = lee;
      await gitOk(['push', '-q', url.toString(), 'HEAD:refs/heads/main'], { cwd: work });
    });
    // A create through node 1 (was 403 for up to a second).
    await attempt('lee-create', async (org) => {
      const made = await call(1, 'POST', '/repos', lee, { repo_id: `${org}/app` });
      expect(made.status, JSON.stringify(made.json)).toBe(201);
      // Its owner administers it as owner: no creator's grant, which would outlast a demotion.
      expect((await call(2, 'GET', `/repos/${org}/app/grants`, lee)).json.grants).toEqual([]);
    });
  });

  it('a token never creates a stronger one, nor one for another user', async () => {
    const reader = await userToken('carol', 'read');
    expect((await call(1, 'POST', '/tokens', reader.token, { name: 'x', scope: 'write' })).status).toBe(403);
    expect((await call(1, 'POST', '/tokens', tokens.get('writer')!, { name: 'x', scope: 'read', user: 'dave' })).status).toBe(403);
    expect((await call(1, 'POST', '/tokens', tokens.get('writer')!, { name: 'x', scope: 'admin' })).status).toBe(403);
  });

  it('a token that expires makes only tokens that expire by then; a token revokes only tokens of its scope or below', async () => {
    const until = new Date(Date.now() + 60_000).toISOString();
    const short = await userToken('carol', 'write', { expires_at: until });
    const later = await call(1, 'POST', '/tokens', short.token, {
      name: 'later',
      scope: 'read',
      expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    expect(later.status, JSON.stringify(later.json)).toBe(403);
    expect(later.json.error).toMatch(/may not create a token that expires later/);
    // None asked for: it expires with the token that made it.
    const child = await call(1, 'POST', '/tokens', short.token, { name: 'child', scope: 'read' });
    expect(child.status).toBe(201);
    expect(child.json.expiresAt).toBe(until);
    const sooner = await call(1, 'POST', '/tokens', short.token, {
      name: 'sooner',
      scope: 'read',
      expires_at: new Date(Date.now() + 30_000).toISOString(),
    });
    expect(sooner.status).toBe(201);
    // carol's read token cannot revoke her write token; it revokes itself, and her write token revokes a read one.
    const reader = await userToken('carol', 'read');
    const writer = await userToken('carol', 'write');
    expect((await call(1, 'DELETE', `/tokens/${writer.id}`, reader.token)).status).toBe(403);
    expect((await call(1, 'GET', '/user', writer.token)).status).toBe(200);
    expect((await call(1, 'DELETE', `/tokens/${child.json.id as string}`, writer.token)).status).toBe(200);
    expect((await call(1, 'DELETE', `/tokens/${reader.id}`, reader.token)).status).toBe(200);
  });

  it("an organisation cannot take a name that differs from a user's or an organisation's in case only, nor repositories a cluster admin made under a name nobody holds", async () => {
    const writer = tokens.get('writer')!;
    for (const name of ['ACME', 'Carol']) {
      const r = await call(1, 'POST', '/orgs', writer, { name });
      expect(r.status, name).toBe(409);
      expect(r.json.error).toMatch(/in case only/);
    }
    await ok(1, 'POST', '/repos', { repo_id: 'ghost/proj' });
    const claim = await call(1, 'POST', '/orgs', writer, { name: 'ghost' });
    expect(claim.status).toBe(409);
    expect(claim.json.error).toMatch(/only a cluster admin may create that organisation/);
    expect((await call(1, 'GET', '/repos/ghost/proj/grants', writer)).status).toBe(404);
    expect((await call(1, 'POST', '/orgs', admin, { name: 'ghost' })).status).toBe(201);
  });

  it('visibility changes: private → public lets anonymous read, and back', async () => {
    await makeRepo('flip', 'private');
    const anon = (): Promise<{ code: number; stderr: string }> => git(['ls-remote', `${c.url(2)}/acme/flip.git`]);
    expectGit(await anon(), 'prompt');
    expect((await call(1, 'PATCH', '/repos/acme/flip', tokens.get('writer')!, { visibility: 'public' })).status).toBe(403);
    expect((await call(1, 'PATCH', '/repos/acme/flip', tokens.get('repo-admin')!, { visibility: 'public' })).status).toBe(200);
    await waitFor(async () => (await anon()).code === 0, 3_000, 'public on node 2');
    expect((await call(3, 'PATCH', '/repos/acme/flip', admin, { visibility: 'private' })).status).toBe(200);
    await waitFor(async () => (await anon()).code !== 0, 3_000, 'private again on node 2');
  });

  it('a repository created again starts private with no grants, even where the delete left its old ones behind', async () => {
    await makeRepo('again', 'public');
    await ok(1, 'PUT', '/repos/acme/again/grants/user:carol', { role: 'write' });
    await ok(2, 'DELETE', '/repos/acme/again');
    // What a delete cut short after its record was gone (a crash, the store lost) leaves: written
    // straight into the store, as that delete would have left it.
    const db = new Database(join(c.root, 'cluster.db'));
    try {
      const put = db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
      put.run('visibility/acme/again', 'public');
      put.run('grants/acme/again/user:carol', 'write');
    } finally {
      db.close();
    }
    expect((await call(3, 'POST', '/repos', admin, { repo_id: 'acme/again' })).status).toBe(201);
    const grants = (await ok(1, 'GET', '/repos/acme/again/grants')) as { visibility: string; grants: unknown[] };
    expect(grants.visibility).toBe('private');
    expect(grants.grants).toEqual([]);
    await sleep(1_100);
    expectGit(await git(['ls-remote', `${c.url(2)}/acme/again.git`]), 'prompt');
    expectGit(await git(['push', gitUrl(1, 'acme/again', 'writer'), 'HEAD:refs/heads/main'], { cwd: work }), 'notFound');
  });

  it("a grant or a delete by a repository's former admin, on a node that read its policy before it was deleted and created again, is refused (404)", async () => {
    const frank = (await userToken('frank', 'admin')).token;
    // The premise, node 2's view still the old one when frank writes, needs the delete and the
    // create within the policy cache's second: tried again (another name) on a slow machine.
    for (let attempt = 1; ; attempt++) {
      const repo = `acme/again-${attempt}`;
      await ok(1, 'POST', '/repos', { repo_id: repo });
      await ok(1, 'PUT', `/repos/${repo}/grants/user:frank`, { role: 'admin' });
      // node 2 reads the policy for frank (cached up to a second) ...
      await waitFor(async () => (await call(2, 'GET', `/repos/${repo}/grants`, frank)).status === 200, 3_000, 'frank administers it');
      const read = Date.now();
      // ... then the repository is deleted and created again, without frank ...
      await ok(1, 'DELETE', `/repos/${repo}`);
      await ok(1, 'POST', '/repos', { repo_id: repo });
      // ... and frank, through node 2's view of the old one, grants himself the new one.
      const r = await call(2, 'PUT', `/repos/${repo}/grants/user:frank`, frank, { role: 'admin' });
      // Nor delete it.
      const del = await call(2, 'DELETE', `/repos/${repo}`, frank);
      const within = Date.now() - read < 1_000;
      expect(r.status).toBe(404);
      expect(del.status).toBe(404);
      expect((await call(3, 'GET', `/repos/${repo}`, admin)).status).toBe(200);
      expect((await ok(3, 'GET', `/repos/${repo}/grants`)).grants).toEqual([]);
      if (within || attempt === 5) {
        expect(within, 'the delete and the create took more than the policy cache time, five times').toBe(true);
        break;
      }
    }
  });

  it("the owner's own grant right after a delete and re-create, through a node that read the old repository's policy, is taken (a fresh decision)", async () => {
    const alice = tokens.get('repo-admin')!;
    for (let attempt = 1; ; attempt++) {
      const repo = `alice/renew-${attempt}`;
      expect((await call(1, 'POST', '/repos', alice, { repo_id: repo })).status).toBe(201);
      expect((await call(2, 'GET', `/repos/${repo}/grants`, alice)).status).toBe(200);
      const read = Date.now();
      expect((await call(1, 'DELETE', `/repos/${repo}`, alice)).status).toBe(200);
      expect((await call(1, 'POST', '/repos', alice, { repo_id: repo })).status).toBe(201);
      const r = await call(2, 'PUT', `/repos/${repo}/grants/user:erin`, alice, { role: 'read' });
      const within = Date.now() - read < 1_000;
      expect(r.status).toBe(200);
      expect((await ok(3, 'GET', `/repos/${repo}/grants`)).grants).toEqual([{ grantee: 'user:erin', role: 'read' }]);
      if (within || attempt === 5) {
        expect(within, 'the delete and the create took more than the policy cache time, five times').toBe(true);
        break;
      }
    }
  });

  it("a former reader's fetch and a former writer's push, through nodes that read the old repository's policy, reach nothing of the one created again", async () => {
    const frank = (await userToken('frank', 'write')).token;
    const frankUrl = (node: number, repo: string): string => {
      const u = new URL(`${c.url(node)}/${repo}.git`);
      u.username = 'x';
      u.password = frank;
      return u.toString();
    };
    await commitFile(work, 'frank.txt', 'frank\n', 'frank');
    for (let attempt = 1; ; attempt++) {
      const repo = `acme/gone-${attempt}`;
      await ok(1, 'POST', '/repos', { repo_id: repo });
      await ok(1, 'PUT', `/repos/${repo}/grants/user:frank`, { role: 'write' });
      // Nodes 2 and 3 read the policy for frank (cached up to a second, counted from before the reads) ...
      const read = Date.now();
      await waitFor(async () => (await git(['ls-remote', frankUrl(2, repo)])).code === 0, 3_000, 'frank reads it on node 2');
      await waitFor(async () => (await git(['ls-remote', frankUrl(3, repo)])).code === 0, 3_000, 'frank reads it on node 3');
      // ... then the repository is deleted and created again, without frank ...
      await ok(1, 'DELETE', `/repos/${repo}`);
      await ok(1, 'POST', '/repos', { repo_id: repo });
      // ... and frank, through those views of the old one, reads the new one and pushes to it.
      const [fetched, pushed] = await Promise.all([
        git(['ls-remote', frankUrl(2, repo)]),
        git(['push', frankUrl(3, repo), 'HEAD:refs/heads/frank'], { cwd: work }),
      ]);
      const within = Date.now() - read < 1_000;
      expectGit(fetched, 'notFound');
      expectGit(pushed, 'notFound');
      expect(await gitOk(['ls-remote', gitUrl(2, repo, 'cluster-admin')])).toBe('');
      if (within || attempt === 5) {
        expect(within, 'the delete and the create took more than the policy cache time, five times').toBe(true);
        break;
      }
    }
  });

  it("the owner's own push and fetch right after a delete and re-create, through a node that read the old repository's policy, go through", async () => {
    const alice = tokens.get('repo-admin')!;
    const url = (node: number, repo: string): string => {
      const u = new URL(`${c.url(node)}/${repo}.git`);
      u.username = 'x';
      u.password = alice;
      return u.toString();
    };
    for (let attempt = 1; ; attempt++) {
      const repo = `alice/again-${attempt}`;
      expect((await call(1, 'POST', '/repos', alice, { repo_id: repo })).status).toBe(201);
      const read = Date.now();
      await waitFor(async () => (await git(['ls-remote', url(2, repo)])).code === 0, 3_000, 'alice reads it on node 2');
      expect((await call(1, 'DELETE', `/repos/${repo}`, alice)).status).toBe(200);
      expect((await call(1, 'POST', '/repos', alice, { repo_id: repo })).status).toBe(201);
      const fetched = await git(['ls-remote', url(2, repo)]);
      const pushed = await git(['push', url(2, repo), 'HEAD:refs/heads/main'], { cwd: work });
      const within = Date.now() - read < 1_000;
      expectGit(fetched, 'ok');
      expectGit(pushed, 'ok');
      if (within || attempt === 5) {
        expect(within, 'the delete and the create took more than the policy cache time, five times').toBe(true);
        break;
      }
    }
  });

  it('read, create, configure through different nodes: a repository just created is no 404 on a node that looked for it a moment before', async () => {
    const alice = tokens.get('repo-admin')!;
    expect((await call(2, 'GET', '/repos/alice/prov', alice)).status).toBe(404);
    expect((await call(1, 'POST', '/repos', alice, { repo_id: 'alice/prov' })).status).toBe(201);
    expect((await call(2, 'PUT', '/repos/alice/prov/grants/user:erin', alice, { role: 'read' })).status).toBe(200);
    const url = new URL(`${c.url(2)}/alice/prov.git`);
    url.username = 'x';
    url.password = alice;
    expect((await git(['push', url.toString(), 'HEAD:refs/heads/main'], { cwd: work })).code).toBe(0);
  });

  it('the audit log has pushes, creations, grants and token changes with who did them', async () => {
    await commitFile(work, 'audit.txt', 'x\n', 'audit');
    await gitOk(['push', '-q', gitUrl(2, 'acme/private', 'writer'), 'HEAD:refs/heads/audited'], { cwd: work });
    await waitFor(
      async () => {
        const events = (await ok(1, 'GET', '/admin/audit?limit=1000')).events as Array<Record<string, unknown>>;
        return events.some(
          (e) =>
            e.action === 'push' &&
            e.user === 'carol' &&
            e.repo === 'acme/private' &&
            (e.refs as string[]).includes('refs/heads/audited') &&
            typeof e.txn === 'string',
        );
      },
      5_000,
      'the push in the audit log',
    );
    const events = (await ok(1, 'GET', '/admin/audit?limit=1000')).events as Array<Record<string, unknown>>;
    for (const action of [
      'repo.create',
      'repo.grant',
      'token.create',
      'token.revoke',
      'user.add',
      'org.create',
      'org.member',
      'repo.delete',
    ]) {
      expect(
        events.some((e) => e.action === action),
        action,
      ).toBe(true);
    }
    expect((await call(1, 'GET', '/admin/audit', tokens.get('repo-admin')!)).status).toBe(403);
  });

  it('lists page by page with a cursor, only what the caller may read', async () => {
    const seen: string[] = [];
    let cursor = '';
    for (let i = 0; i < 100; i++) {
      const r = await call(2, 'GET', `/repos?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, tokens.get('non-member')!);
      expect(r.status).toBe(200);
      seen.push(...(r.json.repos as string[]));
      if (r.json.next_cursor === null) break;
      cursor = r.json.next_cursor as string;
    }
    const all = (await call(2, 'GET', '/repos?limit=1000', admin)).json.repos as string[];
    expect(seen).toEqual([...new Set(seen)]);
    expect(seen.length).toBeLessThan(all.length);
    expect(seen).toContain('acme/public');
    expect(seen).not.toContain('acme/private');
  });

  it('failed authentications a member proxies count against the client its hop names, not against the member', async () => {
    const db = new Database(join(c.root, 'cluster.db'), { readonly: true });
    const secret = (db.prepare("SELECT value FROM meta WHERE key = 'peer_secret'").get() as { value: string }).value;
    db.close();
    const via = (client: string, token: string): Promise<Response> =>
      fetch(`${c.url(2)}/repos/acme/public`, {
        headers: { 'x-replication-hop': signHop(secret, client), authorization: `Bearer ${token}` },
      });
    let last = 0;
    for (let i = 0; i < 30 && last !== 429; i++) last = (await via('198.51.100.7', `grt_guess_${i}`)).status;
    expect(last).toBe(429);
    expect((await via('198.51.100.7', admin)).status).toBe(429);
    // Another client through the same member, and the member's own address, are not throttled.
    expect((await via('198.51.100.8', admin)).status).toBe(200);
    expect((await fetch(`${c.url(2)}/user`, { headers: { authorization: `Bearer ${admin}` } })).status).toBe(200);
  });

  it('failed authentications from one address get 429 with Retry-After', async () => {
    let last = 0;
    for (let i = 0; i < 30 && last !== 429; i++) last = (await call(3, 'GET', '/user', `grt_guess_${i}`)).status;
    expect(last).toBe(429);
    const r = await fetch(`${c.url(3)}/user`, { headers: { authorization: `Bearer ${admin}` } });
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});

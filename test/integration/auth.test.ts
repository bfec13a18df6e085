import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { git, gitOk, lsRemote, workRepo } from '../helpers/git.js';

function withToken(url: string, token: string): string {
  const u = new URL(url);
  u.username = 'user';
  u.password = token;
  return u.toString();
}

/** api calls a node's REST API (`base`) with a Bearer token (null: none) and a JSON body. */
function api(base: string, method: string, path: string, token: string | null, body?: unknown): Promise<Response> {
  return fetch(`${base}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
}

/** tokenFor makes a token of `scope` for `user` with a cluster admin's token, and returns it. */
async function tokenFor(base: string, admin: string, user: string, scope: string): Promise<string> {
  const res = await api(base, 'POST', '/tokens', admin, { name: `${user}-${scope}`, scope, user });
  return ((await res.json()) as { token: string }).token;
}

describe('client authentication with tokens', () => {
  let c: TestCluster;
  let admin = '';
  beforeAll(async () => {
    c = await TestCluster.start({
      nodes: 2,
      env: {
        AUTH: 'tokens',
        MAX_TOKENS_PER_USER: '3',
        EXPIRED_CREDENTIAL_RETENTION: '1s',
        MAX_REPOS_PER_OWNER: '2',
        MAX_ORGS_PER_USER: '1',
      },
    });
    admin = await c.adminToken();
  });
  afterAll(async () => {
    await c?.destroy();
  });

  const call = (method: string, path: string, token: string | null, body?: unknown): Promise<Response> =>
    api(c.url(1), method, path, token, body);

  it('the first start writes one admin token, mode 0600, on exactly one node', async () => {
    const { stat } = await import('node:fs/promises');
    const files = await Promise.all(c.nodes.map((n) => stat(join(n.dataDir, 'admin-token')).catch(() => null)));
    const present = files.filter((f) => f !== null);
    expect(present).toHaveLength(1);
    expect(present[0]!.mode & 0o777).toBe(0o600);
  });

  it('unauthenticated and unauthorised calls are refused and change nothing', async () => {
    const anon = await call('POST', '/repos', null, { repo_id: 'sec/repo' });
    expect(anon.status).toBe(401);
    expect(anon.headers.get('www-authenticate')).toMatch(/Basic/);
    expect((await call('POST', '/repos', 'grt_not-a-token', { repo_id: 'sec/repo' })).status).toBe(401);
    expect((await call('POST', '/admin/rebalance', null)).status).toBe(401);
    expect((await call('GET', '/repos', null)).status).toBe(200);
    expect(((await (await call('GET', '/repos', null)).json()) as { count: number }).count).toBe(0);
  });

  it('roles: read clones, write pushes, admin creates tokens and deletes repos', async () => {
    const mk = async (role: string): Promise<string> => {
      const r = await call('POST', '/admin/tokens', admin, { name: `${role}-user`, role });
      expect(r.status).toBe(201);
      return ((await r.json()) as { token: string }).token;
    };
    const reader = await mk('read');
    const writer = await mk('write');
    expect((await call('POST', '/admin/tokens', writer, { name: 'x', role: 'admin' })).status).toBe(403);
    expect((await call('POST', '/repos', writer, { repo_id: 'sec/repo', visibility: 'public' })).status).toBe(201);
    const url = c.repoUrl(2, 'sec/repo');
    const work = await workRepo();
    const anonPush = await git(['push', url, 'main'], { cwd: work });
    expect(anonPush.code).not.toBe(0);
    expect(anonPush.stderr).toMatch(/Authentication failed|could not read Username|401/);
    const readPush = await git(['push', withToken(url, reader), 'main'], { cwd: work });
    expect(readPush.code).not.toBe(0);
    expect(readPush.stderr).toMatch(/403/);
    await gitOk(['push', '-q', withToken(url, writer), 'main'], { cwd: work });
    expect(await lsRemote(c.repoUrl(1, 'sec/repo'))).toMatch(/refs\/heads\/main/);
    expect((await call('DELETE', '/repos/sec/repo', writer)).status).toBe(403);
    expect((await call('DELETE', '/repos/sec/repo', admin)).status).toBe(200);
  });

  it('a user holds at most MAX_TOKENS_PER_USER unexpired tokens; tokens expired past the retention are deleted on their own', async () => {
    expect((await call('POST', '/users', admin, { name: 'ci' })).status).toBe(201);
    const make = (name: string, expiresAt?: string): Promise<Response> =>
      call('POST', '/tokens', admin, { name, scope: 'read', user: 'ci', ...(expiresAt ? { expires_at: expiresAt } : {}) });
    const soon = new Date(Date.now() + 1_000).toISOString();
    for (const name of ['job-1', 'job-2']) expect((await make(name, soon)).status).toBe(201);
    expect((await make('deploy')).status).toBe(201);
    const over = await make('job-3', soon);
    expect(over.status).toBe(409);
    expect(((await over.json()) as { error: string }).error).toMatch(/user ci holds 3 tokens, the most one user may/);
    const names = async (): Promise<string[]> =>
      ((await (await call('GET', '/tokens?user=ci', admin)).json()) as { tokens: Array<{ name: string }> }).tokens.map((t) => t.name);
    expect(await names()).toEqual(['job-1', 'job-2', 'deploy']);
    // Expired, they no longer count; a second past their expiry (the retention here), they are gone.
    await waitFor(async () => (await make('job-3')).status === 201, 5_000, 'room once two expired');
    await waitFor(async () => (await names()).join() === 'deploy,job-3', 10_000, 'the expired tokens deleted');
  }, 30_000);

  it('an owner holds at most MAX_REPOS_PER_OWNER repositories and a user owns at most MAX_ORGS_PER_USER organisations; a cluster admin may go past', async () => {
    expect((await call('POST', '/users', admin, { name: 'maker' })).status).toBe(201);
    const token = await tokenFor(c.url(1), admin, 'maker', 'write');
    const create = (id: string, as = token): Promise<Response> => call('POST', '/repos', as, { repo_id: id });
    const error = async (res: Response): Promise<string> => ((await res.json()) as { error: string }).error;
    for (const id of ['maker/a', 'maker/b']) expect((await create(id)).status).toBe(201);
    const over = await create('maker/c');
    expect(over.status).toBe(409);
    expect(await error(over)).toMatch(/'maker' holds 2 repositories, the most one owner may \(--max-repos-per-owner\)/);
    expect((await call('GET', '/repos/maker/c', token)).status).toBe(404);
    // The cap is per owner: an organisation of the user's holds its own two.
    expect((await call('POST', '/orgs', token, { name: 'maker-org' })).status).toBe(201);
    const secondOrg = await call('POST', '/orgs', token, { name: 'maker-org2' });
    expect(secondOrg.status).toBe(409);
    expect(await error(secondOrg)).toMatch(/maker has created 1 organisations, the most one user may \(--max-orgs-per-user\)/);
    for (const id of ['maker-org/a', 'maker-org/b']) expect((await create(id)).status).toBe(201);
    expect((await create('maker-org/c')).status).toBe(409);
    // A cluster admin is not held to either.
    expect((await create('maker/c', admin)).status).toBe(201);
    expect((await call('POST', '/orgs', admin, { name: 'admin-org' })).status).toBe(201);
    // A delete makes room again, counted from the store through either node.
    expect((await call('DELETE', '/repos/maker/a', admin)).status).toBe(200);
    expect((await create('maker/d')).status).toBe(409);
    expect((await call('DELETE', '/repos/maker/b', admin)).status).toBe(200);
    expect((await api(c.url(2), 'POST', '/repos', token, { repo_id: 'maker/d' })).status).toBe(201);
    // Creates at once, through both nodes: each counts again once made, and takes itself back past the cap.
    expect((await call('POST', '/users', admin, { name: 'racer' })).status).toBe(201);
    const racer = await tokenFor(c.url(1), admin, 'racer', 'write');
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => api(c.url(1 + (i % 2)), 'POST', '/repos', racer, { repo_id: `racer/r${i}` })),
    );
    const made = answers.filter((a) => a.status === 201).length;
    expect(answers.every((a) => a.status === 201 || a.status === 409)).toBe(true);
    const listed = ((await (await call('GET', '/repos?limit=1000', admin)).json()) as { repos: string[] }).repos;
    const held = listed.filter((id) => id.startsWith('racer/'));
    expect(held.length).toBeLessThanOrEqual(2);
    expect(held.length).toBe(made);
  }, 90_000);
});

describe('the repository cap when a create answers before its replicas confirm', () => {
  let c: TestCluster;
  beforeAll(async () => {
    // Every replica's commit waits past the coordinator's commit time-out: each create is
    // recorded, then answered 503 ("created but only 1 replicas confirmed"), as on a slow disk.
    c = await TestCluster.start({
      nodes: 3,
      env: {
        AUTH: 'tokens',
        MAX_REPOS_PER_OWNER: '2',
        COMMIT_TIMEOUT_MS: '300',
        GIT_REPLICATION_FAILPOINTS: 'participant.beforeCommit=delay(800)',
      },
    });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('creates recorded but not confirmed in time are counted, and taken back past the cap', async () => {
    const admin = await c.adminToken();
    const call = (node: number, method: string, path: string, token: string, body?: unknown): Promise<Response> =>
      api(c.url(node), method, path, token, body);
    expect((await call(1, 'POST', '/users', admin, { name: 'slow' })).status).toBe(201);
    const token = await tokenFor(c.url(1), admin, 'slow', 'write');
    const answers = await Promise.all(
      Array.from({ length: 9 }, (_, i) => call(1 + (i % 3), 'POST', '/repos', token, { repo_id: `slow/r${i}` })),
    );
    expect(answers.every((a) => [201, 409, 503].includes(a.status))).toBe(true);
    const held = async (): Promise<string[]> =>
      ((await (await call(1, 'GET', '/repos?limit=1000', admin)).json()) as { repos: string[] }).repos.filter((id) =>
        id.startsWith('slow/'),
      );
    await waitFor(async () => (await held()).length <= 2, 30_000, 'at most 2 of slow/ left');
    expect((await held()).length).toBeLessThanOrEqual(2);
  }, 90_000);

  it("a create kept though its answer failed is whole: its visibility and its creator's grant are written", async () => {
    const admin = await c.adminToken();
    const call = (method: string, path: string, token: string | null, body?: unknown): Promise<Response> =>
      api(c.url(2), method, path, token, body);
    for (const name of ['lead', 'member']) expect((await call('POST', '/users', admin, { name })).status).toBe(201);
    const lead = await tokenFor(c.url(2), admin, 'lead', 'admin');
    const member = await tokenFor(c.url(2), admin, 'member', 'admin');
    expect((await call('POST', '/orgs', lead, { name: 'late-co' })).status).toBe(201);
    expect((await call('PUT', '/orgs/late-co/members/member', lead, { role: 'member' })).status).toBe(200);
    const made = await call('POST', '/repos', member, { repo_id: 'late-co/proj', visibility: 'public' });
    // Its replicas confirm after the commit time-out: recorded, answered 503 (repair finishes it).
    expect(made.status).toBe(503);
    expect((await call('GET', '/repos/late-co/proj', null)).status).toBe(200);
    const grants = (await (await call('GET', '/repos/late-co/proj/grants', member)).json()) as {
      grants: Array<{ grantee: string; role: string }>;
    };
    expect(grants.grants).toContainEqual({ grantee: 'user:member', role: 'admin' });
  }, 60_000);
});

describe("a user's REST writes through a node, per minute", () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 1, env: { AUTH: 'tokens', MAX_API_WRITES_PER_MINUTE: '3' } });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('are refused past MAX_API_WRITES_PER_MINUTE with 429 and Retry-After; reads, git pushes and cluster admins are not held', async () => {
    const admin = await c.adminToken();
    const call = (method: string, path: string, token: string, body?: unknown): Promise<Response> =>
      api(c.url(1), method, path, token, body);
    expect((await call('POST', '/users', admin, { name: 'busy' })).status).toBe(201);
    const token = await tokenFor(c.url(1), admin, 'busy', 'write');
    expect((await call('POST', '/repos', token, { repo_id: 'busy/a' })).status).toBe(201);
    expect((await call('POST', '/tokens', token, { name: 'two', scope: 'read' })).status).toBe(201);
    expect((await call('POST', '/orgs', token, { name: 'busy-co' })).status).toBe(201);
    const over = await call('POST', '/repos', token, { repo_id: 'busy/b' });
    expect(over.status).toBe(429);
    // Revoking a credential is not counted: a leaked token spending its user's writes does not
    // keep the user from revoking it.
    const listed = (await (await call('GET', '/tokens', token)).json()) as { tokens: Array<{ id: string; name: string }> };
    const two = listed.tokens.find((t) => t.name === 'two')!;
    expect((await call('DELETE', `/tokens/${two.id}`, token)).status).toBe(200);
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(((await over.json()) as { error: string }).error).toMatch(/user busy made more than 3 API writes a minute through this node/);
    expect((await call('GET', '/repos/busy/b', token)).status).toBe(404);
    // Reads go on; so do pushes, which are git's, not REST writes.
    for (let i = 0; i < 5; i++) expect((await call('GET', '/user', token)).status).toBe(200);
    const work = await workRepo();
    const url = new URL(c.repoUrl(1, 'busy/a'));
    url.username = 'busy';
    url.password = token;
    for (let i = 0; i < 2; i++) {
      await gitOk(['commit', '-q', '--allow-empty', '-m', `c${i}`], { cwd: work });
      await gitOk(['push', '-q', url.toString(), 'HEAD:refs/heads/main'], { cwd: work });
    }
    // A cluster admin is not held to it.
    for (let i = 0; i < 5; i++) expect((await call('POST', '/repos', admin, { repo_id: `busy/admin-${i}` })).status).toBe(201);
  }, 60_000);
});

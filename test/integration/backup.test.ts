import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replicaChecksum } from '../../src/domain/checksum.js';
import { MAIN, TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, refsOf, tempDir, workRepo } from '../helpers/git.js';

/**
 * Backup and restore (issue 16): a 3-node cluster with token auth, 50 repositories (public and
 * private, a user's and an organisation's, with a grant and a user token), backed up by the CLI
 * while a writer keeps pushing, backed up again (incrementally), destroyed, and restored into a
 * new 2-node cluster with R=2. Every repository's refs and checksum must equal the backup's.
 */

const REPOS = 50;
const WRITTEN = ['alice/r00', 'alice/r02', 'acme/r30'];
const EMPTY = 'acme/r49';

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}
interface Manifest {
  repos: Array<{
    id: string;
    generation: number;
    checksum: string;
    visibility: string;
    grants: Array<{ grantee: string; role: string }>;
    head: string | null;
  }>;
}
interface BackupJson {
  repos: number;
  cloned: number;
  fetched: number;
  unchanged: number;
  failed: number;
  outcomes: Array<{ id: string; status: string; how?: string; error?: string }>;
}

function repoName(i: number): string {
  return `${i < REPOS / 2 ? 'alice' : 'acme'}/r${String(i).padStart(2, '0')}`;
}
const ALL = Array.from({ length: REPOS }, (_, i) => repoName(i));

/** pool runs fn over items, `n` at a time. */
async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

describe('backup and restore: 50 repositories, a writer, a new cluster of another size', () => {
  let a: TestCluster;
  let b: TestCluster | null = null;
  let adminA = '';
  let aliceToken = '';
  let cwd = '';
  let out = '';
  let work = '';
  let firstMs = 0;
  const scratch: string[] = [];

  function cli(args: string[]): Promise<CliRun> {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.GIT_REPLICATION_TOKEN;
    const started = Date.now();
    return new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args], { cwd, env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr, ms: Date.now() - started });
      });
    });
  }

  function authUrl(c: TestCluster, node: number, repo: string, token: string): string {
    const u = new URL(c.repoUrl(node, repo));
    u.username = 'x';
    u.password = token;
    return u.toString();
  }

  async function adminToken(c: TestCluster): Promise<string> {
    let token = '';
    await waitFor(
      async () => {
        for (const n of c.nodes) token ||= (await readFile(join(n.dataDir, 'admin-token'), 'utf8').catch(() => '')).trim();
        return token !== '';
      },
      10_000,
      'admin token file',
    );
    return token;
  }

  async function ok(c: TestCluster, node: number, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const r = await c.api(node, method, path, body);
    expect(r.status, `${method} ${path}: ${JSON.stringify(r.json)}`).toBeLessThan(300);
    return r.json;
  }

  async function manifest(): Promise<Manifest> {
    return JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as Manifest;
  }

  /** mirrorChecksum computes a mirror's checksum from git's own output (for-each-ref and HEAD). */
  async function mirrorChecksum(path: string): Promise<string> {
    const refs = (await refsOf(path))
      .split('\n')
      .filter(Boolean)
      .map((l) => ({ oid: l.slice(0, 40), name: l.slice(41) }));
    const head = (await gitOk(['symbolic-ref', 'HEAD'], { cwd: path })).trim();
    return replicaChecksum(refs, head);
  }

  beforeAll(async () => {
    a = await TestCluster.start({ nodes: 3, env: { AUTH: 'tokens' } });
    adminA = await adminToken(a);
    a.authToken = adminA;
    cwd = await mkdtemp(join(tmpdir(), 'gitrep-backup-cwd-'));
    out = join(await mkdtemp(join(tmpdir(), 'gitrep-backup-')), 'backup');
    for (const u of ['alice', 'bob']) await ok(a, 1, 'POST', '/users', { name: u });
    aliceToken = (await ok(a, 1, 'POST', '/tokens', { name: 'laptop', scope: 'admin', user: 'alice' })).token as string;
    // alice makes the organisation (its owner) and adds bob.
    const asAlice = { authorization: `Bearer ${aliceToken}`, 'content-type': 'application/json' };
    expect((await fetch(`${a.url(2)}/orgs`, { method: 'POST', headers: asAlice, body: JSON.stringify({ name: 'acme' }) })).status).toBe(
      201,
    );
    expect(
      (await fetch(`${a.url(3)}/orgs/acme/members/bob`, { method: 'PUT', headers: asAlice, body: JSON.stringify({ role: 'member' }) }))
        .status,
    ).toBe(200);
    await pool(ALL, 4, async (id) => {
      const i = ALL.indexOf(id);
      await ok(a, 1 + (i % 3), 'POST', '/repos', { repo_id: id, visibility: i % 3 === 0 ? 'public' : 'private' });
    });
    await ok(a, 2, 'PUT', '/repos/alice/r01/grants/user:bob', { role: 'read' });
    work = await workRepo();
    scratch.push(work);
    const pushAll = async (extra: (id: string) => string[]): Promise<void> =>
      pool(
        ALL.filter((id) => id !== EMPTY),
        4,
        async (id) => {
          const i = ALL.indexOf(id);
          await gitOk(['push', '-q', authUrl(a, 1 + (i % 3), id, adminA), 'HEAD:refs/heads/main', ...extra(id)], { cwd: work });
        },
      );
    await pushAll(() => []);
    await commitFile(work, 'second.txt', 'two\n', 'second');
    await gitOk(['tag', 'v1'], { cwd: work });
    // Every fifth repository also gets a branch and a tag.
    await pushAll((id) => (ALL.indexOf(id) % 5 === 0 ? ['HEAD:refs/heads/feature', 'refs/tags/v1'] : []));
    // One repository's HEAD is not main: the backup keeps it, the restore puts it back.
    await ok(a, 3, 'PATCH', '/repos/alice/r10', { default_branch: 'feature' });
  }, 150_000);

  afterAll(async () => {
    await a?.destroy();
    await b?.destroy();
    for (const d of [cwd, out ? join(out, '..') : '', ...scratch]) if (d) await rm(d, { recursive: true, force: true });
  });

  it('the export and import routes are for cluster admins only', async () => {
    expect((await fetch(`${a.url(1)}/admin/export`)).status).toBe(401);
    expect((await fetch(`${a.url(1)}/admin/export`, { headers: { authorization: `Bearer ${aliceToken}` } })).status).toBe(403);
    const imp = await fetch(`${a.url(1)}/admin/import`, {
      method: 'POST',
      headers: { authorization: `Bearer ${aliceToken}`, 'content-type': 'application/json' },
      body: '{"users":[]}',
    });
    expect(imp.status).toBe(403);
    // The cluster has users: an import without merge is refused and changes nothing.
    const refused = await a.api(1, 'POST', '/admin/import', { users: [{ name: 'mallory', admin: true, disabled: false, createdAt: '' }] });
    expect(refused.status).toBe(409);
    expect((await a.api(1, 'GET', '/users')).json.users).not.toContainEqual(expect.objectContaining({ name: 'mallory' }));
  });

  it('backs up every repository at a committed generation while a writer pushes', async () => {
    let writing = true;
    let pushes = 0;
    // One writer per written repository, pushing as fast as the cluster takes it.
    const writers = WRITTEN.map(async (id, w) => {
      const dir = await tempDir('gitrep-writer-');
      scratch.push(dir);
      await gitOk(['clone', '-q', work, dir]);
      for (let n = 0; writing; n++) {
        await commitFile(dir, 'live.txt', `${n}\n`, `live ${n}`);
        const r = await git(['push', '-q', authUrl(a, 1 + ((n + w) % 3), id, adminA), 'HEAD:refs/heads/live'], { cwd: dir });
        expect(r.code, r.stderr).toBe(0);
        pushes++;
      }
    });
    const run = await cli(['backup', '--out', out, '--url', a.url(1), '--token', adminA, '--json']).finally(() => {
      writing = false;
    });
    await Promise.all(writers);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    expect(run.stderr).toBe('');
    const res = JSON.parse(run.stdout) as BackupJson;
    expect(res.outcomes.filter((o) => o.status !== 'ok')).toEqual([]);
    expect(res).toMatchObject({ repos: REPOS, cloned: REPOS, failed: 0 });
    expect(pushes).toBeGreaterThan(3);
    const m = await manifest();
    expect(m.repos.map((r) => r.id)).toEqual([...ALL].sort());
    for (const e of m.repos) {
      // The mirror holds exactly the committed generation the manifest names.
      expect(await mirrorChecksum(join(out, 'repos', `${e.id}.git`)), e.id).toBe(e.checksum);
      const now = await a.repoStatus(1, e.id);
      if (!WRITTEN.includes(e.id)) expect([e.generation, e.checksum], e.id).toEqual([now.generation, now.checksum]);
      else expect(e.generation).toBeLessThanOrEqual(now.generation);
      expect(e.visibility).toBe(ALL.indexOf(e.id) % 3 === 0 ? 'public' : 'private');
    }
    expect(m.repos.find((e) => e.id === 'alice/r01')?.grants).toEqual([{ grantee: 'user:bob', role: 'read' }]);
    expect(m.repos.find((e) => e.id === 'alice/r10')?.head).toBe('refs/heads/feature');
    const fetches = (res.outcomes as Array<{ id: string; fetches?: number; moved?: number }>)
      .filter((o) => WRITTEN.includes(o.id))
      .map((o) => `${o.id}: ${o.fetches} (moved ${o.moved})`);
    const records = JSON.parse(await readFile(join(out, 'records.json'), 'utf8')) as { tokens: unknown[]; users: Array<{ name: string }> };
    expect(records.users.map((u) => u.name).sort()).toEqual(['admin', 'alice', 'bob']);
    expect(JSON.stringify(records)).not.toContain(aliceToken);
    console.log(
      `first backup: ${run.ms} ms for ${REPOS} repos, ${pushes} pushes meanwhile; fetches of the written repos: ${fetches.join(', ')}`,
    );
    firstMs = run.ms;
  }, 120_000);

  it('a second backup fetches what changed and clones nothing', async () => {
    await commitFile(work, 'third.txt', 'three\n', 'third');
    for (const id of ['alice/r05', 'acme/r40'])
      await gitOk(['push', '-q', authUrl(a, 2, id, adminA), 'HEAD:refs/heads/main'], { cwd: work });
    // Only HEAD moves here: the fetch brings nothing, the mirror follows the remote's HEAD.
    await ok(a, 1, 'PATCH', '/repos/acme/r35', { default_branch: 'feature' });
    const run = await cli(['backup', '--out', out, '--url', a.url(2), '--token', adminA]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(REPOS + 1);
    expect(lines.at(-1)).toMatch(new RegExp(`^backup of ${REPOS} repos in .*: 0 cloned, \\d+ fetched, \\d+ unchanged, 0 failed`));
    for (const id of ['alice/r05', 'acme/r40', 'acme/r35', ...WRITTEN])
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^backed up ${id} at generation \\d+ \\(\\d+ refs?, fetched\\)$`)));
    expect(lines).toContain('backed up alice/r01 at generation 2 (1 ref, unchanged)');
    expect(lines).toContain(`backed up ${EMPTY} at generation 0 (0 refs, unchanged)`);
    expect(run.ms).toBeLessThan(firstMs);
    // Nothing writes now: every entry is the cluster's current generation.
    const m = await manifest();
    expect(m.repos.find((e) => e.id === 'acme/r35')?.head).toBe('refs/heads/feature');
    for (const e of m.repos) {
      const now = await a.repoStatus(1, e.id);
      expect([e.generation, e.checksum], e.id).toEqual([now.generation, now.checksum]);
    }
    console.log(`incremental backup: ${run.ms} ms (first: ${firstMs} ms)`);
  }, 120_000);

  it('restores into a new 2-node cluster (R=2): refs, checksums, tokens, privacy', async () => {
    const backedUp = await manifest();
    await a.destroy();
    b = await TestCluster.start({ nodes: 2, replicationFactor: 2, env: { AUTH: 'tokens' } });
    const adminB = await adminToken(b);
    b.authToken = adminB;
    const run = await cli(['restore', out, '--url', b.url(1), '--token', adminB]);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines.at(-1)).toMatch(
      new RegExp(
        `^restore of ${REPOS} repos into .*: ${REPOS} restored, 0 failed; records: 3 users, 1 orgs, 2 members, \\d+ visibility, 1 grants, 2 tokens`,
      ),
    );
    expect(lines).toContain('restored alice/r01 at generation 1 (1 ref)');
    // The push, then HEAD pointed at the backup's branch: every HEAD is as backed up.
    expect(lines).toContain('restored alice/r10 at generation 2 (3 refs)');
    expect(run.stdout).not.toContain('HEAD is');
    const c = b;
    await pool(backedUp.repos, 4, async (e) => {
      const status = await c.repoStatus(1 + (ALL.indexOf(e.id) % 2), e.id);
      expect(status.checksum, e.id).toBe(e.checksum);
      expect(status.replicas.map((r) => r.node).sort()).toEqual(['node-1', 'node-2']);
      // The restored repository, cloned whole from the new cluster, has the mirror's refs.
      const copy = await tempDir('gitrep-restored-');
      scratch.push(copy);
      await gitOk(['clone', '-q', '--mirror', authUrl(c, 2, e.id, adminB), copy]);
      expect(await refsOf(copy), e.id).toBe(await refsOf(join(out, 'repos', `${e.id}.git`)));
    });
    // alice's token, made before the backup, works on the new cluster (its record was restored).
    const me = await fetch(`${c.url(2)}/user`, { headers: { authorization: `Bearer ${aliceToken}` } });
    expect(me.status).toBe(200);
    expect(((await me.json()) as { user: string }).user).toBe('alice');
    expect((await git(['ls-remote', authUrl(c, 1, 'alice/r01', aliceToken)])).code).toBe(0);
    // Private stays private; public stays public.
    const anon = await git(['ls-remote', c.repoUrl(1, 'alice/r01')]);
    expect(anon.code).not.toBe(0);
    expect(anon.stderr).toMatch(/could not read Username|terminal prompts disabled/);
    expect((await git(['ls-remote', c.repoUrl(2, 'alice/r03')])).code).toBe(0);
    expect((await ok(c, 1, 'GET', '/repos/alice/r01/grants')).grants).toEqual([{ grantee: 'user:bob', role: 'read' }]);
    expect((await ok(c, 2, 'GET', '/orgs/acme')).members).toEqual(
      expect.arrayContaining([
        { user: 'alice', role: 'owner' },
        { user: 'bob', role: 'member' },
      ]),
    );
    // The cluster has repositories now: a second restore is refused, in one line.
    const again = await cli(['restore', out, '--url', c.url(1), '--token', adminB]);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toMatch(/^git-replication: the cluster at .* has repositories already .*--force$/);
    expect(again.stdout).toBe('');
    console.log(`restore: ${run.ms} ms for ${REPOS} repos`);
  }, 150_000);
});

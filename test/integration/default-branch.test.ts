import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';
import { commitFile, git, gitOk, tempDir } from '../helpers/git.js';

/** symrefHead reads where a node's HEAD points, as a client sees it. */
async function symrefHead(url: string): Promise<string | null> {
  const out = await gitOk(['ls-remote', '--symref', url, 'HEAD']);
  return /^ref: (\S+)\tHEAD$/m.exec(out)?.[1] ?? null;
}

describe('the default branch (HEAD), as Git hosts keep it', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  async function work(branch: string): Promise<string> {
    const dir = await tempDir();
    await gitOk(['init', '-q', '-b', branch, dir]);
    await commitFile(dir, 'a.txt', 'a\n', 'first');
    return dir;
  }

  it('a first push of master only points HEAD at master on every replica; a clone checks it out', async () => {
    await c.createRepo(1, 'hb/master-only');
    const dir = await work('master');
    await gitOk(['push', '-q', c.repoUrl(1, 'hb/master-only'), 'master'], { cwd: dir });
    for (const i of [1, 2, 3]) expect(await symrefHead(c.repoUrl(i, 'hb/master-only'))).toBe('refs/heads/master');
    const clone = join(await tempDir(), 'c');
    const r = await git(['clone', c.repoUrl(3, 'hb/master-only'), clone]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/empty repository|remote HEAD refers to nonexistent ref/);
    expect((await gitOk(['rev-parse', '--abbrev-ref', 'HEAD'], { cwd: clone })).trim()).toBe('master');
    const status = await c.repoStatus(2, 'hb/master-only');
    expect(status.replicas.every((x) => x.state === 'in_sync' && x.checksum === status.checksum)).toBe(true);
  });

  it('a mirror push without main takes main if present, else master, else the first branch', async () => {
    await c.createRepo(1, 'hb/mirror');
    const dir = await work('develop');
    await gitOk(['branch', 'release'], { cwd: dir });
    await gitOk(['tag', 'v1'], { cwd: dir });
    await gitOk(['push', '-q', '--mirror', c.repoUrl(2, 'hb/mirror')], { cwd: dir });
    expect(await symrefHead(c.repoUrl(3, 'hb/mirror'))).toBe('refs/heads/develop');
    // Once HEAD names a branch that exists, later pushes leave it alone.
    await gitOk(['push', '-q', c.repoUrl(1, 'hb/mirror'), 'develop:refs/heads/main'], { cwd: dir });
    expect(await symrefHead(c.repoUrl(1, 'hb/mirror'))).toBe('refs/heads/develop');
  });

  it('PATCH default_branch moves HEAD on every replica; a missing branch is a 400; deleting it is refused', async () => {
    expect((await c.api(1, 'PATCH', '/repos/hb/mirror', { default_branch: 'release' })).status).toBe(200);
    for (const i of [1, 2, 3]) expect(await symrefHead(c.repoUrl(i, 'hb/mirror'))).toBe('refs/heads/release');
    expect(((await c.repoStatus(3, 'hb/mirror')) as unknown as { default_branch: string }).default_branch).toBe('release');
    const missing = await c.api(2, 'PATCH', '/repos/hb/mirror', { default_branch: 'nope' });
    expect(missing.status).toBe(400);
    expect(String(missing.json.error)).toMatch(/branch nope does not exist/);
    expect((await c.api(2, 'PATCH', '/repos/hb/mirror', { default_branch: 'a..b' })).status).toBe(400);
    const dir = await tempDir();
    await gitOk(['clone', '-q', c.repoUrl(1, 'hb/mirror'), dir]);
    const del = await git(['push', c.repoUrl(2, 'hb/mirror'), ':refs/heads/release'], { cwd: dir });
    expect(del.code).not.toBe(0);
    expect(del.stderr).toContain('deletion of the current branch prohibited');
  });

  it('a replica that was down when HEAD moved takes the new HEAD when it is repaired', async () => {
    await c.kill(3);
    expect((await c.api(1, 'PATCH', '/repos/hb/mirror', { default_branch: 'develop' })).status).toBe(200);
    await c.restart(3);
    await c.waitInSync('hb/mirror', 1, 60_000);
    expect(await symrefHead(c.repoUrl(3, 'hb/mirror'))).toBe('refs/heads/develop');
    const status = await c.repoStatus(3, 'hb/mirror');
    expect(new Set(status.replicas.map((x) => x.checksum)).size).toBe(1);
  }, 120_000);
});

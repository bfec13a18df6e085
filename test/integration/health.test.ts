import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, workRepo } from '../helpers/git.js';

/** Health that tells the truth: /ready and `writes` say whether this node can complete a write. */
describe('/health and /ready tell whether a write can complete', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  async function health(i: number): Promise<{ status: string; writes: string }> {
    return (await (await fetch(`${c.url(i)}/health`)).json()) as { status: string; writes: string };
  }

  it('with two of three nodes down: /health 200, writes unavailable with the reason, /ready 503, pushes refused', async () => {
    await c.createRepo(1, 'h/repo');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'h/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    expect((await fetch(`${c.url(1)}/ready`)).status).toBe(200);
    expect(await health(1)).toMatchObject({ status: 'healthy', writes: 'available' });
    await c.kill(2);
    await c.kill(3);
    await waitFor(async () => (await fetch(`${c.url(1)}/ready`)).status === 503, 15_000, '/ready 503 on the survivor');
    const res = await fetch(`${c.url(1)}/health`);
    expect(res.status).toBe(200);
    const h = (await res.json()) as { status: string; writes: string };
    expect(h.status).toBe('healthy');
    expect(h.writes).toBe('unavailable: 1 of 3 nodes live, a write needs 2');
    expect(((await (await fetch(`${c.url(1)}/ready`)).json()) as { reason: string }).reason).toBe('1 of 3 nodes live, a write needs 2');
    await commitFile(work, 'b.txt', 'b\n', 'b');
    const push = await git(['push', c.repoUrl(1, 'h/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    expect(push.code).not.toBe(0);
    expect(push.stderr).toMatch(/replication quorum not reached/);
    // Reads go on.
    expect((await git(['ls-remote', c.repoUrl(1, 'h/repo')])).code).toBe(0);
    await c.restart(2);
    await c.restart(3);
    await waitFor(async () => (await fetch(`${c.url(1)}/ready`)).status === 200, 30_000, '/ready 200 again');
  }, 120_000);

  it('a node whose disk is full refuses new transactions with the reason; pushes go on through the others', async () => {
    // MIN_FREE_DISK far above any real disk: the node sees its disk as full.
    await c.kill(3);
    await c.restart(3, { MIN_FREE_DISK: '100000000g' });
    await waitFor(async () => (await fetch(`${c.url(3)}/ready`)).status === 503, 10_000, 'node 3 not ready');
    expect((await health(3)).writes).toMatch(/^unavailable: disk full: \d+ MiB free under the data dir, \d+ MiB required$/);
    const work = await workRepo();
    await gitOk(['fetch', '-q', c.repoUrl(1, 'h/repo'), 'main'], { cwd: work });
    await gitOk(['reset', '-q', '--hard', 'FETCH_HEAD'], { cwd: work });
    await commitFile(work, 'c.txt', 'c\n', 'c');
    await gitOk(['push', '-q', c.repoUrl(1, 'h/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    const status = await c.repoStatus(1, 'h/repo');
    const three = status.replicas.find((r) => r.node === 'node-3')!;
    expect(three.state).not.toBe('in_sync');
    // A push through the full node (its replica missed the last push) goes to an in-sync one.
    await commitFile(work, 'd.txt', 'd\n', 'd');
    const r = await git(['push', c.repoUrl(3, 'h/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    expect(r.code, r.stderr).toBe(0);
    // With room again, it repairs and serves.
    await c.kill(3);
    await c.restart(3);
    await c.waitInSync('h/repo', 1, 60_000);
    expect((await fetch(`${c.url(3)}/ready`)).status).toBe(200);
  }, 120_000);
});

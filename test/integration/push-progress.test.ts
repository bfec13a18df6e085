import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, nodeGitProcesses, workRepo } from '../helpers/git.js';

describe('a push says what the cluster is doing', () => {
  let c: TestCluster;
  let work = '';
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.createRepo(1, 'prog/repo');
    work = await workRepo();
  });
  afterAll(async () => {
    await c?.destroy();
  });

  // git asks for quiet unless it shows progress (a terminal, or --progress), as for its own.
  it('shows replication progress as remote: lines', async () => {
    const r = await git(['push', '--progress', c.repoUrl(1, 'prog/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('remote: replication: replicating to 3 replicas (2 must confirm)');
    expect(r.stderr).toMatch(/remote: replication: [23] of 3 replicas prepared/);
    expect(r.stderr).toMatch(/remote: replication: [23] of 3 replicas committed/);
    // The hook's relays are gone once the push is done.
    for (const n of c.nodes)
      await waitFor(async () => (await nodeGitProcesses(n.dataDir)).length === 0, 10_000, `no git processes on ${n.id}`);
  });

  it('says nothing with git push -q (nor without a terminal)', async () => {
    await commitFile(work, 'q.txt', 'q\n', 'quiet');
    const r = await git(['push', '-q', c.repoUrl(2, 'prog/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('replication:');
    await commitFile(work, 'q2.txt', 'q\n', 'no terminal');
    const plain = await git(['push', c.repoUrl(3, 'prog/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).not.toContain('replication:');
  });
});

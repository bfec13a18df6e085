import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, lsRemote, workRepo } from '../helpers/git.js';

/**
 * A rolling upgrade to a build that speaks a new replication protocol: nodes are restarted one
 * at a time (SIGTERM, then the new build) under pushes, from a build that speaks 2 only, onto
 * one that speaks old and new (2-3), then onto new only (3). One build rehearses it:
 * GIT_REPLICATION_PROTOCOL makes a node claim another range. Version 3 ships a push's pack
 * ahead of its prepare (`/replicate/stage`), so the mixed cluster also shows a coordinator
 * staging to the peers that speak 3 and shipping with the prepare to those that do not.
 */
describe('rolling upgrade of the replication protocol', () => {
  let c: TestCluster;
  let work = '';
  const acked: string[] = [];
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { GIT_REPLICATION_PROTOCOL: '2' } });
    await c.createRepo(1, 'up/repo');
    work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'up/repo'), 'HEAD:refs/heads/main'], { cwd: work });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  /** pushes pushes n commits through node i; every one must be acknowledged. */
  async function pushes(i: number, n: number): Promise<void> {
    for (let k = 0; k < n; k++) {
      const commit = await commitFile(work, 'f.txt', `${acked.length}\n`, `c${acked.length}`);
      const r = await git(['push', c.repoUrl(i, 'up/repo'), 'HEAD:refs/heads/main'], { cwd: work });
      expect(r.code, `push through node ${i}: ${r.stderr}`).toBe(0);
      acked.push(commit);
    }
  }

  async function upgrade(node: number, protocol: string): Promise<void> {
    const proc = c.node(node).proc!;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGTERM');
    await exited;
    // The others take pushes while it is down and while it comes back on the new build.
    await pushes((node % 3) + 1, 2);
    await c.restart(node, { GIT_REPLICATION_PROTOCOL: protocol });
    await pushes((node % 3) + 1, 2);
    await c.waitInSync('up/repo', (node % 3) + 1, 60_000);
  }

  it('onto a build that speaks 2 and 3, then 3 only: no acknowledged push lost, none refused', async () => {
    for (const n of [1, 2, 3]) await upgrade(n, '2-3');
    for (const n of [1, 2, 3]) await upgrade(n, '3');
    for (const i of [1, 2, 3]) await pushes(i, 1);
    const tip = (await lsRemote(c.repoUrl(2, 'up/repo'))).match(/^([0-9a-f]{40})\trefs\/heads\/main$/m)?.[1];
    expect(tip).toBe(acked[acked.length - 1]);
    // Every acknowledged push is in the history on every node.
    for (const i of [1, 2, 3]) {
      await gitOk(['fetch', '-q', c.repoUrl(i, 'up/repo'), 'main'], { cwd: work });
      const history = await gitOk(['rev-list', 'FETCH_HEAD'], { cwd: work });
      for (const a of acked) expect(history).toContain(a);
    }
    const status = await c.repoStatus(1, 'up/repo');
    expect(new Set(status.replicas.map((r) => r.checksum))).toEqual(new Set([status.checksum]));
  }, 300_000);

  it('a node of a build that speaks no common version is refused with a clear log line, and writes go on', async () => {
    await c.kill(3);
    await c.restart(3, { GIT_REPLICATION_PROTOCOL: '1' });
    await waitFor(
      () => /speaks replication protocol 1, this node 3/.test(c.node(1).log),
      15_000,
      'node 1 says node 3 speaks another protocol',
    );
    await pushes(1, 1);
    const status = await c.repoStatus(1, 'up/repo');
    expect(status.replicas.find((r) => r.node === 'node-3')!.state).not.toBe('in_sync');
    // Back on a build that speaks 3, it catches up.
    await c.kill(3);
    await c.restart(3, { GIT_REPLICATION_PROTOCOL: '2-3' });
    await c.waitInSync('up/repo', 1, 60_000);
  }, 120_000);
});

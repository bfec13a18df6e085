import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, lsRemote, workRepo } from '../helpers/git.js';
import { packsShipped } from '../helpers/staging.js';

/**
 * A rolling upgrade to a build that speaks a new replication protocol: nodes are restarted one
 * at a time (SIGTERM, then the new build) under pushes, from a build that speaks 2 only, onto
 * one that speaks 2 to 4, then onto 4 only. One build rehearses it: GIT_REPLICATION_PROTOCOL
 * makes a node claim another range. Version 2 ships a push's pack with its prepare; version 4
 * copies it to the peers while the client uploads it (`/replicate/stage-upload`). The mixed
 * cluster shows a coordinator copying to the peers that speak 4 and shipping with the prepare
 * to those that speak 2; at the end every push is copied during its upload.
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

  it('onto a build that speaks 2 to 4, then 4 only: no acknowledged push lost, none refused', async () => {
    for (const n of [1, 2, 3]) await upgrade(n, '2-4');
    for (const n of [1, 2, 3]) await upgrade(n, '4');
    // On 4 only, every push is copied to its two peers during the upload, once the coordinator's
    // view of the cluster (refreshed by heartbeats) shows them back on 4.
    for (const i of [1, 2, 3])
      await waitFor(
        async () => {
          const teed = await packsShipped(c.url(i), 'teed');
          await pushes(i, 1);
          return (await packsShipped(c.url(i), 'teed')) === teed + 2;
        },
        30_000,
        `a push through node ${i} copied to both peers`,
      );
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
      () => /speaks replication protocol 1, this node 4/.test(c.node(1).log),
      15_000,
      'node 1 says node 3 speaks another protocol',
    );
    await pushes(1, 1);
    const status = await c.repoStatus(1, 'up/repo');
    expect(status.replicas.find((r) => r.node === 'node-3')!.state).not.toBe('in_sync');
    // Back on a build that speaks 4, it catches up.
    await c.kill(3);
    await c.restart(3, { GIT_REPLICATION_PROTOCOL: '2-4' });
    await c.waitInSync('up/repo', 1, 60_000);
  }, 120_000);
});

import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { hasObject as hasObjectIn, packsShipped, stagedKeeps as stagedKeepsOf } from '../helpers/staging.js';
import { commitFile, git, gitOk, workRepo } from '../helpers/git.js';

/**
 * A push's pack is shipped to the other replicas while its coordinator waits for the repo lock
 * (`/replicate/stage`, protocol 3); the prepare then carries the refs only. These tests show the
 * shipment in the metrics, and each way a staged pack can go astray: lost before its prepare
 * (shipped again with it), not needed (unstaged by the coordinator), never adopted with nobody
 * to say so (removed after STAGE_TTL_MS), and left behind by a crash right after staging (its
 * .keep removed at the node's start). The nodes speak protocol 3: a peer of protocol 4 gets the
 * pack during the upload instead (tee.test.ts), and this path is then the fallback.
 */
describe('packs staged ahead of the prepare', () => {
  let c: TestCluster;
  let work = '';
  const repo = 'stage/repo';

  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { STAGE_TTL_MS: '600000', GIT_REPLICATION_PROTOCOL: '2-3' } });
    await c.createRepo(1, repo);
    work = await workRepo();
  });
  afterAll(async () => {
    await c?.destroy();
  });

  const shipped = (i: number, how: 'staged' | 'with_prepare' | 'restaged'): Promise<number> => packsShipped(c.url(i), how);
  const stagedKeeps = (i: number): Promise<string[]> => stagedKeepsOf(c.replicaPath(i, repo));
  const hasObject = (i: number, oid: string): Promise<boolean> => hasObjectIn(c.replicaPath(i, repo), oid);

  async function push(i: number, content: string): Promise<{ code: number; stderr: string; commit: string }> {
    const commit = await commitFile(work, 'f.txt', content, content);
    const r = await git(['push', c.repoUrl(i, repo), 'HEAD:refs/heads/main'], { cwd: work });
    return { code: r.code ?? -1, stderr: r.stderr, commit };
  }

  it('a push stages its pack on both peers; nothing staged is left once it committed', async () => {
    const before = await shipped(1, 'staged');
    const r = await push(1, 'one');
    expect(r.code, r.stderr).toBe(0);
    // The push is answered once a quorum prepared: a peer's stage is counted by the time it is in sync.
    await c.waitInSync(repo, 1);
    expect(await shipped(1, 'staged')).toBe(before + 2);
    expect(await shipped(1, 'with_prepare')).toBe(0);
    for (const i of [2, 3]) {
      expect(await hasObject(i, r.commit)).toBe(true);
      expect(await stagedKeeps(i)).toEqual([]);
    }
  });

  it('a staged pack lost before its prepare is shipped again with the prepare', async () => {
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: 'coordinator.beforePrepare=delay(2500)' });
    const before = await shipped(1, 'restaged');
    const pushing = push(1, 'two');
    // Node 2 holds the staged pack while node 1 waits at its fail point: take it away.
    await waitFor(async () => (await stagedKeeps(2)).length > 0, 20_000, 'a staged pack on node 2');
    for (const keep of await stagedKeeps(2)) {
      await Promise.all(['keep', 'pack', 'idx', 'rev'].map((ext) => rm(keep.replace(/keep$/, ext), { force: true })));
    }
    const r = await pushing;
    expect(r.code, r.stderr).toBe(0);
    await c.waitInSync(repo, 1);
    expect(await shipped(1, 'restaged')).toBeGreaterThan(before);
    expect(await hasObject(2, r.commit)).toBe(true);
  });

  it('a pack staged for a push that failed before its prepare is unstaged at once', async () => {
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: 'coordinator.beforePrepare=error' });
    const r = await push(1, 'three');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('injected error');
    for (const i of [2, 3]) {
      await waitFor(async () => (await stagedKeeps(i)).length === 0, 15_000, `node ${i} to drop the staged pack`);
    }
    await gitOk(['reset', '-q', '--hard', 'HEAD~1'], { cwd: work });
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: '' });
  });

  it('a node killed right after staging: the push is acknowledged, and its restart drops the staged pack', async () => {
    await c.restart(3, { GIT_REPLICATION_FAILPOINTS: 'participant.afterStage=crash' });
    await c.waitInSync(repo, 1);
    // A coordinator that still saw node 3 behind (its restart a moment ago) stages nothing there,
    // and the push needs only its quorum: the next push is then the one node 3 stages and dies at
    // (CI saw a push go without it). Every push is acknowledged.
    let r = await push(1, 'four');
    for (let attempt = 1; ; attempt++) {
      expect(r.code, r.stderr).toBe(0);
      if (
        await c.exited(3, 10_000).then(
          () => true,
          () => false,
        )
      )
        break;
      if (attempt === 3) throw new Error('three pushes went without staging their pack on node 3');
      r = await push(1, `four-${attempt}`);
    }
    expect(await hasObject(2, r.commit)).toBe(true);
    // A start removes the .keep of every pack no prepared transaction owns: the staged one too.
    await c.restart(3, { GIT_REPLICATION_FAILPOINTS: '' });
    expect(await stagedKeeps(3)).toEqual([]);
    await c.waitInSync(repo, 1, 60_000);
    const next = await push(1, 'five');
    expect(next.code, next.stderr).toBe(0);
    await c.waitInSync(repo, 1, 60_000);
    expect(await hasObject(3, next.commit)).toBe(true);
  });

  it('a pack staged for a push whose coordinator died is removed after the TTL', async () => {
    for (const i of [2, 3]) await c.restart(i, { STAGE_TTL_MS: '1500' });
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: 'coordinator.beforePrepare=delay(5000)' });
    const pushing = push(1, 'six');
    await waitFor(async () => (await stagedKeeps(2)).length > 0, 20_000, 'a staged pack on node 2');
    // The coordinator dies holding the lock: nobody will prepare with the pack, nor unstage it.
    await c.kill(1);
    const r = await pushing;
    expect(r.code).not.toBe(0);
    await waitFor(async () => (await stagedKeeps(2)).length === 0, 15_000, 'node 2 to drop the staged pack after its TTL');
    await gitOk(['reset', '-q', '--hard', 'HEAD~1'], { cwd: work });
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: '' });
  });
});

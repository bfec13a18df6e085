import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor, type RepoStatus } from '../helpers/cluster.js';
import { commitFile, git, gitOk, refsOf, workRepo } from '../helpers/git.js';

async function expectAllInSync(c: TestCluster, repoId: string, via: number, replicas = 3): Promise<RepoStatus> {
  const st = await c.waitInSync(repoId, via, 120_000);
  expect(st.replicas).toHaveLength(replicas);
  expect(new Set(st.replicas.map((r) => r.checksum)).size).toBe(1);
  return st;
}

describe('catch-up repair and verification on 3 nodes', { timeout: 240_000 }, () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { VERIFY_INTERVAL_MS: '500', FSCK_INTERVAL_MS: '1000', REPACK_AFTER_PACKS: '6' } });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('a node stopped while 50 commits are pushed is back in sync within seconds of its start', async () => {
    await c.createRepo(1, 'heal/missed');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'heal/missed'), 'main'], { cwd: work });
    await c.waitInSync('heal/missed');
    await c.kill(3);
    for (let push = 0; push < 10; push++) {
      for (let k = 0; k < 5; k++) await commitFile(work, 'log.txt', `${push}-${k}\n`, `commit ${push}-${k}`);
      await gitOk(['push', '-q', c.repoUrl(1 + (push % 2), 'heal/missed'), 'main', `main:refs/heads/b${push}`], { cwd: work });
    }
    const t0 = Date.now();
    await c.restart(3);
    await expectAllInSync(c, 'heal/missed', 3);
    const took = Date.now() - t0;
    expect(await refsOf(c.replicaPath(3, 'heal/missed'))).toBe(await refsOf(c.replicaPath(1, 'heal/missed')));
    expect((await gitOk(['rev-list', '--count', 'main'], { cwd: c.replicaPath(3, 'heal/missed') })).trim()).toBe('51');
    process.stdout.write(`catch-up of 50 commits / 10 pushes took ${took} ms after restart\n`);
  });

  it('a replica that missed the first push is copied whole by a clone and made a replica again', async () => {
    await c.createRepo(1, 'heal/empty');
    await c.waitInSync('heal/empty');
    await c.kill(3);
    const work = await workRepo();
    for (let b = 0; b < 20; b++) await gitOk(['branch', `b${b}`], { cwd: work });
    await gitOk(['push', '-q', c.repoUrl(1, 'heal/empty'), '--all'], { cwd: work });
    await c.restart(3);
    await expectAllInSync(c, 'heal/empty', 1);
    const path = c.replicaPath(3, 'heal/empty');
    expect(await refsOf(path)).toBe(await refsOf(c.replicaPath(1, 'heal/empty')));
    // The clone's refs are packed, its remote is gone and it keeps the repo's incarnation and replica config.
    expect((await readdir(path)).includes('packed-refs')).toBe(true);
    expect((await git(['config', '--get', 'remote.origin.url'], { cwd: path })).code).not.toBe(0);
    const st = await c.repoStatus(1, 'heal/empty');
    expect((await gitOk(['config', '--get', 'replication.incarnation'], { cwd: path })).trim()).toBe(st.incarnation);
    expect((await gitOk(['config', '--get', 'receive.procReceiveRefs'], { cwd: path })).trim()).toBe('refs/');
    // And it takes part in the next push like any other replica.
    await commitFile(work, 'after.txt', 'after\n', 'after the copy');
    await gitOk(['push', '-q', c.repoUrl(3, 'heal/empty'), 'main'], { cwd: work });
    await expectAllInSync(c, 'heal/empty', 3);
    expect(await refsOf(path)).toBe(await refsOf(c.replicaPath(2, 'heal/empty')));
  });

  it('every replica committed but none confirmed (all crashed after commit): they confirm themselves after restart', async () => {
    await c.createRepo(1, 'heal/unconfirmed');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'heal/unconfirmed'), 'main'], { cwd: work });
    await c.waitInSync('heal/unconfirmed');
    for (const i of [1, 2, 3]) await c.restart(i, { GIT_REPLICATION_FAILPOINTS: 'participant.afterCommit=crash' });
    await c.waitMembership();
    const oid = await commitFile(work, 'u.txt', 'u\n', 'committed everywhere, confirmed nowhere');
    const push = await git(['push', '-q', c.repoUrl(1, 'heal/unconfirmed'), 'main'], { cwd: work });
    expect(push.code, 'the push cannot be acknowledged: every node died before confirming').not.toBe(0);
    for (const i of [1, 2, 3]) await c.exited(i, 20_000);
    for (const i of [1, 2, 3]) await c.restart(i, { GIT_REPLICATION_FAILPOINTS: '' });
    const st = await expectAllInSync(c, 'heal/unconfirmed', 2);
    expect(st.generation).toBe(2);
    for (const i of [1, 2, 3])
      expect(await gitOk(['rev-parse', 'refs/heads/main'], { cwd: c.replicaPath(i, 'heal/unconfirmed') })).toBe(`${oid}\n`);
  });

  it('a replica with more packs than REPACK_AFTER_PACKS is rolled up; refs, checksum and objects unchanged', async () => {
    await c.createRepo(1, 'heal/packs');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'heal/packs'), 'main'], { cwd: work });
    for (let i = 0; i < 12; i++) {
      await commitFile(work, `p${i}.txt`, `${i}\n`.repeat(50), `pack ${i}`);
      await gitOk(['push', '-q', c.repoUrl(1 + (i % 3), 'heal/packs'), 'main'], { cwd: work });
    }
    const packs = async (i: number): Promise<number> =>
      (await readdir(join(c.replicaPath(i, 'heal/packs'), 'objects', 'pack'))).filter((f) => f.endsWith('.pack')).length;
    await waitFor(async () => (await Promise.all([1, 2, 3].map(packs))).every((n) => n <= 6), 30_000, 'every replica repacked');
    const st = await expectAllInSync(c, 'heal/packs', 1);
    expect(st.generation).toBe(13);
    for (const i of [1, 2, 3]) {
      expect(await refsOf(c.replicaPath(i, 'heal/packs'))).toBe(await refsOf(c.replicaPath(1, 'heal/packs')));
      const fsck = await git(['fsck', '--no-dangling'], { cwd: c.replicaPath(i, 'heal/packs') });
      expect(fsck.code, fsck.stderr).toBe(0);
    }
    expect((await gitOk(['rev-parse', 'main'], { cwd: c.replicaPath(2, 'heal/packs') })).trim()).toBe(
      (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim(),
    );
    expect((await gitOk(['rev-list', '--count', 'main'], { cwd: c.replicaPath(2, 'heal/packs') })).trim()).toBe('13');
  });

  it('a ref edited by hand is detected by the verifier and repaired', async () => {
    await c.createRepo(2, 'heal/ref');
    const work = await workRepo();
    const first = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    await commitFile(work, 'a', 'a', 'second');
    await gitOk(['push', '-q', c.repoUrl(2, 'heal/ref'), 'main'], { cwd: work });
    await c.waitInSync('heal/ref');
    const good = await refsOf(c.replicaPath(1, 'heal/ref'));
    await writeFile(join(c.replicaPath(2, 'heal/ref'), 'refs', 'heads', 'main'), `${first}\n`);
    // The verifier marks node-2 stale and repair fetches it back, which can be over between two
    // looks at the store (CI missed it once): the node's log says what happened.
    await waitFor(
      () =>
        /"repoId":"heal\/ref"[^\n]*"state":"stale"[^\n]*marked for repair/.test(c.node(2).log) &&
        /"repoId":"heal\/ref"[^\n]*replica repaired/.test(c.node(2).log),
      45_000,
      'verifier marks node-2 stale and repair fetches it back',
    );
    await expectAllInSync(c, 'heal/ref', 1);
    expect(await refsOf(c.replicaPath(2, 'heal/ref'))).toBe(good);
  });

  it('a replica with objects deleted by hand fails fsck and is copied again whole', async () => {
    await c.createRepo(1, 'heal/objects');
    const work = await workRepo();
    for (let i = 0; i < 3; i++) await commitFile(work, `f${i}`, `${i}`.repeat(1000), `c${i}`);
    await gitOk(['push', '-q', c.repoUrl(1, 'heal/objects'), 'main'], { cwd: work });
    await c.waitInSync('heal/objects');
    const pack = join(c.replicaPath(3, 'heal/objects'), 'objects', 'pack');
    for (const f of await readdir(pack)) if (f.endsWith('.pack') || f.endsWith('.idx')) await rm(join(pack, f));
    expect((await git(['fsck', '--connectivity-only'], { cwd: c.replicaPath(3, 'heal/objects') })).code).not.toBe(0);
    // The verifier's fsck marks node-3 and repair copies it whole; that can be over between two
    // looks at the store, so the node's log says what happened.
    const copied = (): string | undefined =>
      c
        .node(3)
        .log.split('\n')
        .find((l) => l.includes('"repoId":"heal/objects"') && l.includes('"mode":"clone"') && l.includes('replica repaired'));
    await waitFor(() => copied() !== undefined, 45_000, 'node-3 marked by fsck and copied whole');
    expect(c.node(3).log).toMatch(/"repoId":"heal\/objects"[^\n]*"state":"missing"[^\n]*marked for repair/);
    await expectAllInSync(c, 'heal/objects', 1);
    const fsck = await git(['fsck', '--connectivity-only'], { cwd: c.replicaPath(3, 'heal/objects') });
    expect(fsck.code, fsck.stderr).toBe(0);
  });
});

describe('placement over 6 nodes with R=3', { timeout: 300_000 }, () => {
  let c: TestCluster;
  const repos = Array.from({ length: 30 }, (_, i) => `spread/r${i}`);
  const heads = new Map<string, string>();
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 6, replicationFactor: 3, env: { REPLACE_AFTER: '3s', STEWARD_INTERVAL_MS: '500' } });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  async function counts(via: number): Promise<Map<string, number>> {
    const m = new Map<string, number>();
    for (const r of repos) for (const rep of (await c.repoStatus(via, r)).replicas) m.set(rep.node, (m.get(rep.node) ?? 0) + 1);
    return m;
  }

  async function expectNothingLost(via: number): Promise<void> {
    for (const r of repos) {
      const st = await expectAllInSync(c, r, via);
      expect(st.replicas).toHaveLength(3);
      expect(await gitOk(['ls-remote', c.repoUrl(via, r), 'refs/heads/main'])).toContain(heads.get(r));
    }
  }

  it('30 repos spread over all 6 nodes, each on exactly 3', async () => {
    const work = await workRepo();
    for (const [i, r] of repos.entries()) {
      await c.createRepo(1 + (i % 6), r);
      heads.set(r, await commitFile(work, 'n', r, r));
      await gitOk(['push', '-q', c.repoUrl(1 + ((i + 3) % 6), r), 'main'], { cwd: work });
    }
    const m = await counts(1);
    expect([...m.keys()].sort()).toEqual(['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6']);
    expect([...m.values()].reduce((a, b) => a + b, 0)).toBe(90);
    for (const r of repos) expect(new Set((await c.repoStatus(2, r)).replicas.map((x) => x.node)).size).toBe(3);
  });

  it('a node killed for good: after --replace-after every repo is back to 3 in-sync replicas', async () => {
    await c.kill(6);
    await waitFor(async () => !(await counts(1)).has('node-6'), 180_000, 'no replica left on node-6');
    await expectNothingLost(2);
  });

  it('decommission moves every replica off a live node', async () => {
    const r = await c.api(1, 'POST', '/admin/nodes/node-5/decommission');
    expect(r.status).toBe(200);
    await waitFor(async () => !(await counts(1)).has('node-5'), 180_000, 'no replica left on node-5');
    await expectNothingLost(3);
    await waitFor(
      async () => (await readdir(join(c.node(5).dataDir, 'repos', 'spread')).catch(() => [])).length === 0,
      30_000,
      'node-5 deleted its copies',
    );
  });

  it('a new node and rebalance: replicas move onto it, all repos stay at 3', async () => {
    const i = await c.addNode();
    expect((await c.api(1, 'POST', '/admin/rebalance')).status).toBe(200);
    await waitFor(async () => ((await counts(1)).get(`node-${i}`) ?? 0) >= 5, 180_000, `replicas on node-${i}`);
    // Moves go one copy at a time (add, then drop once the copy is in sync): wait until they settle.
    await waitFor(
      async () => {
        for (const r of repos) {
          const st = await c.repoStatus(1, r);
          if (st.replicas.length !== 3 || st.replicas.some((x) => x.state !== 'in_sync')) return false;
        }
        return true;
      },
      180_000,
      'rebalance settled',
    );
    await expectNothingLost(i);
  });
});

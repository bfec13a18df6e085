import { existsSync } from 'node:fs';
import { cp, readdir, readlink, realpath, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAILPOINT_NAMES } from '../../src/replication/failpoints.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, nodeGitProcesses, refsOf, tempDir, workRepo } from '../helpers/git.js';

/** lockFiles lists `*.lock` files anywhere in a replica. */
async function lockFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.lock')) out.push(p);
    }
  };
  await walk(dir);
  return out;
}

async function clone(url: string): Promise<string> {
  const dir = join(await tempDir(), 'w');
  await gitOk(['clone', '-q', url, dir]);
  return dir;
}

/** expectReplicasIdentical checks every in-sync replica on disk has the same refs as the first. */
async function expectReplicasIdentical(c: TestCluster, repoId: string): Promise<void> {
  const st = await c.waitInSync(repoId);
  const refs = await Promise.all(st.replicas.map((r) => refsOf(c.replicaPath(Number(r.node.slice(5)), repoId))));
  for (const r of refs) expect(r).toBe(refs[0]);
  expect(new Set(st.replicas.map((r) => r.checksum)).size).toBe(1);
  expect(st.replicas[0]!.checksum).toBe(st.checksum);
}

describe('replicated pushes on 3 nodes', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('push to node 1, clone from node 3 at once: identical refs, equal checksums', async () => {
    await c.createRepo(1, 'r/one');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'r/one'), 'main', 'main:refs/heads/dev'], { cwd: work });
    const other = join(await tempDir(), 'o.git');
    await gitOk(['clone', '-q', '--mirror', c.repoUrl(3, 'r/one'), other]);
    expect(await refsOf(other)).toBe(await refsOf(work).then(() => refsOf(c.replicaPath(1, 'r/one'))));
    await expectReplicasIdentical(c, 'r/one');
  });

  it('pushes that bring no objects replicate too: delete, new branch and tag at a known commit', async () => {
    await c.createRepo(3, 'r/noobj');
    const work = await workRepo();
    const url = c.repoUrl(1, 'r/noobj');
    await gitOk(['push', '-q', url, 'main', 'main:refs/heads/gone'], { cwd: work });
    await gitOk(['push', '-q', url, ':refs/heads/gone'], { cwd: work });
    await gitOk(['push', '-q', c.repoUrl(2, 'r/noobj'), 'main:refs/heads/same', 'main:refs/tags/v1'], { cwd: work });
    const refs = await gitOk(['ls-remote', c.repoUrl(3, 'r/noobj')]);
    expect(refs).not.toContain('refs/heads/gone');
    expect(refs).toContain('refs/heads/same');
    expect(refs).toContain('refs/tags/v1');
    await expectReplicasIdentical(c, 'r/noobj');
  });

  it('every read after an acknowledged push sees it, through every node', async () => {
    await c.createRepo(2, 'r/ryw');
    const work = await workRepo();
    for (let i = 0; i < 5; i++) {
      const oid = await commitFile(work, 'n.txt', `${i}\n`, `c${i}`);
      await gitOk(['push', '-q', c.repoUrl((i % 3) + 1, 'r/ryw'), 'main'], { cwd: work });
      for (const n of [1, 2, 3]) expect(await gitOk(['ls-remote', c.repoUrl(n, 'r/ryw'), 'refs/heads/main'])).toContain(oid);
    }
  });

  it("each replica's update-ref process serves the repo's next push, and only while the replica is where that process left it", async () => {
    await c.createRepo(1, 'r/kept');
    const work = await workRepo();
    /** kept lists, per node, the pids of the update-ref processes working in the repo's replica. */
    const kept = async (): Promise<number[][]> =>
      Promise.all(
        [1, 2, 3].map(async (n) => {
          const dir = await realpath(c.replicaPath(n, 'r/kept'));
          const procs = await nodeGitProcesses(c.node(n).dataDir, { refSessions: true });
          const here = await Promise.all(
            procs.map(async (p) => ((await readlink(`/proc/${p.pid}/cwd`).catch(() => '')) === dir ? p : null)),
          );
          return here.flatMap((p) => (p && p.cmd.includes('update-ref') ? [p.pid] : []));
        }),
      );
    await gitOk(['push', '-q', c.repoUrl(1, 'r/kept'), 'main'], { cwd: work });
    await c.waitInSync('r/kept');
    const first = await kept();
    for (const pids of first) expect(pids).toHaveLength(1);
    // Not a process that lingers: nodeGitProcesses leaves kept ones out unless asked.
    expect((await nodeGitProcesses(c.node(2).dataDir)).filter((p) => p.cmd.includes('update-ref'))).toEqual([]);
    await commitFile(work, 'k.txt', 'kept\n', 'kept');
    await gitOk(['push', '-q', c.repoUrl(2, 'r/kept'), 'main'], { cwd: work });
    await c.waitInSync('r/kept');
    expect(await kept()).toEqual(first);
    // A whole copy moved into place over node 3's replica (as a repair's swap does): its next
    // transaction must not run in the process working in the directory moved away.
    const path = c.replicaPath(3, 'r/kept');
    await cp(path, `${path}.copy`, { recursive: true });
    await rename(path, `${path}.old`);
    await rename(`${path}.copy`, path);
    await commitFile(work, 'k.txt', 'swapped\n', 'after the swap');
    await gitOk(['push', '-q', c.repoUrl(1, 'r/kept'), 'main'], { cwd: work });
    const after = await kept();
    expect(after[0]).toEqual(first[0]);
    expect(after[2]).toHaveLength(1);
    expect(after[2]).not.toEqual(first[2]);
    await expectReplicasIdentical(c, 'r/kept');
    await rm(`${path}.old`, { recursive: true, force: true });
  });

  it('concurrent pushes to one branch through different nodes: exactly one wins each round, none lost', async () => {
    await c.createRepo(1, 'r/race');
    const base = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'r/race'), 'main'], { cwd: base });
    const a = await clone(c.repoUrl(1, 'r/race'));
    const b = await clone(c.repoUrl(2, 'r/race'));
    const acknowledged: string[] = [];
    for (let round = 0; round < 20; round++) {
      await gitOk(['pull', '-q', '--rebase', 'origin', 'main'], { cwd: a });
      await gitOk(['pull', '-q', '--rebase', 'origin', 'main'], { cwd: b });
      const oa = await commitFile(a, 'a.txt', `a${round}\n`, `a${round}`);
      const ob = await commitFile(b, 'b.txt', `b${round}\n`, `b${round}`);
      const [ra, rb] = await Promise.all([git(['push', 'origin', 'main'], { cwd: a }), git(['push', 'origin', 'main'], { cwd: b })]);
      const wins = [ra, rb].filter((r) => r.code === 0).length;
      expect(wins, `round ${round}: ${ra.stderr} | ${rb.stderr}`).toBe(1);
      const loser = ra.code === 0 ? rb : ra;
      expect(loser.stderr).toMatch(/fetch first|rejected/);
      acknowledged.push(ra.code === 0 ? oa : ob);
    }
    const final = await clone(c.repoUrl(3, 'r/race'));
    for (const oid of acknowledged) expect((await git(['merge-base', '--is-ancestor', oid, 'HEAD'], { cwd: final })).code).toBe(0);
    await expectReplicasIdentical(c, 'r/race');
  });

  it('a node that holds no in-sync replica proxies reads and pushes to one that does', async () => {
    await c.createRepo(1, 'r/proxy');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'r/proxy'), 'main'], { cwd: work });
    await c.waitInSync('r/proxy');
    await c.kill(3);
    const oid = await commitFile(work, 'p.txt', 'p\n', 'while node 3 was down');
    await gitOk(['push', '-q', c.repoUrl(1, 'r/proxy'), 'main'], { cwd: work });
    // Node 3 comes back with repair held off: its replica is stale, so it must serve from a peer.
    await c.restart(3, { REPAIR_INTERVAL_MS: '0' });
    await c.waitMembership();
    expect(await gitOk(['ls-remote', c.repoUrl(3, 'r/proxy'), 'refs/heads/main'])).toContain(oid);
    const viaStale = await clone(c.repoUrl(3, 'r/proxy'));
    expect((await gitOk(['rev-parse', 'HEAD'], { cwd: viaStale })).trim()).toBe(oid);
    const next = await commitFile(viaStale, 'q.txt', 'q\n', 'pushed through the stale node');
    await gitOk(['push', '-q', 'origin', 'main'], { cwd: viaStale });
    expect(await gitOk(['ls-remote', c.repoUrl(1, 'r/proxy'), 'refs/heads/main'])).toContain(next);
    const st = await c.repoStatus(1, 'r/proxy');
    expect(st.replicas.find((r) => r.node === 'node-3')?.state).not.toBe('in_sync');
    await c.restart(3);
    await expectReplicasIdentical(c, 'r/proxy');
  });

  it('kill -9 one node: pushes keep succeeding; kill two: refused with the quorum message, nothing changes', async () => {
    await c.createRepo(1, 'r/kill');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'r/kill'), 'main'], { cwd: work });
    await c.waitInSync('r/kill');
    await c.kill(2);
    for (let i = 0; i < 3; i++) {
      await commitFile(work, 'k.txt', `${i}\n`, `k${i}`);
      const r = await git(['push', c.repoUrl(1, 'r/kill'), 'main'], { cwd: work });
      expect(r.code, r.stderr).toBe(0);
    }
    const before = await refsOf(c.replicaPath(1, 'r/kill'));
    await c.kill(3);
    await commitFile(work, 'k.txt', 'doomed\n', 'doomed');
    const r = await git(['push', c.repoUrl(1, 'r/kill'), 'main'], { cwd: work });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/replication quorum not reached: 1 of 3 replicas prepared, 2 required/);
    expect(await refsOf(c.replicaPath(1, 'r/kill'))).toBe(before);
    expect(await lockFiles(c.replicaPath(1, 'r/kill'))).toEqual([]);
    await c.restart(2);
    await c.restart(3);
    await c.waitMembership();
    await expectReplicasIdentical(c, 'r/kill');
  });
});

describe('fault points: crash or delay at each step of a push', () => {
  const cases = FAILPOINT_NAMES.filter((n) => !n.startsWith('coordinator.beforePrepare'));
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it.each(cases.map((name) => [name]))('%s=crash: acknowledged pushes survive, no lock, replicas agree', async (name) => {
    const repo = `fp/${name.replace('.', '-')}`;
    await c.createRepo(2, repo);
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(2, repo), 'main'], { cwd: work });
    await c.waitInSync(repo);
    const acked = [(await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim()];
    // The coordinator is node 1 (the push goes there); a participant fault is armed on node 3.
    const victim = name.startsWith('coordinator') ? 1 : 3;
    await c.restart(victim, { GIT_REPLICATION_FAILPOINTS: `${name}=crash` });
    await c.waitMembership();
    // A step only some pushes reach (the check of a copy made during the upload: the first copy
    // to a restarted peer can fail on a connection pooled to its old process, and the pack then
    // goes another way) gets up to three pushes; every other step crashes on the first.
    let r = { code: null as number | null, stderr: '' };
    let crashed = false;
    for (let attempt = 1; attempt <= 3 && !crashed; attempt++) {
      const oid = await commitFile(work, 'f.txt', `${name} ${attempt}\n`, `${name} ${attempt}`);
      r = await git(['push', c.repoUrl(1, repo), 'main'], { cwd: work, timeoutMs: 60_000 });
      if (r.code === 0) acked.push(oid);
      crashed = await c.exited(victim, attempt === 3 ? 20_000 : 5_000).then(
        () => true,
        () => false,
      );
    }
    expect(crashed, `${name}: node ${victim} did not crash; push: ${r.stderr}`).toBe(true);
    await c.restart(victim, { GIT_REPLICATION_FAILPOINTS: '' });
    await c.waitMembership();
    const after = await commitFile(work, 'g.txt', 'after\n', 'after the crash');
    // Until the participants resolve the crashed transaction (its lease must expire first) its ref
    // locks refuse new pushes cleanly; a user retries, and so does the test.
    let r2 = await git(['push', '--force', c.repoUrl(2, repo), 'main'], { cwd: work, timeoutMs: 60_000 });
    for (let i = 0; i < 15 && r2.code !== 0; i++) {
      await new Promise((res) => setTimeout(res, 1_000));
      r2 = await git(['push', '--force', c.repoUrl(2, repo), 'main'], { cwd: work, timeoutMs: 60_000 });
    }
    expect(r2.code, r2.stderr + c.logs()).toBe(0);
    acked.push(after);
    await expectReplicasIdentical(c, repo);
    const final = await clone(c.repoUrl(3, repo));
    for (const a of acked) expect((await git(['merge-base', '--is-ancestor', a, 'HEAD'], { cwd: final })).code, `${a} lost`).toBe(0);
    for (const n of [1, 2, 3]) expect(await lockFiles(c.replicaPath(n, repo))).toEqual([]);
    expect((await c.api(2, 'GET', `/repos/${repo}`)).json.lock).toBeNull();
    for (const n of [1, 2, 3]) expect(existsSync(join(c.node(n).dataDir, 'tmp'))).toBe(true);
  });

  it("a bulk push (150 refs) whose participant crashes between git's commit and its syncfs is applied again at its restart", async () => {
    const repo = 'fp/bulk-sync';
    await c.createRepo(1, repo);
    const work = await workRepo();
    const branches = Array.from({ length: 150 }, (_, i) => `main:refs/heads/many/b${i}`);
    await c.restart(3, { GIT_REPLICATION_FAILPOINTS: 'participant.beforeRefSync=crash' });
    await c.waitMembership();
    const r = await git(['push', c.repoUrl(1, repo), 'main', ...branches], { cwd: work, timeoutMs: 60_000 });
    // Nodes 1 and 2 confirm (W=2): the push is acknowledged while node 3 dies before its sync.
    expect(r.code, r.stderr).toBe(0);
    await c.exited(3, 20_000);
    await c.restart(3, { GIT_REPLICATION_FAILPOINTS: '' });
    await c.waitMembership();
    await expectReplicasIdentical(c, repo);
    expect((await refsOf(c.replicaPath(3, repo))).split('\n').filter((l) => l.includes('refs/heads/many/'))).toHaveLength(150);
    expect(await lockFiles(c.replicaPath(3, repo))).toEqual([]);
  });

  it('delays at every step still commit', async () => {
    const spec = cases.map((n) => `${n}=delay(150)`).join(',');
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: spec });
    await c.restart(3, { GIT_REPLICATION_FAILPOINTS: spec });
    await c.waitMembership();
    await c.createRepo(1, 'fp/delays');
    const work = await workRepo();
    const r = await git(['push', c.repoUrl(1, 'fp/delays'), 'main'], { cwd: work });
    expect(r.code, r.stderr).toBe(0);
    await expectReplicasIdentical(c, 'fp/delays');
    await c.restart(1);
    await c.restart(3);
  });

  it('a push committed with fewer than W confirmations ends cut off (unknown), never as a refusal, and is applied', async () => {
    await c.createRepo(1, 'fp/unknown');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'fp/unknown'), 'main'], { cwd: work });
    await c.waitInSync('fp/unknown');
    for (const i of [2, 3]) await c.restart(i, { GIT_REPLICATION_FAILPOINTS: 'participant.afterCommit=crash' });
    await c.waitMembership();
    const oid = await commitFile(work, 'u.txt', 'u\n', 'confirmed by one replica of three');
    const r = await git(['push', '--porcelain', c.repoUrl(1, 'fp/unknown'), 'main'], { cwd: work, timeoutMs: 60_000 });
    // Closed without a report. Had the connection closed before the answer's first byte,
    // libcurl would have sent the push again and git would show that second answer: "fetch
    // first", for a push that was applied.
    expect(r.code, r.stdout + r.stderr).not.toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/rejected|fetch first|returned error|HTTP 5\d\d/);
    for (const i of [2, 3]) await c.exited(i, 20_000);
    for (const i of [2, 3]) await c.restart(i, { GIT_REPLICATION_FAILPOINTS: '' });
    await expectReplicasIdentical(c, 'fp/unknown');
    expect(await gitOk(['ls-remote', c.repoUrl(2, 'fp/unknown'), 'refs/heads/main'])).toContain(oid);
  });

  it('a decision written whose answer was lost: the coordinator reads it back and acknowledges the push', async () => {
    await c.createRepo(2, 'fp/lost-answer');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(2, 'fp/lost-answer'), 'main'], { cwd: work });
    await c.waitInSync('fp/lost-answer');
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: 'coordinator.afterDecision=error' });
    await c.waitMembership();
    const oid = await commitFile(work, 'l.txt', 'l\n', 'decided, answer lost');
    // A push that took effect must never be reported as failed.
    const r = await git(['push', c.repoUrl(1, 'fp/lost-answer'), 'main'], { cwd: work, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    await expectReplicasIdentical(c, 'fp/lost-answer');
    expect(await gitOk(['ls-remote', c.repoUrl(3, 'fp/lost-answer'), 'refs/heads/main'])).toContain(oid);
    expect(c.node(1).log).toContain('decision write failed; read back the standing decision');
    await c.restart(1, { GIT_REPLICATION_FAILPOINTS: '' });
  });
});

describe('write lock', () => {
  it('is released on every path: nothing stays locked after pushes that fail', async () => {
    const c = await TestCluster.start({ nodes: 3 });
    try {
      await c.createRepo(1, 'l/repo');
      const work = await workRepo();
      await gitOk(['push', '-q', c.repoUrl(1, 'l/repo'), 'main'], { cwd: work });
      await c.kill(2);
      await c.kill(3);
      await commitFile(work, 'x', 'x', 'x');
      expect((await git(['push', c.repoUrl(1, 'l/repo'), 'main'], { cwd: work })).code).not.toBe(0);
      expect((await c.api(1, 'GET', '/repos/l/repo')).json.lock).toBeNull();
      await c.restart(2);
      await c.restart(3);
      await c.waitMembership();
      await c.waitInSync('l/repo');
      // The refused push released its lock at once; a leaked one would stay until its lease ran out.
      expect((await c.api(1, 'GET', '/repos/l/repo')).json.lock).toBeNull();
      const r = await git(['push', c.repoUrl(1, 'l/repo'), 'main'], { cwd: work });
      expect(r.code, r.stderr).toBe(0);
    } finally {
      await c.destroy();
    }
  });
});

void waitFor;

describe('a push proxied by a node without a replica', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 4, replicationFactor: 3 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('whose coordinator fails after the commit is cut off (unknown), never refused after a resend, and is applied', async () => {
    const repo = 'proxy/unknown';
    await c.createRepo(1, repo);
    const holders = (await c.waitInSync(repo)).replicas.map((r) => Number(r.node.replace('node-', '')));
    const outsider = [1, 2, 3, 4].find((i) => !holders.includes(i))!;
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(outsider, repo), 'main'], { cwd: work });
    await c.waitInSync(repo);
    // Whichever replica the outsider routes the push to coordinates it, commits, confirms and then fails.
    for (const i of holders) await c.restart(i, { GIT_REPLICATION_FAILPOINTS: 'coordinator.afterConfirm=error' });
    await c.waitMembership();
    const oid = await commitFile(work, 'p.txt', 'p\n', 'proxied, then cut off');
    const r = await git(['push', '--porcelain', c.repoUrl(outsider, repo), 'main'], { cwd: work, timeoutMs: 60_000 });
    // The coordinator sends its headers, then closes. Had the outsider closed the client's
    // connection before passing them on, libcurl would have sent the push again, and git would
    // show the answer to that second try: `fetch first`, for a push that was applied.
    expect(r.code, r.stdout + r.stderr).not.toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/rejected|fetch first|returned error|HTTP 5\d\d/);
    for (const i of holders) await c.restart(i, { GIT_REPLICATION_FAILPOINTS: '' });
    await c.waitMembership();
    const st = await c.waitInSync(repo);
    expect(st.generation).toBe(2);
    for (const i of [1, 2, 3, 4]) expect(await gitOk(['ls-remote', c.repoUrl(i, repo), 'refs/heads/main'])).toContain(oid);
  });

  it("the replica a push or a clone is proxied to serves it on the proxying node's store read, not one of its own", async () => {
    const repo = 'proxy/vouched';
    await c.createRepo(1, repo);
    const holders = (await c.waitInSync(repo)).replicas.map((r) => Number(r.node.replace('node-', '')));
    const outsider = [1, 2, 3, 4].find((i) => !holders.includes(i))!;
    /** routingReads sums the nodes' store reads of one repo's state (the router's). */
    const routingReads = async (nodes: number[]): Promise<number> => {
      let sum = 0;
      for (const i of nodes) {
        const text = await (await fetch(`${c.url(i)}/metrics`)).text();
        sum += Number(/^gitrep_store_operations_total\{op="getRepoState"\} (\d+)/m.exec(text)?.[1] ?? 0);
      }
      return sum;
    };
    const work = await workRepo();
    const [holderReads, outsiderReads] = [await routingReads(holders), await routingReads([outsider])];
    await gitOk(['push', '-q', c.repoUrl(outsider, repo), 'main'], { cwd: work });
    const oid = await commitFile(work, 'v.txt', 'v\n', 'second');
    await gitOk(['push', '-q', c.repoUrl(outsider, repo), 'main'], { cwd: work });
    const copy = await clone(c.repoUrl(outsider, repo));
    expect((await gitOk(['rev-parse', 'HEAD'], { cwd: copy })).trim()).toBe(oid);
    expect(await routingReads(holders)).toBe(holderReads);
    expect(await routingReads([outsider])).toBeGreaterThan(outsiderReads);
  });
});

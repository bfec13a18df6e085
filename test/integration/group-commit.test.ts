import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { packsShipped } from '../helpers/staging.js';
import { commitFile, git, gitOk, lsRemote, tempDir, workRepo } from '../helpers/git.js';

/**
 * Group commit: pushes of one repo that queue on a node while its transaction runs join the next
 * transaction together. Node 1 holds each transaction 1.5 s before its prepare (a fail point
 * delay), so the pushes started meanwhile all queue behind the first, deterministically.
 */
describe('pushes queued on one repo join one transaction', () => {
  let c: TestCluster;
  let base = '';
  const repo = 'group/repo';

  beforeAll(async () => {
    c = await TestCluster.start({
      nodes: 3,
      nodeEnv: {
        'node-1': { GIT_REPLICATION_FAILPOINTS: 'coordinator.beforePrepare=delay(1500)' },
        // Node 3 runs one push per transaction and lets two wait: the queue bound's test.
        'node-3': { GIT_REPLICATION_FAILPOINTS: 'coordinator.beforePrepare=delay(2500)', MAX_QUEUED_PUSHES: '2', MAX_GROUP_PUSHES: '1' },
      },
    });
    await c.createRepo(1, repo);
    base = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(2, repo), 'HEAD:refs/heads/main'], { cwd: base });
    await c.waitInSync(repo, 2);
  });
  afterAll(async () => {
    await c?.destroy();
  });

  /** client clones the repo's main into a fresh work dir and commits one file on it. */
  async function client(name: string): Promise<{ dir: string; commit: string }> {
    const dir = await tempDir('gitrep-group-');
    await gitOk(['clone', '-q', c.repoUrl(2, repo), dir]);
    await gitOk(['config', 'user.email', 't@example.com'], { cwd: dir });
    await gitOk(['config', 'user.name', 't'], { cwd: dir });
    const commit = await commitFile(dir, `${name}.txt`, `${name}\n`, name);
    return { dir, commit };
  }

  /** staged reads a node's count of packs on peers ahead of the prepare: copied during the upload, or staged. */
  const staged = async (node = 1): Promise<number> =>
    (await packsShipped(c.url(node), 'teed')) + (await packsShipped(c.url(node), 'staged'));

  /**
   * firstInFlight starts a push through node 1 and waits until its pack is staged on both peers:
   * it then holds the lock or is about to (and sits in the 1.5 s delay), so pushes started now queue.
   */
  async function firstInFlight(dir: string, ref: string, node = 1): Promise<{ push: ReturnType<typeof git> }> {
    const before = await staged(node);
    const push = git(['push', c.repoUrl(node, repo), `HEAD:${ref}`], { cwd: dir });
    await waitFor(async () => (await staged(node)) >= before + 2, 20_000, 'the first push to stage its pack');
    // Wrapped: an async function returning the promise itself would wait for the push to end.
    return { push };
  }

  it('8 pushes of different branches queued behind a 9th all succeed, as one transaction', async () => {
    const clients = await Promise.all(Array.from({ length: 9 }, (_, i) => client(`b${i}`)));
    const logBefore = c.node(1).log.length;
    const { push: first } = await firstInFlight(clients[0]!.dir, 'refs/heads/b0');
    const rest = clients.slice(1).map((cl, i) => git(['push', c.repoUrl(1, repo), `HEAD:refs/heads/b${i + 1}`], { cwd: cl.dir }));
    const results = await Promise.all([first, ...rest]);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const log = c.node(1).log.slice(logBefore);
    const grouped = [...log.matchAll(/"pushes":(\d+)[^\n]*pushes grouped into one transaction/g)].map((m) => Number(m[1]));
    // Pushes that reached the node during the first one's transaction went in together (on a
    // loaded machine a straggler may come after it and go alone).
    expect(Math.max(0, ...grouped), log.slice(-3000)).toBeGreaterThanOrEqual(2);
    expect(grouped.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(8);
    await c.waitInSync(repo, 1);
    const refs = await lsRemote(c.repoUrl(3, repo));
    clients.forEach((cl, i) => expect(refs).toContain(`${cl.commit}\trefs/heads/b${i}`));
  });

  it('two pushes of main from the same tip in one group: one wins, the other is told to fetch first', async () => {
    const [x, y, z] = await Promise.all([client('x'), client('y'), client('z')]);
    const { push: first } = await firstInFlight(z.dir, 'refs/heads/other');
    const px = git(['push', c.repoUrl(1, repo), 'HEAD:refs/heads/main'], { cwd: x.dir });
    await new Promise((r) => setTimeout(r, 200));
    const py = git(['push', c.repoUrl(1, repo), 'HEAD:refs/heads/main'], { cwd: y.dir });
    const [rz, rx, ry] = await Promise.all([first, px, py]);
    expect(rz.code, rz.stderr).toBe(0);
    expect([rx.code, ry.code].filter((code) => code === 0)).toHaveLength(1);
    const [winner, loser] = rx.code === 0 ? [x, ry] : [y, rx];
    expect(loser.stderr).toMatch(/fetch first/);
    await c.waitInSync(repo, 1);
    expect(await lsRemote(c.repoUrl(2, repo))).toContain(`${winner.commit}\trefs/heads/main`);
  });

  it('an atomic push with a taken branch in the group applies nothing of it; the others apply', async () => {
    const [a, b, d] = await Promise.all([client('a'), client('b'), client('d')]);
    const { push: first } = await firstInFlight(a.dir, 'refs/heads/taken');
    const atomic = git(['push', '--atomic', c.repoUrl(1, repo), 'HEAD:refs/heads/taken', 'HEAD:refs/heads/fresh'], { cwd: b.dir });
    const plain = git(['push', c.repoUrl(1, repo), 'HEAD:refs/heads/plain'], { cwd: d.dir });
    const [ra, rb, rd] = await Promise.all([first, atomic, plain]);
    expect(ra.code, ra.stderr).toBe(0);
    expect(rd.code, rd.stderr).toBe(0);
    expect(rb.code).not.toBe(0);
    await c.waitInSync(repo, 1);
    const refs = await lsRemote(c.repoUrl(3, repo));
    expect(refs).toContain(`${a.commit}\trefs/heads/taken`);
    expect(refs).toContain(`${d.commit}\trefs/heads/plain`);
    expect(refs).not.toContain('refs/heads/fresh');
  });

  it('beyond MAX_QUEUED_PUSHES waiting pushes a push is refused at once with a retry message; MAX_GROUP_PUSHES=1 groups none', async () => {
    const clients = await Promise.all(Array.from({ length: 5 }, (_, i) => client(`q${i}`)));
    const logBefore = c.node(3).log.length;
    const { push: first } = await firstInFlight(clients[0]!.dir, 'refs/heads/q0', 3);
    const rest = clients.slice(1).map((cl, i) => git(['push', c.repoUrl(3, repo), `HEAD:refs/heads/q${i + 1}`], { cwd: cl.dir }));
    const results = await Promise.all([first, ...rest]);
    const refused = results.filter((r) => r.code !== 0);
    // The first runs, two wait, and at least one of the other two finds the queue full (a push
    // reaching the node after a queued one has started would find room again).
    expect(refused.length, results.map((r) => r.stderr).join('\n')).toBeGreaterThanOrEqual(1);
    expect(refused.length, results.map((r) => r.stderr).join('\n')).toBeLessThanOrEqual(2);
    for (const r of refused) expect(r.stderr).toContain(`2 pushes to ${repo} are already waiting on this node, try again`);
    expect(results[0].code, results[0].stderr).toBe(0);
    expect(c.node(3).log.slice(logBefore)).not.toMatch(/pushes grouped into one transaction/);
    await c.waitInSync(repo, 3);
    const refs = await lsRemote(c.repoUrl(1, repo));
    clients.forEach((cl, i) => {
      if (results[i]!.code === 0) expect(refs).toContain(`${cl.commit}\trefs/heads/q${i}`);
      else expect(refs).not.toContain(`refs/heads/q${i}`);
    });
  });
});

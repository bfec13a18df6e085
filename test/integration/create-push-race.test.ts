import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { git, gitOk, refsOf, workRepo } from '../helpers/git.js';

/**
 * StallProxy forwards TCP to a node and holds each connection's POST body for `stallMs` once
 * `afterBytes` of it went through: a push whose pack is still uploading into the replica while
 * the node does something else to that replica.
 */
class StallProxy {
  /** stalls counts the bodies held, so a test knows its window really opened. */
  stalls = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: number, afterBytes: number, stallMs: number): Promise<StallProxy> {
    let self: StallProxy | null = null;
    const server = createServer((client) => self?.accept(client, target, afterBytes, stallMs));
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const a = server.address();
        resolve(typeof a === 'object' && a ? a.port : 0);
      });
    });
    self = new StallProxy(server, port);
    return self;
  }

  url(repoId: string): string {
    return `http://127.0.0.1:${this.port}/${repoId}.git`;
  }

  private accept(client: Socket, target: number, afterBytes: number, stallMs: number): void {
    const upstream = connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    upstream.pipe(client);
    let body = -1;
    let held = false;
    client.on('data', (chunk: Buffer) => {
      if (!held && body < 0 && chunk.subarray(0, 5).toString() === 'POST ') body = 0;
      upstream.write(chunk);
      if (held || body < 0) return;
      body += chunk.length;
      if (body < afterBytes) return;
      held = true;
      this.stalls++;
      client.pause();
      setTimeout(() => client.resume(), stallMs);
    });
    client.on('end', () => upstream.end());
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Issue 19: a replica whose create commit was confirmed late was seen by repair as empty and
 * replaced by a whole copy, swapped in while a push's receive-pack wrote into the old directory
 * (`unable to write file …/tmp_objdir-incoming-…/pack/….pack: No such file or directory`, or
 * `missing objects after pack` on every replica). Here node 3 confirms every commit late
 * (participant.afterCommit delay) and a whole copy, if one is made, takes a second longer
 * (repair.beforeSwap delay); the push goes through node 3 as soon as it is in sync, its upload
 * held mid-pack across the moment such a copy would be swapped in.
 */
describe('a push right after a create, while node 3 confirms the create late', { timeout: 180_000 }, () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it.each([
    ['within the commit grace', 1_500],
    ['beyond the commit grace', 4_000],
  ])('confirmation %s (%i ms): no copy swapped in, the push lands on every replica', async (_what, confirmMs) => {
    const repo = `race/create-push-${confirmMs}`;
    await c.restart(3, {
      GIT_REPLICATION_FAILPOINTS: `participant.afterCommit=delay(${confirmMs}),repair.beforeSwap=delay(${confirmMs + 1_000})`,
    });
    await c.waitMembership();
    const proxy = await StallProxy.start(c.node(3).port, 100_000, 3_000);
    try {
      const work = await workRepo();
      await writeFile(join(work, 'blob.bin'), randomBytes(400_000));
      await gitOk(['add', 'blob.bin'], { cwd: work });
      await gitOk(['commit', '-q', '-m', 'big'], { cwd: work });
      const oid = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();

      await c.createRepo(1, repo);
      await waitFor(
        async () => (await c.repoStatus(1, repo)).replicas.find((r) => r.node === 'node-3')?.state === 'in_sync',
        20_000,
        'node-3 confirms the create',
      );
      const push = await git(['push', proxy.url(repo), 'main'], { cwd: work, timeoutMs: 60_000 });
      expect(proxy.stalls, 'the upload was held mid-pack').toBeGreaterThan(0);
      expect(push.code, `${push.stderr}\n${c.logs()}`).toBe(0);

      const st = await c.waitInSync(repo, 1, 30_000);
      expect(st.generation).toBe(1);
      expect(new Set(st.replicas.map((r) => r.checksum)).size).toBe(1);
      const refs = await Promise.all([1, 2, 3].map((n) => refsOf(c.replicaPath(n, repo))));
      for (const r of refs) expect(r).toContain(`${oid} refs/heads/main`);
      for (const n of [1, 2, 3]) expect(await gitOk(['ls-remote', c.repoUrl(n, repo), 'refs/heads/main'])).toContain(oid);
      const fsck = await git(['fsck', '--connectivity-only'], { cwd: c.replicaPath(3, repo) });
      expect(fsck.code, fsck.stderr).toBe(0);
      // A replica only confirming late needs no copy: repair never copied it whole. (Beyond the
      // grace, node 3 also looks behind on the push's generation; a fetch that brings nothing new
      // is harmless, and is not what this test is about.)
      const copied = c
        .node(3)
        .log.split('\n')
        .filter(
          (l) => l.includes(`"repoId":"${repo}"`) && l.includes('"mode":"clone"') && /replica repaired|replica repair failed/.test(l),
        );
      expect(copied, c.node(3).log).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});

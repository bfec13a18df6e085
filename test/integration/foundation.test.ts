import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { gitOk } from '../helpers/git.js';

async function isBare(path: string): Promise<boolean> {
  return (await gitOk(['rev-parse', '--is-bare-repository'], { cwd: path })).trim() === 'true';
}

/** leftovers lists staging or trash entries a node still holds (nothing may stay half-created). */
async function leftovers(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of ['tmp', 'trash']) out.push(...(await readdir(join(dataDir, d)).catch(() => [] as string[])));
  return out;
}

describe('3-node cluster: seed API', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('GET /health has the seed shape with a recent cpu figure', async () => {
    const { status, json } = await c.api(1, 'GET', '/health');
    expect(status).toBe(200);
    expect(json).toMatchObject({ status: 'healthy', server_id: 'node-1', peers: 2 });
    expect(typeof json.timestamp).toBe('string');
    const load = json.load as { cpu: number; memory: number };
    expect(load.cpu).toBeGreaterThanOrEqual(0);
    expect(load.cpu).toBeLessThanOrEqual(100);
    expect(load.memory).toBeGreaterThan(0);
  });

  it('a repo created on node 1 is a real bare repo on nodes 1, 2 and 3', async () => {
    const r = await c.api(1, 'POST', '/repos', { repo_id: 'acme/widgets' });
    expect(r.status).toBe(201);
    expect(r.json).toMatchObject({ repo_id: 'acme/widgets', created: true, replicated: true });
    expect(r.json.peers_confirmed).toBeGreaterThanOrEqual(1);
    await c.waitInSync('acme/widgets');
    for (const i of [1, 2, 3]) {
      const got = await c.api(i, 'GET', '/repos/acme/widgets');
      expect(got.status).toBe(200);
      expect(got.json.exists).toBe(true);
      expect(await isBare(c.replicaPath(i, 'acme/widgets'))).toBe(true);
    }
    const list = await c.api(2, 'GET', '/repos');
    expect(list.json).toMatchObject({ repos: ['acme/widgets'], count: 1 });
    const again = await c.api(3, 'POST', '/repos', { repo_id: 'acme/widgets' });
    expect(again.status).toBe(409);
  });

  it('unknown repos are 404', async () => {
    expect((await c.api(2, 'GET', '/repos/acme/nothing')).status).toBe(404);
    expect((await c.api(2, 'DELETE', '/repos/acme/nothing')).status).toBe(404);
  });

  it.each([
    ['malformed JSON', '{"repo_id": '],
    ['missing repo_id', {}],
    ['path traversal', { repo_id: '../etc' }],
    ['dots in owner', { repo_id: '../../etc/passwd' }],
    ['three parts', { repo_id: 'a/b/c' }],
    ['300 characters', { repo_id: `a/${'x'.repeat(298)}` }],
    ['trailing .git', { repo_id: 'a/b.git' }],
    ['not a string', { repo_id: 42 }],
    ['leading dash', { repo_id: '-rf/x' }],
  ])('bad input (%s) is a 400 and creates nothing', async (_name, body) => {
    const before = await readdir(join(c.node(1).dataDir, 'repos'));
    const r = await c.api(1, 'POST', '/repos', body);
    expect(r.status).toBe(400);
    expect(typeof r.json.error).toBe('string');
    expect(await readdir(join(c.node(1).dataDir, 'repos'))).toEqual(before);
    expect((await c.api(1, 'GET', '/repos')).json.count).toBe(1);
  });

  it('peer endpoints refuse unsigned calls and validate fields', async () => {
    const r = await c.api(2, 'POST', '/replicate/prepare', {
      transaction_id: 't',
      coordinator_id: 'x',
      repo_id: 'a/b',
      operation: 'create',
    });
    expect(r.status).toBe(401);
    const commit = await c.api(2, 'POST', '/replicate/commit', { transaction_id: 't' });
    expect(commit.status).toBe(401);
  });

  it('DELETE removes the repo from every replica; re-create gets a new incarnation', async () => {
    await c.createRepo(1, 'acme/tmp');
    const first = await c.repoStatus(1, 'acme/tmp');
    const del = await c.api(2, 'DELETE', '/repos/acme/tmp');
    expect(del.status).toBe(200);
    await waitFor(() => [1, 2, 3].every((i) => !existsSync(c.replicaPath(i, 'acme/tmp'))), 10_000, 'replicas removed');
    expect((await c.api(3, 'GET', '/repos/acme/tmp')).status).toBe(404);
    await c.createRepo(3, 'acme/tmp');
    const second = await c.repoStatus(1, 'acme/tmp');
    expect(second.incarnation).not.toBe(first.incarnation);
  });

  it('with one of three nodes down a create still succeeds, and the node catches up after restart', async () => {
    await c.kill(3);
    const r = await c.api(1, 'POST', '/repos', { repo_id: 'acme/degraded' });
    expect(r.status).toBe(201);
    await c.restart(3);
    const st = await c.waitInSync('acme/degraded');
    expect(st.replicas).toHaveLength(3);
    expect(await isBare(c.replicaPath(3, 'acme/degraded'))).toBe(true);
  });
});

/** seenDown waits until node `by` sees node `down` not live: its registration expired. */
async function seenDown(c: TestCluster, by: number, down: number): Promise<void> {
  await waitFor(
    async () => {
      const h = (await (await fetch(`${c.url(by)}/health`)).json()) as { peer_nodes: Array<{ id: string; live: boolean }> };
      return h.peer_nodes.some((p) => p.id === c.node(down).id && !p.live);
    },
    15_000,
    `node ${down} seen down by node ${by}`,
  );
}

describe('2-node cluster: default quorum is 2 of 2', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 2 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('with one node down a create fails cleanly and leaves nothing behind', async () => {
    await c.kill(2);
    await seenDown(c, 1, 2);
    const r = await c.api(1, 'POST', '/repos', { repo_id: 'acme/lonely' });
    expect(r.status).toBe(503);
    expect(String(r.json.error)).toMatch(/replication quorum not reached: 1 of 2 replicas prepared, 2 required/);
    expect((await c.api(1, 'GET', '/repos/acme/lonely')).status).toBe(404);
    expect(existsSync(c.replicaPath(1, 'acme/lonely'))).toBe(false);
    expect(await leftovers(c.node(1).dataDir)).toEqual([]);
  });

  it("--write-quorum 1 is the seed's explicit degraded mode", async () => {
    const c1 = await TestCluster.start({ nodes: 2, writeQuorum: 1 });
    try {
      await c1.kill(2);
      await seenDown(c1, 1, 2);
      const r = await c1.api(1, 'POST', '/repos', { repo_id: 'acme/degraded' });
      expect(r.status).toBe(201);
      expect(r.json.peers_confirmed).toBe(0);
      expect(c1.node(1).log).toMatch(/write quorum below majority/);
    } finally {
      await c1.destroy();
    }
  });
});

describe('kill -9 in the middle of a create', () => {
  it('coordinator killed after prepare: after restart the repo is on no node', async () => {
    const c = await TestCluster.start({
      nodes: 3,
      nodeEnv: { 'node-1': { GIT_REPLICATION_FAILPOINTS: 'coordinator.afterPrepare=crash' } },
    });
    try {
      const res = c.api(1, 'POST', '/repos', { repo_id: 'acme/half' }).catch(() => null);
      await c.exited(1);
      expect(await res).toBeNull();
      await c.restart(1, { GIT_REPLICATION_FAILPOINTS: '' });
      await waitFor(
        async () => {
          const left = await Promise.all([1, 2, 3].map((i) => leftovers(c.node(i).dataDir)));
          return left.every((l) => l.length === 0);
        },
        20_000,
        'prepared repos aborted',
      );
      for (const i of [1, 2, 3]) {
        expect(existsSync(c.replicaPath(i, 'acme/half'))).toBe(false);
        expect((await c.api(i, 'GET', '/repos/acme/half')).status).toBe(404);
      }
    } finally {
      await c.destroy();
    }
  });

  it('coordinator killed after the decision: after restart the repo is on every node', async () => {
    const c = await TestCluster.start({
      nodes: 3,
      nodeEnv: { 'node-1': { GIT_REPLICATION_FAILPOINTS: 'coordinator.afterDecision=crash' } },
    });
    try {
      void c.api(1, 'POST', '/repos', { repo_id: 'acme/decided' }).catch(() => null);
      await c.exited(1);
      await c.restart(1, { GIT_REPLICATION_FAILPOINTS: '' });
      await c.waitInSync('acme/decided', 2);
      for (const i of [1, 2, 3]) expect(await isBare(c.replicaPath(i, 'acme/decided'))).toBe(true);
    } finally {
      await c.destroy();
    }
  });

  it('participant killed after prepare: the create commits on the others and the node catches up', async () => {
    const c = await TestCluster.start({
      nodes: 3,
      nodeEnv: { 'node-3': { GIT_REPLICATION_FAILPOINTS: 'participant.afterPrepare=crash' } },
    });
    try {
      const r = await c.api(1, 'POST', '/repos', { repo_id: 'acme/survivor' });
      expect(r.status).toBe(201);
      await c.exited(3);
      await c.restart(3, { GIT_REPLICATION_FAILPOINTS: '' });
      await c.waitInSync('acme/survivor');
      expect(await isBare(c.replicaPath(3, 'acme/survivor'))).toBe(true);
      expect(await leftovers(c.node(3).dataDir)).toEqual([]);
    } finally {
      await c.destroy();
    }
  });
});

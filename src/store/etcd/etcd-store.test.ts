import { randomUUID } from 'node:crypto';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipWithoutEtcd, startEtcd, startEtcdCluster, type EtcdCluster, type EtcdHandle } from '../../../test/helpers/etcd.js';
import { StoreUnavailableError } from '../../domain/errors.js';
import { storeContract } from '../contract.js';
import type { RepoRecord } from '../types.js';
import { EtcdStore } from './etcd-store.js';

function record(repoId: string): RepoRecord {
  return {
    repoId,
    incarnation: randomUUID(),
    replicas: ['n1', 'n2', 'n3'],
    generation: 0,
    checksum: 'c0',
    createdAt: '2024-01-01T00:00:00.000Z',
  };
}

/** rejection resolves with what `p` rejects with, and how long that took. */
async function rejection(p: Promise<unknown>): Promise<{ err: unknown; ms: number }> {
  const started = Date.now();
  const err = await p.then(
    () => new Error('resolved, expected a rejection'),
    (e: unknown) => e,
  );
  return { err, ms: Date.now() - started };
}

describe.skipIf(skipWithoutEtcd())('EtcdStore', () => {
  let etcd: EtcdHandle | undefined;

  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd?.cleanup();
  });

  const running = (): EtcdHandle => {
    if (!etcd) throw new Error('etcd did not start');
    return etcd;
  };

  storeContract('etcd', async () => {
    // A fresh prefix per test keeps tests apart on one etcd.
    const store = new EtcdStore({ hosts: [running().url], prefix: `/contract-${randomUUID()}/` });
    return {
      store,
      // A crash, not a clean stop: what was acknowledged must survive it.
      restart: async () => {
        await running().kill();
        await running().restart();
      },
      down: () => running().kill(),
      up: () => running().restart(),
      cleanup: () => store.close(),
    };
  });

  it('lays keys out as the data model says, with leases on registrations and locks', async () => {
    const prefix = `/layout-${randomUUID()}/`;
    const store = new EtcdStore({ hosts: [running().url], prefix });
    const raw = new Etcd3({ hosts: running().url });
    try {
      const r = record('acme/app');
      await store.registerNode({ id: 'n1', url: 'http://n1.test', version: '0.1.0', startedAt: 'x' }, 10_000);
      expect((await store.commitCreate({ txnId: 't1', coordinator: 'n1', record: r })).written).toBe(true);
      expect(
        await store.confirmReplica({ repoId: r.repoId, nodeId: 'n1', incarnation: r.incarnation, generation: 0, checksum: 'c0' }),
      ).toBe(true);
      const lock = await store.acquireLock(r.repoId, 'n1', 10_000);
      await store.setMetaIfAbsent('peer_secret', 's');

      const keys = (await raw.getAll().prefix(prefix).keys()).map((k) => k.slice(prefix.length)).sort();
      expect(keys).toEqual([
        'locks/acme/app',
        'meta/fencing_token',
        'meta/peer_secret',
        'nodes-known/n1',
        'nodes/n1',
        'replicas/acme/app/n1',
        'repos/acme/app',
        'txns/t1',
      ]);
      expect(await raw.get(`${prefix}meta/fencing_token`).string()).toBe(String(lock!.token));

      const leaseOf = async (key: string): Promise<string> => (await raw.get(key).exec()).kvs[0]!.lease;
      expect(await leaseOf(`${prefix}nodes/n1`)).not.toBe('0');
      expect(await leaseOf(`${prefix}locks/acme/app`)).not.toBe('0');
      expect(await leaseOf(`${prefix}nodes-known/n1`)).toBe('0');
      expect(await leaseOf(`${prefix}repos/acme/app`)).toBe('0');

      // A released lock and an unregistered node take their keys (and leases) with them.
      await store.releaseLock(r.repoId, lock!.token);
      await store.unregisterNode('n1');
      expect(await raw.get(`${prefix}locks/acme/app`).exists()).toBe(false);
      expect(await raw.get(`${prefix}nodes/n1`).exists()).toBe(false);
      expect(await raw.get(`${prefix}nodes-known/n1`).exists()).toBe(true);
    } finally {
      raw.close();
      await store.close();
    }
  });

  it('a renewal applied whose answer was lost keeps its lock: the lease the retry reuses is not revoked as the old one', async () => {
    const store = new EtcdStore({ hosts: [running().url], prefix: `/lost-answer-${randomUUID()}/` });
    try {
      const lock = await store.acquireLock('acme/app', 'n1', 5_000);
      // The first write of the renewal is applied, and its answer comes back as a failed
      // compare: what etcd3's retry of a call whose answer was lost returns.
      const kv = (store as unknown as { client: { kv: { txn: (req: { success?: unknown[] }) => Promise<{ succeeded: boolean }> } } }).client
        .kv;
      const real = kv.txn.bind(kv);
      let lost = false;
      kv.txn = async (req) => {
        const res = await real(req);
        if (!lost && (req.success ?? []).some((op) => 'request_put' in (op as object))) {
          lost = true;
          return { ...res, succeeded: false };
        }
        return res;
      };
      expect(await store.renewLock('acme/app', lock!.token, 5_000)).toBe(true);
      expect(lost).toBe(true);
      // Revoking a lease in flight is not awaited by the write: give it its round of raft.
      await new Promise((r) => setTimeout(r, 500));
      expect(await store.getLock('acme/app')).toMatchObject({ holder: 'n1', token: lock!.token });
    } finally {
      await store.close();
    }
  });

  it('fails calls within the deadline while etcd is frozen, then recovers', async () => {
    const store = new EtcdStore({ hosts: [running().url], prefix: `/frozen-${randomUUID()}/`, callTimeoutMs: 1_000 });
    try {
      const r = record('acme/app');
      expect((await store.commitCreate({ txnId: 't1', coordinator: 'n1', record: r })).written).toBe(true);
      running().pause();
      try {
        const { err, ms } = await rejection(store.getRepo(r.repoId));
        expect(err).toBeInstanceOf(StoreUnavailableError);
        expect((err as Error).message).toMatch(/^coordination store unavailable: etcd at http:\/\/127\.0\.0\.1:\d+: read repo: /);
        expect(ms).toBeLessThan(4_000);
      } finally {
        running().resume();
      }
      expect(await store.getRepo(r.repoId)).toEqual(r);
    } finally {
      await store.close();
    }
  });

  it('fails fast when nothing listens at the address', async () => {
    const port = Number(new URL(running().url).port);
    // The peer port of the test etcd is not a client endpoint; port+7 is very likely closed.
    const store = new EtcdStore({ hosts: [`http://127.0.0.1:${port === 65535 ? 1 : port + 7}`], prefix: '/nobody/' });
    try {
      const { err, ms } = await rejection(store.listRepos());
      expect(err).toBeInstanceOf(StoreUnavailableError);
      expect(ms).toBeLessThan(4_000);
    } finally {
      await store.close();
    }
  });

  it('rejects calls after close with StoreUnavailableError', async () => {
    const store = new EtcdStore({ hosts: [running().url], prefix: `/closed-${randomUUID()}/` });
    await store.close();
    await expect(store.getMeta('x')).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});

describe.skipIf(skipWithoutEtcd())('EtcdStore on a 3-member etcd cluster', () => {
  let cluster: EtcdCluster | undefined;

  beforeAll(async () => {
    cluster = await startEtcdCluster(3);
  });
  afterAll(async () => {
    await cluster?.cleanup();
  });

  /** leaderIndex asks each member who leads, so the test can kill the leader, the harder case. */
  async function leaderIndex(c: EtcdCluster): Promise<number> {
    const statuses = await Promise.all(
      c.members.map(async (m) => {
        const client = new Etcd3({ hosts: m.url });
        try {
          return await client.maintenance.status();
        } finally {
          client.close();
        }
      }),
    );
    const leader = statuses[0]!.leader;
    const index = statuses.findIndex((s) => s.header.member_id === leader);
    if (index < 0) throw new Error('no member reports itself leader');
    return index;
  }

  it('keeps working through the other two members when one is killed', async () => {
    const c = cluster!;
    const store = new EtcdStore({ hosts: [...c.urls], prefix: `/cluster-${randomUUID()}/` });
    try {
      const r = record('acme/app');
      expect((await store.commitCreate({ txnId: 't1', coordinator: 'n1', record: r })).written).toBe(true);
      const lock = await store.acquireLock(r.repoId, 'n1', 30_000);
      expect(lock).not.toBeNull();

      const victim = c.members[await leaderIndex(c)]!;
      await victim.kill();

      // Every call must succeed, on whichever member answers, while a new leader is elected.
      for (let i = 0; i < 10; i++) {
        expect(await store.getRepo(r.repoId)).toMatchObject({ repoId: r.repoId });
      }
      expect(await store.getLock(r.repoId)).toEqual(lock);
      const push = await store.commitPush({
        txnId: 't2',
        repoId: r.repoId,
        coordinator: 'n1',
        incarnation: r.incarnation,
        baseGeneration: 0,
        fencingToken: lock!.token,
        newChecksum: 'c1',
      });
      expect(push).toEqual({ written: true, decision: 'commit' });
      expect(await store.acquireLock(r.repoId, 'n2', 30_000)).toBeNull();
      expect(await store.renewLock(r.repoId, lock!.token, 30_000)).toBe(true);
      await store.releaseLock(r.repoId, lock!.token);
      const next = await store.acquireLock(r.repoId, 'n2', 30_000);
      expect(next!.token).toBeGreaterThan(lock!.token);
      await store.registerNode({ id: 'n1', url: 'http://n1.test', version: '0.1.0', startedAt: 'x' }, 30_000);
      expect((await store.liveNodes()).map((n) => n.id)).toEqual(['n1']);
      expect(await store.getRepo(r.repoId)).toMatchObject({ generation: 1, checksum: 'c1' });

      // A second store that knows the dead member first still gets through.
      const deadFirst = [victim.url, ...c.urls.filter((u) => u !== victim.url)];
      const other = new EtcdStore({ hosts: deadFirst, prefix: `/cluster-other-${randomUUID()}/` });
      try {
        for (let i = 0; i < 5; i++) expect(await other.setMetaIfAbsent('k', `v${i}`)).toBe('v0');
      } finally {
        await other.close();
      }

      // The killed member rejoins and catches up.
      await victim.restart();
      const onVictim = new Etcd3({ hosts: victim.url });
      try {
        const keys = await onVictim.getAll().prefix('/cluster-').keys();
        expect(keys.length).toBeGreaterThan(0);
      } finally {
        onVictim.close();
      }
    } finally {
      await store.close();
    }
  });

  it('answers every call through the others while one member is silent (frozen: no answer, no refusal)', async () => {
    const c = cluster!;
    const leader = await leaderIndex(c);
    const victim = c.members[(leader + 1) % c.members.length]!;
    // The silent member first, so the first calls try it.
    const store = new EtcdStore({ hosts: [victim.url, ...c.urls.filter((u) => u !== victim.url)], prefix: `/silent-${randomUUID()}/` });
    try {
      const r = record('acme/silent');
      expect((await store.commitCreate({ txnId: 't1', coordinator: 'n1', record: r })).written).toBe(true);
      victim.pause();
      try {
        // Without skipping, one call in three would go to the silent member and fail at its deadline.
        for (let i = 0; i < 12; i++) expect(await store.getRepo(r.repoId)).toMatchObject({ repoId: r.repoId });
        expect((await store.commitCreate({ txnId: 't2', coordinator: 'n1', record: record('acme/silent-2') })).written).toBe(true);
      } finally {
        victim.resume();
      }
    } finally {
      await store.close();
    }
  });
});

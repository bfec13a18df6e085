import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../domain/errors.js';
import { DECOMMISSIONED_PREFIX, REBALANCE_KEY, type ClusterStore, type LockLine, type NodeInfo, type RepoRecord } from './types.js';

/**
 * StoreHarness is one opened store under test. `store` is read anew on every use, so an
 * implementation whose restart makes a new object (SqliteStore) can return it from a getter.
 */
export interface StoreHarness {
  readonly store: ClusterStore;
  /** restart stops and starts the store's backend (or reopens the store) keeping its data. */
  restart?: () => Promise<void>;
  /** down makes the backend unreachable (a crash); up brings it back with its data. */
  down?: () => Promise<void>;
  up?: () => Promise<void>;
  /** cleanup closes the store and frees what open() made. */
  cleanup: () => Promise<void>;
}

/** UNAVAILABLE_WITHIN_MS is how fast a call must fail when the store is down: fail closed, never hang. */
const UNAVAILABLE_WITHIN_MS = 8_000;

function node(id: string, url = `http://${id}.test:7000`): NodeInfo {
  return { id, url, version: '0.1.0', startedAt: '2024-01-01T00:00:00.000Z' };
}

function repo(repoId: string, replicas: string[] = ['n1', 'n2', 'n3']): RepoRecord {
  return { repoId, incarnation: randomUUID(), replicas, generation: 0, checksum: 'c0', createdAt: '2024-01-01T00:00:00.000Z' };
}

/** sleepUntil waits until the wall clock passes `t`, so expiry tests measure from when a call returned. */
async function sleepUntil(t: number): Promise<void> {
  const ms = t - Date.now();
  if (ms > 0) await sleep(ms);
}

/** eventually retries `fn` until it resolves or `ms` have passed, then rethrows its last error. */
async function eventually<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(200);
    }
  }
}

/**
 * storeContract is the behaviour every ClusterStore must show (types.ts), run against one
 * implementation: `open` is called before each test and must give a store with no data in it.
 */
export function storeContract(name: string, open: () => Promise<StoreHarness>): void {
  describe(`ClusterStore contract: ${name}`, () => {
    let h: StoreHarness;
    const s = (): ClusterStore => h.store;

    beforeEach(async () => {
      h = await open();
    });
    afterEach(async () => {
      await h.cleanup();
    });

    /** created commits a new repo and returns its record. */
    async function created(repoId = 'acme/app', replicas?: string[]): Promise<RepoRecord> {
      const r = repo(repoId, replicas);
      const res = await s().commitCreate({ txnId: randomUUID(), coordinator: 'n1', record: r });
      expect(res).toEqual({ written: true, decision: 'commit' });
      return r;
    }

    /** pushed takes the lock and commits one push from `base`, then releases the lock. */
    async function pushed(r: RepoRecord, base: number, checksum: string): Promise<void> {
      const lock = await s().acquireLock(r.repoId, 'n1', 10_000);
      expect(lock).not.toBeNull();
      const res = await s().commitPush({
        txnId: randomUUID(),
        repoId: r.repoId,
        coordinator: 'n1',
        incarnation: r.incarnation,
        baseGeneration: base,
        fencingToken: lock!.token,
        newChecksum: checksum,
      });
      expect(res).toEqual({ written: true, decision: 'commit' });
      await s().releaseLock(r.repoId, lock!.token);
    }

    describe('nodes', () => {
      it('registers, refreshes and lists nodes by id', async () => {
        await s().registerNode(node('n2'), 30_000);
        await s().registerNode(node('n1'), 30_000);
        expect(await s().liveNodes()).toEqual([node('n1'), node('n2')]);
        await s().registerNode(node('n1', 'http://moved.test:7000'), 30_000);
        expect(await s().liveNodes()).toEqual([node('n1', 'http://moved.test:7000'), node('n2')]);
        expect(await s().allNodes()).toEqual([
          { ...node('n1', 'http://moved.test:7000'), live: true },
          { ...node('n2'), live: true },
        ]);
      });

      it('lets a registration expire after its ttl and revives it on the next register', async () => {
        await s().registerNode(node('n2'), 30_000);
        await s().registerNode(node('n1'), 1_000);
        // The registration expires at most 1 s after registerNode returned.
        const registered = Date.now();
        expect((await s().liveNodes()).map((n) => n.id)).toEqual(['n1', 'n2']);
        await sleepUntil(registered + 1_000 + 100);
        expect((await s().liveNodes()).map((n) => n.id)).toEqual(['n2']);
        expect(await s().allNodes()).toEqual([
          { ...node('n1'), live: false },
          { ...node('n2'), live: true },
        ]);
        await s().registerNode(node('n1'), 30_000);
        expect((await s().liveNodes()).map((n) => n.id)).toEqual(['n1', 'n2']);
      });

      it('unregisters a node: no longer live, still known', async () => {
        await s().registerNode(node('n1'), 30_000);
        await s().registerNode(node('n2'), 30_000);
        await s().unregisterNode('n1');
        await s().unregisterNode('never-registered');
        expect(await s().liveNodes()).toEqual([node('n2')]);
        expect(await s().allNodes()).toEqual([
          { ...node('n1'), live: false },
          { ...node('n2'), live: true },
        ]);
      });
    });

    describe('repo creation and transactions', () => {
      it('creates a repo once and keeps the decision write-once', async () => {
        const r = repo('acme/app');
        const txnId = randomUUID();
        await s().beginTxn({ id: txnId, repoId: r.repoId, kind: 'create', coordinator: 'n1', baseGeneration: 0, fencingToken: 0 });
        expect(await s().getTxn(txnId)).toEqual({
          id: txnId,
          repoId: r.repoId,
          kind: 'create',
          coordinator: 'n1',
          baseGeneration: 0,
          fencingToken: 0,
          decision: null,
          decidedAt: null,
        });

        expect(await s().commitCreate({ txnId, coordinator: 'n1', record: r })).toEqual({ written: true, decision: 'commit' });
        expect(await s().getRepo(r.repoId)).toEqual(r);
        const txn = await s().getTxn(txnId);
        expect(txn).toMatchObject({ id: txnId, repoId: r.repoId, kind: 'create', coordinator: 'n1', decision: 'commit' });
        expect(typeof txn?.decidedAt).toBe('string');

        // The same txn again, or an abort of it, returns the standing decision and changes nothing.
        expect(await s().commitCreate({ txnId, coordinator: 'n1', record: repo('acme/app') })).toEqual({
          written: false,
          decision: 'commit',
          reason: 'decided',
        });
        expect(await s().abortTxn(txnId)).toEqual({ written: false, decision: 'commit', reason: 'decided' });
        expect(await s().getTxn(txnId)).toEqual(txn);
        // A second creation of the same repo by another txn fails on 'exists'.
        expect(await s().commitCreate({ txnId: randomUUID(), coordinator: 'n2', record: repo('acme/app') })).toEqual({
          written: false,
          decision: null,
          reason: 'exists',
        });
        expect(await s().getRepo(r.repoId)).toEqual(r);
      });

      it('commitCreate without beginTxn records the txn', async () => {
        const r = repo('acme/app');
        const txnId = randomUUID();
        expect(await s().commitCreate({ txnId, coordinator: 'n9', record: r })).toEqual({ written: true, decision: 'commit' });
        expect(await s().getTxn(txnId)).toMatchObject({
          id: txnId,
          repoId: 'acme/app',
          kind: 'create',
          coordinator: 'n9',
          decision: 'commit',
        });
      });

      it('reads and lists repos sorted by id', async () => {
        expect(await s().getRepo('acme/none')).toBeNull();
        expect(await s().listRepos()).toEqual([]);
        const b = await created('acme/b-c');
        const a = await created('acme/b');
        const z = await created('zed/a');
        expect(await s().listRepos()).toEqual([a, b, z]);
      });

      it('lists repos a page at a time, after a given id', async () => {
        expect(await s().listReposPage('', 10)).toEqual([]);
        const b = await created('acme/b');
        const bc = await created('acme/b-c');
        const z = await created('zed/a');
        expect(await s().listReposPage('', 2)).toEqual([b, bc]);
        expect(await s().listReposPage('acme/b', 2)).toEqual([bc, z]);
        expect(await s().listReposPage('acme/b-c', 2)).toEqual([z]);
        expect(await s().listReposPage('zed/a', 2)).toEqual([]);
        // An id between two repos (deleted since, or never there) starts after where it would be.
        expect(await s().listReposPage('acme/c', 5)).toEqual([z]);
      });

      it("counts an owner's repos, and only theirs", async () => {
        expect(await s().countRepos('acme')).toBe(0);
        await created('acme/a');
        await created('acme/b.c');
        await created('acme-x/a');
        await created('acme.x/a');
        await created('acm/a');
        await created('acme0/a');
        expect(await s().countRepos('acme')).toBe(2);
        expect(await s().countRepos('acme-x')).toBe(1);
        expect(await s().countRepos('acm')).toBe(1);
        expect(await s().countRepos('ac')).toBe(0);
      });

      it('keeps getTxn null for an unknown txn and beginTxn write-once', async () => {
        expect(await s().getTxn('nope')).toBeNull();
        const id = randomUUID();
        await s().beginTxn({ id, repoId: 'acme/app', kind: 'push', coordinator: 'n1', baseGeneration: 3, fencingToken: 7 });
        await s().beginTxn({ id, repoId: 'acme/other', kind: 'delete', coordinator: 'n2', baseGeneration: 9, fencingToken: 9 });
        expect(await s().getTxn(id)).toMatchObject({
          repoId: 'acme/app',
          kind: 'push',
          coordinator: 'n1',
          baseGeneration: 3,
          fencingToken: 7,
          decision: null,
        });
      });

      it('aborts only a txn with no decision', async () => {
        const id = randomUUID();
        await s().beginTxn({ id, repoId: 'acme/app', kind: 'push', coordinator: 'n1', baseGeneration: 0, fencingToken: 1 });
        expect(await s().abortTxn(id)).toEqual({ written: true, decision: 'abort' });
        expect(await s().getTxn(id)).toMatchObject({ id, repoId: 'acme/app', kind: 'push', coordinator: 'n1', decision: 'abort' });
        expect(await s().abortTxn(id)).toEqual({ written: false, decision: 'abort', reason: 'decided' });

        // An abort decided first wins over a commit that comes later.
        const r = await created();
        const lock = await s().acquireLock(r.repoId, 'n1', 10_000);
        const late = await s().commitPush({
          txnId: id,
          repoId: r.repoId,
          coordinator: 'n1',
          incarnation: r.incarnation,
          baseGeneration: 0,
          fencingToken: lock!.token,
          newChecksum: 'c1',
        });
        expect(late).toEqual({ written: false, decision: 'abort', reason: 'decided' });
        expect((await s().getRepo(r.repoId))?.generation).toBe(0);

        // Aborting a txn the store never saw records the abort, so a late commit cannot win.
        const unknown = randomUUID();
        expect(await s().abortTxn(unknown)).toEqual({ written: true, decision: 'abort' });
        expect((await s().getTxn(unknown))?.decision).toBe('abort');
      });
    });

    describe('commitPush', () => {
      it('commits under every compare and refuses when one fails', async () => {
        const r = await created();
        const base = { repoId: r.repoId, coordinator: 'n1', incarnation: r.incarnation, baseGeneration: 0, newChecksum: 'c1' };

        const noLock = await s().commitPush({ ...base, txnId: randomUUID(), fencingToken: 1 });
        expect(noLock).toEqual({ written: false, decision: null, reason: 'lock' });

        const lock = await s().acquireLock(r.repoId, 'n1', 10_000);
        expect(lock).not.toBeNull();
        const token = lock!.token;
        expect(await s().commitPush({ ...base, txnId: randomUUID(), fencingToken: token + 1 })).toEqual({
          written: false,
          decision: null,
          reason: 'lock',
        });
        expect(await s().commitPush({ ...base, txnId: randomUUID(), fencingToken: token, baseGeneration: 1 })).toEqual({
          written: false,
          decision: null,
          reason: 'generation',
        });
        expect(await s().commitPush({ ...base, txnId: randomUUID(), fencingToken: token, incarnation: 'other' })).toEqual({
          written: false,
          decision: null,
          reason: 'incarnation',
        });
        expect(await s().commitPush({ ...base, txnId: randomUUID(), fencingToken: token, repoId: 'acme/none' })).toEqual({
          written: false,
          decision: null,
          reason: 'missing',
        });
        // Refused compares write no decision.
        const refused = randomUUID();
        await s().beginTxn({ id: refused, repoId: r.repoId, kind: 'push', coordinator: 'n1', baseGeneration: 5, fencingToken: token });
        expect((await s().commitPush({ ...base, txnId: refused, fencingToken: token, baseGeneration: 5 })).reason).toBe('generation');
        expect((await s().getTxn(refused))?.decision).toBeNull();

        const txnId = randomUUID();
        await s().beginTxn({ id: txnId, repoId: r.repoId, kind: 'push', coordinator: 'n1', baseGeneration: 0, fencingToken: token });
        expect(await s().commitPush({ ...base, txnId, fencingToken: token })).toEqual({ written: true, decision: 'commit' });
        expect(await s().getRepo(r.repoId)).toEqual({ ...r, generation: 1, checksum: 'c1' });
        expect(await s().getTxn(txnId)).toMatchObject({ decision: 'commit', baseGeneration: 0, fencingToken: token, kind: 'push' });

        // Repeating the commit is answered from the decision, not applied twice.
        expect(await s().commitPush({ ...base, txnId, fencingToken: token })).toEqual({
          written: false,
          decision: 'commit',
          reason: 'decided',
        });
        // A second push from the old base loses on the generation.
        expect(await s().commitPush({ ...base, txnId: randomUUID(), fencingToken: token })).toEqual({
          written: false,
          decision: null,
          reason: 'generation',
        });
        expect(await s().commitPush({ ...base, txnId: randomUUID(), fencingToken: token, baseGeneration: 1, newChecksum: 'c2' })).toEqual({
          written: true,
          decision: 'commit',
        });
        expect(await s().getRepo(r.repoId)).toMatchObject({ generation: 2, checksum: 'c2' });
      });

      it('refuses a commit under an expired lock', async () => {
        const r = await created();
        const lock = await s().acquireLock(r.repoId, 'n1', 300);
        await sleepUntil(Date.now() + 300 + 100);
        const res = await s().commitPush({
          txnId: randomUUID(),
          repoId: r.repoId,
          coordinator: 'n1',
          incarnation: r.incarnation,
          baseGeneration: 0,
          fencingToken: lock!.token,
          newChecksum: 'c1',
        });
        expect(res).toEqual({ written: false, decision: null, reason: 'lock' });
        expect((await s().getRepo(r.repoId))?.generation).toBe(0);
      });

      it('lets exactly one of many concurrent pushes from one base commit', async () => {
        const r = await created();
        const lock = await s().acquireLock(r.repoId, 'n1', 10_000);
        const results = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            s().commitPush({
              txnId: randomUUID(),
              repoId: r.repoId,
              coordinator: 'n1',
              incarnation: r.incarnation,
              baseGeneration: 0,
              fencingToken: lock!.token,
              newChecksum: `c${i}`,
            }),
          ),
        );
        expect(results.filter((x) => x.written)).toHaveLength(1);
        expect(results.filter((x) => !x.written).every((x) => x.reason === 'generation')).toBe(true);
        expect((await s().getRepo(r.repoId))?.generation).toBe(1);
      });
    });

    describe('commitDelete', () => {
      it('removes the repo and its replica records under the same compares', async () => {
        const r = await created('acme/app', ['n1', 'n2']);
        const other = await created('acme/other', ['n1']);
        expect(
          await s().confirmReplica({ repoId: r.repoId, nodeId: 'n1', incarnation: r.incarnation, generation: 0, checksum: 'c0' }),
        ).toBe(true);
        expect(
          await s().confirmReplica({ repoId: r.repoId, nodeId: 'n2', incarnation: r.incarnation, generation: 0, checksum: 'c0' }),
        ).toBe(true);
        expect(
          await s().confirmReplica({ repoId: other.repoId, nodeId: 'n1', incarnation: other.incarnation, generation: 0, checksum: 'c0' }),
        ).toBe(true);

        const lock = await s().acquireLock(r.repoId, 'n1', 10_000);
        // n3 waits in the repo's lock line; the delete takes the line with the repo.
        expect(await s().acquireLock(r.repoId, 'n3', 10_000, { ttlMs: 60_000 })).toBeNull();
        const base = { repoId: r.repoId, coordinator: 'n1', incarnation: r.incarnation, baseGeneration: 0, fencingToken: lock!.token };
        expect(await s().commitDelete({ ...base, txnId: randomUUID(), incarnation: 'other' })).toEqual({
          written: false,
          decision: null,
          reason: 'incarnation',
        });
        expect(await s().commitDelete({ ...base, txnId: randomUUID(), baseGeneration: 3 })).toEqual({
          written: false,
          decision: null,
          reason: 'generation',
        });
        expect(await s().commitDelete({ ...base, txnId: randomUUID(), fencingToken: 0 })).toEqual({
          written: false,
          decision: null,
          reason: 'lock',
        });

        const txnId = randomUUID();
        expect(await s().commitDelete({ ...base, txnId })).toEqual({ written: true, decision: 'commit' });
        expect(await s().getRepo(r.repoId)).toBeNull();
        expect(await s().getReplicas(r.repoId)).toEqual([]);
        expect((await s().replicasOnNode('n1')).map((x) => x.repoId)).toEqual(['acme/other']);
        expect(await s().getTxn(txnId)).toMatchObject({ kind: 'delete', decision: 'commit' });
        expect(await s().commitDelete({ ...base, txnId })).toEqual({ written: false, decision: 'commit', reason: 'decided' });
        expect(await s().commitDelete({ ...base, txnId: randomUUID() })).toEqual({ written: false, decision: null, reason: 'missing' });

        // A re-created repo starts with no replica records and a new incarnation.
        const again = await created('acme/app', ['n1']);
        expect(again.incarnation).not.toBe(r.incarnation);
        expect(await s().getReplicas('acme/app')).toEqual([]);
        await s().releaseLock(r.repoId, lock!.token);
        expect(await s().acquireLock('acme/app', 'n9', 10_000)).toMatchObject({ holder: 'n9' });
      });
    });

    describe('locks and fencing tokens', () => {
      it('excludes a second holder, ignores a wrong release and frees on the right one', async () => {
        expect(await s().getLock('acme/app')).toBeNull();
        const a = await s().acquireLock('acme/app', 'n1', 10_000);
        expect(a).toMatchObject({ repoId: 'acme/app', holder: 'n1' });
        expect(a!.token).toBeGreaterThan(0);
        expect(await s().getLock('acme/app')).toEqual(a);
        expect(await s().acquireLock('acme/app', 'n2', 10_000)).toBeNull();
        expect(await s().acquireLock('acme/app', 'n1', 10_000)).toBeNull();

        await s().releaseLock('acme/app', a!.token + 100);
        expect(await s().getLock('acme/app')).toEqual(a);
        await s().releaseLock('acme/app', a!.token);
        expect(await s().getLock('acme/app')).toBeNull();
        await s().releaseLock('acme/app', a!.token);

        const b = await s().acquireLock('acme/app', 'n2', 10_000);
        expect(b!.token).toBeGreaterThan(a!.token);
        // A release by the old token after someone else took the lock does not free it.
        await s().releaseLock('acme/app', a!.token);
        expect(await s().getLock('acme/app')).toEqual(b);
      });

      it('expires a lock after its ttl; renewal then fails and a new holder gets a larger token', async () => {
        const a = await s().acquireLock('acme/app', 'n1', 400);
        expect(a).not.toBeNull();
        await sleepUntil(Date.now() + 400 + 100);
        expect(await s().getLock('acme/app')).toBeNull();
        expect(await s().renewLock('acme/app', a!.token, 10_000)).toBe(false);
        const b = await s().acquireLock('acme/app', 'n2', 10_000);
        expect(b).toMatchObject({ holder: 'n2' });
        expect(b!.token).toBeGreaterThan(a!.token);
        expect(await s().renewLock('acme/app', a!.token, 10_000)).toBe(false);
        expect(await s().getLock('acme/app')).toEqual(b);
      });

      it('renews a held lock past its first expiry', async () => {
        const a = await s().acquireLock('acme/app', 'n1', 1_000);
        const acquired = Date.now();
        await sleep(200);
        expect(await s().renewLock('acme/app', a!.token, 1_500)).toBe(true);
        expect(await s().renewLock('acme/app', a!.token + 1, 1_500)).toBe(false);
        const renewed = await s().getLock('acme/app');
        expect(renewed).toMatchObject({ holder: 'n1', token: a!.token });
        expect(renewed!.expiresAt).toBeGreaterThan(a!.expiresAt);
        // Past the first expiry; the renewal (made after `acquired`) runs 1.5 s from then.
        await sleepUntil(acquired + 1_000 + 100);
        expect(await s().getLock('acme/app')).toMatchObject({ holder: 'n1', token: a!.token });
        expect(await s().acquireLock('acme/app', 'n2', 10_000)).toBeNull();
      });

      it('hands out strictly increasing tokens across repos', async () => {
        const tokens: number[] = [];
        for (const repoId of ['acme/a', 'acme/b', 'acme/a', 'zed/c', 'acme/b']) {
          const lock = await s().acquireLock(repoId, 'n1', 10_000);
          expect(lock).not.toBeNull();
          tokens.push(lock!.token);
          await s().releaseLock(repoId, lock!.token);
        }
        for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
      });

      it('gives exactly one of many concurrent acquirers the lock', async () => {
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s().acquireLock('acme/app', `n${i}`, 10_000)));
        const winners = results.filter((x) => x !== null);
        expect(winners).toHaveLength(1);
        expect(await s().getLock('acme/app')).toEqual(winners[0]);
      });

      it('takes a lock and reads the repo state in one call; null while another holds it', async () => {
        const r = await created();
        await pushed(r, 0, 'c1');
        await s().confirmReplica({ repoId: r.repoId, nodeId: 'n2', incarnation: r.incarnation, generation: 1, checksum: 'c1' });
        const before = await s().acquireLock('acme/other', 'n9', 10_000);
        const got = await s().acquireLockAndRead(r.repoId, 'n1', 10_000);
        expect(got?.lock).toMatchObject({ repoId: r.repoId, holder: 'n1' });
        expect(got!.lock.token).toBeGreaterThan(before!.token);
        expect(got?.state?.repo).toMatchObject({ repoId: r.repoId, generation: 1, checksum: 'c1' });
        expect(got?.state?.replicas.map((x) => [x.nodeId, x.generation])).toEqual([['n2', 1]]);
        expect(await s().getLock(r.repoId)).toMatchObject({ holder: 'n1', token: got!.lock.token });
        expect(await s().acquireLockAndRead(r.repoId, 'n2', 10_000)).toBeNull();
        await s().releaseLock(r.repoId, got!.lock.token);
        const none = await s().acquireLockAndRead('acme/absent', 'n1', 10_000);
        expect(none?.state).toBeNull();
        expect(none!.lock.token).toBeGreaterThan(got!.lock.token);
      });

      it('hands a free lock to waiters in the order they lined up, across holders; a caller without a line waits behind them', async () => {
        const line = (): LockLine => ({ ttlMs: 10_000 });
        const a = await s().acquireLock('acme/app', 'n1', 10_000);
        const n2 = line();
        expect(await s().acquireLock('acme/app', 'n2', 10_000, n2)).toBeNull();
        expect(n2.ahead).toBe(0);
        await sleep(5);
        const n3 = line();
        expect(await s().acquireLockAndRead('acme/app', 'n3', 10_000, n3)).toBeNull();
        expect(n3.ahead).toBe(1);
        await s().releaseLock('acme/app', a!.token);
        // Free, but n2 came first: n3, n1 (back for more) and a caller without a line are refused.
        expect(await s().acquireLock('acme/app', 'n3', 10_000, n3)).toBeNull();
        expect(n3.ahead).toBe(1);
        // Entries of one millisecond go by holder id (n1 before n3): n1 lines up a moment later.
        await sleep(5);
        const n1 = line();
        expect(await s().acquireLock('acme/app', 'n1', 10_000, n1)).toBeNull();
        expect(n1.ahead).toBe(2);
        expect(await s().acquireLock('acme/app', 'n9', 10_000)).toBeNull();
        expect(await s().getLock('acme/app')).toBeNull();
        const b = await s().acquireLock('acme/app', 'n2', 10_000, n2);
        expect(b).toMatchObject({ holder: 'n2' });
        expect(b!.token).toBeGreaterThan(a!.token);
        await s().releaseLock('acme/app', b!.token);
        // n2 left the line when it took the lock: n3 is first now, then n1.
        expect(await s().acquireLock('acme/app', 'n1', 10_000, n1)).toBeNull();
        expect(n1.ahead).toBe(1);
        const c = await s().acquireLockAndRead('acme/app', 'n3', 10_000, n3);
        expect(c?.lock).toMatchObject({ holder: 'n3' });
        await s().releaseLock('acme/app', c!.lock.token);
        expect(await s().acquireLock('acme/app', 'n1', 10_000, n1)).toMatchObject({ holder: 'n1' });
      });

      it('lets a lock line entry lapse when it is not renewed, and removes one that is left', async () => {
        const a = await s().acquireLock('acme/app', 'n1', 10_000);
        expect(await s().acquireLock('acme/app', 'n2', 10_000, { ttlMs: 300 })).toBeNull();
        expect(await s().acquireLock('acme/app', 'n3', 10_000, { ttlMs: 10_000 })).toBeNull();
        await s().releaseLock('acme/app', a!.token);
        expect(await s().acquireLock('acme/app', 'n3', 10_000)).toBeNull();
        await sleepUntil(Date.now() + 300 + 100);
        // n2's entry lapsed: n3 is first; it leaves the line and a caller without one gets the lock.
        const n1: LockLine = { ttlMs: 10_000 };
        expect(await s().acquireLock('acme/app', 'n1', 10_000, n1)).toBeNull();
        expect(n1.ahead).toBe(1);
        await s().leaveLockLine('acme/app', 'n3');
        await s().leaveLockLine('acme/app', 'n1');
        expect(await s().acquireLock('acme/app', 'n9', 10_000)).toMatchObject({ holder: 'n9' });
      });

      it('gives concurrent acquirers of different repos distinct tokens', async () => {
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => s().acquireLock(`acme/r${i}`, 'n1', 10_000)));
        const tokens = results.map((x) => x!.token);
        expect(new Set(tokens).size).toBe(tokens.length);
      });
    });

    describe('replica records', () => {
      it('confirms a replica, never over a newer confirmation or for a wrong incarnation', async () => {
        const r = await created();
        await pushed(r, 0, 'c1');
        await pushed(r, 1, 'c2');
        const confirm = { repoId: r.repoId, nodeId: 'n1', incarnation: r.incarnation };

        expect(await s().confirmReplica({ ...confirm, generation: 3, checksum: 'c3' })).toBe(false);
        expect(await s().confirmReplica({ ...confirm, incarnation: 'other', generation: 1, checksum: 'c1' })).toBe(false);
        expect(await s().confirmReplica({ ...confirm, repoId: 'acme/none', generation: 0, checksum: 'c0' })).toBe(false);
        expect(await s().getReplicas(r.repoId)).toEqual([]);

        expect(await s().confirmReplica({ ...confirm, generation: 2, checksum: 'c2' })).toBe(true);
        expect(await s().confirmReplica({ ...confirm, generation: 1, checksum: 'c1' })).toBe(false);
        expect(await s().confirmReplica({ ...confirm, generation: 2, checksum: 'c2' })).toBe(true);
        const [rec] = await s().getReplicas(r.repoId);
        expect(rec).toMatchObject({
          repoId: r.repoId,
          nodeId: 'n1',
          incarnation: r.incarnation,
          generation: 2,
          checksum: 'c2',
          state: 'in_sync',
        });
        expect(typeof rec?.updatedAt).toBe('string');
      });

      it('confirms a batch in one call: each confirmation on its own compare, the lock released, settings written', async () => {
        const r = await created();
        await pushed(r, 0, 'c1');
        // n3 already confirmed a newer generation than the batch says; n4 is of another incarnation.
        const confirm = (nodeId: string, generation: number, incarnation = r.incarnation) => ({
          repoId: r.repoId,
          nodeId,
          incarnation,
          generation,
          checksum: `c${generation}`,
        });
        await pushed(r, 1, 'c2');
        expect(await s().confirmReplica(confirm('n3', 2))).toBe(true);
        const lock = await s().acquireLock(r.repoId, 'n1', 10_000);
        const written = await s().confirmReplicas({
          confirmations: [confirm('n1', 1), confirm('n2', 1), confirm('n3', 1), confirm('n4', 1, 'other')],
          release: { repoId: r.repoId, token: lock!.token },
          meta: [
            { key: 'audit/a', value: 'one' },
            { key: 'audit/b', value: 'two' },
          ],
        });
        expect(written).toEqual([true, true, false, false]);
        expect((await s().getReplicas(r.repoId)).map((x) => [x.nodeId, x.generation, x.state])).toEqual([
          ['n1', 1, 'in_sync'],
          ['n2', 1, 'in_sync'],
          ['n3', 2, 'in_sync'],
        ]);
        expect(await s().getLock(r.repoId)).toBeNull();
        expect(await s().listMeta('audit/')).toEqual([
          { key: 'audit/a', value: 'one' },
          { key: 'audit/b', value: 'two' },
        ]);
      });

      it('leaves a lock another holder took alone when a batch releases an older token', async () => {
        const r = await created();
        const first = await s().acquireLock(r.repoId, 'n1', 10_000);
        await s().releaseLock(r.repoId, first!.token);
        const second = await s().acquireLock(r.repoId, 'n2', 10_000);
        expect(await s().confirmReplicas({ confirmations: [], release: { repoId: r.repoId, token: first!.token } })).toEqual([]);
        expect(await s().getLock(r.repoId)).toMatchObject({ holder: 'n2', token: second!.token });
        await expect(
          s().confirmReplicas({
            confirmations: [0, 0].map(() => ({
              repoId: r.repoId,
              nodeId: 'n1',
              incarnation: r.incarnation,
              generation: 0,
              checksum: 'c0',
            })),
          }),
        ).rejects.toThrow(/twice/);
      });

      it('trims settings under a prefix to the last few by key, in one call, leaving other prefixes alone', async () => {
        for (const k of ['c', 'a', 'e', 'b', 'd']) await s().setMeta(`audit/${k}`, k);
        await s().setMeta('audits', 'other prefix');
        await s().setMeta('other/a', 'x');
        expect(await s().trimMeta('audit/', 2)).toBe(3);
        expect(await s().listMeta('audit/')).toEqual([
          { key: 'audit/d', value: 'd' },
          { key: 'audit/e', value: 'e' },
        ]);
        expect(await s().trimMeta('audit/', 2)).toBe(0);
        expect(await s().trimMeta('audit/', 5)).toBe(0);
        expect(await s().trimMeta('audit/', 0)).toBe(2);
        expect(await s().listMeta('audit/')).toEqual([]);
        expect(await s().getMeta('audits')).toBe('other prefix');
        expect(await s().getMeta('other/a')).toBe('x');
      });

      it('marks a replica unless it confirmed a newer generation, creating a missing record', async () => {
        const r = await created();
        await pushed(r, 0, 'c1');

        expect(await s().markReplica(r.repoId, 'n3', r.incarnation, 'missing', 1)).toBe(true);
        expect(await s().getReplicas(r.repoId)).toEqual([
          expect.objectContaining({ nodeId: 'n3', incarnation: r.incarnation, generation: -1, state: 'missing' }),
        ]);
        expect(await s().markReplica(r.repoId, 'n3', 'other', 'stale', 1)).toBe(false);
        expect(await s().markReplica('acme/none', 'n3', r.incarnation, 'stale', 1)).toBe(false);

        expect(
          await s().confirmReplica({ repoId: r.repoId, nodeId: 'n1', incarnation: r.incarnation, generation: 1, checksum: 'c1' }),
        ).toBe(true);
        expect(await s().markReplica(r.repoId, 'n1', r.incarnation, 'stale', 1)).toBe(false);
        expect((await s().getReplicas(r.repoId)).find((x) => x.nodeId === 'n1')).toMatchObject({ state: 'in_sync', generation: 1 });
        expect(await s().markReplica(r.repoId, 'n1', r.incarnation, 'stale', 2)).toBe(true);
        expect((await s().getReplicas(r.repoId)).find((x) => x.nodeId === 'n1')).toMatchObject({
          state: 'stale',
          generation: 1,
          checksum: 'c1',
        });
        expect(await s().markReplica(r.repoId, 'n1', r.incarnation, 'repairing', 2)).toBe(true);
        expect((await s().getReplicas(r.repoId)).map((x) => [x.nodeId, x.state])).toEqual([
          ['n1', 'repairing'],
          ['n3', 'missing'],
        ]);
      });

      it('lists replica records by repo and by node', async () => {
        const a = await created('acme/b', ['n1', 'n2']);
        const b = await created('acme/b-c', ['n1']);
        for (const [r, n] of [
          [a, 'n2'],
          [a, 'n1'],
          [b, 'n1'],
        ] as const) {
          expect(await s().confirmReplica({ repoId: r.repoId, nodeId: n, incarnation: r.incarnation, generation: 0, checksum: 'c0' })).toBe(
            true,
          );
        }
        expect((await s().getReplicas('acme/b')).map((x) => x.nodeId)).toEqual(['n1', 'n2']);
        expect((await s().getReplicas('acme/b-c')).map((x) => x.nodeId)).toEqual(['n1']);
        // getRepoState reads the record and its replicas (not those of acme/b-c, whose key extends acme/b's).
        expect(await s().getRepoState('acme/b')).toEqual({ repo: await s().getRepo('acme/b'), replicas: await s().getReplicas('acme/b') });
        expect((await s().getRepoState('acme/b-c'))?.replicas.map((x) => x.nodeId)).toEqual(['n1']);
        expect(await s().getRepoState('acme/none')).toBeNull();
        expect((await s().replicasOnNode('n1')).map((x) => x.repoId)).toEqual(['acme/b', 'acme/b-c']);
        expect(await s().replicasOnNode('n9')).toEqual([]);
      });

      it('replaces the replica set at a known incarnation and drops records of removed nodes', async () => {
        const r = await created('acme/app', ['n1', 'n2']);
        for (const n of ['n1', 'n2']) {
          expect(await s().confirmReplica({ repoId: r.repoId, nodeId: n, incarnation: r.incarnation, generation: 0, checksum: 'c0' })).toBe(
            true,
          );
        }
        expect(await s().setReplicaSet(r.repoId, 'other', ['n3'])).toBe(false);
        expect(await s().setReplicaSet('acme/none', r.incarnation, ['n3'])).toBe(false);
        expect((await s().getRepo(r.repoId))?.replicas).toEqual(['n1', 'n2']);

        expect(await s().setReplicaSet(r.repoId, r.incarnation, ['n2', 'n3'])).toBe(true);
        expect(await s().getRepo(r.repoId)).toEqual({ ...r, replicas: ['n2', 'n3'] });
        expect((await s().getReplicas(r.repoId)).map((x) => x.nodeId)).toEqual(['n2']);
        expect(await s().replicasOnNode('n1')).toEqual([]);
      });
    });

    describe('change feed', () => {
      it('names the repos whose records changed since a mark, and answers null when it cannot tell', async () => {
        const start = { mark: await s().feedMark() };
        const a = await created('acme/a', ['n1', 'n2']);
        const b = await created('acme/b', ['n1', 'n2']);
        for (const r of [a, b])
          for (const n of ['n1', 'n2'])
            await s().confirmReplica({ repoId: r.repoId, nodeId: n, incarnation: r.incarnation, generation: 0, checksum: 'c0' });
        // Creates may be named or make the store answer null (etcd: a key count moved).
        const afterCreates = await s().changesSince(start.mark);
        if (afterCreates) expect([...afterCreates.repoIds].sort()).toEqual(['acme/a', 'acme/b']);

        // Nothing changed: nothing named, whatever else the store did (heartbeats, other settings, reads).
        const quiet = { mark: await s().feedMark() };
        await s().registerNode(node('n1'), 10_000);
        await s().setMeta('audit/1', '1');
        await s().listRepos();
        const none = (await s().changesSince(quiet.mark))!;
        expect(none).toMatchObject({ repoIds: [], repos: [], replicas: [], settingsChanged: false });

        // A placement setting written or deleted: said as such, with no repo named.
        let mark = none.mark;
        for (const change of [
          () => s().setMeta(REBALANCE_KEY, '1'),
          () => s().setMeta(`${DECOMMISSIONED_PREFIX}n3`, '1'),
          () => s().deleteMeta(REBALANCE_KEY),
          () => s().deleteMeta(`${DECOMMISSIONED_PREFIX}n3`),
        ]) {
          await change();
          const answer = (await s().changesSince(mark))!;
          expect(answer).toMatchObject({ repoIds: [], settingsChanged: true });
          mark = answer.mark;
        }
        expect((await s().changesSince(mark))?.settingsChanged).toBe(false);

        // A push and its confirmations, and a replica marked stale: that repo, and only it, with
        // its records as they are now.
        const before = { mark: await s().feedMark() };
        await pushed(a, 0, 'c1');
        await s().confirmReplica({ repoId: a.repoId, nodeId: 'n1', incarnation: a.incarnation, generation: 1, checksum: 'c1' });
        await s().markReplica(a.repoId, 'n2', a.incarnation, 'stale', 1);
        const changed = (await s().changesSince(before.mark))!;
        expect(changed.repoIds).toEqual(['acme/a']);
        expect(changed.repos).toEqual([await s().getRepo(a.repoId)]);
        expect([...changed.replicas].sort((x, y) => x.nodeId.localeCompare(y.nodeId))).toEqual(await s().getReplicas(a.repoId));
        expect(changed.settingsChanged).toBe(false);
        expect((await s().changesSince(changed.mark))?.repoIds).toEqual([]);

        // Only a replica record written: that record (and, from a store that gives every record
        // of the repos it names, the others).
        await s().confirmReplica({ repoId: a.repoId, nodeId: 'n2', incarnation: a.incarnation, generation: 1, checksum: 'c1' });
        const confirmed = (await s().changesSince(changed.mark))!;
        expect(confirmed.repoIds).toEqual(['acme/a']);
        expect(confirmed.replicas.find((r) => r.nodeId === 'n2')).toMatchObject({ generation: 1, state: 'in_sync' });
        if (!confirmed.complete) expect(confirmed).toMatchObject({ repos: [], replicas: [{ nodeId: 'n2' }] });

        // The other repo's replica set changed: named from the later mark, not the earlier one's
        // answer; a dropped replica is missing from a complete answer.
        await s().setReplicaSet(b.repoId, b.incarnation, ['n1']);
        const moved = await s().changesSince(confirmed.mark);
        if (moved) expect(moved.repoIds).toEqual(['acme/b']);
        if (moved?.complete) expect(moved.replicas.map((r) => `${r.repoId}@${r.nodeId}`)).toEqual(['acme/b@n1']);

        expect(await s().changesSince('not a mark')).toBeNull();
      });
    });

    describe('meta', () => {
      it('keeps the first value written', async () => {
        expect(await s().getMeta('peer_secret')).toBeNull();
        expect(await s().setMetaIfAbsent('peer_secret', 'first')).toBe('first');
        expect(await s().setMetaIfAbsent('peer_secret', 'second')).toBe('first');
        expect(await s().getMeta('peer_secret')).toBe('first');
        const raced = await Promise.all(['a', 'b', 'c', 'd'].map((v) => s().setMetaIfAbsent('raced', v)));
        expect(new Set(raced).size).toBe(1);
        expect(await s().getMeta('raced')).toBe(raced[0]);
      });

      it('compareAndSetMeta writes or removes a setting only while it holds what the caller read', async () => {
        expect(await s().compareAndSetMeta('cas', 'x', 'y')).toBe(false);
        expect(await s().getMeta('cas')).toBeNull();
        expect(await s().compareAndSetMeta('cas', null, 'one')).toBe(true);
        expect(await s().compareAndSetMeta('cas', null, 'again')).toBe(false);
        expect(await s().compareAndSetMeta('cas', 'other', 'two')).toBe(false);
        expect(await s().compareAndSetMeta('cas', 'one', 'two')).toBe(true);
        expect(await s().getMeta('cas')).toBe('two');
        expect(await s().compareAndSetMeta('cas', 'one', null)).toBe(false);
        expect(await s().compareAndSetMeta('cas', 'two', null)).toBe(true);
        expect(await s().getMeta('cas')).toBeNull();
        // Of writers racing from one value, one wins.
        await s().setMeta('cas', 'start');
        const won = await Promise.all(['a', 'b', 'c', 'd'].map((v) => s().compareAndSetMeta('cas', 'start', v)));
        expect(won.filter(Boolean)).toHaveLength(1);
        expect(await s().getMeta('cas')).toBe(['a', 'b', 'c', 'd'][won.indexOf(true)]);
      });

      it('overwrites with setMeta and lists by prefix', async () => {
        await s().setMeta('decommissioned/n2', '1');
        await s().setMeta('decommissioned/n1', '1');
        await s().setMeta('decommissioned/n1', '2');
        await s().setMeta('decommissionedx', 'not under the prefix');
        expect(await s().listMeta('decommissioned/')).toEqual([
          { key: 'decommissioned/n1', value: '2' },
          { key: 'decommissioned/n2', value: '1' },
        ]);
        expect(await s().listMeta('nothing/')).toEqual([]);
      });

      it('prunes transaction records created before a time, and only those', async () => {
        for (let i = 0; i < 150; i++) await s().abortTxn(`old-${i}`);
        await sleep(5);
        const cut = Date.now();
        await sleep(5);
        for (let i = 0; i < 20; i++) await s().abortTxn(`new-${i}`);
        expect(await s().countTxns()).toBe(170);
        expect(await s().pruneTxns(cut)).toBe(150);
        expect(await s().countTxns()).toBe(20);
        expect(await s().getTxn('old-0')).toBeNull();
        expect((await s().getTxn('new-0'))?.decision).toBe('abort');
        expect(await s().pruneTxns(cut)).toBe(0);
      });

      it('deletes a setting, and deleting an absent one is not an error', async () => {
        await s().setMeta('grants/a/b', 'read');
        await s().deleteMeta('grants/a/b');
        await s().deleteMeta('grants/a/b');
        expect(await s().getMeta('grants/a/b')).toBeNull();
        expect(await s().listMeta('grants/')).toEqual([]);
      });
    });

    describe('durability and outages', () => {
      it('keeps every committed record across a restart', async (ctx) => {
        if (!h.restart) {
          ctx.skip();
          return;
        }
        await s().registerNode(node('n1'), 60_000);
        const r = await created();
        await pushed(r, 0, 'c1');
        expect(
          await s().confirmReplica({ repoId: r.repoId, nodeId: 'n1', incarnation: r.incarnation, generation: 1, checksum: 'c1' }),
        ).toBe(true);
        const aborted = randomUUID();
        expect((await s().abortTxn(aborted)).written).toBe(true);
        expect(await s().setMetaIfAbsent('peer_secret', 'shh')).toBe('shh');
        const lock = await s().acquireLock(r.repoId, 'n1', 60_000);
        const before = { repo: await s().getRepo(r.repoId), replicas: await s().getReplicas(r.repoId), txn: await s().getTxn(aborted) };

        await h.restart();

        expect(await s().getRepo(r.repoId)).toEqual(before.repo);
        expect(before.repo).toMatchObject({ generation: 1, checksum: 'c1' });
        expect(await s().getReplicas(r.repoId)).toEqual(before.replicas);
        expect(await s().getTxn(aborted)).toEqual(before.txn);
        expect(await s().getMeta('peer_secret')).toBe('shh');
        expect(await s().getLock(r.repoId)).toEqual(lock);
        expect((await s().allNodes()).map((n) => n.id)).toEqual(['n1']);
        const next = await s().acquireLock('acme/other', 'n1', 10_000);
        expect(next!.token).toBeGreaterThan(lock!.token);
      });

      it('fails fast with StoreUnavailableError while down and works again once back', async (ctx) => {
        const { down, up } = h;
        if (!down || !up) {
          ctx.skip();
          return;
        }
        const r = await created();
        await down();
        let isUp = false;
        try {
          const calls: Array<[string, () => Promise<unknown>]> = [
            ['getRepo', () => s().getRepo(r.repoId)],
            ['listRepos', () => s().listRepos()],
            ['acquireLock', () => s().acquireLock(r.repoId, 'n1', 10_000)],
            ['registerNode', () => s().registerNode(node('n1'), 10_000)],
            ['commitCreate', () => s().commitCreate({ txnId: randomUUID(), coordinator: 'n1', record: repo('acme/new') })],
            ['setMetaIfAbsent', () => s().setMetaIfAbsent('k', 'v')],
          ];
          for (const [what, call] of calls) {
            const started = Date.now();
            const err: unknown = await call().then(
              () => new Error(`${what} succeeded while the store was down`),
              (e: unknown) => e,
            );
            expect(err, what).toBeInstanceOf(StoreUnavailableError);
            expect(Date.now() - started, what).toBeLessThan(UNAVAILABLE_WITHIN_MS);
          }
          await up();
          isUp = true;
        } finally {
          if (!isUp) await up();
        }
        // The store reconnects by itself; a short grace covers a client still backing off.
        expect(await eventually(() => s().getRepo(r.repoId), 10_000)).toEqual(r);
        const lock = await s().acquireLock(r.repoId, 'n1', 10_000);
        expect(lock).not.toBeNull();
        const res = await s().commitPush({
          txnId: randomUUID(),
          repoId: r.repoId,
          coordinator: 'n1',
          incarnation: r.incarnation,
          baseGeneration: 0,
          fencingToken: lock!.token,
          newChecksum: 'c1',
        });
        expect(res).toEqual({ written: true, decision: 'commit' });
      });
    });
  });
}

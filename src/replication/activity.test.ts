import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Logger } from '../domain/logger.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { ClusterStore, RepoLock } from '../store/types.js';
import { LOCK_LINE_TTL_MS, mayStart, RepoActivity, type ActivityKind } from './activity.js';

const quiet = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => quiet,
} as unknown as Logger;

/** fakeLocks is the lock part of a store: one holder per repo, renewals counted. */
function fakeLocks(): { store: ClusterStore; renewals: () => number; steal: (repoId: string) => void } {
  const held = new Map<string, RepoLock>();
  let token = 0;
  let renewals = 0;
  const store = {
    acquireLock: async (repoId: string, holder: string, ttlMs: number) => {
      if (held.has(repoId)) return null;
      const lock = { repoId, holder, token: ++token, expiresAt: Date.now() + ttlMs };
      held.set(repoId, lock);
      return lock;
    },
    renewLock: async (repoId: string, t: number) => {
      renewals++;
      return held.get(repoId)?.token === t;
    },
    releaseLock: async (repoId: string, t: number) => {
      if (held.get(repoId)?.token === t) held.delete(repoId);
    },
  } as unknown as ClusterStore;
  return {
    store,
    renewals: () => renewals,
    steal: (repoId) => held.set(repoId, { repoId, holder: 'other', token: ++token, expiresAt: 0 }),
  };
}

function activity(store: ClusterStore = fakeLocks().store, lockTtlMs = 300): RepoActivity {
  return new RepoActivity({ nodeId: 'n1', store, lockTtlMs, logger: quiet });
}

describe('MAY_START_DURING', () => {
  // [kind, already running, may start]
  const cases: Array<[ActivityKind, ActivityKind[], boolean]> = [
    ['txn', [], true],
    ['txn', ['txn', 'upload'], true],
    ['txn', ['repack'], true],
    ['txn', ['repair'], false],
    ['txn', ['repair', 'swap'], false],
    ['txn', ['drop'], false],
    ['upload', ['txn', 'repair', 'repack'], true],
    ['upload', ['repair', 'swap'], false],
    ['upload', ['drop'], false],
    ['repair', ['upload'], true],
    ['repair', ['txn'], false],
    ['repair', ['repair'], false],
    ['repair', ['repack'], false],
    ['swap', ['repair'], true],
    ['swap', ['repair', 'upload'], false],
    ['swap', ['repair', 'txn'], false],
    ['repack', ['upload'], true],
    ['repack', ['txn'], false],
    ['repack', ['repack'], false],
    ['drop', [], true],
    ['drop', ['upload'], false],
    ['ship', ['txn', 'upload', 'repair', 'repack', 'ship'], true],
    ['ship', ['repair', 'swap'], false],
    ['ship', ['drop'], false],
    ['repack', ['ship'], false],
    ['swap', ['repair', 'ship'], false],
    ['drop', ['ship'], false],
    ['txn', ['ship'], true],
    ['repair', ['ship'], true],
  ];
  it.each(cases)('%s beside [%s]: %s', (kind, running, expected) => {
    expect(mayStart(kind, running)).toBe(expected);
  });
});

describe('RepoActivity', () => {
  it('keeps a repair off a replica with a transaction running, and lets it start once the transaction ends', () => {
    const a = activity();
    const txn = a.tryBegin('o/r', 'txn')!;
    expect(a.tryBegin('o/r', 'repair')).toBeNull();
    expect(a.tryBegin('o/other', 'repair')).not.toBeNull();
    txn.end();
    txn.end();
    const repair = a.tryBegin('o/r', 'repair');
    expect(repair).not.toBeNull();
    expect(a.tryBegin('o/r', 'txn')).toBeNull();
    expect(a.runningOn('o/r')).toEqual(['repair']);
  });

  it('counts activities of one kind: the replica is idle only when the last ends', () => {
    const a = activity();
    const one = a.tryBegin('o/r', 'upload')!;
    const two = a.tryBegin('o/r', 'upload')!;
    one.end();
    expect(a.isRunning('o/r', 'upload')).toBe(true);
    expect(a.tryBegin('o/r', 'drop')).toBeNull();
    two.end();
    expect(a.runningOn('o/r')).toEqual([]);
  });

  it('beginUpload waits for a swap to end, and a swap does not start beside an upload', async () => {
    const a = activity();
    const repair = a.tryBegin('o/r', 'repair')!;
    const swap = a.tryBegin('o/r', 'swap')!;
    let uploading = false;
    const upload = a.beginUpload('o/r').then((end) => {
      uploading = true;
      return end;
    });
    await new Promise((r) => setTimeout(r, 30));
    expect(uploading).toBe(false);
    swap.end();
    const end = await upload;
    expect(uploading).toBe(true);
    expect(a.tryBegin('o/r', 'swap')).toBeNull();
    end();
    expect(a.tryBegin('o/r', 'swap')).not.toBeNull();
    repair.end();
  });

  it('begin gives up after its wait', async () => {
    const a = activity();
    a.tryBegin('o/r', 'drop');
    const t0 = Date.now();
    expect(await a.begin('o/r', 'upload', 50)).toBeNull();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
  });

  it('lock: one holder at a time, renewed while held, lost when taken away, free after release', async () => {
    const locks = fakeLocks();
    const a = activity(locks.store, 300);
    const held = (await a.lock('o/r', 0))!;
    expect(held.lock.token).toBe(1);
    expect(await a.lock('o/r', 0)).toBeNull();
    const waited = a.lock('o/r', 2_000);
    await new Promise((r) => setTimeout(r, 250));
    expect(locks.renewals()).toBeGreaterThan(0);
    expect(held.lost()).toBe(false);
    await held.release();
    await held.release();
    const next = (await waited)!;
    expect(next.lock.token).toBe(2);
    locks.steal('o/r');
    await new Promise((r) => setTimeout(r, 250));
    expect(next.lost()).toBe(true);
    await next.release();
  });

  it('lock: nodes take a contended lock in turn, a node that keeps asking cannot take it back while another waits', async () => {
    // Two nodes on one store file, as on one machine. n1 takes the lock again at once after each
    // release (its pushes keep coming); n2 asks once, while n1 holds it. Before the lock line,
    // n2 polled with a backoff up to 100 ms and found the lock free only in the instant between
    // n1's release and its next take: here it got it after all six of n1's turns.
    const dir = mkdtempSync(join(tmpdir(), 'gitrep-line-'));
    const stores = [new SqliteStore(join(dir, 'cluster.db')), new SqliteStore(join(dir, 'cluster.db'))];
    try {
      const [n1, n2] = stores.map((store, i) => new RepoActivity({ nodeId: `n${i + 1}`, store, lockTtlMs: 5_000, logger: quiet }));
      const order: string[] = [];
      const turns = async (node: RepoActivity, name: string, n: number): Promise<void> => {
        for (let i = 0; i < n; i++) {
          const held = await node.lock('o/r', 5_000);
          expect(held).not.toBeNull();
          order.push(name);
          await new Promise((r) => setTimeout(r, 30));
          await held!.release();
        }
      };
      const first = turns(n1!, 'n1', 6);
      await new Promise((r) => setTimeout(r, 10));
      await Promise.all([first, turns(n2!, 'n2', 1)]);
      expect(order.indexOf('n2')).toBe(1);
    } finally {
      for (const store of stores) await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lock: a node that died first in the line holds a free lock from the others for LOCK_LINE_TTL_MS at most', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gitrep-line-'));
    const store = new SqliteStore(join(dir, 'cluster.db'));
    try {
      const [n1, n3] = ['n1', 'n3'].map((nodeId) => new RepoActivity({ nodeId, store, lockTtlMs: 5_000, logger: quiet }));
      const held = (await n1!.lock('o/r', 0))!;
      // n2 asked once, entered the line first, and died.
      expect(await store.acquireLock('o/r', 'n2', 5_000, { ttlMs: LOCK_LINE_TTL_MS })).toBeNull();
      const waiting = n3!.lock('o/r', 10_000);
      await new Promise((r) => setTimeout(r, 50));
      const released = Date.now();
      await held.release();
      const next = await waiting;
      expect(next?.lock.holder).toBe('n3');
      const waited = Date.now() - released;
      expect(waited).toBeGreaterThan(LOCK_LINE_TTL_MS - 200);
      expect(waited).toBeLessThan(LOCK_LINE_TTL_MS + 1_000);
      await next!.release();
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

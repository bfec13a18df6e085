import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { LfsLocks, LOCK_PREFIX } from './locks.js';

describe('LfsLocks', () => {
  it('one lock per path: of two at once one wins, the other is told whose', async () => {
    const store = new SqliteStore(':memory:');
    const locks = new LfsLocks(store);
    const results = await Promise.allSettled([locks.create('a/r', 'x.bin', 'alice'), locks.create('a/r', 'x.bin', 'bob')]);
    expect(results.filter((r) => r.status === 'fulfilled').length).toBe(1);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(String(lost.reason)).toMatch(/already created lock/);
    expect((await locks.list('a/r')).locks.length).toBe(1);
    // Another path, and the same path in another repository, are free.
    await locks.create('a/r', 'y.bin', 'bob');
    await locks.create('a/r2', 'x.bin', 'bob');
    expect((await locks.list('a/r', { path: 'y.bin' })).locks.map((l) => l.owner.name)).toEqual(['bob']);
    await store.close();
  });

  it("unlocks its owner's lock, another's only with force; a claim left by an unlock cut short is taken over", async () => {
    const store = new SqliteStore(':memory:');
    const locks = new LfsLocks(store);
    const lock = await locks.create('a/r', 'x.bin', 'alice');
    await expect(locks.unlock('a/r', lock.id, 'bob', false)).rejects.toThrow(/alice's/);
    await locks.unlock('a/r', lock.id, 'bob', true);
    await expect(locks.unlock('a/r', lock.id, 'alice', false)).rejects.toThrow(/no lock/);
    // An unlock that removed the record and stopped before the path's claim.
    const again = await locks.create('a/r', 'x.bin', 'alice');
    await store.deleteMeta(`${LOCK_PREFIX}a/r/${again.id}`);
    const next = await locks.create('a/r', 'x.bin', 'bob');
    expect(next.owner.name).toBe('bob');
    await store.close();
  });

  it('pages by id and forgets a repository whole', async () => {
    const store = new SqliteStore(':memory:');
    const locks = new LfsLocks(store);
    for (let i = 0; i < 5; i++) await locks.create('a/r', `f${i}`, 'alice');
    const first = await locks.list('a/r', { limit: 2 });
    expect(first.locks.length).toBe(2);
    const rest = await locks.list('a/r', { cursor: first.next!, limit: 10 });
    expect(rest.locks.length).toBe(3);
    expect(rest.next).toBeNull();
    await locks.forget('a/r');
    expect((await locks.list('a/r')).locks).toEqual([]);
    await locks.create('a/r', 'f0', 'bob');
    await store.close();
  });
});

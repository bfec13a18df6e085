import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { storeContract, type StoreHarness } from '../contract.js';
import { SqliteStore } from './sqlite-store.js';

storeContract('sqlite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sqlite-store-'));
  const path = join(dir, 'cluster.db');
  let store = new SqliteStore(path);
  const harness: StoreHarness = {
    // A getter, so the suite sees the store reopened by restart().
    get store() {
      return store;
    },
    restart: async () => {
      await store.close();
      store = new SqliteStore(path);
    },
    cleanup: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return harness;
});

describe('SqliteStore shared by two processes', () => {
  let dir: string;
  let a: SqliteStore;
  let b: SqliteStore;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sqlite-store-'));
    // Two connections on one file, as two node processes on one machine have.
    a = new SqliteStore(join(dir, 'cluster.db'));
    b = new SqliteStore(join(dir, 'cluster.db'));
  });
  afterEach(async () => {
    await a.close();
    await b.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("sees the other connection's writes", async () => {
    const record = {
      repoId: 'acme/app',
      incarnation: 'i1',
      replicas: ['n1'],
      generation: 0,
      checksum: 'c0',
      createdAt: '2024-01-01T00:00:00.000Z',
    };
    expect(await a.commitCreate({ txnId: 't1', coordinator: 'n1', record })).toEqual({ written: true, decision: 'commit' });
    expect(await b.getRepo('acme/app')).toEqual(record);
    expect(await b.commitCreate({ txnId: 't2', coordinator: 'n2', record })).toEqual({ written: false, decision: null, reason: 'exists' });
    expect(await b.setMetaIfAbsent('peer_secret', 'from-b')).toBe('from-b');
    expect(await a.setMetaIfAbsent('peer_secret', 'from-a')).toBe('from-b');
    await b.registerNode({ id: 'n2', url: 'http://n2.test', version: '0.1.0', startedAt: 'x' }, 10_000);
    expect((await a.liveNodes()).map((n) => n.id)).toEqual(['n2']);
  });

  it('excludes each other in acquireLock and share the fencing counter', async () => {
    const first = await a.acquireLock('acme/app', 'n1', 10_000);
    expect(first).not.toBeNull();
    expect(await b.acquireLock('acme/app', 'n2', 10_000)).toBeNull();
    expect(await b.getLock('acme/app')).toEqual(first);
    await b.releaseLock('acme/app', first!.token + 1);
    expect(await a.getLock('acme/app')).toEqual(first);
    await a.releaseLock('acme/app', first!.token);
    const second = await b.acquireLock('acme/app', 'n2', 10_000);
    expect(second!.token).toBeGreaterThan(first!.token);
    expect(await a.acquireLock('acme/app', 'n1', 10_000)).toBeNull();
    const other = await a.acquireLock('acme/other', 'n1', 10_000);
    expect(other!.token).toBeGreaterThan(second!.token);
  });
});

describe('SqliteStore stays bounded', () => {
  it('5,000 transactions with pruning: the record count and the file size stay flat', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sqlite-bounded-'));
    const path = join(dir, 'cluster.db');
    const store = new SqliteStore(path);
    const { statSync } = await import('node:fs');
    const size = (): number => statSync(path).size + (statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0);
    const sizes: number[] = [];
    const counts: number[] = [];
    try {
      let cut = 0;
      for (let round = 0; round < 10; round++) {
        for (let i = 0; i < 500; i++) await store.abortTxn(`t-${round}-${i}-${'x'.repeat(40)}`);
        // Keep the last round only, as a retention of one round's age would.
        await store.pruneTxns(cut);
        cut = Date.now();
        counts.push(await store.countTxns());
        (store as unknown as { db: { pragma: (s: string) => unknown } }).db.pragma('wal_checkpoint(TRUNCATE)');
        sizes.push(size());
      }
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
    expect(Math.max(...counts)).toBeLessThanOrEqual(1000);
    // After the first rounds the file reuses its freed pages: no growth with the push count.
    expect(sizes[9]!).toBeLessThanOrEqual(sizes[2]! * 1.2);
  }, 120_000);
});

describe('SqliteStore schema migrations', () => {
  it('migrates a file of the first schema (nodes without a protocol) and keeps its data', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sqlite-migrate-'));
    const path = join(dir, 'cluster.db');
    const Database = (await import('better-sqlite3')).default;
    const old = new Database(path);
    old.exec(`CREATE TABLE nodes (id TEXT PRIMARY KEY, url TEXT NOT NULL, version TEXT NOT NULL, started_at TEXT NOT NULL, expires_at INTEGER NOT NULL);
      INSERT INTO nodes VALUES ('n1', 'http://n1', '0.1.0', '2024-01-01T00:00:00.000Z', 0);`);
    old.close();
    const store = new SqliteStore(path);
    try {
      expect((await store.allNodes()).map((n) => n.id)).toEqual(['n1']);
      await store.registerNode({ id: 'n2', url: 'http://n2', version: '0.2.0', startedAt: 'x', protocol: { min: 2, max: 3 } }, 10_000);
      expect((await store.liveNodes()).find((n) => n.id === 'n2')?.protocol).toEqual({ min: 2, max: 3 });
    } finally {
      await store.close();
    }
    // Opening again is a no-op; a file from a newer build is refused.
    await new SqliteStore(path).close();
    const newer = new Database(path);
    newer.pragma('user_version = 99');
    newer.close();
    expect(() => new SqliteStore(path)).toThrow(/schema version 99, newer than this build/);
    await rm(dir, { recursive: true, force: true });
  });
});

describe('SqliteStore change feed', () => {
  it('answers null for a mark whose changes were pruned away, or that it never gave', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sqlite-feed-'));
    const path = join(dir, 'cluster.db');
    const store = new SqliteStore(path);
    const Database = (await import('better-sqlite3')).default;
    const raw = new Database(path);
    try {
      const start = { mark: await store.feedMark() };
      for (const id of ['acme/a', 'acme/b']) {
        const r = {
          repoId: id,
          incarnation: `i-${id}`,
          replicas: ['n1'],
          generation: 0,
          checksum: 'c0',
          createdAt: new Date().toISOString(),
        };
        await store.commitCreate({ txnId: `t-${id}`, coordinator: 'n1', record: r });
      }
      const both = (await store.changesSince(start.mark))!;
      expect([...both.repoIds].sort()).toEqual(['acme/a', 'acme/b']);
      // What pruning does to the oldest rows: the first change after `start` gone.
      raw.prepare('DELETE FROM repo_changes WHERE seq = ?').run(Number(start.mark) + 1);
      expect(await store.changesSince(start.mark)).toBeNull();
      expect((await store.changesSince(both.mark))?.repoIds).toEqual([]);
      expect(await store.changesSince(String(Number(both.mark) + 5))).toBeNull();
      expect(await store.changesSince('-1')).toBeNull();
    } finally {
      raw.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('SqliteStore meta prefixes', () => {
  it('lists and trims exactly the keys under a prefix, whatever follows it', async () => {
    const store = new SqliteStore(':memory:');
    const keys = [
      'grants/a/b',
      'grants/a/b/',
      'grants/a/b/user:x',
      'grants/a/b/\u00e9',
      'grants/a/b/\u{10ffff}z',
      'grants/a/bc/user:y',
      'grants/a/b0',
    ];
    for (const k of keys) await store.setMeta(k, 'v');
    const under = ['grants/a/b/', 'grants/a/b/user:x', 'grants/a/b/\u00e9', 'grants/a/b/\u{10ffff}z'];
    expect((await store.listMeta('grants/a/b/')).map((m) => m.key)).toEqual(under);
    // A prefix ending in a character other than ASCII is read the slow way, as exactly.
    expect((await store.listMeta('grants/a/b/\u00e9')).map((m) => m.key)).toEqual(['grants/a/b/\u00e9']);
    expect(await store.trimMeta('grants/a/b/', 1)).toBe(3);
    expect((await store.listMeta('grants/')).map((m) => m.key)).toEqual([
      'grants/a/b',
      'grants/a/b/\u{10ffff}z',
      'grants/a/b0',
      'grants/a/bc/user:y',
    ]);
    await store.close();
  });
});

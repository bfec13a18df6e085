import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TxnLog, type TxnPayload } from './txn-log.js';

const PAYLOAD: TxnPayload = { coordinator: 'n1', incarnation: 'i', baseGeneration: 3, fencingToken: 7, newChecksum: 'c' };

describe('TxnLog', () => {
  const dirs: string[] = [];
  const open = (): { log: TxnLog; path: string } => {
    const dir = mkdtempSync(join(tmpdir(), 'txn-log-'));
    dirs.push(dir);
    const path = join(dir, 'node.db');
    return { log: new TxnLog(path), path };
  };
  const synchronous = (log: TxnLog): unknown =>
    (log as unknown as { db: { pragma: (s: string, o: { simple: true }) => unknown } }).db.pragma('synchronous', { simple: true });
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('gives the pages of pruned records back, in a new file and in one made before (converted once, records kept)', () => {
    const pages = (log: TxnLog): number =>
      (log as unknown as { db: { pragma: (s: string, o: { simple: true }) => number } }).db.pragma('page_count', { simple: true });
    const big = { ...PAYLOAD, refs: 'x'.repeat(20_000) } as TxnPayload;
    const { log } = open();
    for (let i = 0; i < 200; i++) {
      log.recordPrepared(`t${i}`, 'o/r', 'push', big);
      log.setState(`t${i}`, 'committed');
    }
    const full = pages(log);
    expect(full).toBeGreaterThan(900);
    log.prune(-60_000);
    expect(pages(log)).toBeLessThan(20);
    log.close();

    const dir = mkdtempSync(join(tmpdir(), 'txn-log-'));
    dirs.push(dir);
    const path = join(dir, 'node.db');
    const old = new Database(path);
    old.pragma('journal_mode = WAL');
    old.exec(`CREATE TABLE txns (id TEXT PRIMARY KEY, repo_id TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
      payload TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)`);
    old.exec('CREATE INDEX txns_state ON txns (state)');
    old.prepare("INSERT INTO txns VALUES ('p', 'o/r', 'push', 'prepared', ?, 1, 1)").run(JSON.stringify(PAYLOAD));
    expect(old.pragma('auto_vacuum', { simple: true })).toBe(0);
    old.close();
    // A conversion that cannot run (here another connection holds the write lock past the busy
    // time-out; on a node, a disk without the file's size free) leaves the file as it was, and
    // the log opens with it.
    const holder = new Database(path);
    holder.exec('BEGIN IMMEDIATE');
    const blocked = new TxnLog(path);
    expect(blocked.unconverted).toMatch(/locked|busy/i);
    expect(blocked.prepared().map((t) => t.id)).toEqual(['p']);
    blocked.close();
    holder.exec('ROLLBACK');
    holder.close();
    const reopened = new TxnLog(path);
    expect(reopened.unconverted).toBeNull();
    expect((reopened as unknown as { db: Database.Database }).db.pragma('auto_vacuum', { simple: true })).toBe(2);
    expect(reopened.prepared().map((t) => t.id)).toEqual(['p']);
    reopened.close();
  }, 30_000);

  it('keeps prepares and outcomes across a reopen; only prepared ones are listed as prepared', () => {
    const { log, path } = open();
    log.recordPrepared('a', 'o/r', 'push', PAYLOAD);
    log.recordPrepared('b', 'o/r', 'push', { ...PAYLOAD, baseGeneration: 4 });
    log.setState('a', 'committed');
    log.recordPrepared('c', 'o/s', 'create', PAYLOAD);
    log.setState('c', 'aborted');
    log.close();
    const again = new TxnLog(path);
    expect(again.get('a')).toMatchObject({ state: 'committed', repoId: 'o/r', kind: 'push', payload: PAYLOAD });
    expect(again.get('c')?.state).toBe('aborted');
    expect(again.prepared().map((t) => [t.id, t.payload.baseGeneration])).toEqual([['b', 4]]);
    again.close();
  });

  it('an abort before the prepare is one record, aborted, never listed as prepared', () => {
    const { log, path } = open();
    log.recordAborted('early', 'o/r', 'push', PAYLOAD);
    log.close();
    const again = new TxnLog(path);
    expect(again.get('early')).toMatchObject({ state: 'aborted', repoId: 'o/r' });
    expect(again.prepared()).toEqual([]);
    again.close();
  });

  it('writes outcomes without an fsync, and is back to fsyncing (FULL) for the next prepare', () => {
    const { log } = open();
    expect(synchronous(log)).toBe(2);
    log.recordPrepared('a', 'o/r', 'push', PAYLOAD);
    log.setState('a', 'committed');
    expect(synchronous(log)).toBe(2);
    log.close();
  });
});

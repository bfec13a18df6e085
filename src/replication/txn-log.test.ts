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

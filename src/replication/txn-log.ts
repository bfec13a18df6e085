import Database from 'better-sqlite3';
import type { RefUpdate } from '../domain/ref-name.js';
import type { TxnKind } from '../store/types.js';

/** LocalTxnState is a transaction's state on this node. */
export type LocalTxnState = 'prepared' | 'committed' | 'aborted';

/** LocalTxn is one transaction in the node's own log. */
export interface LocalTxn {
  readonly id: string;
  readonly repoId: string;
  readonly kind: TxnKind;
  readonly state: LocalTxnState;
  /** payload is what commit needs after a restart (updates, incarnation, generation, checksum). */
  readonly payload: TxnPayload;
  readonly createdAt: number;
}

/** TxnPayload is the kind-specific part of a logged transaction. */
export interface TxnPayload {
  readonly coordinator: string;
  readonly incarnation: string;
  readonly baseGeneration: number;
  readonly fencingToken: number;
  readonly newChecksum: string;
  readonly updates?: readonly RefUpdate[];
  /** newHead: the branch HEAD points at once the transaction commits (a push into an unborn HEAD, a default-branch change). */
  readonly newHead?: string;
  readonly stagingPath?: string;
  readonly keepFiles?: readonly string[];
}

/** AUTO_VACUUM_INCREMENTAL is SQLite's `PRAGMA auto_vacuum` value for INCREMENTAL. */
const AUTO_VACUUM_INCREMENTAL = 2;

/**
 * TxnLog is the node's persisted transaction log (`<dataDir>/node.db`): every prepare is written
 * and fsynced before the participant answers `prepared`, so a restarted node knows which
 * transactions it must resolve from the store. Outcomes are written without an fsync (setState).
 */
export class TxnLog {
  private readonly db: Database.Database;
  /** The statements every transaction runs, compiled once. */
  private readonly stmts: {
    readonly insert: Database.Statement;
    readonly insertAborted: Database.Statement;
    readonly setState: Database.Statement;
    readonly get: Database.Statement;
  };

  /** unconverted says why a file made without auto_vacuum could not be converted at open (null: it was, or needed not be). */
  readonly unconverted: string | null = null;

  constructor(path: string) {
    this.db = new Database(path);
    // Freed pages go back to the file system (prune runs incremental_vacuum): a log that once held
    // large records (a push of thousands of refs) kept its size for good. auto_vacuum is chosen
    // before the first table; a file made without it is converted once, by a VACUUM (the log is
    // this node's alone, and holds a retention's worth of records). A VACUUM needs about the
    // file's size free: one that fails (a full disk) leaves the file as it was, and the node
    // starts with it, to try again at its next start.
    if ((this.db.pragma('auto_vacuum', { simple: true }) as number) !== AUTO_VACUUM_INCREMENTAL) {
      this.db.pragma('auto_vacuum = INCREMENTAL');
      try {
        if ((this.db.pragma('page_count', { simple: true }) as number) > 0) this.db.exec('VACUUM');
      } catch (err) {
        this.unconverted = err instanceof Error ? err.message : String(err);
      }
    }
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS txns (
      id TEXT PRIMARY KEY, repo_id TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
      payload TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)`);
    this.db.exec('CREATE INDEX IF NOT EXISTS txns_state ON txns (state)');
    this.stmts = {
      insert: this.db.prepare(
        `INSERT INTO txns (id, repo_id, kind, state, payload, created_at, updated_at) VALUES (?, ?, ?, 'prepared', ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET state = 'prepared', payload = excluded.payload, updated_at = excluded.updated_at`,
      ),
      insertAborted: this.db.prepare(
        `INSERT INTO txns (id, repo_id, kind, state, payload, created_at, updated_at) VALUES (?, ?, ?, 'aborted', ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET state = 'aborted', updated_at = excluded.updated_at`,
      ),
      setState: this.db.prepare('UPDATE txns SET state = ?, updated_at = ? WHERE id = ?'),
      get: this.db.prepare('SELECT * FROM txns WHERE id = ?'),
    };
  }

  /** recordPrepared writes a prepared transaction. */
  recordPrepared(id: string, repoId: string, kind: TxnKind, payload: TxnPayload): void {
    const now = Date.now();
    this.stmts.insert.run(id, repoId, kind, JSON.stringify(payload), now, now);
  }

  /**
   * recordAborted writes, durably, a transaction aborted before this node prepared it: a prepare
   * of it that arrives later is refused. (One write, fsynced like a prepare: a prepared record
   * whose abort was lost would let that prepare answer `prepared` without preparing anything.)
   */
  recordAborted(id: string, repoId: string, kind: TxnKind, payload: TxnPayload): void {
    const now = Date.now();
    this.stmts.insertAborted.run(id, repoId, kind, JSON.stringify(payload), now, now);
  }

  /**
   * setState records the outcome of a transaction, without an fsync of its own: a prepare must
   * be durable before the node answers `prepared`, an outcome need not. Lost in a crash, the
   * transaction reads as prepared at the restart and is resolved from the store again (commit
   * and abort are idempotent); the next durable write (a prepare) or checkpoint syncs it anyway.
   */
  setState(id: string, state: LocalTxnState): void {
    this.db.pragma('synchronous = NORMAL');
    try {
      this.stmts.setState.run(state, Date.now(), id);
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }

  /** get reads one transaction. */
  get(id: string): LocalTxn | null {
    const row = this.stmts.get.get(id) as Row | undefined;
    return row ? toTxn(row) : null;
  }

  /** prepared lists the transactions still waiting for an outcome. */
  prepared(): LocalTxn[] {
    return (this.db.prepare("SELECT * FROM txns WHERE state = 'prepared' ORDER BY created_at").all() as Row[]).map(toTxn);
  }

  /** prune drops finished transactions older than `maxAgeMs`. */
  prune(maxAgeMs: number): void {
    const { changes } = this.db.prepare("DELETE FROM txns WHERE state != 'prepared' AND updated_at < ?").run(Date.now() - maxAgeMs);
    if (changes > 0) this.db.pragma('incremental_vacuum');
  }

  /** close closes the log. */
  close(): void {
    this.db.close();
  }
}

interface Row {
  id: string;
  repo_id: string;
  kind: string;
  state: string;
  payload: string;
  created_at: number;
}

function toTxn(r: Row): LocalTxn {
  return {
    id: r.id,
    repoId: r.repo_id,
    kind: r.kind as TxnKind,
    state: r.state as LocalTxnState,
    payload: JSON.parse(r.payload) as TxnPayload,
    createdAt: r.created_at,
  };
}

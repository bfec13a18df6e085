import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { StoreUnavailableError } from '../../domain/errors.js';
import {
  CHANGES_KEPT,
  CHANGES_MAX,
  type ChangedRepos,
  DECOMMISSIONED_PREFIX,
  REBALANCE_KEY,
  type ClusterStore,
  type CommitCreate,
  type CommitDelete,
  type CommitPush,
  checkConfirmBatch,
  type ConfirmBatch,
  type ConfirmReplica,
  type DecideResult,
  type LockLine,
  type NodeInfo,
  type RepoLock,
  type RepoRecord,
  type ReplicaRecord,
  type RepoState,
  type ReplicaState,
  type TxnRecord,
} from '../types.js';
import { lineEntryOf, lineEntryValue, lineVerdict, type LineVerdict } from '../lock-line.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  id TEXT PRIMARY KEY, url TEXT NOT NULL, version TEXT NOT NULL, started_at TEXT NOT NULL,
  expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS repos (
  repo_id TEXT PRIMARY KEY, incarnation TEXT NOT NULL, replicas TEXT NOT NULL,
  generation INTEGER NOT NULL, checksum TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replicas (
  repo_id TEXT NOT NULL, node_id TEXT NOT NULL, incarnation TEXT NOT NULL,
  generation INTEGER NOT NULL, checksum TEXT NOT NULL, state TEXT NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (repo_id, node_id));
CREATE INDEX IF NOT EXISTS replicas_by_node ON replicas (node_id);
CREATE TABLE IF NOT EXISTS txns (
  id TEXT PRIMARY KEY, repo_id TEXT NOT NULL, kind TEXT NOT NULL, coordinator TEXT NOT NULL,
  base_generation INTEGER NOT NULL, fencing_token INTEGER NOT NULL, decision TEXT,
  decided_at TEXT, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS locks (
  repo_id TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL, expires_at INTEGER NOT NULL);
`;

interface RepoRow {
  repo_id: string;
  incarnation: string;
  replicas: string;
  generation: number;
  checksum: string;
  created_at: string;
}
interface ReplicaRow {
  repo_id: string;
  node_id: string;
  incarnation: string;
  generation: number;
  checksum: string;
  state: string;
  updated_at: string;
}
interface TxnRow {
  id: string;
  repo_id: string;
  kind: string;
  coordinator: string;
  base_generation: number;
  fencing_token: number;
  decision: string | null;
  decided_at: string | null;
}
interface LockRow {
  repo_id: string;
  holder: string;
  token: number;
  expires_at: number;
}
interface NodeRow {
  id: string;
  url: string;
  version: string;
  started_at: string;
  expires_at: number;
  protocol: string | null;
}

/**
 * underPrefix is the condition and parameters that select the meta keys under a prefix: a range
 * on the key's index, from the prefix to the prefix with its last character one higher (which,
 * for an ASCII character, bounds every key that starts with the prefix in BINARY collation, the
 * byte order of UTF-8); a prefix ending otherwise is tested on every key. (The test on
 * `substr(key, …)` alone read the whole table, users, grants, tokens and audit, on every policy
 * read: 18 ms at 300,000 rows, so every request of every user got slower as one user added
 * organisations.)
 */
function underPrefix(prefix: string): { where: string; params: Array<string | number> } {
  const last = prefix.charCodeAt(prefix.length - 1);
  if (prefix.length === 0 || !(last < 0x7f)) return { where: 'substr(key, 1, ?) = ?', params: [prefix.length, prefix] };
  return { where: 'key >= ? AND key < ?', params: [prefix, `${prefix.slice(0, -1)}${String.fromCharCode(last + 1)}`] };
}

/**
 * MIGRATIONS bring a store file from one schema version (SQLite's user_version) to the next;
 * migration i takes version i to i + 1. A file newer than this build is refused.
 */
/** TRIGGER_ROWS pairs each write event with the row a trigger on it reads (a delete's old one). */
const TRIGGER_ROWS = [
  ['INSERT', 'NEW'],
  ['UPDATE', 'NEW'],
  ['DELETE', 'OLD'],
] as const;

const MIGRATIONS: ReadonlyArray<(db: Database.Database) => void> = [
  // 1: nodes register the protocol range they speak.
  (db) => {
    db.exec('ALTER TABLE nodes ADD COLUMN protocol TEXT');
  },
  // 2: a change counter that every write to repos, replicas and meta moves (changeMark). This build
  // no longer reads it; it stays so that nodes of older builds work beside it in a rolling upgrade.
  (db) => {
    db.exec('CREATE TABLE changes (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL); INSERT INTO changes VALUES (0, 0);');
    for (const table of ['repos', 'replicas', 'meta']) {
      for (const event of ['INSERT', 'UPDATE', 'DELETE']) {
        db.exec(
          `CREATE TRIGGER ${table}_${event.toLowerCase()}_counts AFTER ${event} ON ${table} BEGIN UPDATE changes SET n = n + 1 WHERE id = 0; END;`,
        );
      }
    }
  },
  // 3: a feed of changed repos (changesSince): each write to a repo or replica record appends the repo's id.
  (db) => {
    db.exec('CREATE TABLE repo_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, repo_id TEXT NOT NULL);');
    for (const table of ['repos', 'replicas']) {
      for (const [event, row] of TRIGGER_ROWS) {
        db.exec(
          `CREATE TRIGGER ${table}_${event.toLowerCase()}_feed AFTER ${event} ON ${table} BEGIN INSERT INTO repo_changes (repo_id) VALUES (${row}.repo_id); END;`,
        );
      }
    }
  },
  // 4: the feed names a change to a placement setting as a row with an empty repo id (no repo has one).
  (db) => {
    const placement = (row: string): string =>
      `substr(${row}.key, 1, ${DECOMMISSIONED_PREFIX.length}) = '${DECOMMISSIONED_PREFIX}' OR ${row}.key = '${REBALANCE_KEY}'`;
    for (const [event, row] of TRIGGER_ROWS) {
      db.exec(
        `CREATE TRIGGER meta_${event.toLowerCase()}_feed AFTER ${event} ON meta WHEN ${placement(row)} BEGIN INSERT INTO repo_changes (repo_id) VALUES (''); END;`,
      );
    }
  },
];

/** SCHEMA_VERSION is the schema version this build writes. */
export const SQLITE_SCHEMA_VERSION = MIGRATIONS.length;

/** lineKey is the `meta` key of a holder's entry in a repo's lock line (LockLine); with holder '' the line's prefix. */
function lineKey(repoId: string, holder: string): string {
  return `lockline/${repoId}/${holder}`;
}

/** lineEnd is the first key after every key of a repo's lock line ('0' is the byte after '/'). */
function lineEnd(repoId: string): string {
  return `lockline/${repoId}0`;
}

/** STATEMENT_CACHE_MAX bounds the compiled statements a store keeps (the cache is emptied when full). */
const STATEMENT_CACHE_MAX = 256;

function toRepo(r: RepoRow): RepoRecord {
  return {
    repoId: r.repo_id,
    incarnation: r.incarnation,
    replicas: JSON.parse(r.replicas) as string[],
    generation: r.generation,
    checksum: r.checksum,
    createdAt: r.created_at,
  };
}
function toReplica(r: ReplicaRow): ReplicaRecord {
  return {
    repoId: r.repo_id,
    nodeId: r.node_id,
    incarnation: r.incarnation,
    generation: r.generation,
    checksum: r.checksum,
    state: r.state as ReplicaState,
    updatedAt: r.updated_at,
  };
}
function toTxn(r: TxnRow): TxnRecord {
  return {
    id: r.id,
    repoId: r.repo_id,
    kind: r.kind as TxnRecord['kind'],
    coordinator: r.coordinator,
    baseGeneration: r.base_generation,
    fencingToken: r.fencing_token,
    decision: r.decision as TxnRecord['decision'],
    decidedAt: r.decided_at,
  };
}
function toNode(r: NodeRow): NodeInfo {
  return {
    id: r.id,
    url: r.url,
    version: r.version,
    startedAt: r.started_at,
    ...(r.protocol ? { protocol: JSON.parse(r.protocol) as { min: number; max: number } } : {}),
  };
}

/**
 * SqliteStore is the embedded ClusterStore: one SQLite file in WAL mode that several node
 * processes on one machine share. Every method runs in one `BEGIN IMMEDIATE` transaction, so
 * reads see every committed write (linearizable on one machine) and compares are atomic.
 * `synchronous=FULL` fsyncs each commit: a decision survives a power cut.
 */
export class SqliteStore implements ClusterStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  /** statements: compiled statements by their text (most are fixed; the few built per call are capped by STATEMENT_CACHE_MAX). */
  private readonly statements = new Map<string, Database.Statement>();
  private readonly now: () => number;

  constructor(path: string, opts: { now?: () => number } = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { timeout: 10_000 });
    // A new file gives freed pages back (pruneTxns runs incremental_vacuum); auto_vacuum can
    // only be chosen before the first table exists.
    if ((this.db.pragma('page_count', { simple: true }) as number) === 0) this.db.pragma('auto_vacuum = INCREMENTAL');
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(SCHEMA);
    this.migrate();
    this.now = opts.now ?? Date.now;
  }

  /**
   * migrate brings the file to SQLITE_SCHEMA_VERSION, one migration per transaction; nodes that
   * open the file at once take turns (BEGIN IMMEDIATE) and each re-reads the version inside.
   */
  private migrate(): void {
    for (;;) {
      const done = this.db
        .transaction(() => {
          const v = this.db.pragma('user_version', { simple: true }) as number;
          if (v > SQLITE_SCHEMA_VERSION)
            throw new Error(
              `the store ${this.db.name} has schema version ${v}, newer than this build's ${SQLITE_SCHEMA_VERSION}: run a newer git-replication`,
            );
          if (v === SQLITE_SCHEMA_VERSION) return true;
          MIGRATIONS[v]!(this.db);
          this.db.pragma(`user_version = ${v + 1}`);
          return false;
        })
        .immediate();
      if (done) return;
    }
  }

  /** sql compiles `text` once and returns the statement (better-sqlite3 statements are reusable). */
  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (!st) {
      if (this.statements.size >= STATEMENT_CACHE_MAX) this.statements.clear();
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  /** tx runs fn in one immediate (write) transaction and maps SQLite's busy errors to StoreUnavailableError. */
  private tx<T>(fn: () => T): T {
    return this.guard(() => this.db.transaction(fn).immediate());
  }

  /**
   * read runs fn in one deferred transaction: in WAL mode it reads the latest committed snapshot
   * without taking the write lock, so readers never queue behind writers.
   */
  private read<T>(fn: () => T): T {
    return this.guard(() => this.db.transaction(fn).deferred());
  }

  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_IOERR') || code === 'SQLITE_CANTOPEN') {
        throw new StoreUnavailableError(`sqlite: ${(err as Error).message}`, { cause: err });
      }
      throw err;
    }
  }

  async registerNode(node: NodeInfo, ttlMs: number): Promise<void> {
    this.tx(() => {
      this.sql(
        `INSERT INTO nodes (id, url, version, started_at, expires_at, protocol) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT(id) DO UPDATE SET url = excluded.url, version = excluded.version, started_at = excluded.started_at, expires_at = excluded.expires_at, protocol = excluded.protocol`,
      ).run(node.id, node.url, node.version, node.startedAt, this.now() + ttlMs, node.protocol ? JSON.stringify(node.protocol) : null);
    });
  }

  async unregisterNode(nodeId: string): Promise<void> {
    this.tx(() => {
      this.sql('UPDATE nodes SET expires_at = 0 WHERE id = ?').run(nodeId);
    });
  }

  async liveNodes(): Promise<NodeInfo[]> {
    return this.read(() => (this.sql('SELECT * FROM nodes WHERE expires_at > ? ORDER BY id').all(this.now()) as NodeRow[]).map(toNode));
  }

  async allNodes(): Promise<Array<NodeInfo & { live: boolean }>> {
    const now = this.now();
    return this.read(() =>
      (this.sql('SELECT * FROM nodes ORDER BY id').all() as NodeRow[]).map((r) => ({ ...toNode(r), live: r.expires_at > now })),
    );
  }

  async getRepo(repoId: string): Promise<RepoRecord | null> {
    return this.read(() => this.repoRow(repoId));
  }

  private repoRow(repoId: string): RepoRecord | null {
    const row = this.sql('SELECT * FROM repos WHERE repo_id = ?').get(repoId) as RepoRow | undefined;
    return row ? toRepo(row) : null;
  }

  async listRepos(): Promise<RepoRecord[]> {
    return this.read(() => (this.sql('SELECT * FROM repos ORDER BY repo_id').all() as RepoRow[]).map(toRepo));
  }

  async listReposPage(after: string, limit: number): Promise<RepoRecord[]> {
    return this.read(() =>
      (this.sql('SELECT * FROM repos WHERE repo_id > ? ORDER BY repo_id LIMIT ?').all(after, limit) as RepoRow[]).map(toRepo),
    );
  }

  async countRepos(owner: string): Promise<number> {
    // '0' follows '/': the ids from `owner/` up to `owner0` are the owner's, on the primary key's index.
    return this.read(
      () =>
        (this.sql('SELECT COUNT(*) AS n FROM repos WHERE repo_id >= ? AND repo_id < ?').get(`${owner}/`, `${owner}0`) as { n: number }).n,
    );
  }

  async getReplicas(repoId: string): Promise<ReplicaRecord[]> {
    return this.read(() =>
      (this.sql('SELECT * FROM replicas WHERE repo_id = ? ORDER BY node_id').all(repoId) as ReplicaRow[]).map(toReplica),
    );
  }

  async getRepoState(repoId: string): Promise<RepoState | null> {
    return this.read(() => this.stateIn(repoId));
  }

  private stateIn(repoId: string): RepoState | null {
    const repo = this.repoRow(repoId);
    if (!repo) return null;
    const replicas = (this.sql('SELECT * FROM replicas WHERE repo_id = ? ORDER BY node_id').all(repoId) as ReplicaRow[]).map(toReplica);
    return { repo, replicas };
  }

  async replicasOnNode(nodeId: string): Promise<ReplicaRecord[]> {
    return this.read(() =>
      (this.sql('SELECT * FROM replicas WHERE node_id = ? ORDER BY repo_id').all(nodeId) as ReplicaRow[]).map(toReplica),
    );
  }

  async acquireLock(repoId: string, holder: string, ttlMs: number, line?: LockLine): Promise<RepoLock | null> {
    if (this.refusedOnRead(repoId, holder, line)) return null;
    return this.tx(() => this.acquireIn(repoId, holder, ttlMs, line));
  }

  async acquireLockAndRead(
    repoId: string,
    holder: string,
    ttlMs: number,
    line?: LockLine,
  ): Promise<{ lock: RepoLock; state: RepoState | null } | null> {
    if (this.refusedOnRead(repoId, holder, line)) return null;
    return this.tx(() => {
      const lock = this.acquireIn(repoId, holder, ttlMs, line);
      return lock ? { lock, state: this.stateIn(repoId) } : null;
    });
  }

  /**
   * refusedOnRead answers a repeated refusal from a read, without the write lock, when there is
   * nothing to write: the lock is held (or others wait first) and the caller's line entry needs no
   * renewal. The first in a busy repo's line polls every few milliseconds; each poll taking the
   * shared file's write lock would hold up the writers it waits for. A first attempt (no answer
   * in `line` yet), which on a repo nobody waits for takes the lock, goes to acquireIn at once.
   */
  private refusedOnRead(repoId: string, holder: string, line: LockLine | undefined): boolean {
    if (line?.ahead === undefined) return false;
    return this.read(() => {
      const verdict = this.lineVerdictIn(repoId, holder, line, this.now());
      return !verdict.take && verdict.write === null;
    });
  }

  /** lineVerdictIn decides an attempt at the repo's lock (lineVerdict), from its lock row and its line in `meta` (lineKey). */
  private lineVerdictIn(repoId: string, holder: string, line: LockLine | undefined, now: number): LineVerdict {
    const prefix = lineKey(repoId, '');
    const rows = this.sql('SELECT key, value FROM meta WHERE key >= ? AND key < ?').all(prefix, lineEnd(repoId)) as Array<{
      key: string;
      value: string;
    }>;
    const row = this.sql('SELECT * FROM locks WHERE repo_id = ?').get(repoId) as LockRow | undefined;
    return lineVerdict(
      rows.map((r) => lineEntryOf(r.key.slice(prefix.length), r.value)),
      holder,
      row !== undefined && row.expires_at > now,
      line,
      now,
    );
  }

  async leaveLockLine(repoId: string, holder: string): Promise<void> {
    this.tx(() => {
      this.sql('DELETE FROM meta WHERE key = ?').run(lineKey(repoId, holder));
    });
  }

  /**
   * acquireIn is acquireLock inside the caller's transaction. The repo's lock line (LockLine) is
   * kept in `meta`, one row per waiting holder (`lockline/<repo>/<holder>`); rows past their time
   * go whenever the lock is taken.
   */
  private acquireIn(repoId: string, holder: string, ttlMs: number, line?: LockLine): RepoLock | null {
    const now = this.now();
    const verdict = this.lineVerdictIn(repoId, holder, line, now);
    if (!verdict.take) {
      if (verdict.write)
        this.sql('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(
          lineKey(repoId, holder),
          lineEntryValue(verdict.write),
        );
      return null;
    }
    for (const gone of verdict.drop) this.sql('DELETE FROM meta WHERE key = ?').run(lineKey(repoId, gone.holder));
    const token = this.nextToken();
    const expiresAt = now + ttlMs;
    this.sql(
      `INSERT INTO locks (repo_id, holder, token, expires_at) VALUES (?, ?, ?, ?)
      ON CONFLICT(repo_id) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at`,
    ).run(repoId, holder, token, expiresAt);
    return { repoId, holder, token, expiresAt };
  }

  /** nextToken hands out cluster-wide increasing fencing tokens, so a re-created repo never reuses one. */
  private nextToken(): number {
    const row = this.sql("SELECT value FROM meta WHERE key = 'fencing_token'").get() as { value: string } | undefined;
    const next = (row ? Number(row.value) : 0) + 1;
    this.sql("INSERT INTO meta (key, value) VALUES ('fencing_token', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(
      String(next),
    );
    return next;
  }

  async renewLock(repoId: string, token: number, ttlMs: number): Promise<boolean> {
    return this.tx(() => {
      const now = this.now();
      const r = this.sql('UPDATE locks SET expires_at = ? WHERE repo_id = ? AND token = ? AND expires_at > ?').run(
        now + ttlMs,
        repoId,
        token,
        now,
      );
      return r.changes === 1;
    });
  }

  async releaseLock(repoId: string, token: number): Promise<void> {
    this.tx(() => this.releaseIn(repoId, token));
  }

  /** releaseIn is releaseLock inside the caller's transaction. */
  private releaseIn(repoId: string, token: number): void {
    this.sql('UPDATE locks SET expires_at = 0 WHERE repo_id = ? AND token = ?').run(repoId, token);
  }

  async getLock(repoId: string): Promise<RepoLock | null> {
    return this.read(() => this.liveLock(repoId));
  }

  private liveLock(repoId: string): RepoLock | null {
    const row = this.sql('SELECT * FROM locks WHERE repo_id = ?').get(repoId) as LockRow | undefined;
    if (!row || row.expires_at <= this.now()) return null;
    return { repoId: row.repo_id, holder: row.holder, token: row.token, expiresAt: row.expires_at };
  }

  async beginTxn(txn: Omit<TxnRecord, 'decision' | 'decidedAt'>): Promise<void> {
    this.tx(() => {
      this.sql(
        `INSERT INTO txns (id, repo_id, kind, coordinator, base_generation, fencing_token, decision, decided_at, created_at)
        VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?) ON CONFLICT(id) DO NOTHING`,
      ).run(txn.id, txn.repoId, txn.kind, txn.coordinator, txn.baseGeneration, txn.fencingToken, this.now());
    });
  }

  async getTxn(txnId: string): Promise<TxnRecord | null> {
    return this.read(() => this.txnRow(txnId));
  }

  private txnRow(txnId: string): TxnRecord | null {
    const row = this.sql('SELECT * FROM txns WHERE id = ?').get(txnId) as TxnRow | undefined;
    return row ? toTxn(row) : null;
  }

  /** decided returns the standing decision of a txn, creating the txn row if it is missing. */
  private existingDecision(txnId: string): DecideResult | null {
    const t = this.txnRow(txnId);
    if (t?.decision) return { written: false, decision: t.decision, reason: 'decided' };
    return null;
  }

  private writeDecision(
    txnId: string,
    decision: 'commit' | 'abort',
    fields: { repoId: string; kind: string; coordinator: string; baseGeneration: number; fencingToken: number },
  ): void {
    this.sql(
      `INSERT INTO txns (id, repo_id, kind, coordinator, base_generation, fencing_token, decision, decided_at, created_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET decision = excluded.decision, decided_at = excluded.decided_at`,
    ).run(
      txnId,
      fields.repoId,
      fields.kind,
      fields.coordinator,
      fields.baseGeneration,
      fields.fencingToken,
      decision,
      new Date(this.now()).toISOString(),
      this.now(),
    );
  }

  async commitCreate(c: CommitCreate): Promise<DecideResult> {
    return this.tx(() => {
      const prior = this.existingDecision(c.txnId);
      if (prior) return prior;
      if (this.repoRow(c.record.repoId)) return { written: false, decision: null, reason: 'exists' };
      const r = c.record;
      this.sql('INSERT INTO repos (repo_id, incarnation, replicas, generation, checksum, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
        r.repoId,
        r.incarnation,
        JSON.stringify(r.replicas),
        r.generation,
        r.checksum,
        r.createdAt,
      );
      this.sql('DELETE FROM replicas WHERE repo_id = ?').run(r.repoId);
      this.writeDecision(c.txnId, 'commit', {
        repoId: r.repoId,
        kind: 'create',
        coordinator: c.coordinator,
        baseGeneration: 0,
        fencingToken: 0,
      });
      return { written: true, decision: 'commit' };
    });
  }

  /** compareRepo checks the compares shared by push and delete commits. */
  private compareRepo(c: { repoId: string; incarnation: string; baseGeneration: number; fencingToken: number }): DecideResult | null {
    const repo = this.repoRow(c.repoId);
    if (!repo) return { written: false, decision: null, reason: 'missing' };
    if (repo.incarnation !== c.incarnation) return { written: false, decision: null, reason: 'incarnation' };
    if (repo.generation !== c.baseGeneration) return { written: false, decision: null, reason: 'generation' };
    const lock = this.liveLock(c.repoId);
    if (!lock || lock.token !== c.fencingToken) return { written: false, decision: null, reason: 'lock' };
    return null;
  }

  async commitPush(c: CommitPush): Promise<DecideResult> {
    return this.tx(() => {
      const prior = this.existingDecision(c.txnId);
      if (prior) return prior;
      const failed = this.compareRepo(c);
      if (failed) return failed;
      this.sql('UPDATE repos SET generation = ?, checksum = ? WHERE repo_id = ?').run(c.baseGeneration + 1, c.newChecksum, c.repoId);
      this.writeDecision(c.txnId, 'commit', {
        repoId: c.repoId,
        kind: 'push',
        coordinator: c.coordinator,
        baseGeneration: c.baseGeneration,
        fencingToken: c.fencingToken,
      });
      return { written: true, decision: 'commit' };
    });
  }

  async commitDelete(c: CommitDelete): Promise<DecideResult> {
    return this.tx(() => {
      const prior = this.existingDecision(c.txnId);
      if (prior) return prior;
      const failed = this.compareRepo(c);
      if (failed) return failed;
      this.sql('DELETE FROM repos WHERE repo_id = ?').run(c.repoId);
      this.sql('DELETE FROM replicas WHERE repo_id = ?').run(c.repoId);
      this.sql('DELETE FROM meta WHERE key >= ? AND key < ?').run(lineKey(c.repoId, ''), lineEnd(c.repoId));
      this.writeDecision(c.txnId, 'commit', {
        repoId: c.repoId,
        kind: 'delete',
        coordinator: c.coordinator,
        baseGeneration: c.baseGeneration,
        fencingToken: c.fencingToken,
      });
      return { written: true, decision: 'commit' };
    });
  }

  async abortTxn(txnId: string): Promise<DecideResult> {
    return this.tx(() => {
      const t = this.txnRow(txnId);
      if (t?.decision) return { written: false, decision: t.decision, reason: 'decided' };
      this.writeDecision(txnId, 'abort', t ?? { repoId: '', kind: 'push', coordinator: '', baseGeneration: -1, fencingToken: 0 });
      return { written: true, decision: 'abort' };
    });
  }

  async confirmReplica(c: ConfirmReplica): Promise<boolean> {
    return this.tx(() => this.confirmIn(c));
  }

  async confirmReplicas(b: ConfirmBatch): Promise<boolean[]> {
    checkConfirmBatch(b);
    return this.tx(() => {
      const written = b.confirmations.map((c) => this.confirmIn(c));
      if (b.release) this.releaseIn(b.release.repoId, b.release.token);
      for (const m of b.meta ?? []) this.setMetaIn(m.key, m.value);
      return written;
    });
  }

  /** confirmIn is confirmReplica's compare-and-set, inside the caller's transaction. */
  private confirmIn(c: ConfirmReplica): boolean {
    const repo = this.repoRow(c.repoId);
    if (!repo || repo.incarnation !== c.incarnation || c.generation > repo.generation) return false;
    const row = this.sql('SELECT * FROM replicas WHERE repo_id = ? AND node_id = ?').get(c.repoId, c.nodeId) as ReplicaRow | undefined;
    if (row && row.incarnation === c.incarnation && row.generation > c.generation) return false;
    this.sql(
      `INSERT INTO replicas (repo_id, node_id, incarnation, generation, checksum, state, updated_at) VALUES (?, ?, ?, ?, ?, 'in_sync', ?)
      ON CONFLICT(repo_id, node_id) DO UPDATE SET incarnation = excluded.incarnation, generation = excluded.generation,
      checksum = excluded.checksum, state = 'in_sync', updated_at = excluded.updated_at`,
    ).run(c.repoId, c.nodeId, c.incarnation, c.generation, c.checksum, new Date(this.now()).toISOString());
    return true;
  }

  async markReplica(
    repoId: string,
    nodeId: string,
    incarnation: string,
    state: Exclude<ReplicaState, 'in_sync'>,
    belowGeneration: number,
  ): Promise<boolean> {
    return this.tx(() => {
      const repo = this.repoRow(repoId);
      if (!repo || repo.incarnation !== incarnation) return false;
      const row = this.sql('SELECT * FROM replicas WHERE repo_id = ? AND node_id = ?').get(repoId, nodeId) as ReplicaRow | undefined;
      const now = new Date(this.now()).toISOString();
      if (!row || row.incarnation !== incarnation) {
        this.sql(
          `INSERT INTO replicas (repo_id, node_id, incarnation, generation, checksum, state, updated_at) VALUES (?, ?, ?, -1, '', ?, ?)
          ON CONFLICT(repo_id, node_id) DO UPDATE SET incarnation = excluded.incarnation, generation = -1, checksum = '', state = excluded.state, updated_at = excluded.updated_at`,
        ).run(repoId, nodeId, incarnation, state, now);
        return true;
      }
      if (row.generation >= belowGeneration) return false;
      this.sql('UPDATE replicas SET state = ?, updated_at = ? WHERE repo_id = ? AND node_id = ?').run(state, now, repoId, nodeId);
      return true;
    });
  }

  async setReplicaSet(repoId: string, incarnation: string, replicas: readonly string[]): Promise<boolean> {
    return this.tx(() => {
      const r = this.sql('UPDATE repos SET replicas = ? WHERE repo_id = ? AND incarnation = ?').run(
        JSON.stringify(replicas),
        repoId,
        incarnation,
      );
      if (r.changes === 1) {
        const keep = new Set(replicas);
        for (const row of this.sql('SELECT node_id FROM replicas WHERE repo_id = ?').all(repoId) as Array<{ node_id: string }>) {
          if (!keep.has(row.node_id)) this.sql('DELETE FROM replicas WHERE repo_id = ? AND node_id = ?').run(repoId, row.node_id);
        }
      }
      return r.changes === 1;
    });
  }

  async pruneTxns(createdBefore: number): Promise<number> {
    const removed = this.tx(() => {
      // The change feed keeps its last CHANGES_KEPT rows: a reader further behind lists everything.
      this.sql('DELETE FROM repo_changes WHERE seq <= (SELECT max(seq) FROM repo_changes) - ?').run(CHANGES_KEPT);
      return this.sql('DELETE FROM txns WHERE created_at < ?').run(createdBefore).changes;
    });
    if (removed > 0) this.guard(() => this.db.pragma('incremental_vacuum'));
    return removed;
  }

  async countTxns(): Promise<number> {
    return this.read(() => (this.sql('SELECT count(*) AS n FROM txns').get() as { n: number }).n);
  }

  async getMeta(key: string): Promise<string | null> {
    return this.read(() => (this.sql('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value ?? null);
  }

  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    return this.tx(() => {
      this.sql('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING').run(key, value);
      return (this.sql('SELECT value FROM meta WHERE key = ?').get(key) as { value: string }).value;
    });
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.tx(() => this.setMetaIn(key, value));
  }

  /** setMetaIn is setMeta inside the caller's transaction. */
  private setMetaIn(key: string, value: string): void {
    this.sql('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  async deleteMeta(key: string): Promise<void> {
    this.tx(() => {
      this.sql('DELETE FROM meta WHERE key = ?').run(key);
    });
  }

  async compareAndSetMeta(key: string, expected: string | null, next: string | null): Promise<boolean> {
    return this.tx(() => {
      const row = this.sql('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
      if ((row?.value ?? null) !== expected) return false;
      if (next === null) this.sql('DELETE FROM meta WHERE key = ?').run(key);
      else this.setMetaIn(key, next);
      return true;
    });
  }

  async trimMeta(prefix: string, keep: number): Promise<number> {
    // BINARY collation: the byte order of the keys' UTF-8, as etcd's.
    const { where, params } = underPrefix(prefix);
    return this.tx(
      () =>
        this.sql(`DELETE FROM meta WHERE key IN (SELECT key FROM meta WHERE ${where} ORDER BY key DESC LIMIT -1 OFFSET ?)`).run(
          ...params,
          keep,
        ).changes,
    );
  }

  async listMeta(prefix: string): Promise<Array<{ key: string; value: string }>> {
    const { where, params } = underPrefix(prefix);
    return this.read(
      () => this.sql(`SELECT key, value FROM meta WHERE ${where} ORDER BY key`).all(...params) as Array<{ key: string; value: string }>,
    );
  }

  async feedMark(): Promise<string> {
    return this.read(() => String(this.lastChange()));
  }

  async changesSince(mark: string): Promise<ChangedRepos | null> {
    return this.read(() => {
      const last = this.lastChange();
      const since = Number(mark);
      if (!Number.isSafeInteger(since) || since < 0 || since > last) return null;
      // Rows before `since` pruned away: what changed in between is unknown.
      const first = (this.sql('SELECT min(seq) AS n FROM repo_changes').get() as { n: number | null }).n;
      if (since < last && (first === null || first > since + 1)) return null;
      const rows = this.sql('SELECT DISTINCT repo_id FROM repo_changes WHERE seq > ? AND seq <= ? LIMIT ?').all(
        since,
        last,
        CHANGES_MAX + 2,
      ) as Array<{ repo_id: string }>;
      const repoIds = rows.map((r) => r.repo_id).filter((id) => id !== '');
      if (repoIds.length > CHANGES_MAX) return null;
      // Every record of the named repos, read in this transaction: one left out was deleted.
      const named = 'SELECT DISTINCT repo_id FROM repo_changes WHERE seq > ? AND seq <= ?';
      const repos = (this.sql(`SELECT * FROM repos WHERE repo_id IN (${named})`).all(since, last) as RepoRow[]).map(toRepo);
      const replicas = (this.sql(`SELECT * FROM replicas WHERE repo_id IN (${named})`).all(since, last) as ReplicaRow[]).map(toReplica);
      return { mark: String(last), repoIds, repos, replicas, complete: true, settingsChanged: rows.length > repoIds.length };
    });
  }

  /** lastChange is the change feed's last sequence number (0 before any change). */
  private lastChange(): number {
    return (this.sql('SELECT max(seq) AS n FROM repo_changes').get() as { n: number | null }).n ?? 0;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

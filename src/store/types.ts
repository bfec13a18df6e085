/**
 * The coordination store's data model (DESIGN §10). Every method that changes several records
 * does so in one store transaction (SQLite `BEGIN IMMEDIATE`, etcd `Txn` with compares).
 */

/**
 * ChangedRepos answers changesSince: the repos changed since the mark asked about, their records
 * as they are now, and the mark to ask from next.
 */
export interface ChangedRepos {
  readonly mark: string;
  readonly repoIds: readonly string[];
  /** repos holds the current record of each named repo whose record was written since the mark (a store may add the others'). */
  readonly repos: readonly RepoRecord[];
  /** replicas holds each replica record of a named repo written since the mark, as it is now (a store may add the others). */
  readonly replicas: readonly ReplicaRecord[];
  /**
   * complete says `repos` and `replicas` hold every record the named repos have: a named repo or
   * replica without one was deleted. Otherwise a record left out did not change (a store that
   * cannot name deletes answers null for them).
   */
  readonly complete: boolean;
  /** settingsChanged says a placement setting (DECOMMISSIONED_PREFIX, REBALANCE_KEY) was written or deleted since the mark. */
  readonly settingsChanged: boolean;
}

/** DECOMMISSIONED_PREFIX keys the settings that take a node out of placement. */
export const DECOMMISSIONED_PREFIX = 'decommissioned/';
/** REBALANCE_KEY, once set, makes placement follow rendezvous hashing over the current nodes. */
export const REBALANCE_KEY = 'rebalance';

/** CHANGES_MAX is the most repos changesSince names; past it, listing everything is the cheaper read. */
export const CHANGES_MAX = 1_000;

/** CHANGES_KEPT is how many changes a store keeps for changesSince (SQLite: rows of its feed). */
export const CHANGES_KEPT = 100_000;

/** RepoState is a repo record and its replica records (by node id), read together. */
export interface RepoState {
  readonly repo: RepoRecord;
  readonly replicas: ReplicaRecord[];
}

/** NodeInfo is one registered node; it is live while its lease has not expired. */
export interface NodeInfo {
  readonly id: string;
  readonly url: string;
  readonly version: string;
  readonly startedAt: string;
  /** protocol is the range of replication protocol versions the node speaks (absent: 1). */
  readonly protocol?: { readonly min: number; readonly max: number };
}

/** ReplicaState is a replica's health as the store records it. */
export type ReplicaState = 'in_sync' | 'stale' | 'repairing' | 'missing';

/** RepoRecord is the cluster's truth about one repo. */
export interface RepoRecord {
  readonly repoId: string;
  /** incarnation is a new id at every creation, so a re-created repo never matches an old directory. */
  readonly incarnation: string;
  readonly replicas: readonly string[];
  /** generation is +1 for every committed write; 0 right after creation. */
  readonly generation: number;
  /** checksum is the expected checksum of a replica at `generation`. */
  readonly checksum: string;
  readonly createdAt: string;
}

/** ReplicaRecord is one replica's confirmed state. */
export interface ReplicaRecord {
  readonly repoId: string;
  readonly nodeId: string;
  readonly incarnation: string;
  /** generation is the last generation this replica confirmed it applied. */
  readonly generation: number;
  readonly checksum: string;
  readonly state: ReplicaState;
  readonly updatedAt: string;
}

/** TxnKind is what a transaction does. */
export type TxnKind = 'create' | 'delete' | 'push';

/** Decision is the outcome of a transaction, written once. */
export type Decision = 'commit' | 'abort';

/** TxnRecord is a transaction as the store knows it. */
export interface TxnRecord {
  readonly id: string;
  readonly repoId: string;
  readonly kind: TxnKind;
  readonly coordinator: string;
  readonly baseGeneration: number;
  readonly fencingToken: number;
  readonly decision: Decision | null;
  readonly decidedAt: string | null;
}

/** RepoLock is a held repo write lock: a lease with a fencing token that only ever grows. */
export interface RepoLock {
  readonly repoId: string;
  readonly holder: string;
  readonly token: number;
  readonly expiresAt: number;
}

/**
 * LockLine is a waiter's place in a repo's line for its lock: holders take a free lock in the
 * order they first asked for it, so that one node whose pushes keep coming cannot take the lock
 * back, transaction after transaction, while another node's pushes wait (each node polls the
 * store; the one that has just released asks again at once). A caller that passes a line and
 * is refused is entered in it (or its entry renewed) for `ttlMs`, and is told how many other
 * holders stand before it (`ahead`, set by the store): the first polls often, the others need
 * not. An entry not renewed within `ttlMs` lapses (a waiter that died or stopped holds no one up
 * for longer), taking the lock removes the taker's entry, and `leaveLockLine` removes one given
 * up. The line is fairness only: the lock's exclusion and fencing do not depend on it.
 */
export interface LockLine {
  readonly ttlMs: number;
  ahead?: number;
}

/** CommitPush is the compare-and-swap that commits a push (DESIGN §5 step 4). */
export interface CommitPush {
  readonly txnId: string;
  readonly repoId: string;
  readonly coordinator: string;
  readonly incarnation: string;
  readonly baseGeneration: number;
  readonly fencingToken: number;
  readonly newChecksum: string;
}

/** CommitCreate creates a repo record; it fails if the repo exists. */
export interface CommitCreate {
  readonly txnId: string;
  readonly coordinator: string;
  readonly record: RepoRecord;
}

/** CommitDelete removes a repo record at a known incarnation and generation. */
export interface CommitDelete {
  readonly txnId: string;
  readonly repoId: string;
  readonly coordinator: string;
  readonly incarnation: string;
  readonly baseGeneration: number;
  readonly fencingToken: number;
}

/** DecideResult says whether this call wrote the decision, and what the decision now is. */
export interface DecideResult {
  readonly written: boolean;
  readonly decision: Decision | null;
  /** reason is set when a commit's compare failed. */
  readonly reason?: 'decided' | 'generation' | 'incarnation' | 'lock' | 'exists' | 'missing';
}

/** ConfirmReplica records that a replica applied a generation. */
export interface ConfirmReplica {
  readonly repoId: string;
  readonly nodeId: string;
  readonly incarnation: string;
  readonly generation: number;
  readonly checksum: string;
}

/**
 * ConfirmBatch is what a push's coordinator writes once W replicas committed (DESIGN §5 step 5):
 * their confirmations, the release of the lock it held, and settings (the push's audit record),
 * in one store transaction instead of one write each.
 */
export interface ConfirmBatch {
  readonly confirmations: readonly ConfirmReplica[];
  /** release frees the repo lock if still held under `token`, as releaseLock does. */
  readonly release?: { readonly repoId: string; readonly token: number };
  /** meta sets these settings, as setMeta does. */
  readonly meta?: ReadonlyArray<{ readonly key: string; readonly value: string }>;
}

/**
 * ClusterStore is the coordination store. Implementations MUST make every method atomic, MUST
 * make reads linearizable (a read after a completed write sees it), and MUST throw
 * StoreUnavailableError when the store cannot be reached, never guess.
 */
export interface ClusterStore {
  /** kind names the backend, for logs and /health. */
  readonly kind: 'sqlite' | 'etcd';

  /** registerNode creates or refreshes the node's registration for `ttlMs`. */
  registerNode(node: NodeInfo, ttlMs: number): Promise<void>;
  /** unregisterNode removes a registration (clean shutdown). */
  unregisterNode(nodeId: string): Promise<void>;
  /** liveNodes lists the nodes whose registration has not expired. */
  liveNodes(): Promise<NodeInfo[]>;
  /** allNodes lists every node ever registered and not removed, live or not, with its last expiry. */
  allNodes(): Promise<Array<NodeInfo & { live: boolean }>>;

  /** getRepo reads one repo record. */
  getRepo(repoId: string): Promise<RepoRecord | null>;
  /** listRepos lists every repo record. */
  listRepos(): Promise<RepoRecord[]>;
  /**
   * listReposPage lists at most `limit` repo records whose ids sort after `after` ('' for the
   * first page), by id in UTF-8 byte order: a page costs reads for the page only, not for every repo.
   */
  listReposPage(after: string, limit: number): Promise<RepoRecord[]>;
  /** countRepos counts the repos under one owner (ids `<owner>/…`), reading no record. */
  countRepos(owner: string): Promise<number>;
  /** getReplicas lists the replica records of one repo. */
  getReplicas(repoId: string): Promise<ReplicaRecord[]>;
  /**
   * getRepoState reads a repo record and its replica records together, as of one moment (one
   * SQLite transaction, one etcd Txn): what getRepo then getReplicas read in two round trips.
   * Null when the repo does not exist.
   */
  getRepoState(repoId: string): Promise<RepoState | null>;
  /** replicasOnNode lists every replica record on one node. */
  replicasOnNode(nodeId: string): Promise<ReplicaRecord[]>;

  /**
   * acquireLock takes the repo write lock for `ttlMs` if it is free or expired and no other
   * holder stands before `holder` in the repo's line (LockLine), and returns it with a fencing
   * token greater than any token given before for this repo; null if held or others wait first.
   * With `line`, a refused caller is entered in the line (or its entry renewed) and
   * `line.ahead` says how many other holders stand before it.
   */
  acquireLock(repoId: string, holder: string, ttlMs: number, line?: LockLine): Promise<RepoLock | null>;
  /**
   * acquireLockAndRead is acquireLock that also reads the repo's state (as getRepoState) in the
   * same store transaction: one round trip where a write path took two. The repo record is as
   * of the moment the lock was taken (no one could commit in between); null if the lock is held.
   */
  acquireLockAndRead(
    repoId: string,
    holder: string,
    ttlMs: number,
    line?: LockLine,
  ): Promise<{ lock: RepoLock; state: RepoState | null } | null>;
  /** leaveLockLine removes `holder`'s entry from the repo's lock line (a waiter that gave up). */
  leaveLockLine(repoId: string, holder: string): Promise<void>;
  /** renewLock extends a lock still held under `token`; false if it was lost. */
  renewLock(repoId: string, token: number, ttlMs: number): Promise<boolean>;
  /** releaseLock frees a lock still held under `token`; releasing a lost lock is a no-op. */
  releaseLock(repoId: string, token: number): Promise<void>;
  /** getLock returns the live lock of a repo, or null if free or expired. */
  getLock(repoId: string): Promise<RepoLock | null>;

  /** beginTxn records a transaction with no decision yet (before any participant prepares). */
  beginTxn(txn: Omit<TxnRecord, 'decision' | 'decidedAt'>): Promise<void>;
  /** getTxn reads a transaction and its decision. */
  getTxn(txnId: string): Promise<TxnRecord | null>;

  /** commitCreate writes `commit` and creates the repo record, if no decision exists and the repo does not. */
  commitCreate(c: CommitCreate): Promise<DecideResult>;
  /**
   * commitPush writes `commit`, generation g+1 and the new checksum, if the repo is at
   * `baseGeneration` and `incarnation`, the lock is held under `fencingToken`, and no decision exists.
   */
  commitPush(c: CommitPush): Promise<DecideResult>;
  /** commitDelete writes `commit` and removes the repo and its replica records, under the same compares. */
  commitDelete(c: CommitDelete): Promise<DecideResult>;
  /**
   * pruneTxns removes transaction records created before `createdBefore` (epoch ms), decided or
   * not, and returns how many went. Callers MUST pass a time older than any transaction a
   * participant could still be preparing (the retention is hours; a participant that finds no
   * record later aborts its own copy by the fencing-token rule, and repair brings its replica
   * to the store's generation).
   */
  pruneTxns(createdBefore: number): Promise<number>;
  /** countTxns is how many transaction records the store holds. */
  countTxns(): Promise<number>;
  /** abortTxn writes `abort` only if no decision exists; returns the decision that stands. */
  abortTxn(txnId: string): Promise<DecideResult>;

  /**
   * confirmReplica sets a replica to `in_sync` at `generation` unless the record already holds a
   * newer generation or the repo's incarnation differs (never overwrites a newer confirmation).
   */
  confirmReplica(c: ConfirmReplica): Promise<boolean>;
  /**
   * confirmReplicas applies a batch in one store transaction: each confirmation as confirmReplica
   * would (the result says, per confirmation, whether it was written; one refused does not stop
   * the others), the lock release and the settings.
   */
  confirmReplicas(b: ConfirmBatch): Promise<boolean[]>;
  /**
   * markReplica sets a replica's state (stale, repairing, missing) unless it has confirmed a
   * generation above `belowGeneration` since; creates the record if absent.
   */
  markReplica(
    repoId: string,
    nodeId: string,
    incarnation: string,
    state: Exclude<ReplicaState, 'in_sync'>,
    belowGeneration: number,
  ): Promise<boolean>;
  /** setReplicaSet replaces a repo's replica set (re-replication, rebalance) at a known incarnation. */
  setReplicaSet(repoId: string, incarnation: string, replicas: readonly string[]): Promise<boolean>;

  /** getMeta / setMetaIfAbsent keep cluster-wide settings such as the peer secret. */
  getMeta(key: string): Promise<string | null>;
  setMetaIfAbsent(key: string, value: string): Promise<string>;
  /** setMeta writes a cluster-wide setting unconditionally (decommissioned nodes, rebalance requests). */
  setMeta(key: string, value: string): Promise<void>;
  /** deleteMeta removes a setting; removing one that is absent is not an error. */
  deleteMeta(key: string): Promise<void>;
  /**
   * compareAndSetMeta sets a setting to `next` (null: removes it) if it holds `expected` (null:
   * absent), in one atomic step; says whether it did.
   */
  compareAndSetMeta(key: string, expected: string | null, next: string | null): Promise<boolean>;
  /**
   * trimMeta removes the settings whose key starts with `prefix`, all but the `keep` last in key
   * order (UTF-8 bytes), in one call; returns how many went. Trimming an already short list is a no-op.
   */
  trimMeta(prefix: string, keep: number): Promise<number>;
  /** listMeta lists the settings whose key starts with `prefix`. */
  listMeta(prefix: string): Promise<Array<{ key: string; value: string }>>;

  /** feedMark is the change feed's current mark, to read changesSince from (read it before a full listing). */
  feedMark(): Promise<string>;

  /**
   * changesSince lists the repos whose record or any replica record was written (created,
   * updated or deleted) after `mark`, a mark from feedMark or an earlier answer, with the
   * records written, read in the same snapshot; and whether a placement setting changed. It
   * returns null when it cannot tell (the mark is unknown or too old, more than CHANGES_MAX repos
   * changed, or a change it cannot name): the caller then lists everything. A repo changed after
   * the returned mark may be listed again next time.
   */
  changesSince(mark: string): Promise<ChangedRepos | null>;

  /** close releases connections; the store is unusable after. */
  close(): Promise<void>;
}

/** checkConfirmBatch throws on a batch that confirms one replica twice (a caller's bug: which one would stand?). */
export function checkConfirmBatch(b: ConfirmBatch): void {
  const seen = new Set<string>();
  for (const c of b.confirmations) {
    const key = `${c.repoId}\0${c.nodeId}`;
    if (seen.has(key)) throw new Error(`confirmReplicas: ${c.nodeId}'s replica of ${c.repoId} is confirmed twice in one batch`);
    seen.add(key);
  }
}

/** isInSync says whether a replica holds the repo's current generation (DESIGN §2). */
export function isInSync(repo: RepoRecord, replica: ReplicaRecord | undefined): boolean {
  return (
    replica !== undefined &&
    replica.state === 'in_sync' &&
    replica.incarnation === repo.incarnation &&
    replica.generation === repo.generation
  );
}

/**
 * isBehindForGood says whether a replica's record rules out its taking part in a push: stale,
 * being repaired or missing, or of another incarnation. Its prepare would be refused (the
 * participant checks that same record), so it is neither sent the push's pack nor asked; a
 * replica in sync at an older generation is still asked (its commits may be on their way).
 */
export function isBehindForGood(repo: RepoRecord, replica: ReplicaRecord | undefined): boolean {
  return replica !== undefined && (replica.state !== 'in_sync' || replica.incarnation !== repo.incarnation);
}

/**
 * isOneBehind says whether a replica is one step behind the repo: in sync at the generation
 * before the repo's, or, at generation 0, with no record at all (a create's decision deletes
 * every replica record; each replica's commit writes its own). That is what every replica of
 * a push, or of a create, looks like between the decision and its own confirmation, so usually
 * a commit still on its way rather than a replica that needs repair. A replica a create could
 * not reach is marked `missing` by its coordinator, so it has a record and is not one behind.
 */
export function isOneBehind(repo: RepoRecord, replica: ReplicaRecord | undefined): boolean {
  if (replica === undefined) return repo.generation === 0;
  return replica.state === 'in_sync' && replica.incarnation === repo.incarnation && replica.generation === repo.generation - 1;
}

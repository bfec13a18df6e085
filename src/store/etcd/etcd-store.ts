import {
  ClientClosedError,
  Etcd3,
  isRecoverableError,
  type ICompare,
  type IKeyValue,
  type IOptions,
  type IRequestOp,
  type ITxnResponse,
} from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreUnavailableError, errorMessage } from '../../domain/errors.js';
import { HostHealth, MemberSkippedError, retryAcrossMembers } from './host-health.js';
import {
  CHANGES_MAX,
  DECOMMISSIONED_PREFIX,
  REBALANCE_KEY,
  type ChangedRepos,
  type ClusterStore,
  type CommitCreate,
  type CommitDelete,
  type CommitPush,
  checkConfirmBatch,
  type ConfirmBatch,
  type ConfirmReplica,
  type DecideResult,
  type Decision,
  type LockLine,
  type NodeInfo,
  type RepoLock,
  type RepoRecord,
  type ReplicaRecord,
  type RepoState,
  type ReplicaState,
  type TxnKind,
  type TxnRecord,
} from '../types.js';
import { lineEntryOf, lineEntryValue, lineVerdict, type LineEntry } from '../lock-line.js';

/** Refused carries, out of a lock plan, the lock line entry a refused waiter is to write (enterLine). */
interface Refused {
  entry: LineEntry | null;
}

/** EtcdStoreOptions configures an EtcdStore. */
export interface EtcdStoreOptions {
  /** hosts are client URLs such as `http://127.0.0.1:2379`; calls fail over between them. */
  readonly hosts: readonly string[];
  /** prefix is put before every key, e.g. `/git-replication/`, so clusters can share one etcd. */
  readonly prefix: string;
  /** callTimeoutMs is the budget of one etcd request, retries on other hosts included (an attempt gets half of it with several hosts). */
  readonly callTimeoutMs?: number;
  /** now is the clock for expiries (tests); it must agree across nodes, as with SqliteStore. */
  readonly now?: () => number;
}

/** StoredNode is the value of `nodes/<id>` and `nodes-known/<id>`. */
interface StoredNode {
  id: string;
  url: string;
  version: string;
  startedAt: string;
  expiresAt: number;
  protocol?: { min: number; max: number };
}
/** StoredLock is the value of `locks/<repoId>`. */
interface StoredLock {
  holder: string;
  token: number;
  expiresAt: number;
}
/** StoredTxn is the value of `txns/<id>`; createdAt mirrors SqliteStore's column. */
interface StoredTxn extends TxnRecord {
  createdAt: number;
}

/** Kv is one key as read: its value, and the revision and lease the write compares rely on. */
interface Kv {
  key: string;
  value: string;
  mod: string;
  lease: string;
}

/** Plan is what a read-compare-write decided: the result and, if it changes anything, the writes. */
interface Plan<T> {
  result: T;
  /** ops are the writes; `lease` is the lease granted for `leaseMs`, or '0'. No ops means read-only. */
  ops?: (lease: string) => IRequestOp[];
  leaseMs?: number;
  /** revoke lists leases no key uses once the write succeeded (a replaced lock or registration). */
  revoke?: string[];
}

type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
type PolicyContext = Parameters<Parameters<FaultPolicy['execute']>[0]>[0];

const DEFAULT_CALL_TIMEOUT_MS = 2_500;
/** PROBE_INTERVAL_MS is how often a member skipped for not answering is asked again (a linearizable read). */
const PROBE_INTERVAL_MS = 1_000;
/** MAX_ATTEMPTS bounds read-compare-write retries when a compare fails on a concurrent change. */
const MAX_ATTEMPTS = 25;

/** LEASE_REUSE_MS is how long a granted lease may be reused by retries; grant() adds a second of slack. */
const LEASE_REUSE_MS = 500;

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');

/** prefixEnd is the first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(utf8(prefix));
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** byUtf8 orders strings by their UTF-8 bytes, as SQLite's BINARY collation does. */
function byUtf8(a: string, b: string): number {
  return Buffer.compare(utf8(a), utf8(b));
}

function parse<T>(kv: Kv): T {
  return JSON.parse(kv.value) as T;
}

function toKv(kv: IKeyValue): Kv {
  return { key: kv.key.toString('utf8'), value: kv.value.toString('utf8'), mod: kv.mod_revision, lease: kv.lease };
}

function put(key: string, value: string, lease = '0'): IRequestOp {
  return { request_put: { key: utf8(key), value: utf8(value), lease } };
}
function del(key: string): IRequestOp {
  return { request_delete_range: { key: utf8(key) } };
}
function delPrefix(prefix: string): IRequestOp {
  return { request_delete_range: { key: utf8(prefix), range_end: prefixEnd(prefix) } };
}
function rangeKey(key: string): IRequestOp {
  return { request_range: { key: utf8(key) } };
}
function rangePrefix(prefix: string): IRequestOp {
  return { request_range: { key: utf8(prefix), range_end: prefixEnd(prefix) } };
}

/** feedMarkOf is the change feed's mark from a Txn whose first four reads are feedCounts. */
function feedMarkOf(res: ITxnResponse): string {
  const [repos, replicas, decommissioned, rebalance] = res.responses.map((r) => r.response_range);
  // The placement settings' part: the newest mod revision and the count of each (a delete lowers a count).
  const settings = [decommissioned!, rebalance!].map((r) => `${r.kvs[0]?.mod_revision ?? 0}.${r.count}`).join('.');
  return `${res.header.revision}:${repos!.count}:${replicas!.count}:${settings}`;
}

/** unchanged compares a key's mod revision with the one read; 0 means "still absent". */
function unchanged(key: string, kv: Kv | undefined): ICompare {
  return { key: utf8(key), target: 'Mod', result: 'Equal', mod_revision: kv?.mod ?? '0' };
}
/** rangeUnchangedSince says no key under `prefix` was created or changed after revision `rev`. */
function rangeUnchangedSince(prefix: string, rev: string): ICompare {
  return { key: utf8(prefix), range_end: prefixEnd(prefix), target: 'Mod', result: 'Less', mod_revision: (BigInt(rev) + 1n).toString() };
}
function absent(key: string): ICompare {
  return { key: utf8(key), target: 'Version', result: 'Equal', version: '0' };
}

/** Snapshot is a set of keys and prefixes read at one revision. */
class Snapshot {
  constructor(
    readonly revision: string,
    private readonly keys: Map<string, Kv>,
    private readonly prefixes: Map<string, Kv[]>,
  ) {}
  get(key: string): Kv | undefined {
    return this.keys.get(key);
  }
  list(prefix: string): Kv[] {
    return this.prefixes.get(prefix) ?? [];
  }
}

/**
 * policy adapts a retry function to the cockatiel policy shape etcd3's `faultHandling` takes,
 * without depending on cockatiel (etcd3 only calls `execute`).
 */
function policy(run: <T>(fn: () => PromiseLike<T> | T) => Promise<T>): FaultPolicy {
  const noEvents = () => ({ dispose: () => undefined });
  return {
    _altReturn: undefined as never,
    onSuccess: noEvents,
    onFailure: noEvents,
    execute: <T>(fn: (context: PolicyContext) => PromiseLike<T> | T) => run(() => fn({ signal: new AbortController().signal })),
  };
}

/** transient says whether an error means etcd could not be reached or could not answer in time. */
function transient(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (isRecoverableError(err) || err instanceof ClientClosedError || err instanceof MemberSkippedError) return true;
  if (err.name === 'BrokenCircuitError' || err.name === 'TaskCancelledError') return true;
  return (
    /etcdserver: (request timed out|leader changed|no leader|too many requests|server stopped|not capable|raft proposal dropped|unhealthy cluster|request cancelled)/.test(
      err.message,
    ) || /ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ETIMEDOUT|No connection established|Deadline exceeded/i.test(err.message)
  );
}

/**
 * EtcdStore is the ClusterStore on an etcd cluster (DESIGN §10). Records are JSON values under
 * `prefix`; every change of several keys is one etcd Txn whose compares check that nothing read
 * has changed since (mod revisions), retried a bounded number of times on a concurrent change.
 * Reads are linearizable (etcd's default range, never serializable). Node registrations and locks
 * sit on etcd leases so they vanish when their owner dies; their `expiresAt` is still checked
 * because etcd rounds lease TTLs up to whole seconds (and a minimum), while the contract expires
 * them at exactly `ttlMs`.
 */
export class EtcdStore implements ClusterStore {
  readonly kind = 'etcd' as const;
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly now: () => number;
  private readonly hosts: readonly string[];
  private readonly health: HostHealth;
  private readonly probes = new Map<string, Etcd3>();
  private probeTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(opts: EtcdStoreOptions) {
    if (opts.hosts.length === 0) throw new Error('etcd store needs at least one host');
    this.prefix = opts.prefix;
    this.now = opts.now ?? Date.now;
    this.hosts = opts.hosts;
    this.health = new HostHealth(opts.hosts);
    const timeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    // Two rounds over the hosts: enough to outlast a leader election, few enough that one dead etcd fails in ~150 ms.
    const maxTries = 2 * opts.hosts.length + 1;
    // With several members an attempt gets half the budget, so a call whose first member is cut
    // off (no answer, no refusal) still has time for another member.
    const attemptMs = opts.hosts.length > 1 ? Math.ceil(timeoutMs / 2) : timeoutMs;
    this.client = new Etcd3({
      hosts: [...opts.hosts],
      // Every unary call gets a deadline, so a dead or frozen etcd fails the call instead of hanging it.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + attemptMs }),
      faultHandling: {
        // No circuit breaker: it would keep refusing calls for seconds after etcd is back.
        // A member that did not answer is skipped while another may (HostHealth), until a probe gets through.
        host: (host) =>
          policy(async (fn) => {
            if (!this.health.usable(host)) throw new MemberSkippedError(host);
            try {
              const result = await fn();
              this.health.recovered(host);
              return result;
            } catch (err) {
              if (transient(err)) {
                this.health.failed(host);
                this.probeLater();
              }
              throw err;
            }
          }),
        // Each retry goes to the next host; the budget keeps a call with a dead store short.
        global: policy((fn) =>
          retryAcrossMembers(fn, { maxTries, timeoutMs, recoverable: (err) => err instanceof Error && isRecoverableError(err), sleep }),
        ),
      },
    });
  }

  // ---- keys ----

  private k(...parts: string[]): string {
    return this.prefix + parts.join('/');
  }
  private nodeKey(id: string): string {
    return this.k('nodes', id);
  }
  private knownKey(id: string): string {
    return this.k('nodes-known', id);
  }
  private repoKey(repoId: string): string {
    return this.k('repos', repoId);
  }
  private replicaKey(repoId: string, nodeId: string): string {
    return this.k('replicas', repoId, nodeId);
  }
  private replicasOf(repoId: string): string {
    return this.k('replicas', repoId, '');
  }
  private txnKey(id: string): string {
    return this.k('txns', id);
  }
  private lockKey(repoId: string): string {
    return this.k('locks', repoId);
  }
  private metaKey(key: string): string {
    return this.k('meta', key);
  }
  /** lineKey is a holder's entry in a repo's lock line (LockLine); lineOf the line's prefix. */
  private lineKey(repoId: string, holder: string): string {
    return this.k('lockline', repoId, holder);
  }
  private lineOf(repoId: string): string {
    return this.k('lockline', repoId, '');
  }

  // ---- plumbing ----

  /** guard maps a failure to reach etcd to StoreUnavailableError; other errors are bugs and pass through. */
  private async guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreUnavailableError || !transient(err)) throw err;
      const detail = err instanceof ClientClosedError ? 'the store is closed' : errorMessage(err);
      throw new StoreUnavailableError(`etcd at ${this.hosts.join(',')}: ${what}: ${detail}`, { cause: err });
    }
  }

  private async txn(compare: ICompare[], success: IRequestOp[], failure: IRequestOp[] = []): Promise<ITxnResponse> {
    return this.client.kv.txn({ compare, success, failure });
  }

  /** read fetches keys and prefixes in one read-only Txn, so they come from one revision. */
  private async read(keys: readonly string[], prefixes: readonly string[] = []): Promise<Snapshot> {
    const res = await this.txn([], [...keys.map(rangeKey), ...prefixes.map(rangePrefix)]);
    const single = new Map<string, Kv>();
    const lists = new Map<string, Kv[]>();
    keys.forEach((key, i) => {
      const kv = res.responses[i]?.response_range.kvs[0];
      if (kv) single.set(key, toKv(kv));
    });
    prefixes.forEach((prefix, i) => {
      lists.set(prefix, (res.responses[keys.length + i]?.response_range.kvs ?? []).map(toKv));
    });
    return new Snapshot(res.header.revision, single, lists);
  }

  private async get(key: string): Promise<Kv | undefined> {
    const res = await this.client.kv.range({ key: utf8(key) });
    const kv = res.kvs[0];
    return kv ? toKv(kv) : undefined;
  }

  private async list(prefix: string): Promise<Kv[]> {
    const res = await this.client.kv.range({ key: utf8(prefix), range_end: prefixEnd(prefix) });
    return res.kvs.map(toKv);
  }

  /** grant creates a lease that outlives `ttlMs` (etcd TTLs are whole seconds); expiresAt decides liveness. */
  private async grant(ttlMs: number): Promise<string> {
    const res = await this.client.leaseClient.leaseGrant({ TTL: Math.ceil(ttlMs / 1000) + 1, ID: 0 });
    return res.ID;
  }

  /** revokeQuietly frees leases nothing uses any more; failing only leaves them to expire on their own. */
  private async revokeQuietly(leases: readonly string[]): Promise<void> {
    await Promise.all(
      leases
        .filter((id) => id !== '0')
        .map(async (id) => {
          try {
            await this.client.leaseClient.leaseRevoke({ ID: id });
          } catch {
            // An unused lease expires by itself after its TTL.
          }
        }),
    );
  }

  /**
   * update reads `keys` and `prefixes` at one revision, lets `plan` decide, and writes the plan's
   * ops in one Txn that succeeds only if none of what was read changed; on a concurrent change
   * it starts over, at most MAX_ATTEMPTS times.
   */
  private async update<T>(
    what: string,
    keys: readonly string[],
    prefixes: readonly string[],
    plan: (s: Snapshot, now: number) => Plan<T>,
    /** uncompared are prefixes read with the snapshot for `plan` only: a change to them does not fail the write. */
    uncompared: readonly string[] = [],
  ): Promise<T> {
    return this.guard(what, async () => {
      let lease: string | undefined;
      let grantedAt = 0;
      let leaseUsed = false;
      try {
        for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
          const snap = await this.read(keys, [...prefixes, ...uncompared]);
          const p = plan(snap, this.now());
          if (!p.ops) return p.result;
          // A lease kept from an earlier attempt must still outlive this attempt's expiresAt.
          if (lease !== undefined && Date.now() - grantedAt > LEASE_REUSE_MS) {
            await this.revokeQuietly([lease]);
            lease = undefined;
          }
          if (p.leaseMs !== undefined && lease === undefined) {
            grantedAt = Date.now();
            lease = await this.grant(p.leaseMs);
          }
          const compares = [
            ...keys.map((key) => unchanged(key, snap.get(key))),
            ...prefixes.map((prefix) => rangeUnchangedSince(prefix, snap.revision)),
          ];
          const res = await this.txn(compares, p.ops(p.leaseMs !== undefined ? (lease ?? '0') : '0'));
          if (res.succeeded) {
            leaseUsed = p.leaseMs !== undefined;
            // Leases no key uses any more: freeing them changes nothing a reader sees (a lock's
            // liveness is its expiresAt), so the caller does not wait for that round of raft.
            // Never the lease this write used: a write applied whose answer was lost (the client
            // retries it on another member, where its compare then fails) leaves this very lease
            // on the key, this attempt's snapshot calls it the old one, and revoking it deleted
            // the key just written (a renewed lock gone: the etcd contract test, once under load).
            const used = p.leaseMs !== undefined ? lease : undefined;
            void this.revokeQuietly((p.revoke ?? []).filter((l) => l !== used));
            return p.result;
          }
          // A concurrent writer won the compare: back off a little so racers spread out.
          await sleep(Math.floor(Math.random() * 10 * Math.min(attempt, 10)));
        }
      } finally {
        if (lease !== undefined && !leaseUsed) await this.revokeQuietly([lease]);
      }
      throw new StoreUnavailableError(`etcd: ${what}: gave up after ${MAX_ATTEMPTS} attempts, the records kept changing`);
    });
  }

  // ---- nodes ----

  async registerNode(node: NodeInfo, ttlMs: number): Promise<void> {
    await this.guard('register node', async () => {
      const value = JSON.stringify({
        id: node.id,
        url: node.url,
        version: node.version,
        startedAt: node.startedAt,
        expiresAt: this.now() + ttlMs,
        ...(node.protocol ? { protocol: node.protocol } : {}),
      } satisfies StoredNode);
      const lease = await this.grant(ttlMs);
      let used = false;
      try {
        const res = await this.txn(
          [],
          [
            { request_put: { key: utf8(this.nodeKey(node.id)), value: utf8(value), lease, prev_kv: true } },
            put(this.knownKey(node.id), value),
          ],
        );
        used = true;
        const previous = res.responses[0]?.response_put.prev_kv?.lease;
        if (previous && previous !== lease) await this.revokeQuietly([previous]);
      } finally {
        if (!used) await this.revokeQuietly([lease]);
      }
    });
  }

  async unregisterNode(nodeId: string): Promise<void> {
    const liveKey = this.nodeKey(nodeId);
    const knownKey = this.knownKey(nodeId);
    await this.update('unregister node', [liveKey, knownKey], [], (s) => {
      const liveKv = s.get(liveKey);
      const knownKv = s.get(knownKey);
      if (!liveKv && !knownKv) return { result: undefined };
      // Like SqliteStore: the node stays known (allNodes), with an expiry in the past.
      const ops: IRequestOp[] = [];
      if (knownKv) ops.push(put(knownKey, JSON.stringify({ ...parse<StoredNode>(knownKv), expiresAt: 0 })));
      if (liveKv) ops.push(del(liveKey));
      return { result: undefined, ops: () => ops, revoke: liveKv ? [liveKv.lease] : [] };
    });
  }

  async liveNodes(): Promise<NodeInfo[]> {
    return this.guard('list live nodes', async () => {
      const now = this.now();
      return (await this.list(this.k('nodes', '')))
        .map((kv) => parse<StoredNode>(kv))
        .filter((n) => n.expiresAt > now)
        .sort((a, b) => byUtf8(a.id, b.id))
        .map(toNodeInfo);
    });
  }

  async allNodes(): Promise<Array<NodeInfo & { live: boolean }>> {
    return this.guard('list nodes', async () => {
      const livePrefix = this.k('nodes', '');
      const knownPrefix = this.k('nodes-known', '');
      const snap = await this.read([], [livePrefix, knownPrefix]);
      const now = this.now();
      const liveIds = new Set(
        snap
          .list(livePrefix)
          .map((kv) => parse<StoredNode>(kv))
          .filter((n) => n.expiresAt > now)
          .map((n) => n.id),
      );
      return snap
        .list(knownPrefix)
        .map((kv) => parse<StoredNode>(kv))
        .sort((a, b) => byUtf8(a.id, b.id))
        .map((n) => ({ ...toNodeInfo(n), live: liveIds.has(n.id) }));
    });
  }

  // ---- repos and replicas ----

  async getRepo(repoId: string): Promise<RepoRecord | null> {
    return this.guard('read repo', async () => {
      const kv = await this.get(this.repoKey(repoId));
      return kv ? toRepo(parse<RepoRecord>(kv)) : null;
    });
  }

  async listRepos(): Promise<RepoRecord[]> {
    return this.guard('list repos', async () =>
      (await this.list(this.k('repos', ''))).map((kv) => toRepo(parse<RepoRecord>(kv))).sort((a, b) => byUtf8(a.repoId, b.repoId)),
    );
  }

  async listReposPage(after: string, limit: number): Promise<RepoRecord[]> {
    const all = this.k('repos', '');
    // Keys sort by bytes, as ids do; `after` + NUL is the first key past `after`.
    const from = after ? `${this.repoKey(after)}\0` : all;
    return this.guard('list repos', async () => {
      const res = await this.client.kv.range({ key: utf8(from), range_end: prefixEnd(all), limit });
      return res.kvs.map(toKv).map((kv) => toRepo(parse<RepoRecord>(kv)));
    });
  }

  async countRepos(owner: string): Promise<number> {
    const prefix = this.repoKey(`${owner}/`);
    return this.guard('count repos', async () => {
      const res = await this.client.kv.range({ key: utf8(prefix), range_end: prefixEnd(prefix), count_only: true });
      return Number(res.count);
    });
  }

  async getReplicas(repoId: string): Promise<ReplicaRecord[]> {
    return this.guard('read replicas', async () =>
      (await this.list(this.replicasOf(repoId)))
        .map((kv) => toReplica(parse<ReplicaRecord>(kv)))
        .filter((r) => r.repoId === repoId)
        .sort((a, b) => byUtf8(a.nodeId, b.nodeId)),
    );
  }

  async getRepoState(repoId: string): Promise<RepoState | null> {
    return this.guard('read repo state', async () => {
      const key = this.repoKey(repoId);
      const prefix = this.replicasOf(repoId);
      const snap = await this.read([key], [prefix]);
      const kv = snap.get(key);
      if (!kv) return null;
      return { repo: toRepo(parse<RepoRecord>(kv)), replicas: this.replicasIn(snap, prefix, repoId) };
    });
  }

  /** replicasIn lists the replica records of a repo read under `prefix` (replicasOf), by node id. */
  private replicasIn(snap: Snapshot, prefix: string, repoId: string): ReplicaRecord[] {
    return snap
      .list(prefix)
      .map((r) => toReplica(parse<ReplicaRecord>(r)))
      .filter((r) => r.repoId === repoId)
      .sort((a, b) => byUtf8(a.nodeId, b.nodeId));
  }

  async replicasOnNode(nodeId: string): Promise<ReplicaRecord[]> {
    // Keys are grouped by repo, so this scans every replica record; the count is repos × replication factor.
    return this.guard('read replicas on node', async () =>
      (await this.list(this.k('replicas', '')))
        .map((kv) => toReplica(parse<ReplicaRecord>(kv)))
        .filter((r) => r.nodeId === nodeId)
        .sort((a, b) => byUtf8(a.repoId, b.repoId)),
    );
  }

  // ---- locks ----

  /** liveLock returns a lock record that exists and has not reached its expiresAt. */
  private static liveLock(kv: Kv | undefined, now: number): StoredLock | null {
    if (!kv) return null;
    const lock = parse<StoredLock>(kv);
    return lock.expiresAt > now ? lock : null;
  }

  async acquireLock(repoId: string, holder: string, ttlMs: number, line?: LockLine): Promise<RepoLock | null> {
    const lockKey = this.lockKey(repoId);
    const fenceKey = this.metaKey('fencing_token');
    const refused: Refused = { entry: null };
    const lock = await this.update(
      'acquire lock',
      [lockKey, fenceKey],
      [],
      (s, now) => this.lockPlan(s, now, repoId, holder, ttlMs, line, refused),
      [this.lineOf(repoId)],
    );
    if (!lock) await this.enterLine(repoId, refused.entry);
    return lock;
  }

  /**
   * lockPlan takes the lock of a repo as of snapshot `s` (which holds its lock key, the fencing
   * counter and the repo's lock line); result null if held or other holders wait first (LockLine),
   * with the entry a refused caller with a line is to write in `refused` (enterLine). Taking the
   * lock removes the taker's entry and those past their time, in the same write.
   */
  private lockPlan(
    s: Snapshot,
    now: number,
    repoId: string,
    holder: string,
    ttlMs: number,
    line: LockLine | undefined,
    refused: Refused,
  ): Plan<RepoLock | null> {
    const lockKey = this.lockKey(repoId);
    const fenceKey = this.metaKey('fencing_token');
    const prefix = this.lineOf(repoId);
    const entries = s.list(prefix).map((kv) => lineEntryOf(kv.key.slice(prefix.length), kv.value));
    const verdict = lineVerdict(entries, holder, EtcdStore.liveLock(s.get(lockKey), now) !== null, line, now);
    refused.entry = verdict.take ? null : verdict.write;
    if (!verdict.take) return { result: null };
    // The counter is cluster-wide, so a re-created repo never sees a token it gave out before.
    const fence = s.get(fenceKey);
    const token = (fence ? Number(fence.value) : 0) + 1;
    const lock: RepoLock = { repoId, holder, token, expiresAt: now + ttlMs };
    const value = JSON.stringify({ holder, token, expiresAt: lock.expiresAt } satisfies StoredLock);
    const previous = s.get(lockKey);
    const gone = verdict.drop.map((e) => del(this.lineKey(repoId, e.holder)));
    return {
      result: lock,
      leaseMs: ttlMs,
      ops: (lease) => [put(lockKey, value, lease), put(fenceKey, String(token)), ...gone],
      revoke: previous ? [previous.lease] : [],
    };
  }

  /**
   * enterLine writes a refused waiter's entry in the repo's lock line, if it has one to write: a
   * plain put, compared with nothing. The line is fairness only, and a write compared with the
   * lock's keys (the fencing counter moves with every lock taken in the cluster, the repo record
   * with every commit of the holder the waiter waits for) could fail again and again.
   */
  private async enterLine(repoId: string, entry: LineEntry | null): Promise<void> {
    if (!entry) return;
    await this.guard('enter lock line', async () => {
      await this.txn([], [put(this.lineKey(repoId, entry.holder), lineEntryValue(entry))]);
    });
  }

  async acquireLockAndRead(
    repoId: string,
    holder: string,
    ttlMs: number,
    line?: LockLine,
  ): Promise<{ lock: RepoLock; state: RepoState | null } | null> {
    const lockKey = this.lockKey(repoId);
    const fenceKey = this.metaKey('fencing_token');
    const repoKey = this.repoKey(repoId);
    const prefix = this.replicasOf(repoId);
    const refused: Refused = { entry: null };
    // The repo record is compared (so it is as of the lock's revision; only a lock holder commits);
    // the replica records are read with it, not compared: they change outside the lock (a late
    // confirmation, a mark), and are as fresh as a read right after the lock would be.
    const got = await this.update(
      'acquire lock',
      [lockKey, fenceKey, repoKey],
      [],
      (s, now): Plan<{ lock: RepoLock; state: RepoState | null } | null> => {
        const plan = this.lockPlan(s, now, repoId, holder, ttlMs, line, refused);
        if (!plan.result) return { result: null };
        const repoKv = s.get(repoKey);
        const state = repoKv ? { repo: toRepo(parse<RepoRecord>(repoKv)), replicas: this.replicasIn(s, prefix, repoId) } : null;
        return { ...plan, result: { lock: plan.result, state } };
      },
      [prefix, this.lineOf(repoId)],
    );
    if (!got) await this.enterLine(repoId, refused.entry);
    return got;
  }

  async leaveLockLine(repoId: string, holder: string): Promise<void> {
    await this.guard('leave lock line', async () => {
      await this.txn([], [del(this.lineKey(repoId, holder))]);
    });
  }

  async renewLock(repoId: string, token: number, ttlMs: number): Promise<boolean> {
    const lockKey = this.lockKey(repoId);
    // A fresh lease per renewal: etcd cannot change a lease's TTL, and ttlMs may differ from the first.
    return this.update('renew lock', [lockKey], [], (s, now): Plan<boolean> => {
      const kv = s.get(lockKey);
      const lock = EtcdStore.liveLock(kv, now);
      if (!kv || !lock || lock.token !== token) return { result: false };
      const value = JSON.stringify({ holder: lock.holder, token, expiresAt: now + ttlMs } satisfies StoredLock);
      return { result: true, leaseMs: ttlMs, ops: (lease) => [put(lockKey, value, lease)], revoke: [kv.lease] };
    });
  }

  async releaseLock(repoId: string, token: number): Promise<void> {
    const lockKey = this.lockKey(repoId);
    await this.update('release lock', [lockKey], [], (s) => {
      const release = EtcdStore.releaseOf(s.get(lockKey), lockKey, token);
      return release ? { result: undefined, ops: () => [release.op], revoke: [release.lease] } : { result: undefined };
    });
  }

  /** releaseOf is the delete that frees a lock still held under `token` (and the lease it leaves unused), or null. */
  private static releaseOf(kv: Kv | undefined, lockKey: string, token: number): { op: IRequestOp; lease: string } | null {
    if (!kv || parse<StoredLock>(kv).token !== token) return null;
    return { op: del(lockKey), lease: kv.lease };
  }

  async getLock(repoId: string): Promise<RepoLock | null> {
    return this.guard('read lock', async () => {
      const lock = EtcdStore.liveLock(await this.get(this.lockKey(repoId)), this.now());
      return lock ? { repoId, holder: lock.holder, token: lock.token, expiresAt: lock.expiresAt } : null;
    });
  }

  // ---- transactions ----

  async beginTxn(txn: Omit<TxnRecord, 'decision' | 'decidedAt'>): Promise<void> {
    await this.guard('begin txn', async () => {
      const record: StoredTxn = {
        id: txn.id,
        repoId: txn.repoId,
        kind: txn.kind,
        coordinator: txn.coordinator,
        baseGeneration: txn.baseGeneration,
        fencingToken: txn.fencingToken,
        decision: null,
        decidedAt: null,
        createdAt: this.now(),
      };
      // Write-once: a txn that exists (perhaps already decided) is left alone.
      await this.txn([absent(this.txnKey(txn.id))], [put(this.txnKey(txn.id), JSON.stringify(record))]);
    });
  }

  async getTxn(txnId: string): Promise<TxnRecord | null> {
    return this.guard('read txn', async () => {
      const kv = await this.get(this.txnKey(txnId));
      return kv ? toTxn(parse<StoredTxn>(kv)) : null;
    });
  }

  /** decisionOp writes a decision onto the txn record, creating the record if beginTxn never ran. */
  private decisionOp(
    txnKv: Kv | undefined,
    txnId: string,
    decision: Decision,
    now: number,
    fields: { repoId: string; kind: TxnKind; coordinator: string; baseGeneration: number; fencingToken: number },
  ): IRequestOp {
    const decidedAt = new Date(now).toISOString();
    const record: StoredTxn = txnKv
      ? { ...parse<StoredTxn>(txnKv), decision, decidedAt }
      : { id: txnId, ...fields, decision, decidedAt, createdAt: now };
    return put(this.txnKey(txnId), JSON.stringify(record));
  }

  private static standing(txnKv: Kv | undefined): DecideResult | null {
    const decision = txnKv ? parse<StoredTxn>(txnKv).decision : null;
    return decision ? { written: false, decision, reason: 'decided' } : null;
  }

  async commitCreate(c: CommitCreate): Promise<DecideResult> {
    const r = c.record;
    const txnKey = this.txnKey(c.txnId);
    const repoKey = this.repoKey(r.repoId);
    return this.update('commit create', [txnKey, repoKey], [], (s, now): Plan<DecideResult> => {
      const prior = EtcdStore.standing(s.get(txnKey));
      if (prior) return { result: prior };
      if (s.get(repoKey)) return { result: { written: false, decision: null, reason: 'exists' } };
      const repo: RepoRecord = {
        repoId: r.repoId,
        incarnation: r.incarnation,
        replicas: [...r.replicas],
        generation: r.generation,
        checksum: r.checksum,
        createdAt: r.createdAt,
      };
      return {
        result: { written: true, decision: 'commit' },
        ops: () => [
          put(repoKey, JSON.stringify(repo)),
          // Replica records of an earlier incarnation must not count for the new one.
          delPrefix(this.replicasOf(r.repoId)),
          this.decisionOp(s.get(txnKey), c.txnId, 'commit', now, {
            repoId: r.repoId,
            kind: 'create',
            coordinator: c.coordinator,
            baseGeneration: 0,
            fencingToken: 0,
          }),
        ],
      };
    });
  }

  /** compareRepo checks the compares shared by push and delete commits, as SqliteStore does. */
  private static compareRepo(
    repoKv: Kv | undefined,
    lockKv: Kv | undefined,
    now: number,
    c: { incarnation: string; baseGeneration: number; fencingToken: number },
  ): DecideResult | null {
    if (!repoKv) return { written: false, decision: null, reason: 'missing' };
    const repo = parse<RepoRecord>(repoKv);
    if (repo.incarnation !== c.incarnation) return { written: false, decision: null, reason: 'incarnation' };
    if (repo.generation !== c.baseGeneration) return { written: false, decision: null, reason: 'generation' };
    const lock = EtcdStore.liveLock(lockKv, now);
    if (!lock || lock.token !== c.fencingToken) return { written: false, decision: null, reason: 'lock' };
    return null;
  }

  async commitPush(c: CommitPush): Promise<DecideResult> {
    const txnKey = this.txnKey(c.txnId);
    const repoKey = this.repoKey(c.repoId);
    const lockKey = this.lockKey(c.repoId);
    // The lock key is among the compared keys, so a lock lost or re-taken after the read fails the Txn.
    return this.update('commit push', [txnKey, repoKey, lockKey], [], (s, now): Plan<DecideResult> => {
      const prior = EtcdStore.standing(s.get(txnKey));
      if (prior) return { result: prior };
      const failed = EtcdStore.compareRepo(s.get(repoKey), s.get(lockKey), now, c);
      if (failed) return { result: failed };
      const repo = parse<RepoRecord>(s.get(repoKey)!);
      const next: RepoRecord = { ...toRepo(repo), generation: c.baseGeneration + 1, checksum: c.newChecksum };
      return {
        result: { written: true, decision: 'commit' },
        ops: () => [
          put(repoKey, JSON.stringify(next)),
          this.decisionOp(s.get(txnKey), c.txnId, 'commit', now, {
            repoId: c.repoId,
            kind: 'push',
            coordinator: c.coordinator,
            baseGeneration: c.baseGeneration,
            fencingToken: c.fencingToken,
          }),
        ],
      };
    });
  }

  async commitDelete(c: CommitDelete): Promise<DecideResult> {
    const txnKey = this.txnKey(c.txnId);
    const repoKey = this.repoKey(c.repoId);
    const lockKey = this.lockKey(c.repoId);
    return this.update('commit delete', [txnKey, repoKey, lockKey], [], (s, now): Plan<DecideResult> => {
      const prior = EtcdStore.standing(s.get(txnKey));
      if (prior) return { result: prior };
      const failed = EtcdStore.compareRepo(s.get(repoKey), s.get(lockKey), now, c);
      if (failed) return { result: failed };
      return {
        result: { written: true, decision: 'commit' },
        ops: () => [
          del(repoKey),
          delPrefix(this.replicasOf(c.repoId)),
          delPrefix(this.lineOf(c.repoId)),
          this.decisionOp(s.get(txnKey), c.txnId, 'commit', now, {
            repoId: c.repoId,
            kind: 'delete',
            coordinator: c.coordinator,
            baseGeneration: c.baseGeneration,
            fencingToken: c.fencingToken,
          }),
        ],
      };
    });
  }

  async abortTxn(txnId: string): Promise<DecideResult> {
    const txnKey = this.txnKey(txnId);
    return this.update('abort txn', [txnKey], [], (s, now): Plan<DecideResult> => {
      const prior = EtcdStore.standing(s.get(txnKey));
      if (prior) return { result: prior };
      return {
        result: { written: true, decision: 'abort' },
        ops: () => [
          this.decisionOp(s.get(txnKey), txnId, 'abort', now, {
            repoId: '',
            kind: 'push',
            coordinator: '',
            baseGeneration: -1,
            fencingToken: 0,
          }),
        ],
      };
    });
  }

  // ---- replica records ----

  async confirmReplica(c: ConfirmReplica): Promise<boolean> {
    const keys = [this.repoKey(c.repoId), this.replicaKey(c.repoId, c.nodeId)];
    return this.update('confirm replica', keys, [], (s, now): Plan<boolean> => {
      const op = this.confirmOp(s, now, c);
      return op ? { result: true, ops: () => [op] } : { result: false };
    });
  }

  async confirmReplicas(b: ConfirmBatch): Promise<boolean[]> {
    checkConfirmBatch(b);
    const keys = new Set<string>();
    for (const c of b.confirmations) keys.add(this.repoKey(c.repoId)).add(this.replicaKey(c.repoId, c.nodeId));
    const lockKey = b.release ? this.lockKey(b.release.repoId) : null;
    if (lockKey) keys.add(lockKey);
    return this.update('confirm replicas', [...keys], [], (s, now): Plan<boolean[]> => {
      const ops: IRequestOp[] = [];
      const revoke: string[] = [];
      const result = b.confirmations.map((c) => {
        const op = this.confirmOp(s, now, c);
        if (op) ops.push(op);
        return op !== null;
      });
      const release = lockKey && b.release ? EtcdStore.releaseOf(s.get(lockKey), lockKey, b.release.token) : null;
      if (release) {
        ops.push(release.op);
        revoke.push(release.lease);
      }
      for (const m of b.meta ?? []) ops.push(put(this.metaKey(m.key), m.value));
      return ops.length ? { result, ops: () => ops, revoke } : { result };
    });
  }

  /** confirmOp is the write that confirms a replica as of snapshot `s`, or null when confirmReplica would refuse. */
  private confirmOp(s: Snapshot, now: number, c: ConfirmReplica): IRequestOp | null {
    const repoKv = s.get(this.repoKey(c.repoId));
    const repo = repoKv ? parse<RepoRecord>(repoKv) : null;
    if (!repo || repo.incarnation !== c.incarnation || c.generation > repo.generation) return null;
    const replicaKey = this.replicaKey(c.repoId, c.nodeId);
    const rowKv = s.get(replicaKey);
    const row = rowKv ? parse<ReplicaRecord>(rowKv) : null;
    if (row && row.incarnation === c.incarnation && row.generation > c.generation) return null;
    const record: ReplicaRecord = {
      repoId: c.repoId,
      nodeId: c.nodeId,
      incarnation: c.incarnation,
      generation: c.generation,
      checksum: c.checksum,
      state: 'in_sync',
      updatedAt: new Date(now).toISOString(),
    };
    return put(replicaKey, JSON.stringify(record));
  }

  async markReplica(
    repoId: string,
    nodeId: string,
    incarnation: string,
    state: Exclude<ReplicaState, 'in_sync'>,
    belowGeneration: number,
  ): Promise<boolean> {
    const repoKey = this.repoKey(repoId);
    const replicaKey = this.replicaKey(repoId, nodeId);
    return this.update('mark replica', [repoKey, replicaKey], [], (s, now): Plan<boolean> => {
      const repoKv = s.get(repoKey);
      if (!repoKv || parse<RepoRecord>(repoKv).incarnation !== incarnation) return { result: false };
      const rowKv = s.get(replicaKey);
      const row = rowKv ? parse<ReplicaRecord>(rowKv) : null;
      const updatedAt = new Date(now).toISOString();
      if (!row || row.incarnation !== incarnation) {
        // A replica never confirmed at this incarnation: generation -1 is below any real one.
        const record: ReplicaRecord = { repoId, nodeId, incarnation, generation: -1, checksum: '', state, updatedAt };
        return { result: true, ops: () => [put(replicaKey, JSON.stringify(record))] };
      }
      if (row.generation >= belowGeneration) return { result: false };
      const record: ReplicaRecord = { ...toReplica(row), state, updatedAt };
      return { result: true, ops: () => [put(replicaKey, JSON.stringify(record))] };
    });
  }

  async setReplicaSet(repoId: string, incarnation: string, replicas: readonly string[]): Promise<boolean> {
    const repoKey = this.repoKey(repoId);
    const replicasPrefix = this.replicasOf(repoId);
    // The prefix compare also catches a replica record created meanwhile for a node being dropped.
    return this.update('set replica set', [repoKey], [replicasPrefix], (s): Plan<boolean> => {
      const repoKv = s.get(repoKey);
      const repo = repoKv ? parse<RepoRecord>(repoKv) : null;
      if (!repo || repo.incarnation !== incarnation) return { result: false };
      const keep = new Set(replicas);
      const next: RepoRecord = { ...toRepo(repo), replicas: [...replicas] };
      const drop = s
        .list(replicasPrefix)
        .filter((kv) => !keep.has(parse<ReplicaRecord>(kv).nodeId))
        .map((kv) => del(kv.key));
      return { result: true, ops: () => [put(repoKey, JSON.stringify(next)), ...drop] };
    });
  }

  async pruneTxns(createdBefore: number): Promise<number> {
    return this.guard('prune txns', async () => {
      const old = (await this.list(this.k('txns', ''))).filter((kv) => parse<StoredTxn>(kv).createdAt < createdBefore);
      // Deleted in batches of one etcd Txn each (etcd caps the operations of one Txn at 128).
      for (let i = 0; i < old.length; i += 100)
        await this.txn(
          [],
          old.slice(i, i + 100).map((kv) => del(kv.key)),
        );
      return old.length;
    });
  }

  async countTxns(): Promise<number> {
    return this.guard('count txns', async () => {
      const prefix = this.k('txns', '');
      const res = await this.client.kv.range({ key: utf8(prefix), range_end: prefixEnd(prefix), count_only: true });
      return Number(res.count);
    });
  }

  // ---- meta ----

  async getMeta(key: string): Promise<string | null> {
    return this.guard('read meta', async () => (await this.get(this.metaKey(key)))?.value ?? null);
  }

  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    return this.guard('write meta', async () => {
      const metaKey = this.metaKey(key);
      const res = await this.txn([absent(metaKey)], [put(metaKey, value)], [rangeKey(metaKey)]);
      if (res.succeeded) return value;
      const kv = res.responses[0]?.response_range.kvs[0];
      // Present at the compare, so the range in the same Txn saw it.
      if (!kv) throw new Error(`etcd: meta key '${key}' vanished inside one txn`);
      return kv.value.toString('utf8');
    });
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.guard('write meta', async () => {
      await this.txn([], [put(this.metaKey(key), value)]);
    });
  }

  async deleteMeta(key: string): Promise<void> {
    await this.guard('write meta', async () => {
      await this.txn([], [del(this.metaKey(key))]);
    });
  }

  async compareAndSetMeta(key: string, expected: string | null, next: string | null): Promise<boolean> {
    return this.guard('write meta', async () => {
      const metaKey = this.metaKey(key);
      const holds: ICompare =
        expected === null ? absent(metaKey) : { key: utf8(metaKey), target: 'Value', result: 'Equal', value: utf8(expected) };
      const res = await this.txn([holds], [next === null ? del(metaKey) : put(metaKey, next)]);
      return res.succeeded;
    });
  }

  /**
   * feedMark reads the change feed's mark: the store's revision, the key counts under `repos/`
   * and `replicas/`, and the placement settings' newest revision and count.
   */
  async feedMark(): Promise<string> {
    return this.guard('read change feed mark', async () => feedMarkOf(await this.txn([], this.feedCounts())));
  }

  /**
   * changesSince reads, in one read-only Txn, the keys under `repos/` and `replicas/` whose mod
   * revision is past the mark's revision (the server filters: only those keys and their values
   * travel), and the feed mark's counts. A delete leaves no key to find: a count that moved since
   * the mark (a repo created or deleted, a replica added or dropped) answers null.
   */
  async changesSince(mark: string): Promise<ChangedRepos | null> {
    const m = /^(\d+):(\d+):(\d+):([\d.]+)$/.exec(mark);
    if (!m) return null;
    const [since, repoCount, replicaCount, settings] = [m[1]!, m[2]!, m[3]!, m[4]!];
    return this.guard('read changes', async () => {
      const [repos, replicas] = [this.k('repos', ''), this.k('replicas', '')];
      const changed = (p: string): IRequestOp => ({
        request_range: {
          key: utf8(p),
          range_end: prefixEnd(p),
          min_mod_revision: String(BigInt(since) + 1n),
          limit: String(CHANGES_MAX + 1),
        },
      });
      const res = await this.txn([], [...this.feedCounts(), changed(repos), changed(replicas)]);
      if (BigInt(res.header.revision) < BigInt(since)) return null;
      const [repoRange, replicaRange, , , changedRepos, changedReplicas] = res.responses.map((r) => r.response_range);
      if (String(repoRange!.count) !== repoCount || String(replicaRange!.count) !== replicaCount) return null;
      if (changedRepos!.more || changedReplicas!.more) return null;
      const ids = new Set<string>();
      const repoRecords = changedRepos!.kvs.map((kv) => toRepo(parse<RepoRecord>(toKv(kv))));
      const replicaRecords = changedReplicas!.kvs.map((kv) => toReplica(parse<ReplicaRecord>(toKv(kv))));
      for (const r of [...repoRecords, ...replicaRecords]) ids.add(r.repoId);
      if (ids.size > CHANGES_MAX) return null;
      const next = feedMarkOf(res);
      return {
        mark: next,
        repoIds: [...ids],
        repos: repoRecords,
        replicas: replicaRecords,
        complete: false,
        settingsChanged: next.slice(next.lastIndexOf(':') + 1) !== settings,
      };
    });
  }

  /**
   * feedCounts are the reads that every feed mark carries: the key counts under `repos/` and
   * `replicas/`, and the newest key (by mod revision) and count of each placement setting.
   */
  private feedCounts(): IRequestOp[] {
    const counts = [this.k('repos', ''), this.k('replicas', '')].map((p) => ({
      request_range: { key: utf8(p), range_end: prefixEnd(p), count_only: true },
    }));
    const newest = (key: string, range_end?: Buffer): IRequestOp => ({
      request_range: { key: utf8(key), range_end, keys_only: true, sort_target: 'Mod', sort_order: 'Descend', limit: 1 },
    });
    const decommissioned = this.metaKey(DECOMMISSIONED_PREFIX);
    return [...counts, newest(decommissioned, prefixEnd(decommissioned)), newest(this.metaKey(REBALANCE_KEY))];
  }

  async trimMeta(prefix: string, keep: number): Promise<number> {
    return this.guard('trim meta', async () => {
      const p = this.metaKey(prefix);
      // The newest `keep` keys and the one below them: every key up to that one goes, in one delete.
      const res = await this.client.kv.range({
        key: utf8(p),
        range_end: prefixEnd(p),
        keys_only: true,
        sort_order: 'Descend',
        sort_target: 'Key',
        limit: keep + 1,
      });
      const boundary = res.kvs[keep]?.key;
      if (!boundary) return 0;
      const d = await this.client.kv.deleteRange({ key: utf8(p), range_end: Buffer.concat([boundary, Buffer.from([0])]) });
      return Number(d.deleted);
    });
  }

  async listMeta(prefix: string): Promise<Array<{ key: string; value: string }>> {
    return this.guard('list meta', async () => {
      const base = this.metaKey('');
      return (await this.list(this.metaKey(prefix))).map((kv) => ({ key: kv.key.slice(base.length), value: kv.value }));
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    for (const probe of this.probes.values()) probe.close();
    this.probes.clear();
    this.client.close();
  }

  /** probeLater asks every suspect member again in PROBE_INTERVAL_MS, and so on until none is left. */
  private probeLater(): void {
    if (this.probeTimer || this.closed) return;
    this.probeTimer = setTimeout(() => {
      void this.probe().finally(() => {
        this.probeTimer = null;
        if (this.health.suspect().length > 0) this.probeLater();
      });
    }, PROBE_INTERVAL_MS);
    this.probeTimer.unref();
  }

  /** probe reads a key on each suspect member alone: a linearizable read answers only from a member in the quorum. */
  private async probe(): Promise<void> {
    await Promise.all(
      this.health.suspect().map(async (host) => {
        let probe = this.probes.get(host);
        if (!probe) {
          const once = policy((fn) => Promise.resolve(fn()));
          probe = new Etcd3({
            hosts: host,
            defaultCallOptions: () => ({ deadline: Date.now() + PROBE_INTERVAL_MS }),
            faultHandling: { host: () => once, global: once },
          });
          this.probes.set(host, probe);
        }
        try {
          await probe.get(this.k('meta', 'probe')).string();
          this.health.recovered(host);
        } catch {
          // Still silent: skipped until a later probe gets through.
        }
      }),
    );
  }
}

function toNodeInfo(n: StoredNode): NodeInfo {
  return { id: n.id, url: n.url, version: n.version, startedAt: n.startedAt, ...(n.protocol ? { protocol: n.protocol } : {}) };
}
function toRepo(r: RepoRecord): RepoRecord {
  return {
    repoId: r.repoId,
    incarnation: r.incarnation,
    replicas: [...r.replicas],
    generation: r.generation,
    checksum: r.checksum,
    createdAt: r.createdAt,
  };
}
function toReplica(r: ReplicaRecord): ReplicaRecord {
  return {
    repoId: r.repoId,
    nodeId: r.nodeId,
    incarnation: r.incarnation,
    generation: r.generation,
    checksum: r.checksum,
    state: r.state,
    updatedAt: r.updatedAt,
  };
}
function toTxn(t: StoredTxn): TxnRecord {
  return {
    id: t.id,
    repoId: t.repoId,
    kind: t.kind,
    coordinator: t.coordinator,
    baseGeneration: t.baseGeneration,
    fencingToken: t.fencingToken,
    decision: t.decision,
    decidedAt: t.decidedAt,
  };
}

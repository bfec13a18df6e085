import { DEFAULTS } from '../config.js';
import { errorMessage, unavailable } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import type { ClusterStore, LockLine, RepoLock, RepoState } from '../store/types.js';

/**
 * LOCK_LINE_TTL_MS is how long a waiter's entry in a repo's lock line (LockLine) lasts unless
 * renewed; a waiter renews it as it polls, so one that died or stopped holds the line up this
 * long at most.
 */
export const LOCK_LINE_TTL_MS = 2_000;

/**
 * FIRST_IN_LINE_POLL_MS is how often the waiter first in a repo's lock line asks for the lock:
 * no one else may take it once it is free, so it stays free until this waiter asks. Waiters
 * further back poll less and less often (5 to 100 ms), as all did before the line.
 */
export const FIRST_IN_LINE_POLL_MS = 5;

/**
 * NEXT_IN_LINE_POLL_MS caps the wait of the waiter second in line: it learns that it is first
 * only at its next poll, and until then no one may take the lock once it is free.
 */
export const NEXT_IN_LINE_POLL_MS = 20;

/** pollDelay is how long a refused waiter waits before it asks again, by its place in the line (none: no line). */
function pollDelay(ahead: number | undefined, backoff: number): number {
  if (ahead === 0) return FIRST_IN_LINE_POLL_MS;
  if (ahead === 1) return Math.min(backoff, NEXT_IN_LINE_POLL_MS);
  return backoff;
}

/**
 * ActivityKind names what can run on this node's replica of one repo:
 * - `txn`: a transaction this node takes part in, from the start of its prepare until its
 *   replica's confirmation is written (or until it aborted). Not until git's commit: a replica
 *   committed but not yet confirmed looks behind to the store, and must not look idle too.
 * - `upload`: a push's receive-pack writing into the replica (its quarantine, then its pack),
 *   from its start until it exits. The upload takes no repo lock; this is what keeps a swap
 *   from moving its directory away.
 * - `repair`: a fetch into the replica, or a whole copy made in the tmp directory.
 * - `swap`: a whole copy moved into place over the replica (inside its repair).
 * - `repack`: `git repack -d --geometric=2` rolling the replica's packs up.
 * - `drop`: the replica removed because its repo was deleted or moved off this node.
 *
 * A steward's move changes only the replica set in the store, under the repo lock (`lock`);
 * on disk it is a `repair` on the node added and a `drop` on the node removed.
 */
export type ActivityKind = 'txn' | 'upload' | 'repair' | 'swap' | 'repack' | 'drop' | 'ship';

/**
 * MAY_START_DURING is the overlap rule: for each kind, what may already be running on the same
 * replica when it starts. Whatever else runs makes it wait or be refused (`tryBegin` is null).
 * The rule is one-way on purpose: a push may start during a repack, but a repack waits for a
 * moment without transactions, so that a long repack never holds pushes back.
 * - `txn` joins other transactions (a straggler's commit and the next prepare), uploads and a
 *   repack (git's repack leaves `.keep` packs and refs alone); never a repair, swap or drop, whose
 *   replica is behind or going away: its prepare is refused as stale.
 * - `upload` joins anything but a swap or a drop: it writes into the directory those replace.
 *   A repair's fetch or copy does not touch what it writes.
 * - `repair` starts only beside uploads: a transaction on the replica would race its refs, and
 *   one repair, repack or drop of a replica at a time.
 * - `swap` starts only inside its own repair: no upload, no transaction.
 * - `repack` starts beside uploads only, as before: never while a transaction is open.
 * - `drop` starts only when nothing runs.
 * - `ship` is a coordinator reading a push's pack out of the replica for a peer (a stage, or a
 *   prepare carrying it): it joins anything but a swap or a drop, and keeps a repack, swap or
 *   drop from starting, since each can remove the pack file. A straggler's prepare opens the
 *   pack after the push was answered and receive-pack's `.keep` was gone; a repack that rolled
 *   the pack up meanwhile made it fail (ENOENT) and the peer was marked stale.
 */
export const MAY_START_DURING: Readonly<Record<ActivityKind, readonly ActivityKind[]>> = {
  txn: ['txn', 'upload', 'repack', 'ship'],
  upload: ['txn', 'upload', 'repair', 'repack', 'ship'],
  repair: ['upload', 'ship'],
  swap: ['repair'],
  repack: ['upload'],
  drop: [],
  ship: ['txn', 'upload', 'repair', 'repack', 'ship'],
};

/** mayStart says whether `kind` may start while `running` run on the same replica. */
export function mayStart(kind: ActivityKind, running: Iterable<ActivityKind>): boolean {
  const allowed = MAY_START_DURING[kind];
  for (const r of running) if (!allowed.includes(r)) return false;
  return true;
}

/** Running is one started activity; `end` is idempotent. */
export interface Running {
  readonly kind: ActivityKind;
  end(): void;
}

/** HeldLock is the repo write lock held by this node, renewed until released. */
export interface HeldLock {
  readonly lock: RepoLock;
  /** state is the repo's state read with the lock (`lock(…, { read: true })`; null: no such repo), else undefined. */
  readonly state?: RepoState | null;
  /** lost says a renewal found the lease gone (expired, or taken by another holder). */
  lost(): boolean;
  /** release stops the renewal and frees the lock; repeating it is harmless. */
  release(): Promise<void>;
  /**
   * releasedInStore says the caller freed the lock in a store write of its own (a push's
   * confirmations, `confirmReplicas`): the renewal stops, and release() then only hands this
   * node's turn to the next local caller.
   */
  releasedInStore(): void;
}

/**
 * RepoActivity owns what runs on this node's replicas, per repo: the one registry of running
 * activities, with the overlap rule MAY_START_DURING, and the one way to take the repo's write
 * lock in the store and keep it renewed (`lock`) — used by transactions, repair swaps and
 * steward moves alike. The registry is local: the lock keeps nodes apart, the registry keeps
 * apart what runs on one node's copy, including what runs without the lock (uploads, the
 * participant's side of a transaction, fetches, repacks).
 */
export class RepoActivity {
  private readonly running = new Map<string, Map<ActivityKind, number>>();
  private readonly waiters = new Map<string, Array<() => void>>();
  /** lockQueues: per repo, the local callers waiting for their turn at the store lock, oldest first. */
  private readonly lockQueues = new Map<string, Array<() => void>>();

  constructor(
    private readonly deps: {
      readonly nodeId: string;
      readonly store: ClusterStore;
      readonly lockTtlMs: number;
      /** uploadWaitMs bounds how long an upload waits for a swap or drop of its replica to finish (default DEFAULTS.uploadWaitMs). */
      readonly uploadWaitMs?: number;
      readonly logger: Logger;
    },
  ) {}

  /**
   * tryBegin starts `kind` on the replica if MAY_START_DURING allows it beside what runs, in one
   * synchronous step (no other activity can slip in between the check and the mark); null if not.
   */
  tryBegin(repoId: string, kind: ActivityKind): Running | null {
    const counts = this.running.get(repoId) ?? new Map<ActivityKind, number>();
    if (!mayStart(kind, counts.keys())) return null;
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
    this.running.set(repoId, counts);
    let ended = false;
    return {
      kind,
      end: () => {
        if (ended) return;
        ended = true;
        this.finish(repoId, kind);
      },
    };
  }

  /** begin is tryBegin waiting up to `waitMs` for what stands in the way to end; null if it did not. */
  async begin(repoId: string, kind: ActivityKind, waitMs: number): Promise<Running | null> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const started = this.tryBegin(repoId, kind);
      if (started) return started;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        const list = this.waiters.get(repoId) ?? [];
        list.push(() => {
          clearTimeout(timer);
          resolve();
        });
        this.waiters.set(repoId, list);
      });
    }
  }

  /**
   * beginUpload registers a push's receive-pack on the replica; call it before spawning
   * receive-pack and call what it returns once receive-pack has exited. It waits while the
   * replica is being swapped or dropped (a few milliseconds, usually) and throws a 503 AppError
   * if that lasts longer than uploadWaitMs.
   */
  async beginUpload(repoId: string): Promise<() => void> {
    const started = await this.begin(repoId, 'upload', this.deps.uploadWaitMs ?? DEFAULTS.uploadWaitMs);
    if (!started) throw unavailable(`replica of ${repoId} is being replaced, try again`, { retryAfter: 1 });
    return () => started.end();
  }

  /** isRunning says whether `kind` runs on the replica. */
  isRunning(repoId: string, kind: ActivityKind): boolean {
    return (this.running.get(repoId)?.get(kind) ?? 0) > 0;
  }

  /** runningOn lists the kinds running on the replica, for logs and refusals. */
  runningOn(repoId: string): ActivityKind[] {
    return [...(this.running.get(repoId)?.keys() ?? [])];
  }

  private finish(repoId: string, kind: ActivityKind): void {
    const counts = this.running.get(repoId);
    const n = (counts?.get(kind) ?? 1) - 1;
    if (counts && n > 0) counts.set(kind, n);
    else counts?.delete(kind);
    if (counts?.size === 0) this.running.delete(repoId);
    const list = this.waiters.get(repoId);
    this.waiters.delete(repoId);
    for (const wake of list ?? []) wake();
  }

  /**
   * lock takes the repo's write lock in the store, trying for up to `waitMs` (0: once), and
   * renews it every third of its lease until released; null if another holder kept it. A lost
   * renewal is reported by `lost()`: the holder's fencing token no longer passes the store's
   * compares, so nothing it decides afterwards can land.
   */
  async lock(repoId: string, waitMs: number, opts: { read?: boolean } = {}): Promise<HeldLock | null> {
    const { store, nodeId, lockTtlMs } = this.deps;
    const deadline = Date.now() + waitMs;
    // This node's callers take turns, first come first served; only the one whose turn it is
    // asks the store, so a busy repo's waiters neither poll the store together nor overtake
    // each other at random.
    if (!(await this.takeTurn(repoId, deadline))) return null;
    let delay = 5;
    // A caller that waits stands in the repo's line across nodes (LockLine): a node that keeps
    // getting pushes cannot take the lock back at each release while another node's pushes wait.
    const line: LockLine | undefined = waitMs > 0 ? { ttlMs: LOCK_LINE_TTL_MS } : undefined;
    try {
      for (;;) {
        if (opts.read) {
          const got = await store.acquireLockAndRead(repoId, nodeId, lockTtlMs, line);
          if (got) return this.hold(repoId, got.lock, got.state);
        } else {
          const lock = await store.acquireLock(repoId, nodeId, lockTtlMs, line);
          if (lock) return this.hold(repoId, lock);
        }
        if (Date.now() >= deadline) {
          // Out of the line before the next caller here takes its turn: a delete landing after
          // that caller's first poll would cost it the place it found.
          await this.leaveLine(repoId, line);
          this.passTurn(repoId);
          return null;
        }
        await new Promise((r) => setTimeout(r, pollDelay(line?.ahead, delay)));
        delay = Math.min(100, delay * 2);
      }
    } catch (err) {
      void this.leaveLine(repoId, line);
      this.passTurn(repoId);
      throw err;
    }
  }

  /**
   * leaveLine takes this node out of a repo's lock line when a waiter gives up and no other
   * caller here waits for the lock (one that does keeps the node's place).
   */
  private async leaveLine(repoId: string, line: LockLine | undefined): Promise<void> {
    if (line?.ahead === undefined || (this.lockQueues.get(repoId)?.length ?? 0) > 0) return;
    await this.deps.store
      .leaveLockLine(repoId, this.deps.nodeId)
      .catch((err: unknown) =>
        this.deps.logger.debug({ repoId, err: errorMessage(err) }, 'could not leave the lock line; the entry lapses'),
      );
  }

  /** takeTurn waits until it is this caller's turn at the repo's lock; false past the deadline. */
  private takeTurn(repoId: string, deadline: number): Promise<boolean> {
    const queue = this.lockQueues.get(repoId);
    if (!queue) {
      this.lockQueues.set(repoId, []);
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(
        () => {
          const i = queue.indexOf(wake);
          if (i !== -1) queue.splice(i, 1);
          resolve(false);
        },
        Math.max(0, deadline - Date.now()),
      );
      queue.push(wake);
    });
  }

  /** passTurn hands the repo's lock turn to the next local caller, or frees it. */
  private passTurn(repoId: string): void {
    const queue = this.lockQueues.get(repoId);
    const next = queue?.shift();
    if (next) next();
    else this.lockQueues.delete(repoId);
  }

  private hold(repoId: string, lock: RepoLock, state?: RepoState | null): HeldLock {
    const { store, lockTtlMs, logger } = this.deps;
    let lost = false;
    const timer = setInterval(
      () => {
        store.renewLock(repoId, lock.token, lockTtlMs).then(
          (ok) => {
            if (!ok) lost = true;
          },
          () => undefined,
        );
      },
      Math.max(100, Math.floor(lockTtlMs / 3)),
    );
    timer.unref();
    let released = false;
    let freed = false;
    return {
      lock,
      ...(state !== undefined ? { state } : {}),
      lost: () => lost,
      releasedInStore: () => {
        freed = true;
        clearInterval(timer);
      },
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        try {
          if (!freed)
            await store.releaseLock(repoId, lock.token).catch((err: unknown) => {
              logger.warn({ repoId, err: errorMessage(err) }, 'lock release failed; the lease expires by itself');
            });
        } finally {
          this.passTurn(repoId);
        }
      },
    };
  }
}

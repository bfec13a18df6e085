import { notFound, unavailable, StoreUnavailableError } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import type { Membership } from '../cluster/membership.js';
import type { ReplicaStorage } from '../git/repo-storage.js';
import { isBehindForGood, isInSync, isOneBehind, type ClusterStore, type RepoRecord, type ReplicaRecord } from '../store/types.js';

/**
 * Route says where a request is served: this node's replica, or an in-sync peer (`incarnation`:
 * the replica's, when a store read found it in sync, not a copy remembered through an outage).
 */
export type Route = { kind: 'local'; stale: boolean } | { kind: 'peer'; nodeId: string; url: string; incarnation?: string };

interface Seen {
  readonly repo: RepoRecord;
  readonly replicas: ReplicaRecord[];
  /** at is when the store was read (Date.now()). */
  readonly at: number;
}

/**
 * Router decides where a git request is served (DESIGN §6): the local replica when the store
 * says it holds the repo's current generation (a linearizable read on every request), else the
 * least loaded in-sync live peer. When the store is unreachable, reads fall back to what this
 * node last saw, flagged as possibly stale; writes fail closed (I6).
 */
export class Router {
  private readonly lastSeen = new Map<string, Seen>();

  constructor(
    private readonly deps: {
      nodeId: string;
      store: ClusterStore;
      storage: ReplicaStorage;
      membership: Membership;
      logger: Logger;
      /** commitWaitMs bounds the wait for a committing push's first confirmation (settings: commitWaitMs). */
      commitWaitMs: number;
    },
  ) {}

  /** remember records a repo's state read elsewhere (the repair pass), for reads during a store outage. */
  remember(repo: RepoRecord, replicas: ReplicaRecord[]): void {
    this.lastSeen.set(repo.repoId, { repo, replicas, at: Date.now() });
  }

  /** forgetAllBut drops what this router remembers of repos that no longer exist (`existing`: a full listing). */
  forgetAllBut(existing: ReadonlySet<string>): void {
    for (const repoId of this.lastSeen.keys()) if (!existing.has(repoId)) this.lastSeen.delete(repoId);
  }

  /** replicaSetOf is a repo's replica set as this router last read it (undefined: not seen). */
  replicaSetOf(repoId: string): readonly string[] | undefined {
    return this.lastSeen.get(repoId)?.repo.replicas;
  }

  /** behindOf names the replicas of a repo whose records, as this router last read them, rule them out of a push. */
  behindOf(repoId: string): ReadonlySet<string> {
    const seen = this.lastSeen.get(repoId);
    if (!seen) return new Set();
    return new Set(seen.replicas.filter((r) => isBehindForGood(seen.repo, r)).map((r) => r.nodeId));
  }

  /** remembered is how many repos this router remembers (tests). */
  get remembered(): number {
    return this.lastSeen.size;
  }

  private async read(repoId: string, write: boolean): Promise<Seen & { fromCache: boolean }> {
    try {
      const state = await this.deps.store.getRepoState(repoId);
      if (!state) {
        this.lastSeen.delete(repoId);
        throw notFound(`repository ${repoId} not found`);
      }
      const seen = { ...state, at: Date.now() };
      this.lastSeen.set(repoId, seen);
      return { ...seen, fromCache: false };
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      const cached = this.lastSeen.get(repoId);
      if (write || !cached) throw err;
      return { ...cached, fromCache: true };
    }
  }

  /**
   * route picks where to serve `repoId`; `write` requires a replica that can coordinate a push.
   * Between a push's (or a create's) decision and its first confirmation no replica is in sync; a request
   * arriving then waits (up to commitWaitMs) for that confirmation instead of getting a
   * 503. Waiting serves nothing stale: the answer comes from a replica that confirmed.
   * `reuseMs`: a read at most that old routes again without reading the store (a push's POST
   * after its `info/refs`: the coordinator reads the repo again under the lock, and catches its
   * replica up if it fell behind meanwhile; a peer it is proxied to does the same).
   */
  async route(repoId: string, write: boolean, opts: { reuseMs?: number } = {}): Promise<Route> {
    if (opts.reuseMs) {
      const seen = this.lastSeen.get(repoId);
      if (seen && Date.now() - seen.at < opts.reuseMs) {
        const route = await this.pick({ ...seen, fromCache: false });
        if (route) return route;
      }
    }
    const deadline = Date.now() + this.deps.commitWaitMs;
    for (;;) {
      const seen = await this.read(repoId, write);
      const route = await this.pick(seen);
      if (route) return route;
      const committing =
        !seen.fromCache &&
        seen.repo.replicas.some((n) =>
          isOneBehind(
            seen.repo,
            seen.replicas.find((r) => r.nodeId === n),
          ),
        );
      if (!committing || Date.now() >= deadline)
        throw unavailable(`no in-sync replica of ${repoId} is reachable, try again`, { retryAfter: 2 });
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * waitLocal waits up to commitWaitMs for this node's replica to be in sync, for a request
   * another node routed here (which is never routed on again): between that node's look at the
   * store and the request's arrival, the next push may have committed with this replica still
   * confirming. True once it serves locally.
   */
  async waitLocal(repoId: string, write: boolean): Promise<boolean> {
    const deadline = Date.now() + this.deps.commitWaitMs;
    for (;;) {
      if ((await this.pick(await this.read(repoId, write)))?.kind === 'local') return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private async pick({ repo, replicas, fromCache }: Seen & { fromCache: boolean }): Promise<Route | null> {
    const { nodeId, storage, membership } = this.deps;
    const repoId = repo.repoId;
    const byNode = new Map(replicas.map((r) => [r.nodeId, r]));
    if (
      repo.replicas.includes(nodeId) &&
      isInSync(repo, byNode.get(nodeId)) &&
      (await storage.incarnationOf(repoId)) === repo.incarnation
    ) {
      if (fromCache)
        this.deps.logger.warn(
          { repoId, generation: repo.generation },
          'store unreachable: serving the last generation this node saw, possibly stale',
        );
      return { kind: 'local', stale: fromCache };
    }
    const candidates = repo.replicas
      .filter((n) => n !== nodeId && isInSync(repo, byNode.get(n)) && membership.isLive(n) && membership.urlOf(n))
      .sort((a, b) => membership.loadOf(a) - membership.loadOf(b));
    const best = candidates[0];
    if (!best) return null;
    return { kind: 'peer', nodeId: best, url: membership.urlOf(best)!, ...(fromCache ? {} : { incarnation: repo.incarnation }) };
  }
}

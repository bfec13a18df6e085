import { errorMessage } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import { markLfsComplete, type ReplicaStorage } from '../git/repo-storage.js';
import type { ClusterStore } from '../store/types.js';
import type { Membership } from '../cluster/membership.js';
import type { PeerClient } from '../cluster/peer-client.js';
import { LFS_FLAG_PREFIX, type LfsService } from './service.js';

/** LfsSyncDeps is what LfsSync uses of the node. */
export interface LfsSyncDeps {
  readonly nodeId: string;
  readonly store: ClusterStore;
  readonly storage: ReplicaStorage;
  readonly membership: Membership;
  readonly peers: PeerClient;
  readonly lfs: LfsService;
  readonly logger: Logger;
  /** onFetched counts an object fetched. */
  readonly onFetched: () => void;
  /** sweep removes the objects of incarnations this node holds no replica of (LfsObjects.sweep), at each pass. */
  readonly sweep?: () => Promise<number>;
}

/** SOON_MS is how long soon() waits before it syncs (repairs of many replicas at once come in one drain). */
const SOON_MS = 1_000;

/**
 * LfsSync brings the LFS objects of this node's replicas level with the other replicas': a
 * replica that missed an upload (down, cut off, or too slow for it) or that is new (placed here
 * by re-replication or a rebalance, its git data copied by repair) fetches what another replica
 * of its set holds and it lacks. It walks the repositories the store notes as holding LFS
 * objects (LFS_FLAG_PREFIX) whose replica of that incarnation is on this node, one after
 * another, one object at a time: a pass after the start, then every `everyMs`. Reads through a
 * replica that lacks an object get it sooner (LfsService.download keeps what it passes on).
 */
export class LfsSync {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  /** queued are the repositories soon() was asked for; draining says a drain of them is under way. */
  private readonly queued = new Set<string>();
  private draining = false;

  constructor(private readonly deps: LfsSyncDeps) {}

  /** start runs a first pass after `firstMs`, then one every `everyMs`. */
  start(everyMs: number, firstMs = Math.min(everyMs, 15_000)): void {
    const tick = (delay: number): void => {
      this.timer = setTimeout(() => {
        this.running = this.pass()
          .then(
            () => undefined,
            (err: unknown) => this.deps.logger.warn({ err: errorMessage(err) }, 'LFS sync pass failed'),
          )
          .finally(() => {
            this.running = null;
            if (!this.stopped) tick(everyMs);
          });
      }, delay);
      this.timer.unref();
    };
    tick(firstMs);
  }

  /** stop ends the passes (one under way stops after its object); resolves once it did. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** pass syncs every noted repository this node holds a replica of; resolves with the objects fetched. */
  async pass(): Promise<number> {
    const swept = (await this.deps.sweep?.().catch(() => 0)) ?? 0;
    if (swept > 0) this.deps.logger.info({ incarnations: swept }, 'removed the LFS objects of replicas no longer on this node');
    let fetched = 0;
    for (const { key, value: incarnation } of await this.deps.store.listMeta(LFS_FLAG_PREFIX)) {
      if (this.stopped) break;
      fetched += await this.syncRepo(key.slice(LFS_FLAG_PREFIX.length), incarnation);
    }
    if (fetched > 0) this.deps.logger.info({ fetched }, 'LFS objects fetched from other replicas');
    return fetched;
  }

  /**
   * soon syncs one repository's objects a moment from now, beside the passes: a replica repair
   * just brought in sync missed pushes, and likely the LFS objects they point at.
   */
  soon(repoId: string): void {
    this.queued.add(repoId);
    if (this.draining || this.stopped) return;
    this.draining = true;
    setTimeout(() => {
      void (async () => {
        while (this.queued.size > 0 && !this.stopped) {
          const [next] = this.queued;
          this.queued.delete(next!);
          const incarnation = await this.deps.store.getMeta(`${LFS_FLAG_PREFIX}${next!}`).catch(() => null);
          if (incarnation !== null) await this.syncRepo(next!, incarnation).catch(() => 0);
        }
      })().finally(() => {
        this.draining = false;
      });
    }, SOON_MS).unref();
  }

  /** syncRepo fetches the objects of one repository's incarnation that another live replica holds and this one lacks. */
  private async syncRepo(repoId: string, incarnation: string): Promise<number> {
    const { storage, lfs, membership, peers } = this.deps;
    if ((await storage.incarnationOf(repoId).catch(() => null)) !== incarnation) return 0;
    const t = await lfs.target(repoId, incarnation).catch(() => null);
    if (!t?.local) return 0;
    const own = await lfs.list(t);
    let fetched = 0;
    // Whether this pass leaves the replica holding everything the others hold (LFS_COMPLETE).
    let listed = 0;
    let whole = true;
    for (const node of t.replicas) {
      if (node === this.deps.nodeId) continue;
      const target = membership.isLive(node) ? membership.target(node) : undefined;
      const theirs = target ? await peers.lfsList(target, t) : null;
      if (!theirs) {
        whole = false;
        continue;
      }
      listed++;
      for (const [oid, size] of theirs.objects) {
        if (this.stopped) return fetched;
        if (own.get(oid) === size) continue;
        if (await lfs.fetch(t, oid, node)) {
          own.set(oid, size);
          fetched++;
          this.deps.onFetched();
        } else whole = false;
      }
    }
    // Every other replica listed, and all they hold is here: this replica now holds every acknowledged object.
    if (whole && (listed > 0 || t.replicas.length === 1) && !lfs.completeHere(t))
      await markLfsComplete(storage.repoPath(repoId)).catch(() => undefined);
    return fetched;
  }
}

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import type { ReplicaStorage } from '../git/repo-storage.js';
import type { GitRunner } from '../git/runner.js';
import type { Metrics } from '../metrics.js';
import type { RepoActivity } from './activity.js';
import type { ClusterStore, RepoRecord } from '../store/types.js';

/**
 * Maintenance keeps this node's replicas tidy, driven by the repair pass: it rolls up the packs
 * of in-sync replicas (repack) and deletes replicas of repos that were deleted or moved off the
 * node (garbage collection). Each runs as an activity of RepoActivity (`repack`, `drop`), beside
 * what MAY_START_DURING allows and nothing else.
 */
export class Maintenance {
  /** packsCheckedAt is the generation at which each replica's pack count was last looked at. */
  private readonly packsCheckedAt = new Map<string, number>();
  private repacking: Promise<void> | null = null;
  /** waiting are the replicas handed over to be looked at, in order (a Map iterates what is added while it runs). */
  private readonly waiting = new Map<string, RepoRecord>();

  constructor(
    private readonly deps: {
      nodeId: string;
      store: ClusterStore;
      storage: ReplicaStorage;
      git: GitRunner;
      logger: Logger;
      metrics: Metrics;
      activity: RepoActivity;
      /** repackAfterPacks: an in-sync replica with more packs than this is repacked (0: never). */
      repackAfterPacks?: number;
      /** gitTimeoutMs bounds one repack (settings: gitTimeoutMs). */
      gitTimeoutMs: number;
      /**
       * handOver passes on what this node keeps of a replica that moved off it and that its new
       * replica set may lack (its Git LFS objects), before the replica is dropped: false keeps
       * the replica for the next pass.
       */
      handOver?: (repo: RepoRecord) => Promise<boolean>;
    },
  ) {}

  /** settled resolves once the background repack, if one runs, has ended (tests, shutdown). */
  async settled(): Promise<void> {
    await this.repacking;
  }

  /**
   * maybeRepack looks at the pack count of an in-sync replica once per generation and, above
   * `repackAfterPacks`, rolls its packs up with `git repack -d --geometric=2` in the background,
   * one repo at a time. Every push leaves a pack on every replica (receive.unpackLimit=1) and
   * nothing else consolidates them (gc.auto=0). The objects of a rolled-up pack all go into the
   * new one; packs with a `.keep` (a transaction's pack until it commits) are left alone; refs,
   * and so the checksum, do not change. It starts only with no transaction, repair or drop
   * running on the replica (MAY_START_DURING); otherwise it is tried after the next push.
   * The replicas a pass hands over wait in line (`waiting`), each looked at in turn: a pass used
   * to look at one and skip the rest unmarked while it ran, so with 2,300 repos on a node one new
   * repo's packs waited hours, and none was rolled up in 30 minutes (an outside attack).
   */
  maybeRepack(repo: RepoRecord): void {
    const limit = this.deps.repackAfterPacks ?? 0;
    if (limit <= 0 || this.packsCheckedAt.get(repo.repoId) === repo.generation) return;
    this.packsCheckedAt.set(repo.repoId, repo.generation);
    this.waiting.set(repo.repoId, repo);
    this.drain(limit);
  }

  /** drain looks at the waiting replicas one at a time; one handed over as it finished starts it again. */
  private drain(limit: number): void {
    if (this.repacking || this.waiting.size === 0) return;
    this.repacking = (async () => {
      for (const [repoId, next] of this.waiting) {
        this.waiting.delete(repoId);
        await this.repackIfMany(next, limit).catch((err: unknown) => {
          this.deps.logger.warn({ repoId, err: errorMessage(err) }, 'repack failed; it is tried again after the next push');
        });
      }
    })().finally(() => {
      this.repacking = null;
      this.drain(limit);
    });
  }

  /** repackIfMany rolls up one replica's packs if it has more than `limit` (maybeRepack). */
  private async repackIfMany(repo: RepoRecord, limit: number): Promise<void> {
    const { storage, git, logger, metrics, activity } = this.deps;
    const packDir = join(storage.repoPath(repo.repoId), 'objects', 'pack');
    const packs = (await readdir(packDir).catch(() => [] as string[])).filter((f) => f.endsWith('.pack')).length;
    if (packs <= limit) return;
    const running = activity.tryBegin(repo.repoId, 'repack');
    if (!running) return;
    try {
      const started = Date.now();
      await git.run(['repack', '-d', '-q', '--geometric=2'], { cwd: storage.repoPath(repo.repoId), timeoutMs: this.deps.gitTimeoutMs });
      const after = (await readdir(packDir).catch(() => [] as string[])).filter((f) => f.endsWith('.pack')).length;
      metrics.repacks.inc();
      logger.info({ repoId: repo.repoId, packs, after, ms: Date.now() - started }, 'replica repacked');
    } finally {
      running.end();
    }
  }

  /**
   * collectGarbage deletes local replicas of repos that no longer exist or moved off this node,
   * each as the replica's `drop` activity (nothing else running on it), checked again once started.
   * `known` is the repair pass's view of every repo; `only`, when given, limits the look to
   * those repos (the ones that changed since the last pass) instead of every local replica.
   */
  async collectGarbage(known: ReadonlyMap<string, RepoRecord>, only?: ReadonlySet<string>): Promise<void> {
    const { store, storage, nodeId, logger, activity } = this.deps;
    for (const repoId of only ?? (await storage.listLocal())) {
      // The pass's listing decides who stays; only a candidate for removal is read again.
      const listed = known.get(repoId);
      if (listed && listed.replicas.includes(nodeId)) continue;
      // A repo the feed named may never have had a replica here.
      if (only && !(await storage.exists(repoId))) continue;
      const repo = await store.getRepo(repoId);
      if (repo && repo.replicas.includes(nodeId)) continue;
      const dropping = activity.tryBegin(repoId, 'drop');
      if (!dropping) continue;
      try {
        const again = await store.getRepo(repoId);
        if (again && again.replicas.includes(nodeId)) continue;
        // A repository that moved (not deleted) may have here the only copies of its LFS objects.
        if (again && this.deps.handOver && !(await this.deps.handOver(again).catch(() => false))) {
          logger.info({ repoId }, 'replica moved off this node kept until its LFS objects are on its new replicas');
          continue;
        }
        await storage.remove(repoId);
        logger.info({ repoId }, 'removed a local replica this node no longer holds');
      } finally {
        dropping.end();
      }
    }
    // Nothing kept for a repo this node no longer holds.
    for (const repoId of this.packsCheckedAt.keys()) if (!known.get(repoId)?.replicas.includes(nodeId)) this.packsCheckedAt.delete(repoId);
  }

  /** tracked is how many replicas' pack counts are remembered (tests). */
  get tracked(): number {
    return this.packsCheckedAt.size;
  }
}

import { DEFAULTS } from '../config.js';
import { HOP_HEADER } from '../auth/peer-signature.js';
import { fsckConfig } from '../git/fsck-policy.js';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import type { Membership } from '../cluster/membership.js';
import type { ReplicaStorage } from '../git/repo-storage.js';
import { waitClose, type GitRunner } from '../git/runner.js';
import type { Metrics } from '../metrics.js';
import type { HeldLock, RepoActivity } from './activity.js';
import type { Failpoints } from './failpoints.js';
import type { Maintenance } from './maintenance.js';
import type { ReplicaVerifier } from './verifier.js';
import { removeLockFiles } from '../git/leftovers.js';
import { isInSync, isOneBehind, type ClusterStore, type RepoRecord, type ReplicaRecord } from '../store/types.js';

/** REPAIR_FETCH_ROUNDS is how many fetches one repair attempt makes while pushes keep moving the repo on. */
export const REPAIR_FETCH_ROUNDS = 4;

/** LONG_BEHIND_MS is how long a replica may stay behind before each pass that finds it so warns (once per period). */
const LONG_BEHIND_MS = 60_000;

/**
 * STALL_SECONDS: a repair's fetch or clone that receives under 1 byte/s for this long is given
 * up (git's http.lowSpeedLimit/Time), so a source that went silent (frozen, a dropped link) does
 * not hold the repair, and every pass after it, for ever. The source's upload-pack sends
 * keep-alives while it prepares a pack, so a slow start is not a stall.
 */
const STALL_SECONDS = 60;

/** RACED_RETRY_MS is the wait before the next attempt after pushes outran every fetch of one (no doubling). */
const RACED_RETRY_MS = 1_000;

/** RepairRaced says pushes committed faster than the repair's fetches brought them in. */
class RepairRaced extends Error {}

/** RepoView is what the repair passes know of the store: every repo record, this node's replica records. */
interface RepoView {
  /** feed is the change feed's mark the view is current to. */
  feed: string;
  /** listedAt is when the last full listing was read. */
  readonly listedAt: number;
  readonly repos: Map<string, RepoRecord>;
  readonly own: Map<string, ReplicaRecord>;
}

/** RepairProgress is what `GET /repos/:owner/:repo` and logs show of a running repair. */
export interface RepairProgress {
  readonly repoId: string;
  readonly source: string;
  readonly startedAt: string;
  readonly mode: 'fetch' | 'clone';
  attempts: number;
  objectsDone: number;
  objectsTotal: number;
  bytes: string;
}

/**
 * RepairWorker brings this node's stale or missing replicas back in sync (DESIGN §7): an atomic
 * fetch of every ref from an in-sync peer over the internal smart-HTTP path, a checksum
 * comparison with the store, and a compare-and-swap confirmation. A missing replica is cloned
 * into a temporary directory and moved into place. Its passes also drive Maintenance (repack,
 * garbage collection), and `start` schedules the ReplicaVerifier. What it does to a replica
 * (repair, swap) runs as an activity of RepoActivity, beside what MAY_START_DURING allows and
 * nothing else.
 */
export class RepairWorker {
  private timers: NodeJS.Timeout[] = [];
  private running = false;
  private readonly backoff = new Map<string, { until: number; attempts: number }>();
  private readonly behindSince = new Map<string, number>();
  /**
   * confirming: per replica recorded in sync at an older generation, that generation and when it
   * was first seen there. A record that moves on is a replica whose commits keep landing (its
   * confirmations trail under a stream of pushes), not one to copy.
   */
  private readonly confirming = new Map<string, { readonly generation: number; readonly since: number }>();
  /** passStartedAt / passWarnedAt: when the running pass started, and when a pass that ran long was last reported. */
  private passStartedAt = 0;
  private passWarnedAt = 0;
  /** warnedBehind: when reportLongBehind last warned of each replica. */
  private readonly warnedBehind = new Map<string, number>();
  private readonly progress = new Map<string, RepairProgress>();
  /** quiet says the last pass left nothing to do (every local replica in sync, none waited on). */
  private quiet = false;
  /**
   * view is every repo record and this node's replica records as the passes last read them: a
   * full listing at most fullPassMs old, kept current since by the store's change feed (only
   * the repos it names are read again).
   */
  private view: RepoView | null = null;

  constructor(
    private readonly deps: {
      nodeId: string;
      store: ClusterStore;
      storage: ReplicaStorage;
      git: GitRunner;
      membership: Membership;
      logger: Logger;
      metrics: Metrics;
      failpoints: Failpoints;
      activity: RepoActivity;
      /** hopToken signs a repair fetch of one repository, so the source serves it itself (and that repository only) instead of proxying. */
      hopToken: (repoId: string) => string;
      /** onSeen is told every repo state a pass reads (the router keeps it for store outages). */
      onSeen?: (repo: RepoRecord, replicas: ReplicaRecord[]) => void;
      /** onListed is told the id of every repo that exists, after each pass's full listing. */
      onListed?: (repoIds: ReadonlySet<string>) => void;
      /** onRepaired is told of each replica this node brought in sync (it missed writes: what is kept beside git's data may lag too). */
      onRepaired?: (repo: RepoRecord) => void;
      /** verifier checks in-sync replicas on the schedule `start` sets. */
      verifier: ReplicaVerifier;
      /** maintenance repacks in-sync replicas and drops those this node no longer holds, from each pass. */
      maintenance: Maintenance;
      /** caFile verifies `https://` peers in repair fetches (git's http.sslCAInfo); default the system CAs. */
      caFile?: string;
      /** fsckIgnore is the cluster's fsck policy, applied to fetched objects too. */
      fsckIgnore?: readonly string[];
      /**
       * commitWaitMs is how long a replica one generation behind (isOneBehind: a push's commit,
       * or a create's, not yet confirmed here) may wait for its confirmation before repair.
       */
      commitWaitMs: number;
      /** gitTimeoutMs bounds one fetch or clone of a replica. */
      gitTimeoutMs: number;
      /**
       * fullPassMs is how often a repair pass lists every repo even though the store's change
       * mark has not moved (a pass that found nothing to do is otherwise skipped: docs/SCALE.md),
       * and how long the passes trust a view kept current by the change feed before listing
       * again (default DEFAULTS.fullPassMs).
       */
      fullPassMs?: number;
      /** swapLockWaitMs is how long a copied replica waits for the repo's write lock to be swapped in (default DEFAULTS.swapLockWaitMs). */
      swapLockWaitMs?: number;
    },
  ) {}

  private get fullPassMs(): number {
    return this.deps.fullPassMs ?? DEFAULTS.fullPassMs;
  }

  /**
   * start runs a repair pass every `repairMs`, a checksum verification every `verifyMs` and a
   * `git fsck --connectivity-only` verification every `fsckMs`; right after start one repair pass
   * runs, then the fsck verification, then another pass. An interval of 0 turns that part off
   * (`repairMs` 0: this node repairs nothing, for maintenance and tests).
   */
  start(repairMs: number, verifyMs: number, fsckMs: number): void {
    const repairOn = repairMs > 0;
    if (repairOn)
      this.timers.push(
        setInterval(() => {
          void this.pass();
        }, repairMs),
      );
    if (verifyMs > 0)
      this.timers.push(
        setInterval(() => {
          void this.deps.verifier.verify();
        }, verifyMs),
      );
    if (fsckMs > 0)
      this.timers.push(
        setInterval(() => {
          void this.deps.verifier.verify(true);
        }, fsckMs),
      );
    for (const t of this.timers) t.unref();
    // Replicas the store already knows are behind are repaired first; the fsck of every local
    // replica after a restart can take minutes on a big node and must not hold them up.
    const first = setTimeout(() => {
      void (repairOn ? this.pass() : Promise.resolve(0))
        .then(() => this.deps.verifier.verify(true))
        .then(() => (repairOn ? this.pass() : 0));
    }, 0);
    first.unref();
    this.timers.push(first);
  }

  /** stop ends the passes. */
  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  /** repairingCount is how many local replicas are being repaired now. */
  get repairingCount(): number {
    return this.progress.size;
  }

  /** catchUp makes one repair attempt on a repo's local replica now (a push waiting on it); true once in sync. */
  async catchUp(repoId: string): Promise<boolean> {
    return this.repair(repoId);
  }

  /** progressOf is a copy of the running repair of a repo's local replica, if one runs. */
  progressOf(repoId: string): RepairProgress | undefined {
    const p = this.progress.get(repoId);
    return p ? { ...p } : undefined;
  }

  /** pass repairs every local replica that is not in sync, one at a time. */
  async pass(): Promise<number> {
    if (this.running) {
      // A pass that does not end holds every later one back: say so, with what it is doing.
      const now = Date.now();
      if (now - this.passStartedAt >= LONG_BEHIND_MS && now - this.passWarnedAt >= LONG_BEHIND_MS) {
        this.passWarnedAt = now;
        this.deps.logger.warn(
          { passMs: now - this.passStartedAt, repairing: [...this.progress.values()].map((p) => ({ ...p })) },
          'repair pass still running: later passes wait for it',
        );
      }
      return 0;
    }
    this.running = true;
    this.passStartedAt = Date.now();
    let repaired = 0;
    try {
      const { store, nodeId } = this.deps;
      // While nothing changed in the store since a pass that found every replica in sync, a
      // pass costs one read (the change feed), whatever the number of repos.
      const { view, changed } = await this.refreshView();
      if (this.quiet && changed?.size === 0) return 0;
      // Until this pass ends, the changes it took from the feed are still to be looked at.
      this.quiet = false;
      const ownRecords = view.own;
      const repos = [...view.repos.values()].filter((r) => r.replicas.includes(nodeId));
      const todo: RepoRecord[] = [];
      const now = Date.now();
      let lag = 0;
      for (const repo of repos) {
        let own = ownRecords.get(repo.repoId);
        if (!isInSync(repo, own)) {
          const replicas = await store.getReplicas(repo.repoId);
          this.deps.onSeen?.(repo, replicas);
          own = replicas.find((r) => r.nodeId === nodeId);
        } else {
          this.deps.onSeen?.(repo, own ? [own] : []);
        }
        lag = Math.max(lag, repo.generation - (own?.generation ?? 0));
        if (isInSync(repo, own)) {
          this.behindSince.delete(repo.repoId);
          this.confirming.delete(repo.repoId);
          this.deps.maintenance.maybeRepack(repo);
          continue;
        }
        // A replica confirmed one generation back, or a new one not confirmed yet, is usually a
        // commit still on its way: give it a moment before copying what it is about to apply.
        // So is one recorded in sync further back while its record keeps moving: a slow replica
        // under a stream of pushes commits two or three behind the store's generation (see
        // Participant.commitsHere), and a repair started then refused the next prepares as
        // "being repaired" and had it marked stale (19 times in 4 minutes of 16 pushers).
        const since = this.behindSince.get(repo.repoId) ?? now;
        this.behindSince.set(repo.repoId, since);
        const trailing = own?.state === 'in_sync' && own.incarnation === repo.incarnation && own.generation < repo.generation;
        const seen = this.confirming.get(repo.repoId);
        if (!trailing) this.confirming.delete(repo.repoId);
        else if (seen?.generation !== own?.generation) this.confirming.set(repo.repoId, { generation: own?.generation ?? 0, since: now });
        const waitingFrom = trailing ? this.confirming.get(repo.repoId)!.since : since;
        if (!(trailing || isOneBehind(repo, own)) || now - waitingFrom >= this.deps.commitWaitMs) todo.push(repo);
      }
      // Replicas to drop: after a full listing any local one; after a feed read, only of the
      // repos it named (a repo deleted or moved away is a change to its record).
      await this.deps.maintenance.collectGarbage(view.repos, changed ?? undefined);
      if (!changed) this.deps.onListed?.(new Set(view.repos.keys()));
      const here = new Set(repos.map((r) => r.repoId));
      for (const map of [this.backoff, this.behindSince, this.confirming]) for (const id of map.keys()) if (!here.has(id)) map.delete(id);
      for (const id of this.warnedBehind.keys()) if (!this.behindSince.has(id)) this.warnedBehind.delete(id);
      this.quiet = todo.length === 0 && this.behindSince.size === 0;
      this.deps.metrics.repairQueue.set(todo.length);
      this.deps.metrics.staleReplicas.set(todo.length);
      this.deps.metrics.replicaLag.set(lag);
      for (const repo of todo) {
        this.reportLongBehind(repo.repoId, now);
        const b = this.backoff.get(repo.repoId);
        if (b && b.until > Date.now()) continue;
        if (await this.repair(repo.repoId)) repaired++;
      }
    } catch (err) {
      this.deps.logger.debug({ err: errorMessage(err) }, 'repair pass skipped');
    } finally {
      this.running = false;
    }
    return repaired;
  }

  /**
   * refreshView brings the view up to date: with the change feed (one read, which carries the
   * records written since the last: the repo's, and this node's replica record where it holds
   * one), or with a full listing (two reads, whatever the number of repos) when there is no
   * view, it is fullPassMs old, or the feed cannot tell. `changed` names the repos the feed
   * named; null after a full listing.
   */
  private async refreshView(): Promise<{ view: RepoView; changed: ReadonlySet<string> | null }> {
    const { store, nodeId } = this.deps;
    const v = this.view;
    if (v && Date.now() - v.listedAt < this.fullPassMs) {
      const feed = await store.changesSince(v.feed);
      if (feed) {
        // A record the feed leaves out did not change (or, from a complete answer, is gone).
        const repos = new Map(feed.repos.map((r) => [r.repoId, r]));
        const mine = new Map(feed.replicas.filter((r) => r.nodeId === nodeId).map((r) => [r.repoId, r]));
        for (const id of feed.repoIds) {
          const repo = repos.get(id) ?? (feed.complete ? undefined : v.repos.get(id));
          if (!repo) v.repos.delete(id);
          else v.repos.set(id, repo);
          const own = repo?.replicas.includes(nodeId) ? (mine.get(id) ?? (feed.complete ? undefined : v.own.get(id))) : undefined;
          if (own) v.own.set(id, own);
          else v.own.delete(id);
        }
        v.feed = feed.mark;
        return { view: v, changed: new Set(feed.repoIds) };
      }
    }
    // The feed's mark is read first: what changes during the listing is named again next time.
    const feed = await store.feedMark();
    const [all, mine] = await Promise.all([store.listRepos(), store.replicasOnNode(nodeId)]);
    this.view = {
      feed,
      listedAt: Date.now(),
      repos: new Map(all.map((r) => [r.repoId, r])),
      own: new Map(mine.map((r) => [r.repoId, r])),
    };
    return { view: this.view, changed: null };
  }

  /**
   * reportLongBehind warns, once per LONG_BEHIND_MS, of a replica behind for longer than that,
   * with what runs on it and its backoff: a repair that cannot start (a transaction holds the
   * replica) or keeps failing is otherwise silent at the default log level.
   */
  private reportLongBehind(repoId: string, now: number): void {
    const since = this.behindSince.get(repoId) ?? now;
    const last = this.warnedBehind.get(repoId) ?? since;
    if (now - since < LONG_BEHIND_MS || now - last < LONG_BEHIND_MS) return;
    this.warnedBehind.set(repoId, now);
    const b = this.backoff.get(repoId);
    this.deps.logger.warn(
      {
        repoId,
        behindMs: now - since,
        running: this.deps.activity.runningOn(repoId),
        attempts: b?.attempts ?? 0,
        retryInMs: b ? Math.max(0, b.until - now) : 0,
      },
      'replica behind for long: repair has not caught it up',
    );
  }

  /**
   * repair brings one replica to the store's current generation; true once it is in sync. It runs
   * as the replica's `repair` activity, started before anything is read: not beside a
   * transaction (whose replica may be committed but not yet confirmed), a repack or a drop.
   */
  async repair(repoId: string): Promise<boolean> {
    const running = this.deps.activity.tryBegin(repoId, 'repair');
    if (!running) {
      this.deps.logger.debug({ repoId, running: this.deps.activity.runningOn(repoId) }, 'repair waits: the replica is busy');
      return false;
    }
    try {
      return await this.repairRunning(repoId);
    } finally {
      running.end();
    }
  }

  /** pickSource is the least loaded live peer whose replica is in sync with `repo` as recorded; undefined if none. */
  private pickSource(repo: RepoRecord, replicas: readonly ReplicaRecord[]): string | undefined {
    const { membership, nodeId } = this.deps;
    const byNode = new Map(replicas.map((r) => [r.nodeId, r]));
    const sources = repo.replicas.filter(
      (n) => n !== nodeId && isInSync(repo, byNode.get(n)) && membership.isLive(n) && membership.urlOf(n),
    );
    return sources.sort((a, b) => membership.loadOf(a) - membership.loadOf(b))[0];
  }

  private async repairRunning(repoId: string): Promise<boolean> {
    const { store, storage, membership, nodeId, logger, metrics } = this.deps;
    // Read once the repair runs, not taken from the pass that found the replica behind: a
    // transaction that held the replica meanwhile may have confirmed it (or the repo moved on).
    // A replica in sync needs nothing.
    const state = await store.getRepoState(repoId);
    if (!state) return false;
    const { repo, replicas } = state;
    const byNode = new Map(replicas.map((r) => [r.nodeId, r]));
    const own = byNode.get(nodeId);
    if (isInSync(repo, own)) return true;
    const localIncarnation = await storage.incarnationOf(repo.repoId);
    const source = this.pickSource(repo, replicas);
    // With nothing to copy from, a replica that committed but could not confirm (the store was
    // unreachable at that moment) may already be current: it confirms itself. Without this, a
    // commit whose every confirmation failed would leave no replica in sync for ever. (With a
    // source, the fetch below finds nothing to bring and confirms the same way.)
    if (!source) {
      if (localIncarnation !== repo.incarnation || own?.state === 'missing') return false;
      return this.confirmIfCurrent(repo);
    }
    const url = `${membership.urlOf(source)!}/${repo.repoId}.git`;
    const started = Date.now();
    // A replica with objects missing (fsck) or of another incarnation is copied whole: a fetch
    // cannot bring back objects whose refs already match. So is an empty one: a clone writes
    // its refs as one packed-refs file, where a fetch writes and fsyncs a loose file per ref
    // (three times slower for the express mirror's 3,890 refs).
    const mode =
      localIncarnation !== repo.incarnation || own?.state === 'missing' || (await storage.readRefs(repo.repoId)).length === 0
        ? 'clone'
        : 'fetch';
    const progress: RepairProgress = {
      repoId: repo.repoId,
      source,
      mode,
      startedAt: new Date().toISOString(),
      attempts: (this.backoff.get(repo.repoId)?.attempts ?? 0) + 1,
      objectsDone: 0,
      objectsTotal: 0,
      bytes: '',
    };
    this.progress.set(repo.repoId, progress);
    try {
      if (mode === 'clone') {
        if (!(await this.copyWhole(repo, url, progress))) {
          this.backoff.delete(repo.repoId);
          logger.info(
            { repoId: repo.repoId, source },
            'replica no longer behind when its copy was ready (confirmed, moved or re-created meanwhile): copy dropped',
          );
          return false;
        }
      } else {
        // Only while still behind: a commit that lands meanwhile confirms the current generation,
        // and that confirmation must not be overwritten.
        // Only a label for status pages: a failed write (the store unreachable) does not stop
        // the fetch, and the confirmation below needs the store anyway.
        await store
          .markReplica(repo.repoId, nodeId, repo.incarnation, 'repairing', repo.generation)
          .catch((err: unknown) => logger.warn({ repoId: repo.repoId, err: errorMessage(err) }, 'could not mark the replica repairing'));
      }
      /**
       * round fetches (in fetch mode, from `from`, within timeoutMs) and reads where the replica
       * and the store stand; null if the repo was re-created.
       */
      const round = async (from = url, deadline?: number): Promise<{ checksum: string; now: RepoRecord } | null> => {
        const left = (): number | undefined => (deadline === undefined ? undefined : Math.max(1, deadline - Date.now()));
        if (mode === 'fetch')
          await this.transfer(
            ['fetch', '--progress', '--atomic', '--prune', '--no-tags', '--no-write-fetch-head', from, '+refs/*:refs/*'],
            storage.repoPath(repo.repoId),
            from,
            progress,
            left(),
          );
        let checksum = await storage.checksum(repo.repoId);
        const now = await store.getRepo(repo.repoId);
        if (!now || now.incarnation !== repo.incarnation) return null;
        // A fetch moves refs, never HEAD: a replica that missed a default-branch change takes
        // the source's HEAD (a whole copy brings it already).
        if (checksum !== now.checksum && mode === 'fetch' && (await this.syncHead(repo.repoId, from, left())))
          checksum = await storage.checksum(repo.repoId);
        return { checksum, now };
      };
      // A push that commits while the fetch runs leaves the replica behind again: the fetch is
      // repeated at once, each round bringing only what the pushes since added, up to
      // REPAIR_FETCH_ROUNDS. (Under a steady stream of pushes one round rarely caught up, and
      // each failed attempt doubled the wait before the next.)
      let at = await round();
      for (let r = 1; at && at.checksum !== at.now.checksum && mode === 'fetch' && r < REPAIR_FETCH_ROUNDS; r++) at = await round();
      if (!at) return false;
      // Pushes outran every round (16 clients pushing one repo without pause kept a replica out
      // for minutes, each attempt raced): one more round runs under the repo's write lock, so
      // nothing commits while it fetches the few pushes the last round missed. Pushes wait for
      // it as for any transaction, so it is short: a lock held elsewhere past swapLockWaitMs
      // leaves the race, and so does a fetch that runs past swapLockWaitMs (killed). Its
      // source is picked again from the state read with the lock: one in sync at the current
      // generation, or the round is not run (a source a generation back cannot catch it up).
      let held: HeldLock | null = null;
      try {
        if (at.checksum !== at.now.checksum && mode === 'fetch') {
          const waitMs = this.deps.swapLockWaitMs ?? DEFAULTS.swapLockWaitMs;
          held = await this.deps.activity.lock(repo.repoId, waitMs, { read: true });
          const latest = held?.state;
          const from = latest && latest.repo.incarnation === repo.incarnation ? this.pickSource(latest.repo, latest.replicas) : undefined;
          if (held && from) {
            await this.deps.failpoints.hit('repair.lockedRound');
            const fromUrl = `${membership.urlOf(from)!}/${repo.repoId}.git`;
            at = await round(fromUrl, Date.now() + waitMs).catch((err: unknown) => {
              metrics.repairLockedRounds.inc({ outcome: 'failed' });
              throw err;
            });
            if (!at) return false;
            // The lease lapsed while it ran (a renewal found it gone): another holder may have
            // committed since the state was read, and this round proves nothing.
            if (held.lost()) {
              metrics.repairLockedRounds.inc({ outcome: 'failed' });
              throw new RepairRaced('the repo write lock was lost during the locked round');
            }
            metrics.repairLockedRounds.inc({ outcome: at.checksum === at.now.checksum ? 'caught_up' : 'behind' });
          } else if (held) metrics.repairLockedRounds.inc({ outcome: 'no_source' });
        }
        if (at.checksum !== at.now.checksum)
          throw new RepairRaced(
            `checksum after fetch differs from the store's at generation ${at.now.generation}: a push raced the repair`,
          );
        const ok = await store.confirmReplica({
          repoId: repo.repoId,
          nodeId,
          incarnation: repo.incarnation,
          generation: at.now.generation,
          checksum: at.checksum,
        });
        if (!ok) throw new Error('confirmation refused by the store');
      } finally {
        await held?.release();
      }
      this.backoff.delete(repo.repoId);
      metrics.repairs.inc({ outcome: 'ok' });
      metrics.repairSeconds.observe((Date.now() - started) / 1000);
      logger.info({ repoId: repo.repoId, source, mode, generation: at.now.generation, ms: Date.now() - started }, 'replica repaired');
      this.deps.onRepaired?.(repo);
      return true;
    } catch (err) {
      const attempts = progress.attempts;
      // Pushes outrunning the fetch are no fault of the source: the next attempt comes soon.
      const wait = err instanceof RepairRaced ? RACED_RETRY_MS : Math.min(30_000, 250 * 2 ** Math.min(attempts, 7));
      this.backoff.set(repo.repoId, { attempts, until: Date.now() + wait });
      metrics.repairs.inc({ outcome: 'retry' });
      logger.warn({ repoId: repo.repoId, source, mode, attempts, err: errorMessage(err) }, 'replica repair failed, will retry');
      return false;
    } finally {
      this.progress.delete(repo.repoId);
    }
  }

  /**
   * copyWhole clones the replica from `url` into the tmp directory, makes it a replica, and
   * swaps it in; false when the swap found the replica no longer needs it.
   */
  private async copyWhole(repo: RepoRecord, url: string, progress: RepairProgress): Promise<boolean> {
    const { storage, failpoints } = this.deps;
    const staged = join(storage.tmpDir, `repair-${randomUUID()}.git`);
    try {
      await this.transfer(['clone', '--mirror', '--template=', '--progress', url, staged], storage.tmpDir, url, progress);
      await storage.adoptClone(staged, repo.incarnation);
      await failpoints.hit('repair.beforeSwap');
      return await this.swapIn(repo, staged);
    } finally {
      await rm(staged, { recursive: true, force: true });
    }
  }

  /** confirmIfCurrent confirms the local replica when its refs already hash to the store's checksum. */
  private async confirmIfCurrent(repo: RepoRecord): Promise<boolean> {
    const { store, storage, nodeId, logger } = this.deps;
    const checksum = await storage.checksum(repo.repoId).catch(() => '');
    if (checksum !== repo.checksum) return false;
    const ok = await store.confirmReplica({
      repoId: repo.repoId,
      nodeId,
      incarnation: repo.incarnation,
      generation: repo.generation,
      checksum,
    });
    if (ok) logger.info({ repoId: repo.repoId, generation: repo.generation }, 'replica already current: confirmed without a copy');
    return ok;
  }

  /**
   * swapIn moves a whole copy into place over the replica, under the repo's write lock (waiting
   * up to swapLockWaitMs for a push that holds it) and as the replica's `swap` activity (no
   * upload or transaction running on it; uploads wait until it is done). Under the lock it
   * first reads the store again: a replica confirmed since the copy began (a create or push
   * whose confirmation came late), moved off this node, or of a repo created again, is left
   * alone and false returned. Nothing can confirm it meanwhile: the lock holds decisions back
   * and this repair keeps this node's transactions out.
   */
  private async swapIn(repo: RepoRecord, staged: string): Promise<boolean> {
    const { storage, activity } = this.deps;
    const held = await activity.lock(repo.repoId, this.deps.swapLockWaitMs ?? DEFAULTS.swapLockWaitMs);
    if (!held) throw new Error('repository busy (write lock held), swap deferred');
    try {
      if (!(await this.stillBehind(repo))) return false;
      const swapping = activity.tryBegin(repo.repoId, 'swap');
      if (!swapping) throw new Error(`replica busy (${activity.runningOn(repo.repoId).join(', ')}), swap deferred`);
      try {
        await storage.install(staged, repo.repoId);
      } finally {
        swapping.end();
      }
      return true;
    } finally {
      await held.release();
    }
  }

  /** stillBehind says whether the store still wants this node's replica of `repo` and does not count it in sync. */
  private async stillBehind(repo: RepoRecord): Promise<boolean> {
    const { store, storage, nodeId } = this.deps;
    const now = await store.getRepo(repo.repoId);
    if (!now || now.incarnation !== repo.incarnation || !now.replicas.includes(nodeId)) return false;
    const own = (await store.getReplicas(repo.repoId)).find((r) => r.nodeId === nodeId);
    return !isInSync(now, own) || (await storage.incarnationOf(repo.repoId)) !== now.incarnation;
  }

  /** syncHead points the local HEAD where the source's points; true if it moved. */
  private async syncHead(repoId: string, url: string, timeoutMs = 60_000): Promise<boolean> {
    const { storage, git } = this.deps;
    const out = await git
      .run(['ls-remote', '--symref', url, 'HEAD'], {
        cwd: storage.repoPath(repoId),
        env: this.fetchEnv(repoId),
        config: this.fetchConfig(),
        timeoutMs,
      })
      .then(
        (r) => r.stdout,
        () => '',
      );
    const target = /^ref: (refs\/heads\/\S+)\tHEAD$/m.exec(out)?.[1];
    if (!target || target === (await storage.headTarget(repoId))) return false;
    await storage.setHead(repoId, target);
    return true;
  }

  /** fetchEnv signs a peer fetch of `repoId` with a hop token, by environment (any local user can read argv). */
  private fetchEnv(repoId: string): Record<string, string> {
    return {
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: 'http.extraHeader',
      GIT_CONFIG_VALUE_0: `${HOP_HEADER}: ${this.deps.hopToken(repoId)}`,
    };
  }

  private fetchConfig(): Record<string, string> {
    return { ...fsckConfig('fetch', this.deps.fsckIgnore ?? []), ...(this.deps.caFile ? { 'http.sslCAInfo': this.deps.caFile } : {}) };
  }

  /**
   * transfer runs a `git fetch` or `git clone` from a peer, with every object checked (fsck)
   * and written durably, and records git's progress for status, logs and metrics. A fetch is
   * given --atomic: a plain fetch is not atomic and a held ref lock would leave it half done.
   */
  private async transfer(
    args: string[],
    cwd: string,
    url: string,
    progress: RepairProgress,
    timeoutMs = this.deps.gitTimeoutMs,
  ): Promise<void> {
    const child = this.deps.git.spawn(args, {
      cwd,
      env: this.fetchEnv(progress.repoId),
      config: {
        'transfer.fsckObjects': 'true',
        'protocol.version': '2',
        'http.lowSpeedLimit': '1',
        'http.lowSpeedTime': String(STALL_SECONDS),
        'core.fsync': 'committed',
        'core.fsyncMethod': 'fsync',
        ...this.fetchConfig(),
      },
      timeoutMs,
    });
    let tail = '';
    let lastLog = Date.now();
    child.stdin?.end();
    child.stdout?.resume();
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      tail = (tail + d).slice(-4096);
      for (const m of d.matchAll(/Receiving objects:\s+\d+% \((\d+)\/(\d+)\)(?:, ([\d.]+ [KMG]?i?B))?/g)) {
        progress.objectsDone = Number(m[1]);
        progress.objectsTotal = Number(m[2]);
        if (m[3]) progress.bytes = m[3];
      }
      if (Date.now() - lastLog > 2_000) {
        lastLog = Date.now();
        this.deps.logger.info(
          { repoId: progress.repoId, objects: `${progress.objectsDone}/${progress.objectsTotal}`, bytes: progress.bytes },
          'repair progress',
        );
      }
    });
    const [code, signal] = await waitClose(child);
    // A fetch killed (its time-out: the locked round's is seconds) leaves its ref transaction's
    // lock files, and every later prepare or fetch here would fail on them; one that failed by
    // itself removed its own. The repair activity this runs under keeps every other ref writer
    // off the replica, so any lock file left now is stale.
    if (code !== 0 && args[0] === 'fetch') {
      const removed = removeLockFiles(cwd);
      if (removed > 0) this.deps.logger.warn({ repoId: progress.repoId, removed }, 'removed the lock files of a killed repair fetch');
    }
    if (code !== 0) throw new Error(`${args[0]!} from ${url} failed (${signal ?? code}): ${lastLines(tail)}`);
  }
}

/**
 * lastLines is what a failed git transfer said last, without its progress lines: up to three
 * lines, so that the cause (index-pack's own `fatal:`) is kept beside git's summary of it.
 */
export function lastLines(stderr: string): string {
  const lines = stderr
    .split(/[\r\n]+/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^(remote: )?(Receiving|Resolving|Counting|Compressing|Enumerating|Total|Unpacking|Checking)\b/.test(l));
  return lines.slice(-3).join(' / ');
}

import { DEFAULTS } from '../config.js';
import { errorMessage } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import { placeReplicas } from '../domain/placement.js';
import type { Membership } from '../cluster/membership.js';
import { DECOMMISSIONED_PREFIX, REBALANCE_KEY, isInSync, type ClusterStore, type RepoRecord, type ReplicaRecord } from '../store/types.js';
import type { RepoActivity } from './activity.js';

/** Settled is what the last pass that left nothing to do saw, and when the last full pass ran. */
interface Settled {
  /** view is the membership as the pass saw it (live, and down long enough to replace). */
  readonly view: string;
  /** decommissioned and rebalance are the placement settings as last read. */
  readonly decommissioned: ReadonlySet<string>;
  readonly rebalance: boolean;
  /** attention holds the repos a healthy-set check could not skip: the only ones a replica's change alone can concern. */
  readonly attention: ReadonlySet<string>;
  /** feed is the change feed's mark, for the next pass to read what changed since. */
  readonly feed: string;
  /** at is when the last full pass (a listing of every repo) ran. */
  readonly at: number;
}

/** Plan is one step for one repo: the replica set to write and the nodes it adds. */
export interface Plan {
  readonly replicas: string[];
  readonly added: string[];
  readonly removed: string[];
  readonly why: string;
}

/** PlanInput is what planReplicaSet needs to know of the cluster. */
export interface PlanInput {
  readonly repo: RepoRecord;
  readonly replicas: readonly ReplicaRecord[];
  /** known lists every registered node that is not decommissioned. */
  readonly eligible: readonly string[];
  readonly isLive: (node: string) => boolean;
  /** gone says a node is decommissioned or down longer than --replace-after. */
  readonly gone: (node: string) => boolean;
  readonly replicationFactor: number;
  readonly rebalance: boolean;
}

/**
 * planReplicaSet decides the next step toward R in-sync replicas for one repo (DESIGN §7-8):
 * a replica on a node gone for good is replaced at once; a decommissioned or rebalanced-away
 * replica is removed only after its replacement is in sync, so the count of copies never dips.
 * One step per call: add first, remove later. Pure, so it is tested without a cluster.
 */
export function planReplicaSet(p: PlanInput): Plan | null {
  const set = [...p.repo.replicas];
  const byNode = new Map(p.replicas.map((r) => [r.nodeId, r]));
  const r = Math.min(p.replicationFactor, p.eligible.length);
  const usable = p.eligible.filter((n) => !p.gone(n));
  const keepers = set.filter((n) => !p.gone(n) && p.eligible.includes(n));
  let desired: string[];
  if (p.rebalance) {
    desired = placeReplicas(p.repo.repoId, usable, r);
  } else {
    desired = [...keepers];
    for (const n of placeReplicas(p.repo.repoId, usable, usable.length)) if (desired.length < r && !desired.includes(n)) desired.push(n);
  }
  const deadMembers = set.filter((n) => p.gone(n) && !p.isLive(n));
  // Dead replicas are replaced all at once; moves of live ones go one copy at a time.
  const additions = desired.filter((n) => !set.includes(n) && p.isLive(n)).slice(0, Math.max(1, deadMembers.length));
  if (additions.length > 0) {
    const next = set.filter((n) => !deadMembers.includes(n)).concat(additions);
    return {
      replicas: next,
      added: additions,
      removed: deadMembers,
      why: deadMembers.length ? 'replace replicas on nodes gone for good' : 'add replicas toward placement',
    };
  }
  const extra = set.filter((n) => !desired.includes(n));
  if (extra.length === 0) return null;
  const desiredInSync = desired.every((n) => !set.includes(n) || isInSync(p.repo, byNode.get(n)));
  const inSyncAfter = set.filter((n) => !extra.includes(n) && isInSync(p.repo, byNode.get(n))).length;
  // A dead member with no node to replace it stays: dropping it would not add a copy anywhere.
  if (extra.every((n) => deadMembers.includes(n))) return null;
  if (!desiredInSync || inSyncAfter < Math.min(r, desired.length)) return null;
  const drop = extra.find((n) => !deadMembers.includes(n))!;
  return { replicas: set.filter((n) => n !== drop), added: [], removed: [drop], why: 'remove a replica after its replacement is in sync' };
}

/**
 * Steward keeps every repo at R healthy replicas: for each repo whose lowest-id live in-sync
 * replica is this node, it re-replicates away from nodes down longer than `replaceAfterMs` or
 * decommissioned, and, after `rebalance`, moves replicas onto new nodes. The replica set is
 * changed under the repo's write lock (RepoActivity.lock, waiting in the repo's lock line up to
 * `lockWaitMs`: a repo still held past that is left for the next pass), so no push runs on a set
 * being changed; added nodes are marked `missing` and
 * their repair worker copies the repo, and a removed node's worker drops its copy.
 */
export class Steward {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /**
   * settled is what the last pass that left nothing to retry saw: the membership view, the
   * placement settings, and the change feed's mark. Plans depend on nothing else, so while they
   * stay the same a pass costs one store read (the feed), and after a change it looks only at the
   * repos the feed names, with the records it carries (docs/SCALE.md); a full pass still runs
   * every fullPassMs.
   */
  private settled: Settled | null = null;

  constructor(
    private readonly deps: {
      nodeId: string;
      store: ClusterStore;
      membership: Membership;
      logger: Logger;
      activity: RepoActivity;
      replicationFactor: number;
      replaceAfterMs: number;
      /** fullPassMs is how often a pass reads every repo even when nothing seems to have changed (default DEFAULTS.fullPassMs). */
      fullPassMs?: number;
      /** lockWaitMs is how long a step waits in the repo's lock line (default DEFAULTS.swapLockWaitMs). */
      lockWaitMs?: number;
    },
  ) {}

  /** start runs a pass every `intervalMs`. */
  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      void this.pass();
    }, intervalMs);
    this.timer.unref();
  }

  /** stop ends the passes. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** pass plans and applies at most one step per repo this node stewards; returns the steps taken. */
  async pass(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    let steps = 0;
    const { store, membership, nodeId, logger } = this.deps;
    try {
      const view = membership
        .knownIds()
        .map((n) => `${n}:${membership.isLive(n) ? 1 : 0}:${membership.downFor(n) > this.deps.replaceAfterMs ? 1 : 0}`)
        .join(',');
      const s = this.settled;
      // After a pass that left nothing to do, and with the nodes as they were, only a repo whose
      // records changed can need a step, or any repo after a placement setting changed: the
      // change feed says which.
      const recent = s && s.view === view && Date.now() - s.at < (this.deps.fullPassMs ?? DEFAULTS.fullPassMs) ? s : null;
      const feed = recent ? await store.changesSince(recent.feed) : null;
      const fromFeed = recent && feed && !feed.settingsChanged ? { recent, feed } : null;
      if (fromFeed?.feed.repoIds.length === 0) {
        this.settled = { ...fromFeed.recent, feed: fromFeed.feed.mark };
        return 0;
      }
      let retry = false;
      const decommissioned = fromFeed
        ? fromFeed.recent.decommissioned
        : new Set((await store.listMeta(DECOMMISSIONED_PREFIX)).map((m) => m.key.slice(DECOMMISSIONED_PREFIX.length)));
      const rebalance = fromFeed ? fromFeed.recent.rebalance : (await store.getMeta(REBALANCE_KEY)) !== null;
      const eligible = membership.knownIds().filter((n) => !decommissioned.has(n));
      const gone = (n: string): boolean => decommissioned.has(n) || membership.downFor(n) > this.deps.replaceAfterMs;
      const r = Math.min(this.deps.replicationFactor, eligible.length);
      // Read before a full listing: what changes during it is named again next time.
      const nextFeed = fromFeed ? fromFeed.feed.mark : await store.feedMark();
      const attention = new Set(fromFeed?.recent.attention);
      const repos: RepoRecord[] = [];
      if (fromFeed) {
        const records = new Map(fromFeed.feed.repos.map((r) => [r.repoId, r]));
        for (const id of fromFeed.feed.repoIds) {
          const record = records.get(id);
          if (record) repos.push(record);
          else if (fromFeed.feed.complete)
            attention.delete(id); // deleted
          else if (attention.has(id)) {
            // Only its replicas changed: that matters to a repo whose set needs a step.
            const repo = await store.getRepo(id);
            if (repo) repos.push(repo);
            else attention.delete(id);
          }
        }
      } else {
        repos.push(...(await store.listRepos()));
      }
      const busy: Array<[RepoRecord, Plan]> = [];
      for (const repo of repos) {
        // A repo on r healthy, eligible nodes needs no step (planReplicaSet would say null):
        // skip it without reading its replicas.
        if (!rebalance && repo.replicas.length === r && repo.replicas.every((n) => !gone(n) && eligible.includes(n))) {
          attention.delete(repo.repoId);
          continue;
        }
        attention.add(repo.repoId);
        const replicas = await store.getReplicas(repo.repoId);
        const byNode = new Map(replicas.map((r) => [r.nodeId, r]));
        const steward = repo.replicas.filter((n) => membership.isLive(n) && isInSync(repo, byNode.get(n))).sort()[0];
        if (steward !== nodeId) continue;
        const plan = planReplicaSet({
          repo,
          replicas,
          eligible,
          isLive: (n) => membership.isLive(n),
          gone,
          replicationFactor: this.deps.replicationFactor,
          rebalance,
        });
        if (!plan) continue;
        // One try first: a busy repo waits for its turn after the others had theirs, so one
        // busy repo does not hold up the steps of every repo behind it.
        const done = await this.apply(repo, plan, 0);
        if (done === 'busy') busy.push([repo, plan]);
        else if (done) steps++;
        else retry = true;
      }
      for (const [repo, plan] of busy) {
        if ((await this.apply(repo, plan, this.deps.lockWaitMs ?? DEFAULTS.swapLockWaitMs)) === true) steps++;
        else retry = true;
      }
      // A pass from the feed keeps the time of the last full one: a full pass still comes every fullPassMs.
      this.settled =
        steps === 0 && !retry
          ? { view, decommissioned, rebalance, attention, feed: nextFeed, at: fromFeed ? fromFeed.recent.at : Date.now() }
          : null;
    } catch (err) {
      logger.debug({ err: errorMessage(err) }, 'steward pass skipped');
    } finally {
      this.running = false;
    }
    return steps;
  }

  /**
   * apply makes a step under the repo's lock, waiting up to `waitMs` for it: 'busy' when the
   * lock was not had, false when the repo changed meanwhile. The step waits its turn in the
   * repo's lock line like a push (pass: a second round with a wait): a repo pushed to without a
   * pause always has someone holding its lock or waiting for it, and a single try left it short
   * of replicas for as long as it stayed busy.
   */
  private async apply(repo: RepoRecord, plan: Plan, waitMs: number): Promise<boolean | 'busy'> {
    const { store, logger, activity } = this.deps;
    const held = await activity.lock(repo.repoId, waitMs);
    if (!held) return 'busy';
    try {
      const now = await store.getRepo(repo.repoId);
      if (!now || now.incarnation !== repo.incarnation || now.replicas.join(',') !== repo.replicas.join(',')) return false;
      if (!(await store.setReplicaSet(repo.repoId, repo.incarnation, plan.replicas))) return false;
      for (const n of plan.added) await store.markReplica(repo.repoId, n, repo.incarnation, 'missing', now.generation + 1);
      logger.info({ repoId: repo.repoId, from: repo.replicas, to: plan.replicas, why: plan.why }, 'replica set changed');
      return true;
    } finally {
      await held.release();
    }
  }
}

import { errorMessage } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import { dropLinksChecked, linksState, markLinksChecked, type ReplicaStorage } from '../git/repo-storage.js';
import { terminate, waitClose, type GitRunner } from '../git/runner.js';
import { NO_DWIM } from '../git/update-ref.js';
import type { Metrics } from '../metrics.js';
import { isInSync, type ClusterStore, type RepoRecord } from '../store/types.js';

/**
 * SWEEP_PASSES: a replica unchanged since it was last found good is checked again within this
 * many passes (a day at the 5-minute default); SWEEP_MIN is the least a pass re-checks.
 */
const SWEEP_PASSES = 288;
const SWEEP_MIN = 16;

/** Verified is the state a replica was last found good at (incarnation and generation) and when. */
export interface Verified {
  readonly key: string;
  readonly at: number;
}

/**
 * pickForVerification chooses what one verification pass checks (docs/SCALE.md): every replica
 * whose state changed since it was last found good (or never checked: all of them after a
 * start), and of the unchanged ones the longest unchecked, at least SWEEP_MIN and enough that
 * each is checked again within SWEEP_PASSES passes. A pass then costs in proportion to what
 * changed, plus a slice, rather than a git process per replica every few minutes.
 */
export function pickForVerification(
  repos: readonly RepoRecord[],
  seen: ReadonlyMap<string, Verified>,
  sweepPasses = SWEEP_PASSES,
  sweepMin = SWEEP_MIN,
): RepoRecord[] {
  const changed: RepoRecord[] = [];
  const unchanged: Array<{ repo: RepoRecord; at: number }> = [];
  for (const repo of repos) {
    const v = seen.get(repo.repoId);
    if (v && v.key === verifiedKey(repo)) unchanged.push({ repo, at: v.at });
    else changed.push(repo);
  }
  const budget = Math.max(sweepMin, Math.ceil(unchanged.length / sweepPasses));
  return changed.concat(
    unchanged
      .sort((a, b) => a.at - b.at)
      .slice(0, budget)
      .map((u) => u.repo),
  );
}

/** verifiedKey names the state of a repo a replica was checked at. */
export function verifiedKey(repo: Pick<RepoRecord, 'incarnation' | 'generation'>): string {
  return `${repo.incarnation}:${repo.generation}`;
}

/** VerifyResult is what verifying one replica found: `stale` and `missing` were marked for repair. */
export type VerifyResult = 'ok' | 'stale' | 'missing' | 'not_in_sync' | 'not_here';

/**
 * ReplicaVerifier checks that this node's replicas the store believes in sync hold what the
 * store says (DESIGN §7): it recomputes each one's checksum and, when asked, runs
 * `git fsck --connectivity-only`; a mismatch is marked stale (refs) or missing (objects, or
 * another incarnation on disk) for the repair worker. It only reads replicas and writes the
 * store, so it runs beside anything.
 */
export class ReplicaVerifier {
  /** queue runs the passes one after the other; `queued` says which kind already waits in it. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly queued = { checksum: false, fsck: false };
  /** checked and fscked: per local replica, the state it was last found good at, by each kind of pass. */
  private readonly checked = new Map<string, Verified>();
  private readonly fscked = new Map<string, Verified>();

  constructor(
    private readonly deps: {
      nodeId: string;
      store: ClusterStore;
      storage: ReplicaStorage;
      git: GitRunner;
      logger: Logger;
      metrics: Metrics;
      /** gitTimeoutMs bounds one fsck (settings: gitTimeoutMs). */
      gitTimeoutMs: number;
      /** sweepMin: the least number of unchanged replicas a pass re-checks (default SWEEP_MIN; tests). */
      sweepMin?: number;
    },
  ) {}

  /**
   * created counts a replica a create just installed here as checked, by both kinds of pass, at
   * generation 0: it holds no refs and no objects by construction. Without it every new replica
   * was checked in the next pass, and a mass creation left each node thousands of checks to run
   * at once (docs/SCALE.md). It is checked again within the sweep like any unchanged replica.
   */
  created(repoId: string, incarnation: string): void {
    const v: Verified = { key: verifiedKey({ incarnation, generation: 0 }), at: Date.now() };
    this.checked.set(repoId, v);
    this.fscked.set(repoId, v);
  }

  /**
   * verifyOne checks this node's replica of one repo now (checksum, and fsck if asked), marking
   * a mismatch for repair: `git-replication verify`.
   */
  async verifyOne(repoId: string, fsck: boolean): Promise<VerifyResult> {
    const { store, nodeId } = this.deps;
    const repo = await store.getRepo(repoId);
    if (!repo || !repo.replicas.includes(nodeId)) return 'not_here';
    const own = (await store.getReplicas(repoId)).find((r) => r.nodeId === nodeId);
    if (!isInSync(repo, own)) return 'not_in_sync';
    return this.checkAndMark(repo, fsck);
  }

  /**
   * verify recomputes the checksum of the local replicas the store believes in sync that
   * pickForVerification chooses, and marks a mismatch stale. A push that commits meanwhile
   * changes the generation, and that replica is left for the next pass.
   */
  async verify(fsck = false): Promise<number> {
    // One verification at a time: on a big node one pass can outlast its interval, and
    // overlapping passes would pile up fsck processes. A pass asked for while another runs
    // waits its turn (one of each kind at most), so frequent checksum passes never starve the
    // fsck passes, nor the other way round.
    const kind = fsck ? 'fsck' : 'checksum';
    if (this.queued[kind]) return 0;
    this.queued[kind] = true;
    const run = this.queue.then(() => {
      this.queued[kind] = false;
      return this.verifyNow(fsck);
    });
    this.queue = run.catch(() => 0);
    return run;
  }

  private async verifyNow(fsck: boolean): Promise<number> {
    const { store, nodeId, logger } = this.deps;
    let marked = 0;
    try {
      const own = new Map((await store.replicasOnNode(nodeId)).map((r) => [r.repoId, r]));
      const inSync = (await store.listRepos()).filter((r) => r.replicas.includes(nodeId) && isInSync(r, own.get(r.repoId)));
      const seen = fsck ? this.fscked : this.checked;
      const here = new Set(inSync.map((r) => r.repoId));
      for (const id of seen.keys()) if (!here.has(id)) seen.delete(id);
      for (const repo of pickForVerification(inSync, seen, SWEEP_PASSES, this.deps.sweepMin ?? SWEEP_MIN)) {
        if ((await this.checkAndMark(repo, fsck)) === 'ok') seen.set(repo.repoId, { key: verifiedKey(repo), at: Date.now() });
        else {
          seen.delete(repo.repoId);
          marked++;
        }
      }
    } catch (err) {
      logger.debug({ err: errorMessage(err) }, 'verify pass skipped');
    }
    return marked;
  }

  /**
   * markIfLinked gives a replica made by a build before the links-checked mark (linksState `unknown`) the
   * mark once every link of every object in it is found present (Participant.checkCopy relies on
   * it): `git cat-file --batch-all-objects` lists every object, loose and packed, and `git
   * rev-list --objects --stdin --quiet` walks from each of them (replace refs off) and fails on
   * the first one missing. (`git fsck` cannot tell: it checks the links of reachable objects
   * only.) An object that comes in meanwhile comes through a check of its links, or marks the
   * replica LINKS_UNCHECKED first, which outranks the mark; a directory replaced meanwhile
   * (storage.replaced) is not marked. A replica found with a link missing is marked
   * LINKS_UNCHECKED, and not walked again.
   */
  private async markIfLinked(repoId: string): Promise<void> {
    const { storage, git, logger } = this.deps;
    const path = storage.repoPath(repoId);
    if (linksState(path) !== 'unknown') return;
    const replaced = storage.replaced;
    const timeoutMs = this.deps.gitTimeoutMs;
    const list = git.spawn(['cat-file', '--batch-all-objects', '--batch-check=%(objectname)'], { cwd: path, timeoutMs });
    const walk = git.spawn(['rev-list', '--objects', '--stdin', '--quiet'], {
      cwd: path,
      env: { GIT_NO_REPLACE_OBJECTS: '1' },
      config: NO_DWIM,
      timeoutMs,
    });
    let stderr = '';
    walk.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    walk.stdin?.on('error', () => undefined);
    walk.stdout?.resume();
    list.stderr?.resume();
    list.stdout?.pipe(walk.stdin!);
    // A walk that stops early (an object it cannot read) takes the listing's reader with it:
    // the listing would wait on a full pipe until its time-out.
    walk.once('close', () => {
      if (list.exitCode === null && list.signalCode === null) void terminate(list);
    });
    const [[listed], [walked, signal]] = await Promise.all([waitClose(list), waitClose(walk)]);
    if (signal) return;
    if (walked !== 0) {
      if (!/missing|bad object|corrupt|could not read|unable to read/i.test(stderr)) return;
      dropLinksChecked(path);
      logger.warn(
        { repoId, walk: stderr.trim().split('\n').slice(0, 3) },
        'replica holds an object whose links are missing: its copies are walked by rev-list',
      );
      return;
    }
    // A listing cut short walked only part of the objects.
    if (listed !== 0 || storage.replaced !== replaced || linksState(path) !== 'unknown') return;
    await markLinksChecked(path);
    logger.info({ repoId }, 'replica found with every link of every object present: marked links-checked');
  }

  /**
   * checkAndMark compares a replica the store believes in sync with the store's checksum (and
   * runs `git fsck --connectivity-only` if asked); a mismatch is marked stale (or missing, for
   * lost objects or another incarnation) unless a push moved the repo on meanwhile.
   */
  private async checkAndMark(repo: RepoRecord, fsck: boolean): Promise<'ok' | 'stale' | 'missing'> {
    const { store, storage, nodeId, logger, git } = this.deps;
    const incarnation = await storage.incarnationOf(repo.repoId);
    const checksum = incarnation === repo.incarnation ? await storage.checksum(repo.repoId).catch(() => '') : '';
    let problem: 'stale' | 'missing' | null = checksum === repo.checksum ? null : incarnation === repo.incarnation ? 'stale' : 'missing';
    if (!problem && fsck) {
      const r = await git
        .run(['fsck', '--connectivity-only', '--no-dangling', '--no-progress'], {
          cwd: storage.repoPath(repo.repoId),
          okCodes: [0, 1, 2, 3, 4, 5, 6, 7, 8],
          timeoutMs: this.deps.gitTimeoutMs,
        })
        .catch(() => ({ code: 1, stderr: 'fsck could not run' }));
      if (r.code !== 0) {
        logger.warn({ repoId: repo.repoId, fsck: r.stderr.trim().split('\n').slice(0, 3) }, 'replica fails fsck: objects missing');
        problem = 'missing';
      } else
        await this.markIfLinked(repo.repoId).catch((err: unknown) =>
          logger.warn(
            { repoId: repo.repoId, err: errorMessage(err) },
            'could not look at the links of a replica made before the links-checked mark',
          ),
        );
    }
    if (!problem) return 'ok';
    const again = await store.getRepo(repo.repoId);
    if (!again || again.generation !== repo.generation) return 'ok';
    const marked = await store.markReplica(repo.repoId, nodeId, repo.incarnation, problem, repo.generation + 1);
    // Not written: the replica confirmed a later generation meanwhile (a commit, a repair), which the next pass checks.
    if (!marked) return 'ok';
    logger.warn(
      { repoId: repo.repoId, generation: repo.generation, state: problem },
      'replica contents differ from the store: marked for repair',
    );
    this.deps.metrics.verifierMismatches.inc({ kind: problem });
    return problem;
  }
}

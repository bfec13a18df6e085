import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { readFile, readlink, realpath, rm, unlink, readdir, stat } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { DEFAULTS } from '../config.js';
import { AppError, conflict, errorMessage, notFound } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import { isZeroOid, ZERO_OID, type RefUpdate } from '../domain/ref-name.js';
import { indexPackStrict } from '../git/fsck-policy.js';
import { packIndexHolds } from '../git/pack-index.js';
import { dropLinksChecked, linksState, listDir, readSmallFile, statOrNull, syncRefs, type ReplicaStorage } from '../git/repo-storage.js';
import { waitClose, type GitRunner } from '../git/runner.js';
import { NO_DWIM, RefTxnError, UpdateRefTxn, type RefSessions } from '../git/update-ref.js';
import type { ClusterStore } from '../store/types.js';
import type { RepoActivity, Running } from './activity.js';
import type { Failpoints } from './failpoints.js';
import type { LocalTxn, TxnLog, TxnPayload } from './txn-log.js';
import type { PrepareRequest } from '../cluster/protocol.js';

/** STAGE_TTL_MS is how long a staged pack waits, by default, for the prepare that adopts it before it is removed. */
export const STAGE_TTL_MS = 5 * 60_000;

/** LAST_COMMITTED_MAX caps the repos whose last locally committed push a participant remembers. */
const LAST_COMMITTED_MAX = 1_024;

/** STAGE_KEEP is what a staged pack's `.keep` file says until a prepare adopts the pack. */
const STAGE_KEEP = 'replication stage';

/**
 * LINKED_TIPS_MAX is the most new tips a copy's check looks up in the copy's pack index
 * (checkCopy). The lookups read in place, a few small reads per tip: this bounds how long they
 * hold the event loop. A push with more (a mirror push) is checked by `rev-list`.
 */
const LINKED_TIPS_MAX = 64;

const NOT_STAGED = 'pack not staged';

/** StagedPack is a pack shipped ahead of its prepare: indexed and kept, not yet part of a transaction. */
interface StagedPack {
  readonly repoId: string;
  /** keep resolves to the pack's `.keep` file once index-pack verified it (null: the replica had the pack already), or rejects. */
  readonly keep: Promise<string | null>;
  /** timer removes the pack after the TTL; a new stage of the same pack starts it again (renew). */
  timer: NodeJS.Timeout;
  /** connected: the connectivity check of the push's tips run once a copy was indexed (checkCopy); null if none or it failed. */
  readonly connected?: SettledCheck;
}

/**
 * CopyCheck is a connectivity check run on a replica right after a copy of an upload was indexed:
 * every object reachable from `tips` and not from the refs was there, in the packs `packs` (the
 * same before and after the check) or loose, in the pack directory `dir` (its device and inode).
 * It still holds at a prepare if no object went since. On a participant objects go only when a
 * pack refused for its hash, which index-pack wrote, is removed (the replica then loses its
 * links-checked mark too), or with a whole directory (a create's install, a repair's swap, a
 * drop); loose ones only once packed (`repack -d` prunes what it packed); the pack of an
 * aborted transaction or of a stage given up stays, only its `.keep` goes. So if the node
 * removed no pack and replaced no directory since the check began (`removals`), and every one
 * of those packs is still there, in the same directory, it holds (a geometric repack removes
 * packs too, keeping their objects in its new one: the prepare then checks again).
 */
interface CopyCheck {
  readonly tips: ReadonlySet<string>;
  readonly packs: readonly string[];
  readonly dir: { readonly dev: number; readonly ino: number };
  /** removals: this node's count of packs it removed and replica directories it replaced, before the check began. */
  readonly removals: number;
}

/** SettledCheck is a copy check with whether it has ended (a prepare never waits for one still running). */
interface SettledCheck {
  /** done is the check's result once it ended (null: it failed), undefined while it runs. */
  done: CopyCheck | null | undefined;
}

/** REFUSAL_CODES are the catalogue's codes of a participant's refusals, by status. */
const REFUSAL_CODES = {
  stale: 'ERR_REPLICA_STALE',
  conflict: 'ERR_REPLICA_CONFLICT',
  failed: 'ERR_PREPARE_FAILED',
  not_staged: 'ERR_REPLICA_NOT_STAGED',
} as const;

/**
 * PrepareRefusal is a participant's reasoned "no": behind (stale), ahead (conflict), failed, or
 * not_staged (the prepare named a staged pack this node does not hold: ship it with the prepare).
 */
export class PrepareRefusal extends AppError {
  constructor(
    readonly status: 'stale' | 'conflict' | 'failed' | 'not_staged',
    message: string,
  ) {
    super(REFUSAL_CODES[status], [message], { status });
    this.name = 'PrepareRefusal';
  }
}

interface OpenTxn {
  readonly req: PrepareRequest;
  readonly preparedAt: number;
  readonly refs: UpdateRefTxn | null;
  readonly keepFiles: string[];
  readonly stagingPath?: string;
}

/** PushCommitted is what of a push transaction this node committed says the refs it left: its repo, incarnation, base generation and ref updates. */
export type PushCommitted = Pick<PrepareRequest, 'repoId' | 'incarnation' | 'baseGeneration' | 'updates'>;

/**
 * Participant is this node's side of every replicated transaction (DESIGN §5 steps 3-5): it
 * prepares (staging a new repo, or verifying a pushed pack and locking refs with update-ref),
 * logs the prepare durably, and commits or aborts when told, or by reading the decision from the
 * store when the coordinator goes quiet.
 */
export class Participant {
  private readonly open = new Map<string, OpenTxn>();
  /**
   * running holds each transaction's `txn` activity, from the start of its prepare until its
   * confirmation is written or it aborted: until then repair leaves the replica alone.
   */
  private readonly running = new Map<string, Running>();
  /** unfinished: the requests of the transactions in `running` that this node started preparing. */
  private readonly unfinished = new Map<string, PrepareRequest>();
  private readonly finishing = new Map<string, Promise<'committed' | 'aborted'>>();
  /**
   * lastCommitted: per repo, the incarnation and generation of the last push this node
   * committed (the store may not show its confirmation yet; at most LAST_COMMITTED_MAX repos).
   */
  private readonly lastCommitted = new Map<string, { readonly incarnation: string; readonly generation: number }>();
  /** staged: packs shipped ahead of their prepare, by `<repo>\0<pack hash>`. */
  private readonly staged = new Map<string, StagedPack>();
  /** uploadCopies counts the copies of uploads indexing now (stageUpload). */
  private uploadCopies = 0;
  /** packsRemoved counts the packs this node removed from a replica (a pack refused for its hash): a copy check from before no longer holds. */
  private packsRemoved = 0;
  /** copyChecksRunning counts the copy checks not ended yet (tests). */
  copyChecksRunning = 0;

  constructor(
    private readonly deps: {
      readonly nodeId: string;
      readonly store: ClusterStore;
      readonly storage: ReplicaStorage;
      readonly git: GitRunner;
      readonly log: TxnLog;
      readonly logger: Logger;
      readonly failpoints: Failpoints;
      readonly activity: RepoActivity;
      /** refSessions keeps each replica's update-ref process for its next transaction (absent: one process per transaction). */
      readonly refSessions?: RefSessions;
      /** onCreated is told of a replica a create installed here (the verifier counts it as checked: it is empty by construction). */
      readonly onCreated?: (repoId: string, incarnation: string) => void;
      /** fsckIgnore is this node's fsck policy, for a prepare that names none. */
      readonly fsckIgnore?: readonly string[];
      /** diskShortage says why the data dir has no room for a new transaction, or null. */
      readonly diskShortage?: () => string | null;
      /** resolveAfterMs is how long a prepared txn waits for its coordinator before asking the store. */
      readonly resolveAfterMs: number;
      /** commitWaitMs is how long a prepare whose replica is confirmed generations back waits for this node's commits of them (default DEFAULTS.commitWaitMs). */
      readonly commitWaitMs?: number;
      /** gitTimeoutMs bounds index-pack and the connectivity check of a prepare (settings: gitTimeoutMs; default none). */
      readonly gitTimeoutMs?: number;
      /** stageTtlMs is how long a staged pack waits for its prepare (default STAGE_TTL_MS). */
      readonly stageTtlMs?: number;
      /**
       * maxUploadCopies bounds the copies of uploads (stageUpload) indexing at once on this node
       * (the node's git process limit in app.ts; default unbounded): more are refused, and their
       * coordinators stage the pack once their receive-pack has accepted it.
       */
      readonly maxUploadCopies?: number;
      /**
       * maxUploadCopyBytes bounds the pack of a copy during an upload (index-pack
       * --max-input-size; the node's push size limit in app.ts): a larger one is refused, and its
       * coordinator stages its own, which its receive-pack bounded.
       */
      readonly maxUploadCopyBytes?: number;
      /**
       * onPushCommitted is told of every push transaction committed here, once its refs are
       * durable: the repo's refs at `baseGeneration` + 1 are those at `baseGeneration` with
       * `updates` applied (the coordinator keeps them for its own next push).
       */
      readonly onPushCommitted?: (c: PushCommitted) => void;
      /** onConnectivity is told where a peer prepare's connectivity check of new tips ran (metrics). */
      readonly onConnectivity?: (at: 'copy' | 'prepare') => void;
      /** onCopyCheck is told how a copy's check of its tips ran: by their links, or by rev-list (metrics). */
      readonly onCopyCheck?: (by: 'links' | 'rev-list') => void;
    },
  ) {}

  /** stagedCount is the number of packs staged ahead of a prepare that has not adopted them yet. */
  get stagedCount(): number {
    return this.staged.size;
  }

  /** openCount is the number of transactions prepared and not yet finished. */
  get openCount(): number {
    return this.open.size;
  }

  /**
   * prepare stages a transaction. For a push, `pack` is the pushed pack (null when the push has
   * no new objects or the pack is already in the local repo: `local`). Throws PrepareRefusal.
   */
  async prepare(req: PrepareRequest, pack: Readable | null, opts: { local: boolean } = { local: false }): Promise<void> {
    const { log } = this.deps;
    const logged = log.get(req.txnId);
    if (logged?.state === 'aborted') throw new PrepareRefusal('failed', 'transaction already aborted');
    if (logged || this.open.has(req.txnId)) return;
    if (this.running.has(req.txnId)) throw new PrepareRefusal('failed', 'transaction already preparing');
    // A full disk takes no new transaction (its pack and refs could be half written); the
    // others' replicas carry the push, and repair brings this one back once there is room.
    const shortage = req.kind === 'delete' ? null : (this.deps.diskShortage?.() ?? null);
    if (shortage) throw new PrepareRefusal('failed', `${this.deps.nodeId}: ${shortage}`);
    // Checked and marked in one synchronous step (MAY_START_DURING): no repair, swap or drop of
    // the replica runs beside a transaction.
    const running = this.deps.activity.tryBegin(req.repoId, 'txn');
    if (!running)
      throw new PrepareRefusal(
        'stale',
        `replica of ${req.repoId} is being repaired (${this.deps.activity.runningOn(req.repoId).join(', ')})`,
      );
    this.running.set(req.txnId, running);
    this.unfinished.set(req.txnId, req);
    try {
      await this.prepareActive(req, pack, opts);
    } catch (err) {
      this.ended(req.txnId);
      throw err;
    }
  }

  /**
   * stage verifies and keeps a push's pack ahead of its prepare (`index-pack --strict`, as a
   * prepare would), so that the prepare, sent once the coordinator holds the repo lock, has only
   * refs to check and lock. Staging the same pack again is a no-op, and so is staging a pack the
   * replica already has. Unless a prepare adopts it, the pack is removed after the TTL (or when
   * the coordinator unstages it); one a restart left behind loses its `.keep` at start
   * (removeLeftovers in app.ts), as a transaction's would. Throws PrepareRefusal.
   */
  async stage(repoId: string, packHash: string, pack: Readable, fsckIgnore: readonly string[] | undefined): Promise<void> {
    const key = stageKey(repoId, packHash);
    const existing = this.staged.get(key);
    if (existing) {
      // Staged again (the coordinator found another of its packs expired and stages them all
      // again): its time starts again, or it could expire between this answer and the prepare.
      this.renew(key, existing);
      pack.resume();
      await existing.keep.then(
        () => undefined,
        (err: unknown) => {
          throw err instanceof PrepareRefusal ? err : new PrepareRefusal('failed', errorMessage(err));
        },
      );
      return;
    }
    const running = this.beginStage(repoId);
    const repoPath = this.deps.storage.repoPath(repoId);
    const keep = (async (): Promise<string | null> => {
      try {
        if ((await this.deps.storage.incarnationOf(repoId)) === null)
          throw new PrepareRefusal('stale', `no replica of ${repoId} on ${this.deps.nodeId}`);
        // Already here (an identical pack pushed before): nothing to index, and nothing to remove later.
        if (existsSync(join(repoPath, 'objects', 'pack', `pack-${packHash}.pack`))) {
          pack.resume();
          return null;
        }
        return await this.indexPack(repoPath, STAGE_KEEP, pack, packHash, fsckIgnore ?? this.deps.fsckIgnore ?? []);
      } finally {
        running.end();
      }
    })();
    // In the table before the first await: a second stage of the pack, or a prepare that indexes
    // it, finds it there.
    const entry: StagedPack = { repoId, keep, timer: this.stagedTimer(key) };
    this.staged.set(key, entry);
    let written: string | null;
    try {
      written = await keep;
    } catch (err) {
      this.dropStaged(key, entry);
      throw err;
    }
    // A prepare that brought the same pack itself claimed it while this index-pack still ran
    // (claimStaged). If that transaction ended first and removed its .keep, this index-pack
    // wrote one afterwards, which nobody would remove: the stage's own is dropped here.
    if (written && this.staged.get(key) !== entry) {
      const content = await readFile(written, 'utf8').catch(() => '');
      if (content.startsWith(STAGE_KEEP) && !this.keepInUse(written)) await removeFiles([written]);
    }
    await this.deps.failpoints.hit('participant.afterStage');
  }

  /**
   * stageUpload verifies and keeps a push's pack as the client uploads it to the coordinator
   * (`index-pack --strict --fix-thin`, completing a thin pack from this replica's objects, as the
   * coordinator's receive-pack does), and returns the hash index-pack named it by. The
   * coordinator compares that hash with its own pack's: the same, a prepare names the pack as
   * staged; another (this replica completed it from other bytes), it ships its own. Otherwise a
   * staged pack like stage's, under its hash. Throws PrepareRefusal.
   */
  async stageUpload(
    repoId: string,
    pack: Readable,
    fsckIgnore: readonly string[] | undefined,
    tips: readonly string[] = [],
  ): Promise<string> {
    const max = this.deps.maxUploadCopies ?? Number.POSITIVE_INFINITY;
    if (this.uploadCopies >= max) throw new PrepareRefusal('failed', `${this.deps.nodeId}: ${max} copies of uploads are indexing already`);
    const running = this.beginStage(repoId);
    this.uploadCopies++;
    /** release gives back the copy's place and activity, once its index-pack and its check ended. */
    const release = (): void => {
      this.uploadCopies--;
      running.end();
    };
    // This stage's own message: its `.keep` tells apart from one another stage of the same pack wrote.
    const message = `${STAGE_KEEP} of an upload ${randomUUID()}`;
    const repoPath = this.deps.storage.repoPath(repoId);
    let keep: string;
    try {
      if ((await this.deps.storage.incarnationOf(repoId)) === null)
        throw new PrepareRefusal('stale', `no replica of ${repoId} on ${this.deps.nodeId}`);
      keep = await this.indexPack(repoPath, message, pack, undefined, fsckIgnore ?? this.deps.fsckIgnore ?? [], {
        fixThin: true,
        ...(this.deps.maxUploadCopyBytes ? { maxInputSize: this.deps.maxUploadCopyBytes } : {}),
      });
    } catch (err) {
      release();
      throw err;
    }
    // The tips' connectivity is checked now, while the coordinator's receive-pack still works on
    // the same pack, instead of in the prepare. The answer does not wait for it; the replica's
    // `upload` activity (no swap or drop of the directory meanwhile) and the copy's place among
    // maxUploadCopies last until it ends.
    let connected: SettledCheck | null = null;
    if (tips.length > 0) {
      const check: SettledCheck = { done: undefined };
      this.copyChecksRunning++;
      // checkCopy never rejects: a failed check is null.
      void this.checkCopy(repoPath, tips, keep)
        .then((r) => {
          check.done = r;
        })
        .finally(() => {
          this.copyChecksRunning--;
          release();
        });
      connected = check;
    } else release();
    const hash = /pack-([0-9a-f]+)\.keep$/.exec(keep)?.[1] ?? '';
    const key = stageKey(repoId, hash);
    // A `.keep` found there already (index-pack wrote none) is another's: nothing of this stage to remove later.
    const mine = (readSmallFile(keep) ?? '').trim() === message;
    // The table is read and written with no await between: two stages of one pack (a client's
    // retried push through two nodes) both finding no entry would leave the first one's `.keep`
    // to nobody (a chaos run found one).
    const existing = this.staged.get(key);
    if (existing) this.renew(key, existing);
    const withCheck = connected ? { connected } : {};
    if (!existing) this.staged.set(key, { repoId, keep: Promise.resolve(mine ? keep : null), timer: this.stagedTimer(key), ...withCheck });
    else if (mine) {
      // Another stage of the same pack meanwhile. Its entry counts this one's `.keep` as its own
      // (its index-pack found it), or none (it found the pack here): this one's `.keep` then
      // takes the entry's place, or goes if the entry was adopted or given up meanwhile.
      const theirs = await existing.keep.catch(() => null);
      if (theirs === null && this.staged.get(key) === existing) {
        this.dropStaged(key, existing);
        this.staged.set(key, { repoId, keep: Promise.resolve(keep), timer: this.stagedTimer(key), ...withCheck });
      } else if (theirs !== keep && !this.keepInUse(keep)) await removeFiles([keep]);
    }
    await this.deps.failpoints.hit('participant.afterStage');
    return hash;
  }

  /**
   * beginStage starts a stage's `upload` activity on the replica, refused when the disk is short
   * or the replica is being replaced: it may run beside transactions and repairs, never beside a
   * swap or drop of the directory it writes into.
   */
  private beginStage(repoId: string): Running {
    const shortage = this.deps.diskShortage?.() ?? null;
    if (shortage) throw new PrepareRefusal('failed', `${this.deps.nodeId}: ${shortage}`);
    const running = this.deps.activity.tryBegin(repoId, 'upload');
    if (!running)
      throw new PrepareRefusal('stale', `replica of ${repoId} is being replaced (${this.deps.activity.runningOn(repoId).join(', ')})`);
    return running;
  }

  /**
   * removeKeepsSaying removes the pack `.keep` files of a failed index-pack's replica whose
   * content is `message`, or the start of it: index-pack creates the file, then writes the
   * message, and one killed in between leaves it empty or cut short.
   */
  private async removeKeepsSaying(repoPath: string, message: string): Promise<void> {
    await removeFiles(listPackKeeps(repoPath).filter((k) => this.isKeepOf(k, message)));
  }

  /**
   * isKeepOf says whether a failed index-pack wrote `keep`: it holds `message`, or the start of it
   * (empty included) while its pack's index is not in, since index-pack creates the file, then
   * writes the message, then moves the pack and its index in; one killed in between leaves it
   * empty or cut short. An empty `.keep` of a pack whose index is there (one an operator made to
   * hold a pack) is not this one's.
   */
  private isKeepOf(keep: string, message: string): boolean {
    const content = readSmallFile(keep);
    if (content === null || !`${message}\n`.startsWith(content)) return false;
    return content === `${message}\n` || !existsSync(keep.replace(/\.keep$/, '.idx'));
  }

  private stagedTimer(key: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      void this.unstageKey(key);
    }, this.deps.stageTtlMs ?? STAGE_TTL_MS);
    timer.unref();
    return timer;
  }

  /** renew starts a staged pack's TTL again. */
  private renew(key: string, entry: StagedPack): void {
    clearTimeout(entry.timer);
    entry.timer = this.stagedTimer(key);
  }

  /** dropStaged takes an entry out of the table (if it is still the one there); its files stay. */
  private dropStaged(key: string, entry: StagedPack): void {
    clearTimeout(entry.timer);
    if (this.staged.get(key) === entry) this.staged.delete(key);
  }

  /**
   * unstage removes a pack staged for a push that will not prepare here (refused, or its
   * transaction failed before the prepare); one not staged, or adopted meanwhile, is left alone.
   */
  async unstage(repoId: string, packHash: string): Promise<void> {
    await this.unstageKey(stageKey(repoId, packHash));
  }

  /**
   * unstageKey gives up a staged pack no prepare adopted: its `.keep` goes (while it is still the
   * stage's own), the pack stays, as an aborted transaction's does. Never the pack itself: the
   * same pack may be staged again (a retried push) while this runs, find the file still there,
   * and be adopted by a transaction that commits; deleting it then loses committed objects (the
   * chaos run and the race test both found this when the pack was deleted here).
   */
  private async unstageKey(key: string): Promise<void> {
    const s = this.staged.get(key);
    if (!s) return;
    this.dropStaged(key, s);
    const keep = await s.keep.catch(() => null);
    if (!keep) return;
    const content = await readFile(keep, 'utf8').catch(() => '');
    if (content.startsWith(STAGE_KEEP)) await removeFiles([keep]);
  }

  /** keepInUse says whether a prepared transaction here counts a `.keep` as its own (removed at its commit or abort). */
  private keepInUse(keep: string): boolean {
    for (const t of this.open.values()) if (t.keepFiles.includes(keep)) return true;
    return false;
  }

  /** claimStaged takes a pack a prepare indexed itself out of the table: it is the transaction's now. */
  private claimStaged(repoId: string, packHash: string): void {
    const key = stageKey(repoId, packHash);
    const s = this.staged.get(key);
    if (s) this.dropStaged(key, s);
  }

  /**
   * adoptStaged hands the staged packs a prepare names to its transaction: their `.keep` files
   * now belong to it (removed at commit or abort). When one is not here (never staged, expired,
   * or its replica was replaced meanwhile) nothing is adopted and the prepare is refused with
   * not_staged: the coordinator stages them again, and those still here are found again.
   */
  private async adoptStaged(req: PrepareRequest): Promise<{ keeps: string[]; checks: SettledCheck[] }> {
    const keys = [...new Set((req.stagedPacks ?? []).map((hash) => stageKey(req.repoId, hash)))];
    const entries = keys.map((k) => this.staged.get(k));
    if (entries.some((e) => e === undefined)) throw new PrepareRefusal('not_staged', `${NOT_STAGED} on ${this.deps.nodeId}`);
    const keeps = await Promise.all(
      entries.map((e) =>
        e!.keep.then(
          (k) => ({ ok: true as const, k }),
          () => ({ ok: false as const }),
        ),
      ),
    );
    const present = keeps.map((r) => r.ok && (r.k === null || existsSync(r.k)));
    if (!present.every(Boolean)) throw new PrepareRefusal('not_staged', `${NOT_STAGED}: a staged pack is gone`);
    // Out of the table in one step after the last await: no expiry or unstage removes them now.
    if (keys.some((k, i) => this.staged.get(k) !== entries[i]))
      throw new PrepareRefusal('not_staged', `${NOT_STAGED}: a staged pack expired`);
    keys.forEach((k, i) => this.dropStaged(k, entries[i]!));
    return {
      keeps: keeps.flatMap((r) => (r.ok && r.k !== null ? [r.k] : [])),
      checks: entries.flatMap((e) => (e!.connected ? [e!.connected] : [])),
    };
  }

  /** ended ends a transaction's activity on the replica: it confirmed, aborted or was given up. */
  private ended(txnId: string): void {
    this.running.get(txnId)?.end();
    this.running.delete(txnId);
    this.unfinished.delete(txnId);
  }

  private async prepareActive(req: PrepareRequest, pack: Readable | null, opts: { local: boolean }): Promise<void> {
    const { log, failpoints } = this.deps;
    await failpoints.hit('participant.beforePrepare');
    let open: OpenTxn;
    if (req.kind === 'create') open = await this.prepareCreate(req);
    else if (req.kind === 'delete') open = await this.prepareDelete(req);
    else open = await this.preparePush(req, pack, opts.local);
    const payload: TxnPayload = {
      coordinator: req.coordinator,
      incarnation: req.incarnation,
      baseGeneration: req.baseGeneration,
      fencingToken: req.fencingToken,
      newChecksum: req.newChecksum,
      updates: req.updates,
      ...(req.newHead ? { newHead: req.newHead } : {}),
      stagingPath: open.stagingPath,
      keepFiles: open.keepFiles,
    };
    // An abort may have arrived while the pack was verified: honour it.
    if (log.get(req.txnId)?.state === 'aborted') {
      await this.release(open);
      throw new PrepareRefusal('failed', 'transaction aborted while preparing');
    }
    log.recordPrepared(req.txnId, req.repoId, req.kind, payload);
    this.open.set(req.txnId, open);
    await failpoints.hit('participant.afterPrepare');
  }

  private async prepareCreate(req: PrepareRequest): Promise<OpenTxn> {
    const stagingPath = this.deps.storage.stagingPath(req.txnId);
    await this.deps.storage.initRepo(stagingPath, req.incarnation);
    return { req, preparedAt: Date.now(), refs: null, keepFiles: [], stagingPath };
  }

  private async prepareDelete(req: PrepareRequest): Promise<OpenTxn> {
    return { req, preparedAt: Date.now(), refs: null, keepFiles: [] };
  }

  /**
   * checkReplica answers stale/conflict when this replica is not at the transaction's base
   * generation: the copy on disk must be of the transaction's incarnation, and its record in
   * the store in sync at the base generation (read here unless the coordinator read it under
   * the lock: replicaChecked).
   */
  private async checkReplica(req: PrepareRequest): Promise<void> {
    const { storage, store, nodeId } = this.deps;
    const incarnation = await storage.incarnationOf(req.repoId);
    if (incarnation !== req.incarnation) throw new PrepareRefusal('stale', `replica of ${req.repoId} is missing or of another incarnation`);
    if (req.replicaChecked) return;
    const replica = (await store.getReplicas(req.repoId)).find((r) => r.nodeId === nodeId);
    if (!replica || replica.incarnation !== req.incarnation) throw new PrepareRefusal('stale', 'replica has no confirmed generation');
    if (replica.generation > req.baseGeneration)
      throw new PrepareRefusal('conflict', `replica is at generation ${replica.generation}, ahead of ${req.baseGeneration}`);
    if (replica.generation < req.baseGeneration || replica.state !== 'in_sync') {
      if (replica.state === 'in_sync' && replica.generation < req.baseGeneration && (await this.commitsHere(req, replica.generation)))
        return;
      throw new PrepareRefusal('stale', `replica is at generation ${replica.generation} (${replica.state}), behind ${req.baseGeneration}`);
    }
  }

  /**
   * commitsHere says whether this node committed the push that took the repo to the prepare's
   * base generation, though the store does not show its confirmation yet: a push's last replica
   * commits a moment after W did, and the next push's prepare can come first. Refused as stale,
   * that replica would be marked stale and repaired while pushes keep coming. While a push
   * for every generation between the replica's confirmed one (`confirmed`, or the last committed
   * here) and the base is still preparing or prepared here, their commits are waited for, up to
   * commitWaitMs: on a slow replica under a stream
   * of pushes two or three can be on their way at once (the load test saw a replica confirmed at
   * 1 get the prepare of generation 3 while it still prepared 2 and 3, marked stale, and
   * repaired for minutes while the pushes went on). Each of those prepares passed this same check,
   * so a commit here of the push that made the base means every generation before it was applied.
   */
  private async commitsHere(req: PrepareRequest, confirmed: number): Promise<boolean> {
    const deadline = Date.now() + (this.deps.commitWaitMs ?? DEFAULTS.commitWaitMs);
    for (;;) {
      const last = this.lastCommitted.get(req.repoId);
      if (last?.incarnation === req.incarnation && last.generation === req.baseGeneration) return true;
      // Preparing or prepared here, not yet committed (a commit ends it only after lastCommitted
      // is set). Every generation from the last one applied here up to the base must have its
      // push on the way: with one missing (aborted here, or never sent) the base cannot be
      // reached, and the prepare is refused at once rather than after commitWaitMs.
      const from = last?.incarnation === req.incarnation && last.generation > confirmed ? last.generation : confirmed;
      const bases = new Set(
        [...this.unfinished.values()]
          .filter((r) => r.repoId === req.repoId && r.kind === 'push' && r.incarnation === req.incarnation)
          .map((r) => r.baseGeneration),
      );
      let coming = from < req.baseGeneration;
      for (let g = from; coming && g < req.baseGeneration; g++) coming = bases.has(g);
      if (!coming || Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * preparePush checks the replica's generation while the pack is indexed, then checks the new
   * tips' connectivity while update-ref locks the refs: the steps that do not depend on each
   * other run side by side, and a refusal by checkReplica wins over any later failure.
   */
  private async preparePush(req: PrepareRequest, pack: Readable | null, local: boolean): Promise<OpenTxn> {
    // A refusal by the replica check stops the pack's indexing: the refusal wins anyway, and a
    // node that comes back from a pause answers a backlog of such prepares, whose transactions
    // kept its repair from starting while each indexed its pack (bench/pause-under-load.sh).
    const stop = new AbortController();
    const checked = this.checkReplica(req).then(
      () => null,
      (err: unknown) => {
        stop.abort();
        return asError(err);
      },
    );
    const repoPath = this.deps.storage.repoPath(req.repoId);
    const keepFiles: string[] = [];
    try {
      let indexError: Error | null = null;
      let copyChecks: SettledCheck[] = [];
      if (req.stagedPacks?.length && !local) {
        try {
          const adopted = await this.adoptStaged(req);
          keepFiles.push(...adopted.keeps);
          copyChecks = adopted.checks;
        } catch (err) {
          indexError = asError(err);
        }
      }
      if (pack && !local && !indexError) {
        try {
          const keep = await this.indexPack(
            repoPath,
            `replication ${req.txnId}`,
            pack,
            req.packHash,
            req.fsckIgnore ?? this.deps.fsckIgnore ?? [],
            { signal: stop.signal },
          );
          keepFiles.push(keep);
          // A stage of the same pack (running, or left from an earlier try) must never remove it now.
          this.claimStaged(req.repoId, /pack-([0-9a-f]+)\.keep$/.exec(keep)?.[1] ?? '');
        } catch (err) {
          indexError = asError(err);
        }
      } else {
        pack?.resume();
      }
      const refused = (await checked) ?? indexError;
      if (refused) throw refused;
      const tips = newTips(req.updates);
      // A pack indexed by this prepare was not checked at its copy: then every tip is checked here.
      const atCopy = !local && !(pack && !indexError) && (await this.checkedAtCopy(repoPath, tips, copyChecks));
      if (!local && tips.length > 0) this.deps.onConnectivity?.(atCopy ? 'copy' : 'prepare');
      const [connected, locked] = await Promise.allSettled([
        local || atCopy ? Promise.resolve() : this.checkConnected(repoPath, tips),
        UpdateRefTxn.prepare(
          this.deps.git,
          repoPath,
          req.updates,
          this.deps.refSessions
            ? { sessions: this.deps.refSessions, from: { incarnation: req.incarnation, generation: req.baseGeneration } }
            : undefined,
        ),
      ]);
      if (connected.status === 'rejected') {
        if (locked.status === 'fulfilled') await locked.value.abort();
        throw connected.reason;
      }
      if (locked.status === 'rejected') throw locked.reason;
      return { req, preparedAt: Date.now(), refs: locked.value, keepFiles };
    } catch (err) {
      await removeFiles(keepFiles);
      if (err instanceof PrepareRefusal) throw err;
      // A ref locked on this replica is another transaction's, or a lock file a dead process left: worth a warning.
      if (err instanceof RefTxnError && err.kind === 'locked')
        this.deps.logger.warn(
          { txnId: req.txnId, repoId: req.repoId, ref: err.ref, err: err.message },
          'prepare found a ref locked on this replica',
        );
      if (err instanceof RefTxnError) throw new PrepareRefusal('failed', err.message);
      throw new PrepareRefusal('failed', errorMessage(err));
    }
  }

  /** indexPack verifies and stores a pushed pack (`index-pack --strict`) and returns its .keep file. */
  private async indexPack(
    repoPath: string,
    keepMessage: string,
    pack: Readable,
    expectedHash: string | undefined,
    fsckIgnore: readonly string[],
    opts: { fixThin?: boolean; maxInputSize?: number; signal?: AbortSignal } = {},
  ): Promise<string> {
    const started = Date.now();
    // The packs here before, so that a pack refused for its hash is removed only if this index-pack
    // wrote it (a file's mtime cannot tell: the kernel stamps it from a clock a tick behind).
    const before = expectedHash !== undefined ? new Set(listDir(join(repoPath, 'objects', 'pack'))) : null;
    const args = [
      'index-pack',
      indexPackStrict(fsckIgnore),
      '--stdin',
      ...(opts.fixThin ? ['--fix-thin'] : []),
      ...(opts.maxInputSize ? [`--max-input-size=${opts.maxInputSize}`] : []),
      `--keep=${keepMessage}`,
    ];
    const child = this.deps.git.spawn(args, {
      cwd: repoPath,
      timeoutMs: this.deps.gitTimeoutMs,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    let out = '';
    let err = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    child.stdin?.on('error', () => undefined);
    // index-pack's own verdict comes first: a pipe error is only the symptom of its exit.
    const fed = pipeline(pack, child.stdin!).then(
      () => null,
      (e: unknown) => e,
    );
    const [code] = await waitClose(child);
    const feedError = await fed;

    const m = /^(?:keep|pack)\t([0-9a-f]+)$/m.exec(out);
    if (code !== 0 || !m) {
      await removeTempPacks(join(repoPath, 'objects', 'pack'), started);
      // index-pack writes the .keep before it moves the pack and its index in: killed in between,
      // it leaves a .keep nobody knows of. Of the signed pack, one not here before and saying
      // this index-pack's message is this one's; with no hash named, any saying this message
      // (then unique to this index-pack: a transaction's id, an upload copy's uuid).
      if (expectedHash === undefined) await this.removeKeepsSaying(repoPath, keepMessage);
      else if (!before?.has(`pack-${expectedHash}.keep`)) {
        const orphan = join(repoPath, 'objects', 'pack', `pack-${expectedHash}.keep`);
        if (this.isKeepOf(orphan, keepMessage)) await removeFiles([orphan]);
      }
      throw new PrepareRefusal('failed', `pack rejected: ${err.trim().split('\n').pop() ?? `index-pack exit ${code}`}`);
    }
    // index-pack stops at the pack's trailer; the body may still be closing. A feed error
    // after a verified pack is harmless, one before it shows up as index-pack's failure above.
    if (feedError) pack.resume();
    const keep = join(repoPath, 'objects', 'pack', `pack-${m[1]}.keep`);
    // The signed metadata names the pack by its trailer hash: a pack swapped on the wire is refused.
    if (expectedHash !== undefined && m[1] !== expectedHash) {
      // Only what this index-pack wrote goes: its .keep (its `keep` line) and the pack, if it
      // was not here before. A pack of that hash that was may hold objects a committed ref
      // needs; left unkept, it is garbage for the next collection at worst. A removed pack's
      // objects may have lent links to another copy's index-pack meanwhile: the replica loses
      // its links-checked mark first (checkCopy), and checks from before no longer hold.
      if (m[0].startsWith('keep')) {
        const written = !before?.has(`pack-${m[1]}.pack`);
        if (written) {
          dropLinksChecked(repoPath);
          this.packsRemoved++;
        }
        await removeFiles(written ? ['keep', 'pack', 'idx', 'rev'].map((ext) => keep.replace(/keep$/, ext)) : [keep]);
      }
      throw new PrepareRefusal('failed', `pack rejected: its hash ${m[1]} is not the signed ${expectedHash}`);
    }
    return keep;
  }

  /**
   * checkCopy checks the connectivity of a copy's tips (CopyCheck); null if the check failed, or
   * if a pack came or went while it ran: the prepare then runs its own.
   *
   * When every tip is in the copy's own pack (`keep` is its `.keep`) and the replica has
   * LINKS_CHECKED, no `rev-list` runs. Every object in such a replica came in through a check of
   * its links: `index-pack --strict` (a copy, a stage, a prepare's pack, receive-pack with
   * receive.fsckObjects) and a repair's fetch or clone (transfer.fsckObjects) refuse an object
   * whose tree, parent, tree entry or tagged object is in neither the pack nor the replica. The
   * one way around it, a push from a shallow clone naming a shallow commit the replica lacks
   * (receive-pack checks no parent of it), takes LINKS_CHECKED away first (noteShallow). None
   * leaves a marked replica but with its whole directory: the one pack a node removes, refused
   * for its hash, takes the mark away first (CopyCheck). So whatever a present object links to
   * is present, and so is everything it reaches: a tip that the copy's pack holds is
   * connected. (receive-pack cannot reason so: a repository pruned by `git gc` may keep an
   * object whose parent it pruned; no replica is ever pruned.) Past LINKED_TIPS_MAX tips,
   * without LINKS_CHECKED, or with a tip found only elsewhere, `rev-list` checks.
   */
  private async checkCopy(repoPath: string, tips: readonly string[], keep: string): Promise<CopyCheck | null> {
    try {
      const dir = join(repoPath, 'objects', 'pack');
      const listPacks = (): string[] =>
        readdirSync(dir)
          .filter((f) => f.endsWith('.pack'))
          .sort();
      const removals = this.removals();
      const st = statSync(dir);
      const packs = listPacks();
      const linked =
        tips.length <= LINKED_TIPS_MAX && linksState(repoPath) === 'checked' && packIndexHolds(keep.replace(/\.keep$/, '.idx'), tips);
      this.deps.onCopyCheck?.(linked ? 'links' : 'rev-list');
      if (!linked) await this.checkConnected(repoPath, tips);
      await this.deps.failpoints.hit('participant.afterCopyCheck');
      const after = listPacks();
      if (this.removals() !== removals || after.length !== packs.length || after.some((p, i) => p !== packs[i])) return null;
      return { tips: new Set(tips), packs, dir: { dev: st.dev, ino: st.ino }, removals };
    } catch {
      return null;
    }
  }

  /**
   * checkedAtCopy says whether the connectivity checks of the adopted copies still cover the
   * prepare's new tips: each tip was checked, and the checks still hold (CopyCheck).
   */
  private async checkedAtCopy(repoPath: string, tips: readonly string[], checks: readonly SettledCheck[]): Promise<boolean> {
    if (tips.length === 0 || checks.length === 0) return false;
    // A check still running is not waited for: the prepare's own may well end sooner.
    const done = checks.map((c) => c.done).filter((c): c is CopyCheck => c !== null && c !== undefined);
    if (!tips.every((t) => done.some((c) => c.tips.has(t)))) return false;
    const removals = this.removals();
    const dir = join(repoPath, 'objects', 'pack');
    const st = statOrNull(dir);
    const now = new Set(listDir(dir));
    return (
      this.removals() === removals &&
      done.every(
        (c) => c.removals === removals && st !== null && c.dir.dev === st.dev && c.dir.ino === st.ino && c.packs.every((p) => now.has(p)),
      )
    );
  }

  /** removals counts what, on this node, can take objects from a replica: packs removed, replica directories replaced. */
  private removals(): number {
    return this.packsRemoved + this.deps.storage.replaced;
  }

  /** checkConnected proves every new tip (newTips) is connected to the replica's refs (as receive-pack does). */
  private async checkConnected(repoPath: string, tips: readonly string[]): Promise<void> {
    if (tips.length === 0) return;
    try {
      await this.deps.git.run(['rev-list', '--objects', '--stdin', '--not', '--all', '--quiet'], {
        cwd: repoPath,
        config: NO_DWIM,
        input: `${tips.join('\n')}\n`,
        timeoutMs: this.deps.gitTimeoutMs,
      });
    } catch (err) {
      throw new PrepareRefusal('failed', `missing objects after pack: ${errorMessage(err)}`);
    }
  }

  /**
   * commit finishes a prepared transaction and confirms the replica's new generation in the
   * store, unless `confirm` is false: a push's coordinator writes the confirmations of the
   * replicas that answered in one store transaction. Repeating it is harmless; a transaction
   * this node never saw is a 404.
   */
  async commit(txnId: string, opts: { confirm?: boolean } = {}): Promise<void> {
    const logged = this.deps.log.get(txnId);
    if (!logged && !this.open.has(txnId)) throw notFound(`transaction ${txnId} not found`);
    if (logged?.state === 'committed') return;
    if (logged?.state === 'aborted') throw conflict(`transaction ${txnId} was aborted`);
    const outcome = await this.finish(txnId, 'commit', opts.confirm ?? true);
    if (outcome !== 'committed') throw conflict(`transaction ${txnId} was aborted`);
  }

  /** abort drops a prepared transaction; aborting an unknown or aborted one is a no-op. */
  async abort(txnId: string, repoId = ''): Promise<void> {
    const logged = this.deps.log.get(txnId);
    if (logged?.state === 'committed') throw conflict(`transaction ${txnId} was committed`);
    if (!logged && !this.open.has(txnId)) {
      this.deps.log.recordAborted(txnId, repoId, 'push', emptyPayload());
      return;
    }
    await this.finish(txnId, 'abort');
  }

  /** finish runs commit or abort once per transaction, however many callers ask. */
  private finish(txnId: string, decision: 'commit' | 'abort', confirm = true): Promise<'committed' | 'aborted'> {
    let p = this.finishing.get(txnId);
    if (!p) {
      p = (decision === 'commit' ? this.doCommit(txnId, confirm) : this.doAbort(txnId)).finally(() => this.finishing.delete(txnId));
      this.finishing.set(txnId, p);
    }
    return p;
  }

  private async doCommit(txnId: string, confirm: boolean): Promise<'committed'> {
    const { log, storage, store, nodeId, failpoints, logger } = this.deps;
    await failpoints.hit('participant.beforeCommit');
    const open = this.open.get(txnId);
    const logged = log.get(txnId);
    const req = open?.req ?? (logged ? requestFromLog(logged) : null);
    if (!req) throw notFound(`transaction ${txnId} not found`);
    const payload = logged?.payload;
    if (req.kind === 'create') {
      const staging = open?.stagingPath ?? payload?.stagingPath ?? storage.stagingPath(txnId);
      await storage.install(staging, req.repoId);
      this.deps.onCreated?.(req.repoId, req.incarnation);
    } else if (req.kind === 'delete') {
      await storage.remove(req.repoId);
    } else if (open?.refs?.alive) {
      await open.refs.commit();
      // Between git's commit and the sync that makes it durable (one syncfs for a bulk transaction).
      await failpoints.hit('participant.beforeRefSync');
      await this.syncCommitted(req);
    } else {
      await this.reapply(req);
    }
    if (req.kind === 'push') {
      this.lastCommitted.delete(req.repoId);
      if (this.lastCommitted.size >= LAST_COMMITTED_MAX) this.lastCommitted.delete(this.lastCommitted.keys().next().value as string);
      this.lastCommitted.set(req.repoId, { incarnation: req.incarnation, generation: req.baseGeneration + 1 });
      try {
        this.deps.onPushCommitted?.(req);
      } catch (err) {
        // Only a cache of the coordinator's: the commit stands whatever it does.
        logger.warn({ txnId, repoId: req.repoId, err: errorMessage(err) }, 'could not carry the remembered refs over a commit');
      }
    }
    // HEAD moves after the refs (idempotent, so a restart that re-applies the commit does it again).
    if (req.kind === 'push' && req.newHead) await storage.setHead(req.repoId, req.newHead);
    await removeFiles(open?.keepFiles ?? payload?.keepFiles ?? []);
    log.setState(txnId, 'committed');
    this.open.delete(txnId);
    // The transaction stays running until its confirmation is written: committed but not yet
    // confirmed, the replica looks behind to the store, and repair must not copy over it. (Left
    // to the coordinator, the confirmation comes once this answer reached it; meanwhile the
    // replica is one generation behind, which repair leaves alone for commitWaitMs.)
    try {
      await failpoints.hit('participant.afterCommit');
      if (req.kind !== 'delete' && (confirm || req.kind !== 'push')) {
        const generation = req.kind === 'create' ? 0 : req.baseGeneration + 1;
        const ok = await store.confirmReplica({
          repoId: req.repoId,
          nodeId,
          incarnation: req.incarnation,
          generation,
          checksum: req.newChecksum,
        });
        if (!ok) logger.warn({ txnId, repoId: req.repoId, generation }, 'replica confirmation refused by the store');
      }
    } finally {
      this.ended(txnId);
    }
    return 'committed';
  }

  /** syncCommitted makes the committed refs durable (syncRefs: their directories, or one syncfs for a bulk transaction); a failure fails the commit. */
  private async syncCommitted(req: PrepareRequest): Promise<void> {
    await syncRefs(
      this.deps.storage.repoPath(req.repoId),
      req.updates.map((u) => u.ref),
    );
  }

  /**
   * reapply commits a push whose update-ref process is gone (the node restarted after
   * prepare): the stale locks are removed and the updates applied again; refs already at the
   * new values count as applied. Anything else throws, and the replica is left for repair.
   */
  private async reapply(req: PrepareRequest): Promise<void> {
    const repoPath = this.deps.storage.repoPath(req.repoId);
    // update-ref also locks HEAD when HEAD names a ref it updates: a crash leaves that lock too.
    await removeFiles(
      req.updates.map((u) => join(repoPath, `${u.ref}.lock`)).concat(['packed-refs.lock', 'HEAD.lock'].map((f) => join(repoPath, f))),
    );
    const current = new Map((await this.deps.storage.readRefs(req.repoId)).map((r) => [r.name, r.oid]));
    const pending = req.updates.filter(
      (u) => (current.get(u.ref) ?? ZERO_OID) !== u.newOid && !(isZeroOid(u.newOid) && !current.has(u.ref)),
    );
    if (pending.length > 0) {
      const refs = await UpdateRefTxn.prepare(this.deps.git, repoPath, pending);
      await refs.commit();
    }
    // Also when nothing was pending: the first commit may have failed at its fsync.
    await this.syncCommitted(req);
  }

  private async doAbort(txnId: string): Promise<'aborted'> {
    const open = this.open.get(txnId);
    const logged = this.deps.log.get(txnId);
    if (open) await this.release(open);
    else if (logged?.payload.stagingPath) await rm(logged.payload.stagingPath, { recursive: true, force: true });
    if (!open && logged?.payload.keepFiles) await removeFiles(logged.payload.keepFiles);
    this.deps.log.setState(txnId, 'aborted');
    this.open.delete(txnId);
    this.ended(txnId);
    return 'aborted';
  }

  private async release(open: OpenTxn): Promise<void> {
    await open.refs?.abort();
    await removeFiles(open.keepFiles);
    if (open.stagingPath) await rm(open.stagingPath, { recursive: true, force: true });
  }

  /**
   * resolveStuck asks the store about transactions prepared longer than resolveAfterMs (the
   * coordinator went quiet): commit or abort per the decision; with none, and this transaction's
   * fencing token no longer the live lock holder, write `abort` by compare-and-swap "only if no
   * decision" and abort. Otherwise keep waiting.
   */
  async resolveStuck(): Promise<void> {
    const now = Date.now();
    const stuck = [...this.open.values()].filter((o) => now - o.preparedAt >= this.deps.resolveAfterMs);
    for (const o of stuck) await this.resolveFromStore(o.req.txnId, o.req.repoId, o.req.fencingToken);
  }

  /**
   * recover resolves every transaction the log left prepared (called at start, before serving).
   * One still undecided, with its coordinator still holding the lock, waits in the open set with
   * no update-ref process: a later commit re-applies it from the log.
   */
  async recover(): Promise<void> {
    for (const t of this.deps.log.prepared()) {
      const req = requestFromLog(t);
      this.open.set(t.id, {
        req,
        preparedAt: 0,
        refs: null,
        keepFiles: [...(t.payload.keepFiles ?? [])],
        stagingPath: t.payload.stagingPath,
      });
      // At start nothing else runs yet, so this always starts.
      const running = this.deps.activity.tryBegin(t.repoId, 'txn');
      if (running) this.running.set(t.id, running);
      await this.resolveFromStore(t.id, t.repoId, t.payload.fencingToken);
    }
  }

  private async resolveFromStore(txnId: string, repoId: string, fencingToken: number): Promise<void> {
    const { store, logger } = this.deps;
    let decision: 'commit' | 'abort' | null;
    try {
      decision = (await store.getTxn(txnId))?.decision ?? null;
      if (decision === null) {
        const lock = await store.getLock(repoId);
        if (!lock || lock.token !== fencingToken) decision = (await store.abortTxn(txnId)).decision;
      }
    } catch (err) {
      logger.warn({ txnId, repoId, err: errorMessage(err) }, 'could not read the decision of an in-doubt transaction yet');
      return;
    }
    if (decision === null) return;
    try {
      await this.finish(txnId, decision);
      logger.info({ txnId, repoId, decision }, 'resolved in-doubt transaction from the store');
    } catch (err) {
      logger.error({ txnId, repoId, decision, err: errorMessage(err) }, 'could not apply the decision: replica marked stale');
      this.open.delete(txnId);
      this.deps.log.setState(txnId, decision === 'commit' ? 'committed' : 'aborted');
      await this.markStaleAfterFailure(txnId, repoId);
      this.ended(txnId);
    }
  }

  private async markStaleAfterFailure(txnId: string, repoId: string): Promise<void> {
    const t = this.deps.log.get(txnId);
    if (!t) return;
    try {
      await this.deps.store.markReplica(repoId, this.deps.nodeId, t.payload.incarnation, 'stale', t.payload.baseGeneration + 1);
    } catch (err) {
      // The replica stays confirmed at its old generation, so it is not in sync; the verifier marks it later.
      this.deps.logger.warn({ txnId, repoId, err: errorMessage(err) }, 'could not mark the replica stale after a failed commit or abort');
    }
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function requestFromLog(t: LocalTxn): PrepareRequest {
  const p = t.payload;
  return {
    txnId: t.id,
    repoId: t.repoId,
    kind: t.kind,
    coordinator: p.coordinator,
    incarnation: p.incarnation,
    baseGeneration: p.baseGeneration,
    fencingToken: p.fencingToken,
    newChecksum: p.newChecksum,
    updates: p.updates ?? [],
    ...(p.newHead ? { newHead: p.newHead } : {}),
  };
}

function emptyPayload(): TxnPayload {
  return { coordinator: '', incarnation: '', baseGeneration: -1, fencingToken: 0, newChecksum: '' };
}

async function removeFiles(paths: readonly string[]): Promise<void> {
  await Promise.all(paths.map((p) => unlink(p).catch(() => undefined)));
}

/**
 * removeTempPacks deletes the temporary files a failed index-pack left (`tmp_pack_*`, `tmp_idx_*`,
 * `tmp_rev_*` written since `since`), sparing those a process still has open: the pack another
 * index-pack is writing beside it (an upload's copy, another prepare, a repair's fetch). Deleted,
 * that one failed at its rename ("unable to rename temporary '*.pack' file ... No such file or
 * directory"): a node that came back from a pause under 8 pushers failed its repair fetch so.
 * Without /proc nothing is removed here (the start-up sweep does it).
 */
async function removeTempPacks(packDir: string, since: number): Promise<void> {
  const candidates: string[] = [];
  for (const f of await readdir(packDir).catch(() => [] as string[])) {
    if (!/^tmp_(?:pack|idx|rev)_/.test(f)) continue;
    const p = join(packDir, f);
    const st = await stat(p).catch(() => null);
    if (st && st.mtimeMs >= since - 1_000) candidates.push(p);
  }
  if (candidates.length === 0) return;
  // The links in /proc name the real path: the candidates are compared by theirs.
  const real = await realpath(packDir).catch(() => packDir);
  const open = await openPaths(real);
  if (open === null) return;
  for (const p of candidates) if (!open.has(join(real, basename(p)))) await unlink(p).catch(() => undefined);
}

/** openPaths lists the files under `dir` that some process has open (its /proc/<pid>/fd links); null without /proc. */
export async function openPaths(dir: string): Promise<Set<string> | null> {
  let pids: string[];
  try {
    pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p));
  } catch {
    return null;
  }
  const prefix = `${dir}/`;
  const open = new Set<string>();
  await Promise.all(
    pids.map(async (pid) => {
      const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
      for (const fd of fds) {
        const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
        if (target.startsWith(prefix)) open.add(target);
      }
    }),
  );
  return open;
}

/** newTips are the objects updates point refs at (deletes point at none). */
function newTips(updates: readonly RefUpdate[]): string[] {
  return updates.filter((u) => !isZeroOid(u.newOid)).map((u) => u.newOid);
}

/** stageKey names a staged pack in the participant's table: one per repo and pack. */
function stageKey(repoId: string, packHash: string): string {
  return `${repoId}\0${packHash}`;
}

/** streamFile is a readable of a file, for shipping a pack to peers. */
export function streamFile(path: string): Readable {
  return createReadStream(path);
}

/** listPackKeeps lists `.keep` files in a repo's pack directory (read in place: one directory, a few dozen names). */
export function listPackKeeps(repoPath: string): string[] {
  const dir = join(repoPath, 'objects', 'pack');
  return listDir(dir)
    .filter((f) => f.endsWith('.keep'))
    .map((f) => join(dir, f));
}

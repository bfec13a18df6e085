import { randomUUID } from 'node:crypto';
import { unlink } from 'node:fs/promises';
import { DEFAULTS } from '../config.js';
import { applyUpdatesToChecksum, headChecksum, withHead } from '../domain/checksum.js';
import { AppError, badRequest, conflict, errorMessage, notFound, unavailable } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import { placeReplicas } from '../domain/placement.js';
import { effectiveWriteQuorum, isBelowMajority, quorumMessage } from '../domain/quorum.js';
import { isZeroOid, refDepthProblem, refNameProblem, type RefUpdate } from '../domain/ref-name.js';
import type { RepoId } from '../domain/repo-id.js';
import type { PeerTarget } from '../auth/peer-signature.js';
import type { PeerAnswer, PeerClient } from '../cluster/peer-client.js';
import { prepareToWire, txnToWire, unstageToWire, UPLOAD_STAGE_PROTOCOL, type PrepareRequest } from '../cluster/protocol.js';
import type { Membership } from '../cluster/membership.js';
import { DEFAULT_HEAD, readSmallFile, type ReplicaStorage } from '../git/repo-storage.js';
import { refKey, type ProcReceiveExchange, type RefResult } from '../git/proc-receive.js';
import type { AuditEvent } from '../auth/audit.js';
import {
  isInSync,
  isBehindForGood,
  isOneBehind,
  type ClusterStore,
  type ConfirmReplica,
  type ReplicaRecord,
  type RepoRecord,
  type RepoState,
} from '../store/types.js';
import type { HeldLock, RepoActivity } from './activity.js';
import type { Failpoints } from './failpoints.js';
import { PackTee } from './pack-tee.js';
import { listPackKeeps, PrepareRefusal, type Participant, type PushCommitted } from './participant.js';
import { phasesBetween, refsField, refusedField } from './push-log.js';
import { mergeGroup } from './push-group.js';
import { Tally } from './quorum-wait.js';
import type { Metrics } from '../metrics.js';

/** CoordinatorConfig holds the knobs of the write path. */
export interface CoordinatorConfig {
  readonly replicationFactor: number;
  readonly writeQuorum: number | undefined;
  readonly lockWaitMs: number;
  readonly prepareTimeoutMs: number;
  readonly commitTimeoutMs: number;
  /** commitWaitMs: a push waits this long for this node's replica to confirm the previous push (default DEFAULTS.commitWaitMs). */
  readonly commitWaitMs?: number;
  /** catchUpMs: a push waits this long for this node's replica to be caught up before it refuses (default DEFAULTS.catchUpMs). */
  readonly catchUpMs?: number;
  /** settleMs: how long a failed decision write is followed by asking the store which decision stands (default DEFAULTS.settleMs). */
  readonly settleMs?: number;
  /** courtesyMs: the pause before a node takes a contended repo's lock again (default DEFAULTS.courtesyMs; see CONTENDED_WAIT_MS). */
  readonly courtesyMs?: number;
  /** maxGroupPushes: queued pushes that join one transaction (default DEFAULTS.maxGroupPushes). */
  readonly maxGroupPushes?: number;
  /** maxQueuedPushes: pushes of one repo that may wait on this node; more are refused at once (default DEFAULTS.maxQueuedPushes). */
  readonly maxQueuedPushes?: number;
  /** maxRefsPerPush: a push naming more refs is refused whole (default DEFAULTS.maxRefsPerPush). */
  readonly maxRefsPerPush?: number;
  /** fsckIgnore is the fsck policy every participant applies to this coordinator's packs. */
  readonly fsckIgnore?: readonly string[];
  /** uploadTimeoutMs bounds a copy of a push's pack to a peer during its upload (PackTee); the push's git time limit. */
  readonly uploadTimeoutMs?: number;
  /** maxCopyBytes: a copy of a push's pack larger than this (the push size limit) is aborted. */
  readonly maxCopyBytes?: number;
}

/** CreateResult is the seed's `POST /repos` answer. */
export interface CreateResult {
  readonly repo_id: string;
  readonly created: true;
  readonly replicated: boolean;
  readonly peers_confirmed: number;
  readonly replicas: readonly string[];
  readonly write_quorum: number;
  /** incarnation tells this repository from one of the same name deleted before or created after. */
  readonly incarnation: string;
}

/** PushContext ties a proc-receive exchange to its HTTP request. */
export interface PushContext {
  readonly repoId: RepoId;
  /** receivePackPid finds the pack receive-pack stored (its `.keep` names the pid). */
  readonly receivePackPid: number;
  /** abandon ends the client's connection without a report: the outcome is unknown to it. */
  readonly abandon: () => void;
  /** exited resolves with receive-pack's exit code and signal once it has exited. */
  readonly exited?: Promise<readonly [number | null, string | null]>;
  /** quiet: the client asked for no progress (`git push -q`). */
  readonly quiet?: boolean;
  /**
   * audit is the audit log's event for the push once committed: stored with the transaction's
   * confirmations, in the same store write.
   */
  readonly audit?: (txnId: string, refs: readonly string[]) => AuditEvent;
  /** tee is the copy of the push's pack its peers received during the upload (openTee), if one was made. */
  readonly tee?: PackTee | null;
  /**
   * refusalFor checks the client's access against the repository the push reaches, under its
   * lock (the access was decided before, perhaps on a policy of a repository since deleted and
   * created again): a reason refuses the whole push, null lets it on. None: nothing to check.
   */
  readonly refusalFor?: (incarnation: string) => Promise<string | null>;
}

/** AuditSink is what the coordinator uses of the audit log (AuditLog). */
export interface AuditSink {
  entry(event: AuditEvent): { key: string; value: string };
  stored(n: number): void;
}

/** FinishWith is what a push's confirmations are written with: the lock to release, and the pushes' audit events. */
interface FinishWith {
  readonly held: HeldLock;
  readonly audit: readonly AuditEvent[];
}

type Answer = PeerAnswer;

/**
 * PackShipment is a push's pack on its way to the replicas: the file receive-pack stored, and per
 * peer whether it was staged ahead of the prepare (`/replicate/stage`) while the lock was taken.
 */
interface PackShipment {
  readonly path: string;
  /** hash is the pack's trailer hash (its name), which peers check it against. */
  readonly hash: string;
  readonly staged: ReadonlyMap<string, Promise<boolean>>;
}

/** PendingPush is one push waiting for, or taking part in, its group's transaction. */
interface PendingPush {
  readonly exchange: ProcReceiveExchange;
  readonly ctx: PushContext;
  readonly request: PushRequestOf;
  readonly results: Map<string, RefResult>;
  readonly fail: (key: string, reason: string) => void;
  readonly failRest: (reason: string) => void;
  /** report answers git with every command's result, and logs the refused ones. */
  readonly report: () => void;
  /** inTxn: the keys of the commands the transaction carries (their log line is the transaction's). */
  readonly inTxn: Set<string>;
  readonly pack: PackShipment | null;
  /** settled is called once the push was answered or abandoned. */
  readonly settled: () => void;
}

type PushRequestOf = Awaited<ReturnType<ProcReceiveExchange['read']>>;

/**
 * CONTENDED_WAIT_MS: a lock that took longer than this to take was held by another node.
 * courtesyMs (a setting, 0 by default): after such a group, a node with more pushes queued waits
 * this long (plus up to half again, at random) before it takes the lock again. It was how nodes
 * took turns before the lock line (LockLine: a free lock goes to the node that asked first),
 * which does it without the pause: 16 clients over 3 nodes on one repo, p99 0.91-1.02 s
 * without it against 1.13-1.17 s with 110 ms, the same throughput.
 */
const CONTENDED_WAIT_MS = 15;

/**
 * OutcomeUnknownError says a transaction may or may not have been decided: the store did not
 * answer. Its participants learn the decision from the store later; the client must not be
 * told it failed.
 */
export class OutcomeUnknownError extends AppError {
  constructor(message: string) {
    super('ERR_OUTCOME_UNKNOWN', [message]);
    this.name = 'OutcomeUnknownError';
  }
}

/** KNOWN_REFS_REPOS caps the repos whose refs a coordinator remembers between pushes (the least recently pushed go first). */
const KNOWN_REFS_REPOS = 32;

/** KNOWN_REFS_MAX caps the refs of a repo remembered between pushes: a bigger repo is read every time. */
const KNOWN_REFS_MAX = 5_000;

/** KnownRefs is a repo's refs at one generation of one incarnation, as this node's last push left them. */
interface KnownRefs {
  readonly incarnation: string;
  readonly generation: number;
  readonly refs: ReadonlyMap<string, string>;
}

/**
 * PREPARES_IN_FLIGHT_MAX bounds the prepares this node has sent to one peer for one repo and not
 * yet had answered, once the oldest of them has waited commitWaitMs. A replica that stops
 * answering (a stopped process, a link that drops packets without a refusal) counts as prepared
 * nowhere but is still asked by every push until its record reads behind, and it reads in sync
 * until one of its answers comes back: a peer stopped for 20 s under 8 pushers came back to some
 * 470 prepares queued for it, each answered (refused, mostly) in turn, and its repair could not
 * start until they were all answered, 30 s later, after the pushes stopped. Past this many, the
 * oldest that old, the peer is not asked: it misses the transaction, is marked stale and left to
 * repair. A replica merely slow has two or three prepares on their way at once, each answered
 * within commitWaitMs of the one before (Participant.commitsHere); one still indexing a big pack
 * while small pushes follow may have more, and keeps them while its oldest is younger.
 */
export const PREPARES_IN_FLIGHT_MAX = 8;

/** CONFIRM_GRACE_MAX_MS bounds how long, after W replicas committed, a push waits for the others to join its confirmation write. */
const CONFIRM_GRACE_MAX_MS = 20;

/**
 * Coordinator runs replicated transactions (DESIGN §5): repo create and delete for the REST API,
 * and every push's ref updates as one transaction across the repo's replica set: lock, prepare
 * on all in parallel, decide by compare-and-swap in the store as soon as W are prepared, commit,
 * acknowledge after W confirmations.
 */
export class Coordinator {
  /** queues: per repo, the pushes waiting on this node for their group's transaction. */
  private readonly queues = new Map<string, PendingPush[]>();
  /**
   * knownRefs: per repo, its refs at the generation this node's last push transaction committed
   * (what it read under the lock, with the push applied), carried forward by each push this node
   * commits as a participant of another node's transaction (advanceKnownRefs). A repo's
   * incarnation and generation name one state of its refs, so the next push that finds the repo
   * there under the lock skips `for-each-ref`. Anything else (a push this node did not commit, a
   * repair, a failed transaction) leaves the repo at another generation, or the entry dropped.
   */
  private readonly knownRefs = new Map<string, KnownRefs>();
  /** preparesInFlight: per repo and peer (`repo\npeer`), when each prepare sent and not yet answered was sent, oldest first (PREPARES_IN_FLIGHT_MAX). */
  private readonly preparesInFlight = new Map<string, number[]>();

  constructor(
    private readonly deps: {
      readonly nodeId: string;
      readonly store: ClusterStore;
      readonly storage: ReplicaStorage;
      readonly participant: Participant;
      readonly activity: RepoActivity;
      readonly peers: PeerClient;
      readonly membership: Membership;
      readonly failpoints: Failpoints;
      /** catchUp brings this node's replica of a repo to the store's generation (a repair attempt); true once in sync. */
      readonly catchUp?: (repoId: string) => Promise<boolean>;
      /**
       * replicaSetOf is a repo's replica set as this node last read it (the router read it to
       * route the push, moments ago); undefined: not known, read the store.
       */
      readonly replicaSetOf?: (repoId: string) => readonly string[] | undefined;
      /** behindOf names the replicas of a repo whose records, as last read, rule them out of a push (isBehindForGood). */
      readonly behindOf?: (repoId: string) => ReadonlySet<string>;
      /** audit stores the audit records of pushes, with their confirmations. */
      readonly audit?: AuditSink;
      readonly logger: Logger;
      readonly metrics: Metrics;
      readonly config: CoordinatorConfig;
    },
  ) {}

  /** writeQuorumFor is W for a replica set of `replicas` nodes. */
  writeQuorumFor(replicas: number): number {
    return effectiveWriteQuorum(replicas, this.deps.config.writeQuorum);
  }

  /**
   * lock takes the repo write lock (RepoActivity.lock: renewed until released), waiting up to
   * lockWaitMs; with `read`, the repo's state comes with it in the same store call (`held.state`).
   */
  private async lock(repoId: string, opts: { read?: boolean } = {}): Promise<HeldLock> {
    const held = await this.deps.activity.lock(repoId, this.deps.config.lockWaitMs, opts);
    if (!held) throw unavailable(`repository ${repoId} is busy (write lock held), try again`, { retryAfter: 1 });
    return held;
  }

  /** placement picks the replica set: the best-ranked live nodes, topped up with known dead ones. */
  private async placement(repoId: string): Promise<string[]> {
    const all = await this.deps.store.allNodes();
    this.deps.membership.learn(all);
    const ids = all.map((n) => n.id);
    if (!ids.includes(this.deps.nodeId)) ids.push(this.deps.nodeId);
    const r = Math.min(this.deps.config.replicationFactor, ids.length);
    const live = new Set(
      all
        .filter((n) => n.live)
        .map((n) => n.id)
        .concat(this.deps.nodeId),
    );
    const ranked = placeReplicas(repoId, ids, ids.length);
    const chosen = ranked.filter((id) => live.has(id)).slice(0, r);
    for (const id of ranked) if (chosen.length < r && !chosen.includes(id)) chosen.push(id);
    return chosen;
  }

  /**
   * callPeer makes a signed call to a peer, resolving its URL and incarnation from the membership
   * view (refreshed once for a node registered since). A call refused as unauthorized is retried
   * once after a refresh when the peer restarted meanwhile: signatures name the receiver's epoch.
   */
  private async callPeer(node: string, call: (target: PeerTarget) => Promise<Answer>): Promise<Answer> {
    const { membership } = this.deps;
    let target = membership.target(node);
    if (!target) {
      await membership.refresh();
      target = membership.target(node);
    }
    if (!target) return { ok: false, status: 'unreachable', message: `node ${node} unknown` };
    const answer = await call(target);
    if (answer.ok || answer.status !== 'unauthorized') return answer;
    await membership.refresh();
    const fresh = membership.target(node);
    return fresh && fresh.epoch !== target.epoch ? call(fresh) : answer;
  }

  /**
   * backlogOn is the refusal of a peer with PREPARES_IN_FLIGHT_MAX prepares of the repo
   * unanswered, the oldest sent commitWaitMs ago or more; else undefined.
   */
  private backlogOn(repoId: string, node: string): string | undefined {
    const sent = this.preparesInFlight.get(`${repoId}\n${node}`);
    if (!sent || sent.length < PREPARES_IN_FLIGHT_MAX) return undefined;
    const waited = Math.round(performance.now() - sent[0]!);
    if (waited < (this.deps.config.commitWaitMs ?? DEFAULTS.commitWaitMs)) return undefined;
    return `${sent.length} earlier prepares not answered, the oldest for ${waited} ms: not asked, left to repair`;
  }

  /** prepareOn asks one replica to prepare; a peer's prepare counts in preparesInFlight until it is answered. */
  private async prepareOn(node: string, req: PrepareRequest, packs: readonly PackShipment[]): Promise<Answer> {
    if (node === this.deps.nodeId) {
      return this.deps.participant.prepare(req, null, { local: true }).then(
        () => ({ ok: true, status: 'prepared' }) as const,
        (err: unknown) => ({ ok: false, status: refusalStatus(err), message: errorMessage(err) }) as const,
      );
    }
    const key = `${req.repoId}\n${node}`;
    const at = performance.now();
    const sent = this.preparesInFlight.get(key) ?? [];
    sent.push(at);
    this.preparesInFlight.set(key, sent);
    try {
      return await this.sendPrepare(node, req, packs);
    } finally {
      sent.splice(sent.indexOf(at), 1);
      if (sent.length === 0 && this.preparesInFlight.get(key) === sent) this.preparesInFlight.delete(key);
    }
  }

  /** sendPrepare asks a peer to prepare, its packs staged, teed or carried. */
  private async sendPrepare(node: string, req: PrepareRequest, packs: readonly PackShipment[]): Promise<Answer> {
    const timeout = this.deps.config.prepareTimeoutMs;
    if (req.kind !== 'push')
      return this.callPeer(node, (t) => this.deps.peers.postJson(t, '/replicate/prepare', prepareToWire(req), timeout));
    if (packs.length === 0) return this.callPeer(node, (t) => this.deps.peers.preparePush(t, req, null, timeout));
    // Until this peer's prepare settled, its packs may still be read here (a straggler's, after
    // the push was answered): no repack may roll them up meanwhile (MAY_START_DURING `ship`).
    const shipping = this.deps.activity.tryBegin(req.repoId, 'ship');
    try {
      const ready = await Promise.all(packs.map((p) => p.staged.get(node) ?? Promise.resolve(false)));
      const answer = await this.preparePacksOn(node, req, packs, ready);
      if (answer.ok || answer.status !== 'not_staged') return answer;
      // A staged pack went astray (the peer restarted, or its replica was replaced): send them all again.
      this.deps.metrics.packsShipped.inc({ how: 'restaged' }, packs.length);
      return await this.preparePacksOn(
        node,
        req,
        packs,
        packs.map(() => false),
      );
    } finally {
      shipping?.end();
    }
  }

  /**
   * preparePacksOn sends a push prepare to a peer naming the packs staged there (`ready`); of the
   * others, one travels with the prepare and the rest are staged first.
   */
  private async preparePacksOn(
    node: string,
    req: PrepareRequest,
    packs: readonly PackShipment[],
    ready: readonly boolean[],
  ): Promise<Answer> {
    const timeout = this.deps.config.prepareTimeoutMs;
    const missing = packs.filter((_, i) => !ready[i]);
    const body = missing.pop() ?? null;
    const staging = await Promise.all(missing.map((p) => this.stageOn(node, req.repoId, p)));
    const refused = staging.find((a) => !a.ok);
    if (refused) return refused;
    if (body) this.deps.metrics.packsShipped.inc({ how: 'with_prepare' });
    const stagedPacks = packs.filter((p) => p !== body).map((p) => p.hash);
    const signed: PrepareRequest = { ...req, ...(body ? { packHash: body.hash } : {}), ...(stagedPacks.length ? { stagedPacks } : {}) };
    return this.callPeer(node, (t) => this.deps.peers.preparePush(t, signed, body?.path ?? null, timeout));
  }

  /**
   * unstage tells the peers that staged these packs that no prepare will name them (their pushes
   * were refused, or the transaction ended before its prepare). Best effort: a peer not told
   * removes them after STAGE_TTL_MS.
   */
  private unstage(repoId: string, packs: readonly PackShipment[]): void {
    for (const pack of packs) {
      for (const [node, staged] of pack.staged) {
        void staged
          .then((ok) =>
            ok ? this.callPeer(node, (t) => this.deps.peers.postJson(t, '/replicate/unstage', unstageToWire(repoId, pack.hash))) : null,
          )
          .catch(() => undefined);
      }
    }
  }

  private async stageOn(node: string, repoId: string, pack: PackShipment): Promise<Answer> {
    const meta = { repoId, packHash: pack.hash, ...(this.deps.config.fsckIgnore ? { fsckIgnore: this.deps.config.fsckIgnore } : {}) };
    const shipping = this.deps.activity.tryBegin(repoId, 'ship');
    try {
      return await this.callPeer(node, (t) => this.deps.peers.stagePack(t, meta, pack.path, this.deps.config.prepareTimeoutMs));
    } finally {
      shipping?.end();
    }
  }

  /**
   * stageAhead ships a push's pack to the repo's other replicas while this node waits for the
   * lock and reads the refs, so that their `index-pack` runs beside that work instead of after
   * it, and the lock is held only for the refs. Best effort: a replica that did not stage it gets
   * the pack with its prepare, so the replica set routing read will do (a store read otherwise).
   */
  private async stageAhead(repoId: string, packPath: string, tee: PackTee | null): Promise<PackShipment> {
    const staged = new Map<string, Promise<boolean>>();
    const hash = packHashOf(packPath);
    if (!hash) throw new Error(`received pack ${packPath} is not named by its hash`);
    const pack = { path: packPath, hash, staged };
    const replicas = this.deps.replicaSetOf?.(repoId) ?? (await this.deps.store.getRepo(repoId).catch(() => null))?.replicas ?? [];
    // Copies made to a node no longer of the replica set (it changed since the upload began) go.
    this.dropTee(repoId, tee, replicas);
    // A replica recorded behind would index the pack for a prepare it is not asked (runRefTxn).
    const behind = this.deps.behindOf?.(repoId);
    for (const node of replicas) {
      if (node === this.deps.nodeId || behind?.has(node)) continue;
      // The copy made during the upload, when it has the hash this node's receive-pack gave the
      // pack (it completed a thin pack from the same objects); otherwise this pack is staged.
      const teed = tee?.results.get(node);
      staged.set(
        node,
        (teed ? this.teedHash(node, repoId, teed, hash) : Promise.resolve(null)).then((got) => {
          if (got === hash) {
            this.deps.metrics.packsShipped.inc({ how: 'teed' });
            return true;
          }
          if (got !== null) this.unstageOn(node, repoId, got);
          return this.stageOn(node, repoId, pack).then(
            (a) => {
              if (a.ok) this.deps.metrics.packsShipped.inc({ how: 'staged' });
              else this.deps.logger.debug({ repoId, node, answer: a }, 'pack not staged ahead; it goes with the prepare');
              return a.ok;
            },
            () => false,
          );
        }),
      );
    }
    return pack;
  }

  /**
   * openTee starts copying a push's pack to the repo's other replicas while the client uploads
   * it (PackTee), to the peers of the replica set this node knows (the router read it moments
   * ago) that share UPLOAD_STAGE_PROTOCOL with it; null when there are none. The push's proc-receive exchange uses the
   * copies (stageAhead), or drops them (dropTee).
   */
  openTee(repoId: string): PackTee | null {
    const { membership, nodeId, config } = this.deps;
    const behind = this.deps.behindOf?.(repoId);
    const peers = (this.deps.replicaSetOf?.(repoId) ?? []).filter(
      (n) => n !== nodeId && !behind?.has(n) && this.deps.peers.speaks(membership.target(n), UPLOAD_STAGE_PROTOCOL),
    );
    if (peers.length === 0) return null;
    const meta = { repoId, ...(config.fsckIgnore ? { fsckIgnore: config.fsckIgnore } : {}) };
    return new PackTee(
      peers,
      async (node, pack, tips) => {
        const target = membership.target(node);
        if (!target) {
          pack.destroy();
          return null;
        }
        const a = await this.deps.peers.stageUpload(
          target,
          { ...meta, ...(tips ? { tips } : {}) },
          pack,
          config.uploadTimeoutMs ?? DEFAULTS.gitTimeoutMs,
        );
        if (!a.ok) this.deps.logger.debug({ repoId, node, answer: a }, 'pack not copied during the upload; it is staged after');
        return a.ok && a.packHash ? a.packHash : null;
      },
      { maxBytes: config.maxCopyBytes },
    );
  }

  /**
   * teedHash is a peer's answer to the copy made during the upload. The upload is over when this
   * is asked, so a peer that does not answer within prepareTimeoutMs (frozen, cut off) gets the
   * pack staged or with its prepare as before, whose time-outs mark it a straggler; a copy it
   * staged after all under another hash is unstaged (under the pack's, it is that stage's).
   */
  private teedHash(node: string, repoId: string, teed: Promise<string | null>, packHash: string): Promise<string | null> {
    return new Promise((resolve) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        resolve(null);
      }, this.deps.config.prepareTimeoutMs);
      void teed.then((hash) => {
        clearTimeout(timer);
        if (!late) resolve(hash);
        else if (hash !== null && hash !== packHash) this.unstageOn(node, repoId, hash);
      });
    });
  }

  /**
   * dropTee ends a push's copies made during its upload (PackTee.abort: no-op once the upload
   * ended) and unstages what the peers staged, but on the nodes in `keep`: no transaction of the
   * push will name them.
   */
  dropTee(repoId: string, tee: PackTee | null | undefined, keep: readonly string[] = []): void {
    if (!tee) return;
    tee.abort(new Error('no transaction will name the copies'));
    for (const [node, got] of tee.results) {
      if (keep.includes(node)) continue;
      void got.then((hash) => {
        if (hash !== null) this.unstageOn(node, repoId, hash);
      });
    }
  }

  private unstageOn(node: string, repoId: string, hash: string): void {
    void this.callPeer(node, (t) => this.deps.peers.postJson(t, '/replicate/unstage', unstageToWire(repoId, hash))).catch(() => undefined);
  }

  private async finishOn(
    node: string,
    txnId: string,
    repoId: string,
    decision: 'commit' | 'abort',
    coordinatorConfirms = false,
  ): Promise<Answer> {
    if (node === this.deps.nodeId) {
      const p =
        decision === 'commit'
          ? this.deps.participant.commit(txnId, { confirm: !coordinatorConfirms })
          : this.deps.participant.abort(txnId, repoId);
      return p.then(
        () => ({ ok: true, status: decision === 'commit' ? 'committed' : 'aborted' }) as const,
        (err: unknown) => ({ ok: false, status: 'failed', message: errorMessage(err) }) as const,
      );
    }
    const body = txnToWire(txnId, this.deps.nodeId, repoId, decision === 'commit' && coordinatorConfirms);
    return this.callPeer(node, (t) => this.deps.peers.postJson(t, `/replicate/${decision}`, body, this.deps.config.commitTimeoutMs));
  }

  /**
   * run drives one transaction over `replicas` after the caller took the lock: prepare
   * everywhere, `decide` as soon as W are prepared, commit, and wait for W confirmations.
   * Returns how many confirmed, or throws the quorum error (nothing changed anywhere).
   */
  private async run(
    req: PrepareRequest,
    replicas: readonly string[],
    packs: readonly PackShipment[],
    decide: () => Promise<{ ok: true } | { ok: false; why: string }>,
    onStraggler: (node: string, answer: Answer) => void,
    progress: (line: string) => void = () => undefined,
    checked: ReadonlySet<string> = new Set(),
    finishWith: FinishWith | null = null,
    notAsked: ReadonlyMap<string, string> = new Map(),
  ): Promise<{ outcome: 'committed'; confirmed: string[] } | { outcome: 'unknown'; confirmed: string[] }> {
    const { store, failpoints, logger, metrics } = this.deps;
    const w = this.writeQuorumFor(replicas.length);
    const log = logger.child({ txnId: req.txnId, repoId: req.repoId, kind: req.kind });
    // No beginTxn: the decision row is written by commit* or abortTxn, and a participant that
    // finds none applies the fencing-token rule; one store write less on every push.
    await failpoints.hit('coordinator.beforePrepare');
    progress(`replicating to ${replicas.length} replicas (${w} must confirm)`);
    const prepared = new Tally<Answer>(replicas.length);
    const started = Date.now();
    const preparing = replicas.map((node) => {
      // A replica read behind under the lock would refuse (its record is what it checks): its
      // answer is that refusal, without the call and the pack it would index for nothing.
      const refusal = notAsked.get(node) ?? this.backlogOn(req.repoId, node);
      if (refusal !== undefined) {
        const a: Answer = { ok: false, status: 'stale', message: refusal };
        prepared.add(node, a);
        return Promise.resolve(a);
      }
      return this.prepareOn(node, checked.has(node) ? { ...req, replicaChecked: true } : req, packs).then((a) => {
        metrics.prepareSeconds.observe({ peer: node }, (Date.now() - started) / 1000);
        prepared.add(node, a);
        return a;
      });
    });
    await prepared.until(() => prepared.count((a) => a.ok) >= w, this.deps.config.prepareTimeoutMs);
    const preparedAt = Date.now();
    await failpoints.hit('coordinator.afterPrepare');
    const okCount = prepared.count((a) => a.ok);
    progress(`${okCount} of ${replicas.length} replicas prepared`);
    let decided: { ok: true } | { ok: false; why: string } = {
      ok: false,
      why: refusalMessage(prepared.entries(), okCount, replicas.length, w),
    };
    if (okCount >= w) {
      try {
        decided = await decide();
        // `error` here is a decision written whose answer was lost.
        if (decided.ok) await failpoints.hit('coordinator.afterDecision');
      } catch (err) {
        // The decision write may have landed even though its answer was lost: read back the
        // decision that stands (writing `abort` if none does) before saying anything.
        const standing = await this.settle(req.txnId);
        log.warn({ err: errorMessage(err), standing }, 'decision write failed; read back the standing decision');
        if (standing === null)
          throw new OutcomeUnknownError(`transaction ${req.txnId}: the store did not answer whether it was decided (${errorMessage(err)})`);
        decided =
          standing === 'commit' ? { ok: true } : { ok: false, why: `the decision could not be written (${errorMessage(err)}), try again` };
      }
    }
    if (!decided.ok) {
      // Unwritten, the abort is still what participants conclude once the lock is gone (resolveStuck).
      await store.abortTxn(req.txnId).catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'abort decision not written'));
      const aborts = replicas.map((node, i) => preparing[i]!.then((a) => (a.ok ? this.finishOn(node, req.txnId, req.repoId, 'abort') : a)));
      // The local abort is awaited so this node holds nothing when the client hears the refusal;
      // peers are told in the background (a dead one would only make the client wait).
      const self = replicas.indexOf(this.deps.nodeId);
      if (self !== -1) await Promise.race([aborts[self], new Promise((r) => setTimeout(r, 5_000))]);
      void Promise.all(aborts);
      metrics.txns.inc({ kind: req.kind, outcome: 'abort' });
      if (okCount < w) metrics.quorumFailures.inc();
      log.warn(
        {
          outcome: 'aborted',
          ...refsField(req.updates.map((u) => u.ref)),
          prepared: okCount,
          required: w,
          ...phasesBetween({ started, prepared: preparedAt, done: Date.now() }),
          answers: Object.fromEntries(prepared.entries()),
        },
        `transaction aborted: ${decided.why}`,
      );
      throw unavailable(decided.why, { prepared: okCount, required: w, total: replicas.length });
    }
    // After the commit decision nothing may reach the client as a refusal: whatever fails from
    // here (a fail point's error, a bug) leaves the outcome unknown to it.
    try {
      metrics.txns.inc({ kind: req.kind, outcome: 'commit' });
      const decidedAt = Date.now();
      await failpoints.hit('coordinator.beforeCommit');
      const committed = new Tally<Answer>(replicas.length);
      // A push's replicas leave their confirmations to this node: the replicas that committed by
      // the time W did are confirmed in one store write, with the lock's release and the audit
      // records (`confirmReplicas`); one that answers later is confirmed on its own.
      const coordinatorConfirms = finishWith !== null;
      let batched: ReadonlySet<string> | null = null;
      const confirmation = (node: string): ConfirmReplica => ({
        repoId: req.repoId,
        nodeId: node,
        incarnation: req.incarnation,
        generation: req.baseGeneration + 1,
        checksum: req.newChecksum,
      });
      replicas.forEach((node, i) => {
        void preparing[i]!.then(async (a) => {
          const t = performance.now();
          const answer = a.ok ? await this.finishOn(node, req.txnId, req.repoId, 'commit', coordinatorConfirms) : a;
          if (a.ok && answer.ok) metrics.commitSeconds.observe({ peer: node }, (performance.now() - t) / 1000);
          committed.add(node, answer);
          if (!answer.ok) onStraggler(node, answer);
          else if (batched && !batched.has(node))
            void store
              .confirmReplica(confirmation(node))
              .catch((err: unknown) =>
                log.warn({ node, err: errorMessage(err) }, 'could not confirm a replica that committed late; repair will'),
              );
        });
      });
      await committed.until(() => committed.count((a) => a.ok) >= w, this.deps.config.commitTimeoutMs);
      // The other replicas' commits usually land within a millisecond or two of the W-th (3.4 ms
      // at the 90th percentile, measured): waiting as long again as W took, at most
      // CONFIRM_GRACE_MAX_MS, puts their confirmations in the same store write instead of one each.
      if (coordinatorConfirms && !committed.complete)
        await committed.until(() => false, Math.min(CONFIRM_GRACE_MAX_MS, Math.max(1, Date.now() - decidedAt)));
      await failpoints.hit('coordinator.afterCommit');
      let confirmed = committed
        .entries()
        .filter(([, a]) => a.ok)
        .map(([n]) => n);
      if (coordinatorConfirms) {
        batched = new Set(confirmed);
        confirmed = await this.confirmBatch(req, confirmed.map(confirmation), finishWith, log);
        await failpoints.hit('coordinator.afterConfirm');
      }
      progress(`${confirmed.length} of ${replicas.length} replicas committed`);
      // One line per transaction (a push's is its line: outcome, refs, timings; txnId from the child logger).
      log.info(
        {
          outcome: 'committed',
          ...refsField(req.updates.map((u) => u.ref)),
          ...(req.newHead ? { newHead: req.newHead } : {}),
          prepared: okCount,
          confirmed: confirmed.length,
          required: w,
          ...phasesBetween({ started, prepared: preparedAt, decided: decidedAt, done: Date.now() }),
        },
        'transaction committed',
      );
      return { outcome: confirmed.length >= w ? 'committed' : 'unknown', confirmed };
    } catch (err) {
      if (err instanceof OutcomeUnknownError) throw err;
      log.error({ err: errorMessage(err) }, 'failed after the commit decision: the outcome is left unknown to the client');
      throw new OutcomeUnknownError(`transaction ${req.txnId} committed, then failed: ${errorMessage(err)}`);
    }
  }

  /**
   * confirmBatch writes the confirmations of the replicas that committed, the lock's release and
   * the audit records in one store transaction, and returns the nodes confirmed. A write that
   * fails confirms none (the client is then not told of a success it cannot prove; repair
   * confirms the replicas later), and the lock is released as usual.
   */
  private async confirmBatch(
    req: PrepareRequest,
    confirmations: readonly ConfirmReplica[],
    finishWith: FinishWith,
    log: Logger,
  ): Promise<string[]> {
    const { store, audit } = this.deps;
    const { held } = finishWith;
    const meta = audit ? finishWith.audit.map((e) => audit.entry(e)) : [];
    try {
      const written = await store.confirmReplicas({
        confirmations,
        release: { repoId: req.repoId, token: held.lock.token },
        ...(meta.length ? { meta } : {}),
      });
      held.releasedInStore();
      if (meta.length) audit?.stored(meta.length);
      const refused = confirmations.filter((_, i) => !written[i]).map((c) => c.nodeId);
      if (refused.length) log.warn({ refused }, 'the store refused confirmations of replicas that committed (the repo moved on)');
      return confirmations.filter((_, i) => written[i]).map((c) => c.nodeId);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'confirmations not written; repair will confirm the replicas');
      return [];
    }
  }

  /**
   * settle finds the decision of a transaction whose decision write failed: `abort` is written
   * by compare-and-swap only if no decision exists, and the decision that stands is returned;
   * null when the store stays unreachable for settleMs.
   */
  private async settle(txnId: string): Promise<'commit' | 'abort' | null> {
    const deadline = Date.now() + (this.deps.config.settleMs ?? DEFAULTS.settleMs);
    for (;;) {
      try {
        return (await this.deps.store.abortTxn(txnId)).decision;
      } catch {
        if (Date.now() >= deadline) return null;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /**
   * createRepo creates a repository on its replicas by two-phase commit. `beforeRecord` runs under
   * the repository's lock once no repository of that name is found, before its record is written
   * (the routes clear what a deleted repository of that name left: its visibility and grants).
   * `mayRecord` is told the incarnation the record will have before it may be written: a create
   * that fails after that (an outcome not known, too few replicas confirmed in time) may have left
   * it, and its caller can tell its own record from another's.
   */
  async createRepo(repoId: RepoId, beforeRecord?: () => Promise<void>, mayRecord?: (incarnation: string) => void): Promise<CreateResult> {
    const { store, nodeId, logger } = this.deps;
    if (await store.getRepo(repoId)) throw conflict(`repository ${repoId} already exists`);
    const held = await this.lock(repoId);
    try {
      if (await store.getRepo(repoId)) throw conflict(`repository ${repoId} already exists`);
      await beforeRecord?.();
      const replicas = await this.placement(repoId);
      const w = this.writeQuorumFor(replicas.length);
      if (isBelowMajority(w, replicas.length))
        logger.warn(
          { repoId, writeQuorum: w, replicas: replicas.length },
          'write quorum below majority: an acknowledged write may exist on fewer than a majority of replicas',
        );
      const incarnation = randomUUID();
      mayRecord?.(incarnation);
      const checksum = headChecksum(DEFAULT_HEAD);
      const req: PrepareRequest = {
        txnId: randomUUID(),
        repoId,
        kind: 'create',
        coordinator: nodeId,
        incarnation,
        baseGeneration: 0,
        fencingToken: held.lock.token,
        newChecksum: checksum,
        updates: [],
      };
      const record: RepoRecord = { repoId, incarnation, replicas, generation: 0, checksum, createdAt: new Date().toISOString() };
      const result = await this.run(
        req,
        replicas,
        [],
        async () => {
          const d = await store.commitCreate({ txnId: req.txnId, coordinator: nodeId, record });
          return d.decision === 'commit'
            ? { ok: true }
            : {
                ok: false,
                why: d.reason === 'exists' ? `repository ${repoId} already exists` : `decision refused (${d.reason ?? 'unknown'})`,
              };
        },
        (node) => {
          void store
            .markReplica(repoId, node, incarnation, 'missing', 1)
            .catch((err: unknown) => logger.warn({ repoId, node, err: errorMessage(err) }, 'could not mark a replica missing'));
        },
      );
      const peersConfirmed = result.confirmed.filter((n) => n !== nodeId).length;
      if (result.outcome === 'unknown')
        throw unavailable(
          `repository ${repoId} created but only ${result.confirmed.length} replicas confirmed in time; repair will finish it`,
        );
      return {
        repo_id: repoId,
        created: true,
        replicated: result.confirmed.length >= Math.min(2, replicas.length),
        peers_confirmed: peersConfirmed,
        replicas,
        write_quorum: w,
        incarnation,
      };
    } finally {
      await held.release();
    }
  }

  /**
   * deleteRepo removes a repo from every replica by two-phase commit. `afterDelete` runs once the
   * delete is decided, still under the repository's lock (the routes clear its visibility and
   * grants there: after the lock, they could clear those of a repository created again at once).
   * With `incarnation`, a repository that is no longer that one is a 404 (the caller's access
   * was decided on the one deleted before).
   */
  async deleteRepo(
    repoId: RepoId,
    afterDelete?: () => Promise<void>,
    incarnation?: string,
  ): Promise<{ repo_id: string; deleted: true; peers_confirmed: number }> {
    const { store, nodeId } = this.deps;
    const held = await this.lock(repoId);
    try {
      const repo = await store.getRepo(repoId);
      if (!repo || (incarnation !== undefined && repo.incarnation !== incarnation)) throw notFound(`repository ${repoId} not found`);
      const req: PrepareRequest = {
        txnId: randomUUID(),
        repoId,
        kind: 'delete',
        coordinator: nodeId,
        incarnation: repo.incarnation,
        baseGeneration: repo.generation,
        fencingToken: held.lock.token,
        newChecksum: '',
        updates: [],
      };
      const result = await this.run(
        req,
        repo.replicas,
        [],
        async () => {
          const d = await store.commitDelete({
            txnId: req.txnId,
            repoId,
            coordinator: nodeId,
            incarnation: repo.incarnation,
            baseGeneration: repo.generation,
            fencingToken: held.lock.token,
          });
          return d.decision === 'commit'
            ? { ok: true }
            : { ok: false, why: `repository changed while deleting (${d.reason ?? 'unknown'}), try again` };
        },
        () => undefined,
      );
      // The delete is decided: a failure here is logged, not the delete's (a create clears
      // what is left anyway); a 5xx would send a retry to a 404.
      await afterDelete?.().catch((err: unknown) =>
        this.deps.logger.warn({ repoId, err: errorMessage(err) }, "could not clear a deleted repository's visibility and grants"),
      );
      return { repo_id: repoId, deleted: true, peers_confirmed: result.confirmed.filter((n) => n !== nodeId).length };
    } finally {
      await held.release();
    }
  }

  /**
   * handlePush answers one push's proc-receive exchange (DESIGN §5 steps 2-6). After a commit
   * decision it never reports a rejection: with fewer than W confirmations it abandons the
   * connection, and repair completes the stragglers.
   */
  async handlePush(exchange: ProcReceiveExchange, ctx: PushContext): Promise<void> {
    const tee = { used: false };
    try {
      await this.answerPush(exchange, ctx, tee);
    } finally {
      // Refused before its pack was staged (or failing): the copies made during the upload go.
      if (!tee.used) this.dropTee(ctx.repoId, ctx.tee);
      this.dropReceivedKeep(ctx);
    }
  }

  private async answerPush(exchange: ProcReceiveExchange, ctx: PushContext, tee: { used: boolean }): Promise<void> {
    const { logger } = this.deps;
    const request = await exchange.read();
    // Results are keyed by each command's exact bytes (PushCommand.key).
    const results = new Map<string, RefResult>();
    const fail = (key: string, reason: string): void => {
      results.set(key, { ok: false, reason });
    };
    const failRest = (reason: string): void => {
      for (const c of request.commands) if (!results.has(c.key)) fail(c.key, reason);
    };
    // Every ref of a push costs its directories and loose file on every replica, its line in the
    // transaction and audit records and the log: one push of 100,000 refs held a node's memory
    // at 1.4 GB, wrote a 22 MB audit record, and stalled other users' requests for seconds.
    const maxRefs = this.deps.config.maxRefsPerPush ?? DEFAULTS.maxRefsPerPush;
    const tooMany =
      request.commands.length > maxRefs
        ? `a push may update at most ${maxRefs} refs (this one names ${request.commands.length}): push in batches`
        : null;
    for (const c of request.commands) {
      // A name that is not UTF-8 would be stored, logged and checksummed as another name.
      const problem =
        tooMany ?? (c.utf8 ? refNameProblem(c.ref) : 'funny refname (not UTF-8)') ?? (isZeroOid(c.newOid) ? null : refDepthProblem(c.ref));
      if (problem) fail(c.key, problem);
    }
    // Refs refused without a transaction (git's checks, the lock) get their log line here; a transaction logs its own.
    const begun = Date.now();
    const inTxn = new Set<string>();
    let reported = false;
    const report = (): void => {
      // Once only: a group that fails after answering (its lock release, say) must not answer again.
      if (reported) return;
      reported = true;
      if (request.atomic && [...results.values()].some((r) => !r.ok)) failRest('atomic push failure');
      exchange.report(request.commands, (c) => results.get(c.key) ?? { ok: true });
      const refused = refusedField(
        request.commands.filter((c) => !inTxn.has(c.key)).map((c) => ({ ref: c.ref, result: results.get(c.key) })),
      );
      if (refused)
        logger.info({ repoId: ctx.repoId, kind: 'push', outcome: 'refused', ...refused, ms: Date.now() - begun }, 'push refused');
    };
    if (request.atomic && results.size > 0) return report();
    if (results.size === request.commands.length) return report();
    let pack: PackShipment | null = null;
    try {
      const packPath = await this.receivedPack(ctx);
      pack = packPath ? await this.stageAhead(ctx.repoId, packPath, ctx.tee ?? null) : null;
      tee.used = pack !== null;
    } catch (err) {
      failRest(errorMessage(err));
      return report();
    }
    await new Promise<void>((settled) => {
      this.enqueue({ exchange, ctx, request, results, fail, failRest, report, inTxn, pack, settled });
    });
  }

  /**
   * enqueue hands a push to its repo's queue on this node. The first push of an idle repo starts
   * the queue's runner; the pushes that arrive while a transaction runs wait, and join the next
   * one together (group commit), in arrival order. A full queue refuses at once.
   */
  private enqueue(push: PendingPush): void {
    const repoId = push.ctx.repoId;
    const queue = this.queues.get(repoId);
    if (queue) {
      const maxQueued = this.deps.config.maxQueuedPushes ?? DEFAULTS.maxQueuedPushes;
      if (queue.length >= maxQueued) {
        this.unstage(repoId, push.pack ? [push.pack] : []);
        push.failRest(`${maxQueued} pushes to ${repoId} are already waiting on this node, try again`);
        push.report();
        push.settled();
        return;
      }
      queue.push(push);
      return;
    }
    const fresh = [push];
    this.queues.set(repoId, fresh);
    void (async () => {
      try {
        while (fresh.length > 0) {
          const group = fresh.splice(0, this.deps.config.maxGroupPushes ?? DEFAULTS.maxGroupPushes);
          try {
            const { contended } = await this.runGroup(repoId, group);
            const courtesyMs = this.deps.config.courtesyMs ?? DEFAULTS.courtesyMs;
            if (contended && fresh.length > 0 && courtesyMs > 0)
              await new Promise((r) => setTimeout(r, courtesyMs * (1 + Math.random() / 2)));
          } catch (err) {
            this.deps.logger.error({ repoId, err: errorMessage(err) }, 'push group failed');
            this.unstage(
              repoId,
              group.flatMap((m) => (m.pack ? [m.pack] : [])),
            );
            for (const m of group) {
              m.failRest(errorMessage(err));
              m.report();
            }
          } finally {
            for (const m of group) m.settled();
          }
        }
      } finally {
        this.queues.delete(repoId);
      }
    })();
  }

  /**
   * runGroup answers a group of pushes of one repo (DESIGN §5 steps 2-6) with one transaction:
   * under the lock, each push's commands are checked against the refs the pushes before it
   * leave, and the net change of all of them is prepared, decided and committed once, with
   * every push's pack. After a commit decision no push is told of a rejection: with fewer than W
   * confirmations each connection is abandoned, and repair completes the stragglers.
   */
  private async runGroup(repoId: RepoId, group: readonly PendingPush[]): Promise<{ contended: boolean }> {
    const { storage, nodeId, logger } = this.deps;
    const packsOf = (ms: readonly PendingPush[]): PackShipment[] => ms.flatMap((m) => (m.pack ? [m.pack] : []));
    const refuseAll = (reason: string): void => {
      this.unstage(repoId, packsOf(group));
      for (const m of group) {
        m.failRest(reason);
        m.report();
      }
    };
    let locked: Awaited<ReturnType<Coordinator['lockInSync']>>;
    const asked = Date.now();
    try {
      locked = await this.lockInSync(repoId);
    } catch (err) {
      refuseAll(errorMessage(err));
      return { contended: true };
    }
    const contended = Date.now() - asked > CONTENDED_WAIT_MS;
    if (!locked.ok) {
      refuseAll(locked.reason);
      return { contended };
    }
    const { held, repo, replicas } = locked;
    try {
      for (const m of group) {
        const refusal = m.ctx.refusalFor ? await m.ctx.refusalFor(repo.incarnation).catch((err: unknown) => errorMessage(err)) : null;
        if (refusal !== null) m.failRest(refusal);
      }
      const known = this.knownRefs.get(repoId);
      this.knownRefs.delete(repoId);
      const current =
        known?.incarnation === repo.incarnation && known.generation === repo.generation
          ? known.refs
          : new Map((await storage.readRefs(repoId)).map((r) => [r.name, r.oid]));
      const head = await storage.headTarget(repoId);
      const { batches, net } = mergeGroup(
        current,
        head,
        group.map((m) => ({
          commands: m.request.commands.filter((c) => !m.results.has(c.key)),
          atomic: m.request.atomic,
          fail: m.fail,
          refused: () => m.results.size > 0,
        })),
      );
      const members = group.filter((_, i) => batches[i]!.length > 0);
      const refused = group.filter((m) => !members.includes(m));
      this.unstage(repoId, packsOf(refused));
      for (const m of refused) m.report();
      // A ref a later push of the group put back where it was: their updates cancel out.
      const newHead = pickDefaultBranch(head, current, net);
      // Nothing to replicate (every push refused, or their updates cancel out): the refs read
      // are still the repo's at this generation.
      const unchanged = (): { contended: boolean } => {
        this.rememberRefs(repoId, { incarnation: repo.incarnation, generation: repo.generation, refs: current });
        return { contended };
      };
      if (members.length === 0) return unchanged();
      if (net.length === 0 && !newHead) {
        this.unstage(repoId, packsOf(members));
        for (const m of members) m.report();
        return unchanged();
      }
      const req: PrepareRequest = {
        txnId: randomUUID(),
        repoId,
        kind: 'push',
        coordinator: nodeId,
        incarnation: repo.incarnation,
        baseGeneration: repo.generation,
        fencingToken: held.lock.token,
        updates: net,
        newChecksum: withHead(applyUpdatesToChecksum(repo.checksum, net), newHead ? head : null, newHead),
        ...(newHead ? { newHead } : {}),
        ...(this.deps.config.fsckIgnore ? { fsckIgnore: this.deps.config.fsckIgnore } : {}),
      };
      const batchOf = (m: PendingPush): RefUpdate[] => batches[group.indexOf(m)]!;
      for (const m of members) for (const u of batchOf(m)) m.inTxn.add(refKey(u.ref));
      if (members.length > 1)
        logger.info({ txnId: req.txnId, repoId, pushes: members.length, refs: net.length }, 'pushes grouped into one transaction');
      const packs = packsOf(members);
      const progress = (line: string): void => {
        for (const m of members) if (!m.ctx.quiet) m.exchange.progress(`replication: ${line}`);
      };
      const audit = members.flatMap((m) => {
        const event = m.ctx.audit?.(
          req.txnId,
          batchOf(m).map((u) => u.ref),
        );
        return event ? [event] : [];
      });
      let result;
      try {
        result = await this.runRefTxn(req, repo, held, replicas, packs, progress, audit);
      } catch (err) {
        if (err instanceof OutcomeUnknownError) {
          logger.error({ txnId: req.txnId, err: err.message }, 'decision unknown: closing the pushes without a report');
          for (const m of members) this.abandon(m);
          return { contended };
        }
        // Peers that staged a pack but never adopted it (the transaction failed first) drop it.
        this.unstage(repoId, packs);
        for (const m of members) {
          for (const u of batchOf(m)) m.fail(refKey(u.ref), errorMessage(err));
          m.report();
        }
        return { contended };
      }
      if (result.outcome === 'unknown') {
        logger.error(
          { txnId: req.txnId, confirmed: result.confirmed },
          'committed but fewer than W replicas confirmed in time: closing the pushes without a report',
        );
        for (const m of members) this.abandon(m);
        return { contended };
      }
      this.rememberRefs(repoId, { incarnation: repo.incarnation, generation: repo.generation + 1, refs: applyUpdates(current, net) });
      for (const m of members) m.report();
      return { contended };
    } finally {
      await held.release();
    }
  }

  /**
   * advanceKnownRefs carries a repo's remembered refs over a push transaction this node committed
   * as a participant: from its base generation to the next. Under several nodes' pushes the
   * lock passes from node to node, and a node whose refs were always a generation old read them
   * with `for-each-ref` at every turn (a git process and 11 ms at the median between its lock and
   * its prepares, 16 pushers over 3 nodes).
   */
  advanceKnownRefs(c: PushCommitted): void {
    const known = this.knownRefs.get(c.repoId);
    if (!known || known.incarnation !== c.incarnation || known.generation !== c.baseGeneration) return;
    this.knownRefs.delete(c.repoId);
    this.rememberRefs(c.repoId as RepoId, {
      incarnation: c.incarnation,
      generation: c.baseGeneration + 1,
      refs: applyUpdates(known.refs, c.updates),
    });
  }

  private rememberRefs(repoId: RepoId, known: KnownRefs): void {
    if (known.refs.size > KNOWN_REFS_MAX) return;
    if (this.knownRefs.size >= KNOWN_REFS_REPOS) this.knownRefs.delete(this.knownRefs.keys().next().value as string);
    this.knownRefs.set(repoId, known);
  }

  private abandon(m: PendingPush): void {
    m.exchange.abandon();
    m.ctx.abandon();
  }

  /**
   * dropReceivedKeep removes the `.keep` of the pack receive-pack stored for a push once both
   * the push is settled and receive-pack has exited. receive-pack removes it itself when it
   * ends normally; killed (the client went away mid-push, or the push was abandoned) it cannot,
   * and the `.keep` would hold that pack out of every repack for good. A transaction still in
   * doubt on this node holds the replica, so no repack runs before it is resolved. The route
   * calls it too, for a receive-pack killed before its hook reached this node (the client gone
   * while receive-pack checked the pack): no push to settle then.
   */
  dropReceivedKeep(ctx: Pick<PushContext, 'repoId' | 'receivePackPid' | 'exited'>): void {
    void ctx.exited
      ?.then(async ([, signal]) => {
        // Ended by itself, receive-pack removed it: no look at the pack directory on every push.
        if (signal === null) return;
        const pack = await this.receivedPack(ctx);
        if (pack) await unlink(pack.replace(/\.pack$/, '.keep'));
      })
      .catch((err: unknown) =>
        this.deps.logger.warn({ repoId: ctx.repoId, err: errorMessage(err) }, "could not remove a push's pack .keep"),
      );
  }

  /**
   * runRefTxn runs a ref transaction (a push's batch, or a HEAD change) on the repo's replica
   * set under the held lock: the decision compares generation, incarnation and fencing token; a
   * replica that misses the commit is marked stale.
   */
  private runRefTxn(
    req: PrepareRequest,
    repo: RepoRecord,
    held: HeldLock,
    replicas: readonly ReplicaRecord[],
    packs: readonly PackShipment[],
    progress?: (line: string) => void,
    audit: readonly AuditEvent[] = [],
  ): ReturnType<Coordinator['run']> {
    const { store, nodeId, logger, metrics } = this.deps;
    const notAsked = new Map(
      replicas
        .filter((r) => r.nodeId !== nodeId && repo.replicas.includes(r.nodeId) && isBehindForGood(repo, r))
        .map((r) => [r.nodeId, `replica ${r.state} (as read under the lock): left to repair`]),
    );
    return this.run(
      req,
      repo.replicas,
      packs,
      async () => {
        if (held.lost()) return { ok: false, why: 'write lock lost, try again' };
        const d = await store.commitPush({
          txnId: req.txnId,
          repoId: req.repoId,
          coordinator: nodeId,
          incarnation: repo.incarnation,
          baseGeneration: repo.generation,
          fencingToken: held.lock.token,
          newChecksum: req.newChecksum,
        });
        return d.decision === 'commit'
          ? { ok: true }
          : { ok: false, why: `repository changed concurrently (${d.reason ?? 'decided'}), fetch first` };
      },
      (node, answer) => {
        // Already recorded behind: repair has it; marking it again on every push was a store write each.
        if (notAsked.has(node)) return;
        // Unmarked, the replica still counts as behind (confirmed one generation back): repair finds it.
        void store.markReplica(req.repoId, node, repo.incarnation, 'stale', repo.generation + 1).then(
          (written) => {
            if (written) {
              metrics.staleMarked.inc();
              logger.warn({ txnId: req.txnId, node, answer }, 'replica missed a committed transaction: marked stale');
            } else {
              // A late refusal from a replica confirmed further on since (repaired, or caught up).
              logger.debug(
                { txnId: req.txnId, node, answer },
                'replica missed a committed transaction, not marked: it confirmed a later generation since, or the repo was re-created',
              );
            }
          },
          (err: unknown) =>
            logger.warn(
              { txnId: req.txnId, node, answer, err: errorMessage(err) },
              'replica missed a committed transaction; could not mark it stale',
            ),
        );
      },
      progress,
      // The replicas read in sync under this lock need not read their records again.
      new Set(replicas.filter((r) => isInSync(repo, r)).map((r) => r.nodeId)),
      { held, audit },
      notAsked,
    );
  }

  /**
   * setDefaultBranch points a repo's HEAD at an existing branch on every replica, as one
   * replicated transaction (no ref moves; the checksum's HEAD term changes).
   */
  async setDefaultBranch(repoId: RepoId, branch: string, incarnation?: string): Promise<{ repo_id: string; default_branch: string }> {
    const { storage, nodeId } = this.deps;
    const held = await this.lock(repoId, { read: true });
    try {
      const state = held.state;
      if (!state || (incarnation !== undefined && state.repo.incarnation !== incarnation)) throw notFound(`repository ${repoId} not found`);
      const repo = state.repo;
      const { own, replicas } = await this.ownReplica(state);
      if (!repo.replicas.includes(nodeId) || !isInSync(repo, own))
        throw unavailable(`replica of ${repoId} on this node is catching up, try again`, { retryAfter: 1 });
      if (!(await storage.readRefs(repoId)).some((r) => r.name === branch))
        throw badRequest(`branch ${branch.replace(/^refs\/heads\//, '')} does not exist in ${repoId}`);
      const head = await storage.headTarget(repoId);
      if (head !== branch) {
        const req: PrepareRequest = {
          txnId: randomUUID(),
          repoId,
          kind: 'push',
          coordinator: nodeId,
          incarnation: repo.incarnation,
          baseGeneration: repo.generation,
          fencingToken: held.lock.token,
          updates: [],
          newHead: branch,
          newChecksum: withHead(repo.checksum, head, branch),
        };
        const result = await this.runRefTxn(req, repo, held, replicas, []);
        if (result.outcome === 'unknown')
          throw new OutcomeUnknownError(`default branch of ${repoId}: committed on ${result.confirmed.length} replicas only`);
      }
      return { repo_id: repoId, default_branch: branch };
    } finally {
      await held.release();
    }
  }

  /**
   * lockInSync takes the repo's write lock with this node's replica in sync, as a coordinator
   * must be. A replica behind (it was the straggler of the last pushes, which W others
   * acknowledged) is caught up outside the lock, by a repair attempt, for up to catchUpMs,
   * rather than refusing the push with "replica catching up": under many pushers to one repo
   * that refusal was what clients saw.
   */
  private async lockInSync(
    repoId: RepoId,
  ): Promise<{ ok: true; held: HeldLock; repo: RepoRecord; replicas: readonly ReplicaRecord[] } | { ok: false; reason: string }> {
    const { storage, nodeId } = this.deps;
    const deadline = Date.now() + (this.deps.config.catchUpMs ?? DEFAULTS.catchUpMs);
    for (;;) {
      const held = await this.lock(repoId, { read: true });
      let keep = false;
      try {
        const state = held.state;
        if (!state) return { ok: false, reason: 'repository was deleted' };
        const repo = state.repo;
        const { own, replicas } = await this.ownReplica(state);
        if (repo.replicas.includes(nodeId) && isInSync(repo, own) && (await storage.incarnationOf(repoId)) === repo.incarnation) {
          keep = true;
          return { ok: true, held, repo, replicas };
        }
        if (!repo.replicas.includes(nodeId) || !this.deps.catchUp || Date.now() >= deadline)
          return { ok: false, reason: 'replica catching up, try again' };
      } finally {
        if (!keep) await held.release();
      }
      if (!(await this.deps.catchUp(repoId).catch(() => false))) await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * ownReplica reads this node's replica record of a repo. A replica confirmed one generation
   * back is usually the previous push still committing here (its coordinator released the lock
   * after W confirmations): it is given up to commitWaitMs to confirm, instead of refusing
   * the push with "replica catching up". So is one recorded in sync further back, for as long
   * as its record keeps moving (commitWaitMs from its last move, catchUpMs at most): the straggler of several
   * pushes commits them one after another, and a catch-up repair started meanwhile would
   * refuse their prepares and have it marked stale (the repair pass waits the same way). The
   * caller holds the repo lock, so the generation cannot move meanwhile. `replicas` are every
   * replica record as last read.
   */
  private async ownReplica(state: RepoState): Promise<{ own: ReplicaRecord | undefined; replicas: readonly ReplicaRecord[] }> {
    const { store, nodeId } = this.deps;
    const repo = state.repo;
    let replicas = state.replicas;
    const own = (): ReplicaRecord | undefined => replicas.find((r) => r.nodeId === nodeId);
    const waitMs = this.deps.config.commitWaitMs ?? DEFAULTS.commitWaitMs;
    const trailing = (r: ReplicaRecord | undefined): boolean =>
      r?.state === 'in_sync' && r.incarnation === repo.incarnation && r.generation < repo.generation;
    // However long the record keeps moving, the lock is not held past catchUpMs for it.
    const limit = Date.now() + Math.max(waitMs, this.deps.config.catchUpMs ?? DEFAULTS.catchUpMs);
    let deadline = Date.now() + waitMs;
    let seen = own()?.generation;
    while ((isOneBehind(repo, own()) || trailing(own())) && Date.now() < Math.min(deadline, limit)) {
      await new Promise((r) => setTimeout(r, 25));
      replicas = await store.getReplicas(repo.repoId);
      if (own()?.generation !== seen) {
        seen = own()?.generation;
        deadline = Date.now() + waitMs;
      }
    }
    return { own: own(), replicas };
  }

  /** receivedPack finds the pack receive-pack stored for this push: its .keep names receive-pack's pid. */
  private async receivedPack(ctx: Pick<PushContext, 'repoId' | 'receivePackPid'>): Promise<string | null> {
    const marker = `receive-pack ${ctx.receivePackPid} `;
    for (const keep of listPackKeeps(this.deps.storage.repoPath(ctx.repoId))) {
      // Gone meanwhile (null): not this push's.
      if (readSmallFile(keep)?.startsWith(marker)) return keep.replace(/\.keep$/, '.pack');
    }
    return null;
  }
}

/**
 * pickDefaultBranch chooses where HEAD points after a push when it names no existing branch
 * (an empty repo, or a mirror push of a repo whose default is not `main`): `main` if the push
 * creates it, else `master`, else the first branch it creates, as GitHub, GitLab and Gitea do.
 * Null when HEAD names a branch that exists (or that this push creates).
 */
export function pickDefaultBranch(head: string | null, current: ReadonlyMap<string, string>, batch: readonly RefUpdate[]): string | null {
  const created = batch.filter((u) => u.ref.startsWith('refs/heads/') && !isZeroOid(u.newOid)).map((u) => u.ref);
  if (head !== null && (current.has(head) || created.includes(head))) return null;
  if (created.length === 0) return null;
  return created.find((r) => r === 'refs/heads/main') ?? created.find((r) => r === 'refs/heads/master') ?? created[0]!;
}

/** applyUpdates is `refs` with `updates` applied (a zero new value deletes). */
function applyUpdates(refs: ReadonlyMap<string, string>, updates: readonly RefUpdate[]): Map<string, string> {
  const after = new Map(refs);
  for (const u of updates) {
    if (isZeroOid(u.newOid)) after.delete(u.ref);
    else after.set(u.ref, u.newOid);
  }
  return after;
}

/**
 * refusalMessage says why a transaction found too few replicas prepared. Replicas that refused
 * the pack for its content give their reason (what git would have said), not a quorum count:
 * the cluster is up, the push is what it refuses.
 */
function refusalMessage(answers: ReadonlyArray<[string, Answer]>, okCount: number, total: number, w: number): string {
  const rejected = answers
    .map(([, a]) => a)
    .filter((a): a is Extract<Answer, { ok: false }> => !a.ok && a.message.includes('pack rejected:'));
  if (rejected.length > 0 && okCount + rejected.length >= w)
    return `${rejected[0]!.message.slice(rejected[0]!.message.indexOf('pack rejected:'))} (${rejected.length} of ${total} replicas)`;
  return quorumMessage(okCount, total, w);
}

/** packHashOf is a pack's trailer hash, which git names it by: `pack-<hash>.pack`. */
function packHashOf(packPath: string): string | undefined {
  return /pack-([0-9a-f]{40,64})\.pack$/.exec(packPath)?.[1];
}

function refusalStatus(err: unknown): 'stale' | 'conflict' | 'failed' {
  return err instanceof PrepareRefusal && (err.status === 'stale' || err.status === 'conflict') ? err.status : 'failed';
}

import { createReadStream } from 'node:fs';
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Membership } from '../cluster/membership.js';
import type { LfsRef, PeerClient } from '../cluster/peer-client.js';
import { LFS_PROTOCOL } from '../cluster/protocol.js';
import { errorMessage, notFound, unavailable } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import { lfsComplete, type ReplicaStorage } from '../git/repo-storage.js';
import { chain } from '../http/body-guards.js';
import { PackTee } from '../replication/pack-tee.js';
import type { RepoActivity } from '../replication/activity.js';
import type { ClusterStore, RepoRecord } from '../store/types.js';
import { LFS_OID } from '../domain/lfs-ids.js';
import type { LfsObjects, Received } from './objects.js';

/** LFS_FLAG_PREFIX keys the store's note that a repository holds LFS objects (`lfs/<repo id>` = its incarnation): what LfsSync walks. */
export const LFS_FLAG_PREFIX = 'lfs/';

/**
 * HAVE_TIMEOUT_MS bounds a batch's question to another replica: one that does not answer (frozen,
 * cut off, not yet out of the membership) counts as holding nothing, and the client uploads again.
 */
const HAVE_TIMEOUT_MS = 2_000;

/** CATALOGUE_TIMEOUT_MS bounds a listing's question to one replica (a backup's client waits 30 s for the whole answer). */
const CATALOGUE_TIMEOUT_MS = 10_000;

/** LIVE_CHECK_MS is how often a copy to or read from a peer looks whether the peer is still live (whileLive). */
const LIVE_CHECK_MS = 500;

/** LfsTarget is a repository's incarnation and replica set as the store holds them, with its write quorum. */
export interface LfsTarget extends LfsRef {
  readonly replicas: readonly string[];
  readonly writeQuorum: number;
  /** local: this node holds a replica of this incarnation (it keeps the objects too). */
  readonly local: boolean;
}

/** ObjectState is what a batch answers for one object: held (by how many replicas, of what size) or not. */
export interface ObjectState {
  readonly oid: string;
  /** holders: replicas of the set holding it with the size asked for. */
  readonly holders: number;
  /** size: the size a holder has it at (null: nobody holds it). */
  readonly size: number | null;
}

/** LfsDeps is what the LFS service uses of the node. */
export interface LfsDeps {
  readonly nodeId: string;
  readonly store: ClusterStore;
  readonly storage: ReplicaStorage;
  readonly objects: LfsObjects;
  readonly membership: Membership;
  readonly peers: PeerClient;
  readonly logger: Logger;
  readonly writeQuorumFor: (replicas: number) => number;
  /** activity keeps installs off a replica being swapped or dropped (installHere). */
  readonly activity: RepoActivity;
  /** diskShortage says why the data dir takes no writes, or null; freeBytes is the last reading of its free space. */
  readonly diskShortage: () => string | null;
  readonly freeBytes: () => number | null;
  readonly minFreeBytes: number;
  /** maxObjectBytes: the largest object an upload may be (413 beyond). */
  readonly maxObjectBytes: number;
  /** timeoutMs bounds a copy to or read from a replica that makes no progress. */
  readonly timeoutMs: number;
}

/**
 * LfsService keeps a repository's Git LFS objects on its replicas, as git's objects are: an
 * upload is answered once W replicas of the set hold it on disk (fsynced, content checked against
 * the oid by each), a download is served by any replica that holds it, and a replica that lacks
 * one (it missed the upload, or it is new) gets it on the next read through it or from LfsSync.
 * The upload's bytes go to the other replicas while the client sends them (PackTee: a replica
 * slower than the client is dropped and sent the object from this node's copy afterwards).
 */
export class LfsService {
  /** flagged are the incarnations this node has noted in the store (LFS_FLAG_PREFIX) since it started. */
  private readonly flagged = new Set<string>();
  /** reserved is the bytes the objects being received now have taken of the free space (reserve). */
  private reserved = 0;

  constructor(private readonly deps: LfsDeps) {}

  /**
   * target reads the repository's incarnation and replica set from the store: 404 when it does not
   * exist, or is no longer the incarnation the caller's access was decided on (`decided`).
   */
  async target(repoId: string, decided: string | null): Promise<LfsTarget> {
    const state = await this.deps.store.getRepoState(repoId);
    if (!state || (decided !== null && state.repo.incarnation !== decided)) throw notFound(`repository ${repoId} not found`);
    const { incarnation, replicas } = state.repo;
    const local = replicas.includes(this.deps.nodeId) && (await this.deps.storage.incarnationOf(repoId)) === incarnation;
    return { repoId, incarnation, replicas, writeQuorum: this.deps.writeQuorumFor(replicas.length), local };
  }

  /** others are the replicas of the set but this node that can be asked now (live, speaking LFS_PROTOCOL), live ones first. */
  private others(t: LfsTarget): string[] {
    const { membership, peers, nodeId } = this.deps;
    return t.replicas.filter((n) => n !== nodeId && membership.isLive(n) && peers.speaks(membership.target(n), LFS_PROTOCOL));
  }

  /**
   * states says, for each object, how many replicas of the set hold it at its size: this node's
   * own disk, then one `have` call to each other replica, made only when this node alone cannot
   * settle the answer (`enough` holders: W for an upload, 1 for a download).
   */
  async states(t: LfsTarget, wanted: ReadonlyArray<{ oid: string; size: number }>, enough: number): Promise<ObjectState[]> {
    // No replica to look at is not "no such object" (git-lfs would report each one missing).
    if (!t.local && this.others(t).length === 0 && wanted.length > 0)
      throw unavailable(`no replica of ${t.repoId} can be reached for its LFS objects, try again`, { retryAfter: 1 });
    const own = new Map<string, number | null>();
    for (const o of wanted) own.set(o.oid, t.local ? await this.deps.objects.sizeOf(t.incarnation, o.oid) : null);
    const short = wanted.filter((o) => (own.get(o.oid) === o.size ? 1 : 0) < enough).map((o) => o.oid);
    const answers =
      short.length === 0
        ? []
        : await Promise.all(
            this.others(t).map((n) =>
              this.deps.peers.lfsHave(
                this.deps.membership.target(n)!,
                { repoId: t.repoId, incarnation: t.incarnation, oids: [...new Set(short)] },
                HAVE_TIMEOUT_MS,
              ),
            ),
          );
    const states = wanted.map((o) => {
      const held = [own.get(o.oid) ?? null, ...answers.map((a) => a?.objects.get(o.oid) ?? null)].filter((s): s is number => s !== null);
      return { oid: o.oid, holders: held.filter((s) => s === o.size).length, size: held.find((s) => s === o.size) ?? held[0] ?? null };
    });
    // "Does not exist" only when every replica of the set was asked: one that could not be (down,
    // frozen, not answering) may be the one that holds it (a replica just added holds nothing yet).
    const asked = answers.filter((a) => a !== null).length + (t.local ? 1 : 0);
    if (enough === 1 && states.some((x) => x.size === null) && asked < t.replicas.length)
      throw unavailable(`not every replica of ${t.repoId} can be asked for its LFS objects, try again`, { retryAfter: 1 });
    return states;
  }

  /**
   * catalogue names every object the replicas of the set hold (this node's list, and each other
   * live replica's, asked for at most CATALOGUE_TIMEOUT_MS): oid → size. `complete` when at least
   * R − W + 1 replicas answered: every acknowledged object is on W of them, and any R − W + 1
   * replicas include one of any W, so none is missing from the list (one replica down of three
   * leaves it complete, as it leaves git's writes possible).
   */
  async catalogue(t: LfsTarget): Promise<{ objects: Map<string, number>; complete: boolean }> {
    const { membership, peers } = this.deps;
    // A repository never sent an object asks no replica.
    if (!(await this.holdsAny(t))) return { objects: new Map(), complete: true };
    const lists = await Promise.all(this.others(t).map((n) => peers.lfsList(membership.target(n)!, t, CATALOGUE_TIMEOUT_MS)));
    const objects = t.local ? await this.deps.objects.list(t.incarnation) : new Map<string, number>();
    for (const list of lists) for (const [oid, size] of list?.objects ?? []) objects.set(oid, size);
    // Only replicas that hold every acknowledged object (LFS_COMPLETE) count: one the steward just
    // added lists nothing yet, and counted, it made an empty listing "complete" (an outside review).
    const own = t.local && lfsComplete(this.deps.storage.repoPath(t.repoId)) ? 1 : 0;
    const answered = lists.filter((l) => l?.complete === true).length + own;
    return { objects, complete: answered >= t.replicas.length - t.writeQuorum + 1 };
  }

  /** completeHere says whether this node's replica of the repository holds every acknowledged LFS object (LFS_COMPLETE). */
  completeHere(ref: LfsRef): boolean {
    return lfsComplete(this.deps.storage.repoPath(ref.repoId));
  }

  /**
   * upload stores an object on the repository's replicas from `body` (exactly `size` bytes whose
   * SHA-256 is `oid`) and resolves once W of them hold it; 503 if fewer could (those that took it
   * keep it: an upload tried again finds them). The copies still under way then go on.
   */
  async upload(t: LfsTarget, oid: string, size: number, body: Readable): Promise<{ stored: number }> {
    const release = this.reserve(size);
    try {
      return await this.store(t, oid, size, body);
    } finally {
      release();
    }
  }

  /** store is upload's work, with the object's room reserved. */
  private async store(t: LfsTarget, oid: string, size: number, body: Readable): Promise<{ stored: number }> {
    // Noted before any replica may hold one of its objects: a repository without the note holds none.
    await this.flag(t);
    const meta = { repoId: t.repoId, incarnation: t.incarnation, oid, size };
    const others = this.others(t);
    const { peers, membership, objects, logger } = this.deps;
    const tee = new PackTee(
      others,
      async (node, stream) => {
        const live = this.whileLive(node);
        const answer = await peers.lfsPut(membership.target(node)!, meta, stream, this.deps.timeoutMs, live.signal).finally(live.done);
        if (!answer.ok)
          logger.info({ peer: node, repoId: t.repoId, oid, reason: answer.message }, 'LFS object not copied during the upload');
        return answer.ok ? 'stored' : null;
      },
      { maxBytes: size },
    );
    // The copies start with the body's first byte (an upload that sends nothing holds no peer
    // connection); an empty object has none, and is sent afterwards like a copy that failed.
    let received: Received;
    try {
      received = await objects.receive(oid, size, chain(body, new TeeTap(tee)), this.deps.maxObjectBytes);
    } catch (err) {
      tee.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
    let source = received.path;
    // This node's own copy counts when it is installed; refused (its replica swapped or dropped
    // meanwhile), the upload still counts the others, sent the received file.
    let here = false;
    if (t.local) {
      here = await this.installHere(t, oid, received, false).then(
        () => true,
        (err: unknown) => {
          logger.info({ repoId: t.repoId, oid, err: errorMessage(err) }, 'LFS object not kept on this replica');
          return false;
        },
      );
      if (here) source = objects.path(t.incarnation, oid);
    }
    // A replica the copy did not reach (dropped, refused, unreachable) is sent this node's copy.
    const attempts = others.map(async (node) => {
      if ((await (tee.results.get(node) ?? null)) !== null) return true;
      const target = membership.target(node);
      if (!target) return false;
      const live = this.whileLive(node);
      const answer = await peers
        .lfsPut(target, meta, createReadStream(source, { highWaterMark: 256 * 1024 }), this.deps.timeoutMs, live.signal)
        .finally(live.done);
      if (!answer.ok) logger.warn({ peer: node, repoId: t.repoId, oid, reason: answer.message }, 'LFS object not copied to a replica');
      return answer.ok;
    });
    const stored = await atLeast(here ? 1 : 0, attempts, t.writeQuorum);
    void Promise.allSettled(attempts).then(() => (here ? undefined : objects.discard(received)));
    if (stored < t.writeQuorum)
      throw unavailable(`LFS object ${oid} is on ${stored} of ${t.replicas.length} replicas, ${t.writeQuorum} required: try again`, {
        retryAfter: 1,
      });
    // A repository deleted (or deleted and made again) during the upload: what was stored is of
    // no repository (each replica's sweep removes it), and the client is told so.
    if ((await this.deps.store.getRepo(t.repoId))?.incarnation !== t.incarnation)
      throw notFound(`repository ${t.repoId} was deleted meanwhile`);
    return { stored };
  }

  /**
   * download opens an object of the repository: this node's copy, or a replica's (the first that
   * holds it), which this node, when it is a replica, keeps as it passes (it had missed it). Null
   * when no replica that can be asked holds it.
   */
  async download(t: LfsTarget, oid: string, signal: AbortSignal): Promise<{ size: number; body: Readable } | null> {
    const { objects, peers, membership } = this.deps;
    if (t.local) {
      const size = await objects.sizeOf(t.incarnation, oid);
      if (size !== null) return { size, body: objects.open(t.incarnation, oid) };
    }
    const others = this.others(t);
    const all = t.replicas.length - (t.local ? 1 : 0);
    for (const node of shuffle(others)) {
      const live = this.whileLive(node, signal);
      const got = await peers.lfsGet(
        membership.target(node)!,
        { repoId: t.repoId, incarnation: t.incarnation, oid },
        this.deps.timeoutMs,
        live.signal,
      );
      if (!got) {
        live.done();
        continue;
      }
      got.body.once('close', live.done);
      if (!t.local || this.deps.diskShortage() !== null) return got;
      const out = new PassThrough({ highWaterMark: 256 * 1024 });
      const copy = new PassThrough({ highWaterMark: 256 * 1024 });
      copy.on('error', () => undefined);
      got.body.on('error', (err) => {
        out.destroy(err);
        copy.destroy(err);
      });
      got.body.pipe(out);
      got.body.pipe(copy);
      void this.keep(t, oid, got.size, copy);
      return { size: got.size, body: out };
    }
    // Not found where it was asked; a replica that could not be asked may hold it.
    if (others.length < all)
      throw unavailable(`not every replica of ${t.repoId} can be reached for its LFS objects, try again`, { retryAfter: 1 });
    return null;
  }

  /**
   * handOver copies the objects this node holds of a repository's replica that moved off it
   * (`repo`, as the store holds it now) to every replica of its new set that lacks them, so the
   * drop that follows loses none (a repository with one replica moved whole). True when there
   * is nothing to hand over, or every live replica of the set holds every object; false (keep
   * the replica, try again) when one could not be asked or sent one, or none is live.
   */
  async handOver(repo: RepoRecord): Promise<boolean> {
    const { storage, objects, membership, peers, logger } = this.deps;
    if ((await storage.incarnationOf(repo.repoId)) !== repo.incarnation) return true;
    const own = await objects.list(repo.incarnation);
    if (own.size === 0) return true;
    const ref = { repoId: repo.repoId, incarnation: repo.incarnation };
    const live = repo.replicas.filter((n) => n !== this.deps.nodeId && membership.isLive(n));
    if (live.length === 0) return false;
    const oids = [...own.keys()];
    for (const node of live) {
      const target = membership.target(node);
      if (!target || !peers.speaks(target, LFS_PROTOCOL)) return false;
      for (let i = 0; i < oids.length; i += 1_000) {
        const chunk = oids.slice(i, i + 1_000);
        const held = await peers.lfsHave(target, { ...ref, oids: chunk });
        if (!held) return false;
        for (const oid of chunk) {
          if (held.objects.get(oid) === own.get(oid)) continue;
          const watch = this.whileLive(node);
          const answer = await peers
            .lfsPut(target, { ...ref, oid, size: own.get(oid)! }, objects.open(repo.incarnation, oid), this.deps.timeoutMs, watch.signal)
            .finally(watch.done);
          if (!answer.ok) {
            logger.info({ repoId: repo.repoId, peer: node, oid, reason: answer.message }, 'LFS object not handed over');
            return false;
          }
        }
      }
    }
    return true;
  }

  /** keep stores an object read from a peer on this replica; a failure leaves it to the next read or LfsSync. */
  private async keep(t: LfsRef, oid: string, size: number, content: Readable): Promise<void> {
    let release: (() => void) | null = null;
    try {
      release = this.reserve(size);
      const received = await this.deps.objects.receive(oid, size, content, Number.MAX_SAFE_INTEGER);
      await this.installHere(t, oid, received);
    } catch (err) {
      content.resume();
      this.deps.logger.info({ repoId: t.repoId, oid, err: errorMessage(err) }, 'LFS object read from a peer not kept');
    } finally {
      release?.();
    }
  }

  /** fetch copies an object this replica lacks from a replica that has it (LfsSync); says whether it did. */
  async fetch(t: LfsTarget, oid: string, from: string): Promise<boolean> {
    const target = this.deps.membership.target(from);
    if (!target || this.deps.diskShortage() !== null) return false;
    const live = this.whileLive(from);
    const got = await this.deps.peers.lfsGet(
      target,
      { repoId: t.repoId, incarnation: t.incarnation, oid },
      this.deps.timeoutMs,
      live.signal,
    );
    if (!got) {
      live.done();
      return false;
    }
    got.body.once('close', live.done);
    try {
      const release = this.reserve(got.size);
      try {
        const received = await this.deps.objects.receive(oid, got.size, got.body, Number.MAX_SAFE_INTEGER);
        await this.installHere(t, oid, received);
      } finally {
        release();
      }
      return true;
    } catch (err) {
      got.body.destroy();
      this.deps.logger.info({ repoId: t.repoId, oid, from, err: errorMessage(err) }, 'LFS object not fetched from a replica');
      return false;
    }
  }

  /**
   * installHere installs an object on this node's replica as the replica's `upload` activity
   * (RepoActivity): never while the replica is swapped by a repair or dropped (a drop hands the
   * replica's objects over first, and an object installed during it would be lost with it), so
   * refused then (503, the upload tries the other replicas). An object installed for an
   * incarnation the replica no longer has (its repository deleted meanwhile) is removed again
   * (404); what else that incarnation left is the sweep's.
   */
  private async installHere(ref: LfsRef, oid: string, received: Received, discard = true): Promise<void> {
    const running = this.deps.activity.tryBegin(ref.repoId, 'upload');
    if (!running) {
      if (discard) await this.deps.objects.discard(received);
      throw unavailable(`replica of ${ref.repoId} on ${this.deps.nodeId} is being replaced, try again`, { retryAfter: 1 });
    }
    try {
      if ((await this.deps.storage.incarnationOf(ref.repoId)) !== ref.incarnation) {
        if (discard) await this.deps.objects.discard(received);
        throw notFound(`no replica of ${ref.repoId} at that incarnation here`);
      }
      await this.deps.objects.install(ref, oid, received);
    } finally {
      running.end();
    }
  }

  /** whileLive is a signal that aborts once `node` is no longer live in the membership (a frozen or cut-off peer), or `also` aborts. */
  private whileLive(node: string, also?: AbortSignal): { signal: AbortSignal; done: () => void } {
    const ac = new AbortController();
    const timer = setInterval(() => {
      if (!this.deps.membership.isLive(node)) ac.abort(new Error(`node ${node} is no longer live`));
    }, LIVE_CHECK_MS);
    timer.unref();
    return { signal: also ? AbortSignal.any([ac.signal, also]) : ac.signal, done: () => clearInterval(timer) };
  }

  /**
   * reserve takes `size` bytes of the data dir's free space for an object being received, or
   * refuses (503) when the last reading, less what the uploads under way have taken, leaves no
   * room above the free-space reserve: uploads at once each passed a check on the same reading and
   * ate the reserve together (an outside review filled a disk that way). The returned function
   * gives them back.
   */
  private reserve(size: number): () => void {
    const shortage = this.deps.diskShortage();
    const free = this.deps.freeBytes();
    if (shortage !== null) throw unavailable(`${this.deps.nodeId}: ${shortage}`);
    if (free !== null && free - this.reserved - size < this.deps.minFreeBytes)
      throw unavailable(`${this.deps.nodeId}: no room for an LFS object of ${size} bytes under the data dir`, { retryAfter: 5 });
    this.reserved += size;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.reserved -= size;
    };
  }

  /** holdsAny says whether the store notes the repository's incarnation as holding LFS objects (flag). */
  private async holdsAny(t: LfsRef): Promise<boolean> {
    return this.flagged.has(t.incarnation) || (await this.deps.store.getMeta(`${LFS_FLAG_PREFIX}${t.repoId}`)) === t.incarnation;
  }

  /** flag notes in the store, once per incarnation and node start, that the repository holds LFS objects (LfsSync walks those). */
  private async flag(t: LfsRef): Promise<void> {
    if (this.flagged.has(t.incarnation)) return;
    if (this.flagged.size > 10_000) this.flagged.clear();
    const key = `${LFS_FLAG_PREFIX}${t.repoId}`;
    const before = await this.deps.store.getMeta(key);
    if (before !== t.incarnation) {
      await this.deps.store.setMeta(key, t.incarnation);
      // An upload that read the repository before it was deleted (and made again) must not leave
      // the old incarnation's note over the new one's.
      const now = await this.deps.store.getRepo(t.repoId);
      if (now?.incarnation !== t.incarnation) {
        // Put the note of the repository as it is now (a note says objects may be there: at worst
        // a listing asks the replicas), not what was read before: another upload may have noted it since.
        await this.deps.store.compareAndSetMeta(key, t.incarnation, now ? now.incarnation : null);
        throw notFound(`repository ${t.repoId} was deleted meanwhile`);
      }
    }
    this.flagged.add(t.incarnation);
  }

  // The participant's side: calls from the replica set's other members.

  /** localRef checks that this node holds a replica of the named incarnation (404 otherwise: it keeps no objects for it). */
  async localRef(repoId: string, incarnation: string): Promise<LfsRef> {
    if ((await this.deps.storage.incarnationOf(repoId)) !== incarnation) throw notFound(`no replica of ${repoId} at that incarnation here`);
    return { repoId, incarnation };
  }

  /** have answers which of `oids` this replica holds: oid → size. */
  async have(ref: LfsRef, oids: readonly string[]): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const oid of oids) {
      if (!LFS_OID.test(oid)) continue;
      const size = await this.deps.objects.sizeOf(ref.incarnation, oid);
      if (size !== null) out[oid] = size;
    }
    return out;
  }

  /** list names every object this replica holds: oid → size. */
  list(ref: LfsRef): Promise<Map<string, number>> {
    return this.deps.objects.list(ref.incarnation);
  }

  /** open reads an object this replica holds (null: not held). */
  async open(ref: LfsRef, oid: string): Promise<{ size: number; body: Readable } | null> {
    const size = await this.deps.objects.sizeOf(ref.incarnation, oid);
    return size === null ? null : { size, body: this.deps.objects.open(ref.incarnation, oid) };
  }

  /** accept stores an object a replica copies here (lfsPut); one held already is not written again. */
  async accept(ref: LfsRef, oid: string, size: number, body: Readable): Promise<void> {
    if ((await this.deps.objects.sizeOf(ref.incarnation, oid)) === size) {
      body.resume();
      return;
    }
    const release = this.reserve(size);
    try {
      const received = await this.deps.objects.receive(oid, size, body, this.deps.maxObjectBytes);
      await this.installHere(ref, oid, received);
    } finally {
      release();
    }
  }
}

/** TeeTap hands an upload's bytes to a PackTee as they pass. */
class TeeTap extends Transform {
  constructor(private readonly tee: PackTee) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.tee.write(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.tee.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    this.tee.abort(err ?? new Error('upload ended early'));
    cb(err);
  }
}

/** atLeast resolves once `start` plus the attempts that succeeded reach `want`, or once every attempt settled: with that count. */
function atLeast(start: number, attempts: ReadonlyArray<Promise<boolean>>, want: number): Promise<number> {
  return new Promise((resolve) => {
    let ok = start;
    let left = attempts.length;
    if (ok >= want || left === 0) resolve(ok);
    for (const a of attempts)
      void a
        .catch(() => false)
        .then((done) => {
          ok += done ? 1 : 0;
          left--;
          if (ok >= want || left === 0) resolve(ok);
        });
  });
}

function shuffle<T>(xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

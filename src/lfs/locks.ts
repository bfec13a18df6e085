import { createHash, randomUUID } from 'node:crypto';
import { badRequest, conflict, forbidden, notFound } from '../domain/errors.js';
import type { ClusterStore } from '../store/types.js';

/** LOCK_PREFIX keys a repository's file locks in the store (`lfs-locks/<repo id>/<lock id>`). */
export const LOCK_PREFIX = 'lfs-locks/';
/** LOCK_PATH_PREFIX keys the claim of a locked path (`lfs-lock-paths/<repo id>/<sha256 of the path>` = lock id): one lock per path. */
export const LOCK_PATH_PREFIX = 'lfs-lock-paths/';

/** MAX_LOCKS_PER_REPO bounds a repository's locks (one more is a 409). */
export const MAX_LOCKS_PER_REPO = 10_000;
/** MAX_LOCK_PATH is the longest path a lock may name, in characters. */
export const MAX_LOCK_PATH = 4096;
/** MAX_LOCKS_PAGE is the most locks one listing answer holds. */
export const MAX_LOCKS_PAGE = 1_000;

/** Lock is a file lock as the Git LFS locking API shows it. */
export interface Lock {
  readonly id: string;
  readonly path: string;
  readonly locked_at: string;
  readonly owner: { readonly name: string };
}

/** checkLockPath validates a path to lock: a relative path in the repository, as git-lfs sends it. */
export function checkLockPath(path: unknown): string {
  if (typeof path !== 'string' || path.length === 0 || path.length > MAX_LOCK_PATH || path.includes('\0'))
    throw badRequest(`a lock's path must be 1-${MAX_LOCK_PATH} characters without NUL`);
  return path;
}

/**
 * LfsLocks keeps the Git LFS file locks of repositories in the cluster store, so every node sees
 * the same: a lock is its record (`lfs-locks/…`) and its path's claim (`lfs-lock-paths/…`), taken
 * by compare-and-swap, so of two users locking one path at once through different nodes one
 * wins (409 for the other, naming the lock). git-lfs enforces them itself: a push of a file
 * locked by someone else is refused by the client after `verify`.
 */
export class LfsLocks {
  constructor(private readonly store: ClusterStore) {}

  private pathKey(repoId: string, path: string): string {
    return `${LOCK_PATH_PREFIX}${repoId}/${createHash('sha256').update(path).digest('hex')}`;
  }

  /** list lists a repository's locks, by id after `cursor`, optionally one path's or one id's. */
  async list(
    repoId: string,
    opts: { path?: string; id?: string; cursor?: string; limit?: number } = {},
  ): Promise<{ locks: Lock[]; next: string | null }> {
    const limit = Math.min(Math.max(1, opts.limit ?? 100), MAX_LOCKS_PAGE);
    const all = (await this.store.listMeta(`${LOCK_PREFIX}${repoId}/`))
      .map((m) => JSON.parse(m.value) as Lock)
      .filter((l) => (opts.path === undefined || l.path === opts.path) && (opts.id === undefined || l.id === opts.id))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .filter((l) => opts.cursor === undefined || l.id > opts.cursor);
    const locks = all.slice(0, limit);
    return { locks, next: all.length > limit ? locks[locks.length - 1]!.id : null };
  }

  /** create locks `path` for `user`: 409 with the lock that holds it already. */
  async create(repoId: string, path: string, user: string): Promise<Lock> {
    const held = await this.store.listMeta(`${LOCK_PREFIX}${repoId}/`);
    if (held.length >= MAX_LOCKS_PER_REPO)
      throw conflict(`${repoId} holds ${MAX_LOCKS_PER_REPO} locks, the most a repository may: unlock some first`);
    const lock: Lock = { id: randomUUID(), path, locked_at: new Date().toISOString(), owner: { name: user } };
    const claim = this.pathKey(repoId, path);
    const winner = await this.store.setMetaIfAbsent(claim, lock.id);
    if (winner !== lock.id) {
      const existing = await this.store.getMeta(`${LOCK_PREFIX}${repoId}/${winner}`);
      if (existing) throw conflict('already created lock', { lock: JSON.parse(existing) as Lock });
      // A claim whose lock record is gone (an unlock cut short): taken over by compare-and-swap.
      if (!(await this.store.compareAndSetMeta(claim, winner, lock.id))) throw conflict('the path was locked meanwhile: try again');
    }
    await this.store.setMeta(`${LOCK_PREFIX}${repoId}/${lock.id}`, JSON.stringify(lock));
    return lock;
  }

  /**
   * unlock removes a lock: its owner's, or anyone's with `force` (the caller checks who may
   * force). 404 for none; 403 for another user's without force.
   */
  async unlock(repoId: string, id: string, user: string, force: boolean): Promise<Lock> {
    if (!/^[0-9a-f-]{36}$/.test(id)) throw notFound(`no lock ${id.slice(0, 80)}`);
    const key = `${LOCK_PREFIX}${repoId}/${id}`;
    const raw = await this.store.getMeta(key);
    if (!raw) throw notFound(`no lock ${id}`);
    const lock = JSON.parse(raw) as Lock;
    if (lock.owner.name !== user && !force)
      throw forbidden(`the lock on ${lock.path} is ${lock.owner.name}'s: unlock with force (repository admin)`);
    // The record first: a claim left without it is taken over by the next lock of its path.
    if (!(await this.store.compareAndSetMeta(key, raw, null))) throw notFound(`no lock ${id}`);
    await this.store.compareAndSetMeta(this.pathKey(repoId, lock.path), lock.id, null);
    return lock;
  }

  /** forget removes every lock of a repository (it was deleted, or is made again in its name). */
  async forget(repoId: string): Promise<void> {
    for (const m of await this.store.listMeta(`${LOCK_PREFIX}${repoId}/`)) await this.store.deleteMeta(m.key);
    for (const m of await this.store.listMeta(`${LOCK_PATH_PREFIX}${repoId}/`)) await this.store.deleteMeta(m.key);
  }
}

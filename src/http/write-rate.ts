import { appError, type AppError } from '../domain/errors.js';

/** WRITE_RATE_USERS_KEPT bounds the users whose buckets a node keeps; past it, full buckets go first. */
export const WRITE_RATE_USERS_KEPT = 10_000;

/**
 * WriteRate bounds the REST writes (creates, deletes, grants, members, tokens, keys) one user
 * makes through a node: a bucket of `perMinute` writes per user, refilled at that rate, so a
 * burst of a minute's writes passes and a script going on faster gets 429 with the seconds to
 * wait. An ordinary user's create-and-delete loop (repositories, organisations, tokens) cost the
 * store reads of every record of its kind per write at any speed it liked; git's pushes and
 * fetches are not REST writes, and cluster admins are not held to it. Per node: a user spread
 * over N nodes gets N times the rate. 0: no limit.
 */
export class WriteRate {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** take spends one write of `user`'s bucket, or returns the 429 to answer (with the seconds until one is back). */
  take(user: string): AppError | null {
    if (this.perMinute <= 0) return null;
    const now = this.now();
    const perMs = this.perMinute / 60_000;
    const held = this.buckets.get(user);
    const tokens = held ? Math.min(this.perMinute, held.tokens + (now - held.at) * perMs) : this.perMinute;
    if (tokens < 1) {
      const retryAfter = Math.max(1, Math.ceil((1 - tokens) / perMs / 1_000));
      this.buckets.set(user, { tokens, at: now });
      return appError('ERR_WRITE_RATE', [user, this.perMinute, retryAfter], { retryAfter });
    }
    if (!held && this.buckets.size >= WRITE_RATE_USERS_KEPT) this.forgetFull(now);
    this.buckets.set(user, { tokens: tokens - 1, at: now });
    return null;
  }

  /** forgetFull drops the buckets that have refilled (their users may write a minute's worth again anyway). */
  private forgetFull(now: number): void {
    const perMs = this.perMinute / 60_000;
    for (const [user, b] of this.buckets) if (b.tokens + (now - b.at) * perMs >= this.perMinute) this.buckets.delete(user);
    // All still spending: the oldest go (Map keeps insertion order), which can only let them write sooner.
    for (const user of this.buckets.keys()) {
      if (this.buckets.size < WRITE_RATE_USERS_KEPT) break;
      this.buckets.delete(user);
    }
  }
}

/**
 * HostHealth remembers which etcd members just failed to answer, so that calls go to the others.
 *
 * etcd3 spreads calls over every member in a random order and moves on to the next member only
 * when one refuses the connection. A member cut off by the network (its machine unplugged, a
 * partition) refuses nothing: a call sent to it waits for its whole deadline, and so does one
 * in three of every later call with three members, while the other two would answer at once.
 * A member that failed a call is therefore skipped ("suspect") until it answers a probe again,
 * as long as some member is not suspect; when every member is suspect all are tried, as before,
 * so a store that is down for everyone behaves as it did without this.
 */
export class HostHealth {
  private readonly suspects = new Set<string>();

  /** hosts are the client URLs of every member, in the store URL's order. */
  constructor(readonly hosts: readonly string[]) {}

  /** usable says whether a call may go to `host`: it is not suspect, or every member is. */
  usable(host: string): boolean {
    return !this.suspects.has(host) || this.suspects.size >= this.hosts.length;
  }

  /** failed marks `host` suspect after a call it did not answer (deadline, connection lost). */
  failed(host: string): void {
    // With one member there is nothing else to try: never skip it.
    if (this.hosts.length > 1) this.suspects.add(host);
  }

  /** recovered clears `host` after it answered (a probe or a call). */
  recovered(host: string): void {
    this.suspects.delete(host);
  }

  /** suspect lists the members being skipped, for probes. */
  suspect(): string[] {
    return [...this.suspects];
  }
}

/**
 * MemberSkippedError is thrown instead of calling a suspect member. etcd3 then tries its next
 * member; when every member it tries in one pass was skipped (it draws them from shuffled rounds,
 * so a pass that starts mid-round can draw the suspect ones twice and miss the one that answers),
 * the call is tried again at once (retryAcrossMembers). A typed error, so etcd3 passes it on as is.
 */
export class MemberSkippedError extends Error {
  constructor(readonly host: string) {
    super(`etcd member ${host} skipped: it did not answer recently`);
    this.name = 'MemberSkippedError';
  }
}

/** RetryOptions bound retryAcrossMembers. */
export interface RetryOptions {
  /** maxTries is how many attempts that reached a member may fail before the call fails. */
  readonly maxTries: number;
  /** timeoutMs is the call's whole budget: no retry starts after it. */
  readonly timeoutMs: number;
  /** recoverable says whether a failed attempt may be tried again (etcd3's isRecoverableError). */
  readonly recoverable: (err: unknown) => boolean;
  readonly sleep: (ms: number) => Promise<unknown>;
  readonly now?: () => number;
}

/** SKIPPED_PASSES_MAX bounds the passes of one call that found every member skipped: two in a row always reach a usable one. */
const SKIPPED_PASSES_MAX = 4;

/**
 * retryAcrossMembers runs `fn` (one pass of etcd3 over the members) until it succeeds, fails in a
 * way not worth retrying, or the budget is spent. A failure that reached a member (refused, timed
 * out, leader changed) is retried after a growing pause, at most `maxTries` times. A pass in which
 * every member was skipped reached nobody: it is retried at once, as long as another pass can
 * draw a member not skipped, since some member is always usable (HostHealth.usable).
 */
export async function retryAcrossMembers<T>(fn: () => PromiseLike<T> | T, opts: RetryOptions): Promise<T> {
  const now = opts.now ?? Date.now;
  const start = now();
  let attempt = 0;
  let skippedPasses = 0;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (now() - start >= opts.timeoutMs) throw err;
      if (err instanceof MemberSkippedError) {
        // Counted over the whole call, not only in a row: stricter, and enough.
        if (++skippedPasses > SKIPPED_PASSES_MAX) throw err;
        continue;
      }
      attempt++;
      if (!opts.recoverable(err) || attempt >= opts.maxTries) throw err;
      await opts.sleep(Math.min(50 * 2 ** (attempt - 1), 500));
    }
  }
}

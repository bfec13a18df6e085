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

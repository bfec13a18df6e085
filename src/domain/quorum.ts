import { badRequest } from './errors.js';

/** defaultWriteQuorum is the majority of a replica set: floor(R/2)+1 (2 of 2, 2 of 3, 3 of 5, 4 of 6). */
export function defaultWriteQuorum(replicas: number): number {
  if (!Number.isInteger(replicas) || replicas < 1) throw new RangeError(`replica count must be >= 1, got ${replicas}`);
  return Math.floor(replicas / 2) + 1;
}

/**
 * effectiveWriteQuorum is the W used for one repo: the configured W capped at the replica count,
 * or the majority when none is configured.
 */
export function effectiveWriteQuorum(replicas: number, configured: number | undefined): number {
  if (configured === undefined) return defaultWriteQuorum(replicas);
  return Math.min(configured, replicas);
}

/** isBelowMajority says whether W is an explicit, unsafe setting that acknowledges with fewer than a majority. */
export function isBelowMajority(writeQuorum: number, replicas: number): boolean {
  return writeQuorum < defaultWriteQuorum(replicas);
}

/** parseWriteQuorum validates a `--write-quorum` value. */
export function parseWriteQuorum(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw badRequest(`write quorum must be an integer >= 1, got '${value}'`);
  return n;
}

/** quorumMessage is the one line a rejected push prints for each ref. */
export function quorumMessage(prepared: number, total: number, required: number): string {
  return `replication quorum not reached: ${prepared} of ${total} replicas prepared, ${required} required`;
}

/**
 * The replication protocol's version: what peers must agree on to run a transaction together
 * (the prepare/commit/abort messages, their signatures, the hop tokens). Each node registers
 * the range it speaks; a caller uses the highest version both speak and names it in every peer
 * call; a receiver refuses (426) a version outside its range. A rolling upgrade that changes the
 * protocol ships a build that speaks old and new (`2-3`), rolls it out node by node, then drops
 * the old one.
 */

/** ProtocolRange is the versions a node speaks, both ends included. */
export interface ProtocolRange {
  readonly min: number;
  readonly max: number;
}

/**
 * PROTOCOL is what this build speaks. 2: peer signatures bound to the receiver and the body.
 * 3: a push's pack may be shipped ahead of its prepare (`/replicate/stage`, `staged_packs`),
 * and one transaction may carry the pushes of a group, each with its own pack.
 */
export const PROTOCOL: ProtocolRange = { min: 2, max: 3 };

/** PROTOCOL_HEADER names the version of a peer call. */
export const PROTOCOL_HEADER = 'x-replication-protocol';

/**
 * protocolFromEnv reads GIT_REPLICATION_PROTOCOL (`3` or `2-3`): a test hook that makes this
 * build claim another range, to rehearse a rolling upgrade with one build. Unset: PROTOCOL.
 */
export function protocolFromEnv(value: string | undefined): ProtocolRange {
  if (value === undefined || value === '') return PROTOCOL;
  const m = /^(\d{1,4})(?:-(\d{1,4}))?$/.exec(value.trim());
  if (!m) throw new Error(`GIT_REPLICATION_PROTOCOL must be N or N-M, got '${value}'`);
  const min = Number(m[1]);
  const max = Number(m[2] ?? m[1]);
  if (max < min) throw new Error(`GIT_REPLICATION_PROTOCOL: ${max} < ${min}`);
  return { min, max };
}

/** common is the highest version two ranges share, or null. A peer that registered none speaks protocol 1. */
export function common(a: ProtocolRange, b: ProtocolRange | undefined): number | null {
  const other = b ?? { min: 1, max: 1 };
  const v = Math.min(a.max, other.max);
  return v >= Math.max(a.min, other.min) ? v : null;
}

/** formatRange renders a range for messages: `2` or `2-3`. */
export function formatRange(r: ProtocolRange | undefined): string {
  if (!r) return '1';
  return r.min === r.max ? String(r.min) : `${r.min}-${r.max}`;
}

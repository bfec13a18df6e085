import type { RefUpdate } from './ref-name.js';
import { createHash } from 'node:crypto';

/** EMPTY_CHECKSUM is the checksum of a replica with no refs and no HEAD. */
export const EMPTY_CHECKSUM = '0'.repeat(64);

/** RefEntry is one ref of a replica. */
export interface RefEntry {
  readonly name: string;
  readonly oid: string;
}

function digest(line: string): Buffer {
  return createHash('sha256').update(line).digest();
}

function xorInto(acc: Buffer, other: Buffer): void {
  for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] ?? 0) ^ (other[i] ?? 0);
}

/** refTerm is the contribution of one ref to a checksum. */
function refTerm(name: string, oid: string): Buffer {
  return digest(`${oid} ${name}`);
}

/** headTerm is the contribution of HEAD's symbolic target. */
function headTerm(target: string): Buffer {
  return digest(`ref: ${target} HEAD`);
}

/**
 * replicaChecksum is the digest of a replica's refs (DESIGN §2): XOR over SHA-256 of
 * `"<oid> <refname>"` for every ref, plus HEAD's target. XOR makes it order-free and lets a
 * transaction's effect be applied incrementally (applyUpdatesToChecksum).
 */
export function replicaChecksum(refs: Iterable<RefEntry>, headTarget: string | null): string {
  const acc = Buffer.alloc(32);
  for (const ref of refs) xorInto(acc, refTerm(ref.name, ref.oid));
  if (headTarget !== null) xorInto(acc, headTerm(headTarget));
  return acc.toString('hex');
}

const ZERO = /^0+$/;

/** applyUpdatesToChecksum returns the checksum after the updates, from the checksum before them. */
export function applyUpdatesToChecksum(checksum: string, updates: Iterable<RefUpdate>): string {
  const acc = Buffer.from(checksum, 'hex');
  for (const u of updates) {
    if (!ZERO.test(u.oldOid)) xorInto(acc, refTerm(u.ref, u.oldOid));
    if (!ZERO.test(u.newOid)) xorInto(acc, refTerm(u.ref, u.newOid));
  }
  return acc.toString('hex');
}

/** withHead returns the checksum with HEAD's target changed from `from` to `to` (null: none). */
export function withHead(checksum: string, from: string | null, to: string | null): string {
  const acc = Buffer.from(checksum, 'hex');
  if (from !== null) xorInto(acc, headTerm(from));
  if (to !== null) xorInto(acc, headTerm(to));
  return acc.toString('hex');
}

/** headChecksum is the checksum of a fresh repo: no refs, HEAD pointing at `target`. */
export function headChecksum(target: string): string {
  return replicaChecksum([], target);
}

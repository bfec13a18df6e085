import { createHmac, timingSafeEqual } from 'node:crypto';
import { parseRepoId, type RepoId } from '../domain/repo-id.js';

/** LFS_TICKET_PREFIX starts an LFS ticket (a stored token never does: those start `grt_`). */
export const LFS_TICKET_PREFIX = 'lfs1.';

/** LFS_TICKET_MS is how long a ticket `git-lfs-authenticate` gives is good for (git-lfs asks again past `expires_in`). */
export const LFS_TICKET_MS = 10 * 60_000;

/** LfsTicket is what a ticket vouches for: a user's access to one repository's LFS API, capped at `need`, until `expiresAt`. */
export interface LfsTicket {
  readonly user: string;
  readonly repoId: RepoId;
  readonly need: 'read' | 'write';
  /** keyName names the SSH key the user signed in with (audit, logs). */
  readonly keyName: string;
  /** expiresAt is epoch ms. */
  readonly expiresAt: number;
}

function keyOf(secret: string): Buffer {
  return createHmac('sha256', secret).update('git-replication lfs ticket v1').digest();
}

function mac(secret: string, payload: string): Buffer {
  return createHmac('sha256', keyOf(secret)).update(payload).digest();
}

/**
 * signLfsTicket makes the credential `git-lfs-authenticate` hands a user signed in over SSH: the
 * HTTP LFS API of one repository, at the access the SSH session was allowed, for LFS_TICKET_MS,
 * signed with the cluster's secret (any node checks it, none stores it).
 */
export function signLfsTicket(secret: string, t: LfsTicket): string {
  const payload = Buffer.from(JSON.stringify({ u: t.user, r: t.repoId, n: t.need, k: t.keyName, x: t.expiresAt })).toString('base64url');
  return `${LFS_TICKET_PREFIX}${payload}.${mac(secret, payload).toString('base64url')}`;
}

/**
 * verifyLfsTicket reads a ticket back: null when it is not one signed with `secret` (forged,
 * altered, garbled); `expired` when it was, but its time is over.
 */
export function verifyLfsTicket(secret: string, token: string, now = Date.now()): LfsTicket | 'expired' | null {
  if (!token.startsWith(LFS_TICKET_PREFIX) || token.length > 2048) return null;
  const [payload, sig, ...rest] = token.slice(LFS_TICKET_PREFIX.length).split('.');
  if (!payload || !sig || rest.length > 0) return null;
  // Compared as text: base64url's last digit carries spare bits, and another digit there decodes to the same bytes.
  const want = Buffer.from(mac(secret, payload).toString('base64url'));
  const got = Buffer.from(sig);
  if (got.length !== want.length || !timingSafeEqual(got, want)) return null;
  let p: { u?: unknown; r?: unknown; n?: unknown; k?: unknown; x?: unknown };
  try {
    p = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as typeof p;
  } catch {
    return null;
  }
  if (typeof p.u !== 'string' || typeof p.r !== 'string' || (p.n !== 'read' && p.n !== 'write') || typeof p.k !== 'string') return null;
  if (typeof p.x !== 'number' || !Number.isSafeInteger(p.x)) return null;
  let repoId: RepoId;
  try {
    repoId = parseRepoId(p.r);
  } catch {
    return null;
  }
  if (p.x <= now) return 'expired';
  return { user: p.u, repoId, need: p.n, keyName: p.k, expiresAt: p.x };
}

import { describe, expect, it } from 'vitest';
import type { RepoId } from '../domain/repo-id.js';
import { LFS_TICKET_PREFIX, signLfsTicket, verifyLfsTicket, type LfsTicket } from './lfs-ticket.js';

const SECRET = 'a'.repeat(64);
const T: LfsTicket = { user: 'bob', repoId: 'alice/media' as RepoId, need: 'read', keyName: 'laptop', expiresAt: 2_000_000_000_000 };

describe('LFS tickets', () => {
  it('reads back what was signed, until it expires', () => {
    const ticket = signLfsTicket(SECRET, T);
    expect(ticket.startsWith(LFS_TICKET_PREFIX)).toBe(true);
    expect(verifyLfsTicket(SECRET, ticket, T.expiresAt - 1)).toEqual(T);
    expect(verifyLfsTicket(SECRET, ticket, T.expiresAt)).toBe('expired');
  });

  it('is nothing when signed with another secret, altered, or not a ticket', () => {
    const ticket = signLfsTicket(SECRET, T);
    const [payload, sig] = ticket.slice(LFS_TICKET_PREFIX.length).split('.') as [string, string];
    const altered = Buffer.from(Buffer.from(payload, 'base64url').toString().replace('bob', 'eve')).toString('base64url');
    expect(verifyLfsTicket('b'.repeat(64), ticket, 0)).toBeNull();
    expect(verifyLfsTicket(SECRET, `${LFS_TICKET_PREFIX}${altered}.${sig}`, 0)).toBeNull();
    // Every other last digit, including those that decode to the same bytes.
    for (const d of 'AQgw')
      if (!sig.endsWith(d)) expect(verifyLfsTicket(SECRET, `${LFS_TICKET_PREFIX}${payload}.${sig.slice(0, -1)}${d}`, 0)).toBeNull();
    expect(verifyLfsTicket(SECRET, `${ticket}.x`, 0)).toBeNull();
    expect(verifyLfsTicket(SECRET, 'grt_abc', 0)).toBeNull();
    expect(verifyLfsTicket(SECRET, `${LFS_TICKET_PREFIX}${'x'.repeat(3000)}`, 0)).toBeNull();
  });

  it('is nothing when what it names is not valid, though signed', () => {
    expect(verifyLfsTicket(SECRET, signLfsTicket(SECRET, { ...T, repoId: '../etc' as RepoId }), 0)).toBeNull();
    expect(verifyLfsTicket(SECRET, signLfsTicket(SECRET, { ...T, need: 'admin' as unknown as 'read' }), 0)).toBeNull();
  });
});

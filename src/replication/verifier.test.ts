import { describe, expect, it } from 'vitest';
import type { RepoRecord } from '../store/types.js';
import { pickForVerification, verifiedKey, type Verified } from './verifier.js';

function repo(i: number, generation = 0): RepoRecord {
  return { repoId: `o/r${i}`, incarnation: `inc-${i}`, replicas: ['n1'], generation, checksum: 'c', createdAt: '2026-01-01T00:00:00.000Z' };
}

describe('pickForVerification', () => {
  const repos = Array.from({ length: 1000 }, (_, i) => repo(i));

  it('checks every replica never checked (after a start)', () => {
    expect(pickForVerification(repos, new Map())).toHaveLength(1000);
  });

  it('checks what changed, and of the unchanged the longest unchecked, within the sweep', () => {
    const seen = new Map<string, Verified>(repos.map((r, i) => [r.repoId, { key: verifiedKey(r), at: 10_000 - i }]));
    const moved = [repo(3, 1), repo(500, 2)];
    const now = repos.map((r) => moved.find((m) => m.repoId === r.repoId) ?? r);
    const picked = pickForVerification(now, seen, 100, 4).map((r) => r.repoId);
    // 998 unchanged over 100 passes: 10 a pass, the oldest checks first (the highest index here).
    expect(picked).toEqual(['o/r3', 'o/r500', ...Array.from({ length: 10 }, (_, k) => `o/r${999 - k}`)]);
  });

  it('re-checks at least the minimum, and all of a small set in one pass', () => {
    const few = repos.slice(0, 10);
    const seen = new Map<string, Verified>(few.map((r) => [r.repoId, { key: verifiedKey(r), at: 1 }]));
    expect(pickForVerification(few, seen, 288, 16)).toHaveLength(10);
    const all = new Map<string, Verified>(repos.map((r) => [r.repoId, { key: verifiedKey(r), at: 1 }]));
    expect(pickForVerification(repos, all, 288, 16)).toHaveLength(16);
  });

  it('treats a re-created repo (another incarnation) as changed', () => {
    const seen = new Map<string, Verified>([['o/r1', { key: verifiedKey(repo(1)), at: 1 }]]);
    const again = { ...repo(1), incarnation: 'inc-new' };
    expect(pickForVerification([again], seen, 288, 0).map((r) => r.incarnation)).toEqual(['inc-new']);
  });
});

import { describe, expect, it } from 'vitest';
import { applyUpdatesToChecksum, EMPTY_CHECKSUM, headChecksum, replicaChecksum } from './checksum.js';
import { placeReplicas } from './placement.js';
import { defaultWriteQuorum, effectiveWriteQuorum, isBelowMajority, parseWriteQuorum, quorumMessage } from './quorum.js';
import { refConflict, refDirectories, refNameProblem } from './ref-name.js';
import { parseRepoId, repoIdFromUrl } from './repo-id.js';

describe('parseRepoId', () => {
  it.each(['acme/widgets', 'a/b', 'A1/b.c-d_e', `${'o'.repeat(100)}/${'n'.repeat(100)}`])('accepts %s', (id) => {
    expect(parseRepoId(id)).toBe(id);
  });
  it.each([
    ['../etc'],
    ['a/b/c'],
    ['a'],
    [''],
    ['/b'],
    ['a/'],
    ['.a/b'],
    ['a/.b'],
    ['-a/b'],
    ['a/b..c'],
    ['a/b.git'],
    ['a/b.lock'],
    [`a/${'x'.repeat(101)}`],
    ['a b/c'],
    ['a/b\n'],
    ['a/b%2f'],
    ['ä/b'],
    ['admin/x'],
    ['Admin/x'],
    ['repos/x'],
    ['replicate/x'],
    ['health/x'],
    ['metrics/x'],
    ['ready/x'],
  ])('refuses %j with a 400', (id) => {
    expect(() => parseRepoId(id)).toThrow(expect.objectContaining({ statusCode: 400 }));
  });
  it('refuses non-strings', () => {
    expect(() => parseRepoId(42)).toThrow(/repo_id must be a string/);
  });
  it('takes URL segments with or without .git', () => {
    expect(repoIdFromUrl('acme', 'widgets.git')).toBe('acme/widgets');
    expect(repoIdFromUrl('acme', 'widgets')).toBe('acme/widgets');
  });
});

describe('quorum math', () => {
  it.each([
    [1, 1],
    [2, 2],
    [3, 2],
    [4, 3],
    [5, 3],
    [6, 4],
  ])('majority of %i is %i', (r, w) => {
    expect(defaultWriteQuorum(r)).toBe(w);
  });
  it('configured W is capped by the replica count', () => {
    expect(effectiveWriteQuorum(3, 5)).toBe(3);
    expect(effectiveWriteQuorum(6, 3)).toBe(3);
    expect(effectiveWriteQuorum(3, undefined)).toBe(2);
  });
  it('flags W below a majority', () => {
    expect(isBelowMajority(1, 2)).toBe(true);
    expect(isBelowMajority(3, 6)).toBe(true);
    expect(isBelowMajority(2, 3)).toBe(false);
  });
  it('parses --write-quorum', () => {
    expect(parseWriteQuorum(undefined)).toBeUndefined();
    expect(parseWriteQuorum('3')).toBe(3);
    expect(() => parseWriteQuorum('0')).toThrow();
    expect(() => parseWriteQuorum('two')).toThrow();
  });
  it('prints the one-line refusal', () => {
    expect(quorumMessage(1, 3, 2)).toBe('replication quorum not reached: 1 of 3 replicas prepared, 2 required');
  });
});

describe('refNameProblem (git check-ref-format)', () => {
  it.each(['refs/heads/main', 'refs/tags/v1.0', 'refs/heads/feature/x-y_z', 'refs/notes/commits'])('accepts %s', (r) => {
    expect(refNameProblem(r)).toBeNull();
  });
  it.each([
    'HEAD',
    'main',
    'refs/heads/a..b',
    'refs/heads/a.lock',
    'refs/heads/.hidden',
    'refs/heads/a b',
    'refs/heads/a~1',
    'refs/heads/a^',
    'refs/heads/a:b',
    'refs/heads/a?',
    'refs/heads/a*',
    'refs/heads/a[',
    'refs/heads/a\\b',
    'refs/heads//a',
    'refs/heads/a/',
    'refs/heads/a.',
    'refs/heads/a@{1}',
    'refs/heads/\u0001',
  ])('refuses %j as a funny refname', (r) => {
    expect(refNameProblem(r)).toBe('funny refname');
  });
});

describe('refConflict (a ref cannot also be a directory)', () => {
  const refs = new Set(['refs/heads/main', 'refs/heads/feature/a', 'refs/tags/v1']);
  const dirs = refDirectories(refs);
  it.each([
    ['refs/heads/main/sub', "cannot lock ref 'refs/heads/main/sub': 'refs/heads/main' exists; cannot create 'refs/heads/main/sub'"],
    ['refs/heads/feature', "cannot lock ref 'refs/heads/feature': there is a ref below it; cannot create 'refs/heads/feature'"],
    ['refs/heads/main/a/b', "cannot lock ref 'refs/heads/main/a/b': 'refs/heads/main' exists; cannot create 'refs/heads/main/a/b'"],
    ['refs/heads/mainline', null],
    ['refs/heads/feature/b', null],
    ['refs/tags/v1.1', null],
  ])('%s', (ref, expected) => {
    expect(refConflict(ref, refs, dirs)).toBe(expected);
  });
});

describe('replica checksum', () => {
  const a = { name: 'refs/heads/main', oid: '1'.repeat(40) };
  const b = { name: 'refs/tags/v1', oid: '2'.repeat(40) };
  it('is order-free and depends on HEAD', () => {
    expect(replicaChecksum([a, b], 'refs/heads/main')).toBe(replicaChecksum([b, a], 'refs/heads/main'));
    expect(replicaChecksum([a, b], 'refs/heads/main')).not.toBe(replicaChecksum([a, b], 'refs/heads/dev'));
    expect(replicaChecksum([], null)).toBe(EMPTY_CHECKSUM);
  });
  it('can be updated incrementally: create, update, delete', () => {
    const start = headChecksum('refs/heads/main');
    const zero = '0'.repeat(40);
    const created = applyUpdatesToChecksum(start, [
      { ref: a.name, oldOid: zero, newOid: a.oid },
      { ref: b.name, oldOid: zero, newOid: b.oid },
    ]);
    expect(created).toBe(replicaChecksum([a, b], 'refs/heads/main'));
    const moved = applyUpdatesToChecksum(created, [{ ref: a.name, oldOid: a.oid, newOid: '3'.repeat(40) }]);
    expect(moved).toBe(replicaChecksum([{ name: a.name, oid: '3'.repeat(40) }, b], 'refs/heads/main'));
    const deleted = applyUpdatesToChecksum(moved, [{ ref: b.name, oldOid: b.oid, newOid: zero }]);
    expect(deleted).toBe(replicaChecksum([{ name: a.name, oid: '3'.repeat(40) }], 'refs/heads/main'));
  });
});

describe('placeReplicas (rendezvous hashing)', () => {
  const nodes = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6'];
  it('picks R distinct nodes, deterministically', () => {
    const p = placeReplicas('acme/x', nodes, 3);
    expect(new Set(p).size).toBe(3);
    expect(placeReplicas('acme/x', [...nodes].reverse(), 3)).toEqual(p);
  });
  it('spreads repos over all nodes', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 300; i++) for (const n of placeReplicas(`o/r${i}`, nodes, 3)) counts.set(n, (counts.get(n) ?? 0) + 1);
    for (const n of nodes) expect(counts.get(n)).toBeGreaterThan(100);
  });
  it('removing a node only moves the repos that were on it', () => {
    for (let i = 0; i < 100; i++) {
      const before = placeReplicas(`o/r${i}`, nodes, 3);
      const after = placeReplicas(
        `o/r${i}`,
        nodes.filter((n) => n !== 'node-4'),
        3,
      );
      if (!before.includes('node-4')) expect(after).toEqual(before);
      else expect(after.filter((n) => before.includes(n))).toHaveLength(2);
    }
  });
});

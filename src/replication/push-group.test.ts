import { describe, expect, it } from 'vitest';
import { ZERO_OID } from '../domain/ref-name.js';
import { refKey, type PushCommand } from '../git/proc-receive.js';
import { mergeGroup, type GroupMember } from './push-group.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);
const D = 'd'.repeat(40);

function cmd(ref: string, oldOid: string, newOid: string): PushCommand {
  const raw = Buffer.from(`${oldOid} ${newOid} ${ref}`);
  return { ref, oldOid, newOid, raw, utf8: true, key: refKey(ref) };
}

/** member is a push of `commands`; its refusals land in `refusals`. */
function member(commands: PushCommand[], atomic = false): GroupMember & { refusals: Map<string, string> } {
  const refusals = new Map<string, string>();
  return {
    commands,
    atomic,
    refusals,
    fail: (key, reason) => {
      refusals.set(key, reason);
    },
    refused: () => refusals.size > 0,
  };
}

describe('mergeGroup', () => {
  const current = new Map([['refs/heads/main', A]]);

  it('pushes of different branches all apply, in one net update each', () => {
    const one = member([cmd('refs/heads/one', ZERO_OID, B)]);
    const two = member([cmd('refs/heads/two', ZERO_OID, C)]);
    const g = mergeGroup(current, 'refs/heads/main', [one, two]);
    expect(g.batches.map((b) => b.length)).toEqual([1, 1]);
    expect(g.net).toEqual([
      { ref: 'refs/heads/one', oldOid: ZERO_OID, newOid: B },
      { ref: 'refs/heads/two', oldOid: ZERO_OID, newOid: C },
    ]);
    expect(one.refusals.size + two.refusals.size).toBe(0);
  });

  it('a second push of the same branch that builds on the first applies; the net update spans both', () => {
    const first = member([cmd('refs/heads/main', A, B)]);
    const second = member([cmd('refs/heads/main', B, C)]);
    const g = mergeGroup(current, 'refs/heads/main', [first, second]);
    expect(g.batches.map((b) => b.length)).toEqual([1, 1]);
    expect(g.net).toEqual([{ ref: 'refs/heads/main', oldOid: A, newOid: C }]);
  });

  it('a second push of the same branch from the old tip gets "fetch first", as if it came after the first', () => {
    const first = member([cmd('refs/heads/main', A, B)]);
    const second = member([cmd('refs/heads/main', A, D)]);
    const g = mergeGroup(current, 'refs/heads/main', [first, second]);
    expect(g.batches.map((b) => b.length)).toEqual([1, 0]);
    expect(second.refusals.get(refKey('refs/heads/main'))).toBe('fetch first');
    expect(g.net).toEqual([{ ref: 'refs/heads/main', oldOid: A, newOid: B }]);
  });

  it('an atomic push with one refused ref applies nothing; a plain one applies the rest', () => {
    const taken = member([cmd('refs/heads/x', ZERO_OID, B)]);
    const atomic = member([cmd('refs/heads/x', ZERO_OID, C), cmd('refs/heads/y', ZERO_OID, C)], true);
    const plain = member([cmd('refs/heads/x', ZERO_OID, D), cmd('refs/heads/z', ZERO_OID, D)]);
    const g = mergeGroup(current, 'refs/heads/main', [taken, atomic, plain]);
    expect(g.batches.map((b) => b.map((u) => u.ref))).toEqual([['refs/heads/x'], [], ['refs/heads/z']]);
    expect(atomic.refusals.get(refKey('refs/heads/x'))).toBe('already exists');
    expect(plain.refusals.get(refKey('refs/heads/x'))).toBe('already exists');
    expect(g.net.map((u) => u.ref)).toEqual(['refs/heads/x', 'refs/heads/z']);
  });

  it('a branch created by one push and deleted by the next changes nothing', () => {
    const create = member([cmd('refs/heads/tmp', ZERO_OID, B)]);
    const remove = member([cmd('refs/heads/tmp', B, ZERO_OID)]);
    const g = mergeGroup(current, 'refs/heads/main', [create, remove]);
    expect(g.batches.map((b) => b.length)).toEqual([1, 1]);
    expect(g.net).toEqual([]);
  });

  it('a directory/file clash with a ref an earlier push of the group created is refused', () => {
    const file = member([cmd('refs/heads/feature', ZERO_OID, B)]);
    const dir = member([cmd('refs/heads/feature/x', ZERO_OID, C)]);
    const g = mergeGroup(current, 'refs/heads/main', [file, dir]);
    expect(g.batches.map((b) => b.length)).toEqual([1, 0]);
    expect(dir.refusals.get(refKey('refs/heads/feature/x'))).toMatch(/refs\/heads\/feature/);
  });
});

import { describe, expect, it } from 'vitest';
import { phasesBetween, refsField, refusedField, REFS_LOGGED } from './push-log.js';

describe('refsField', () => {
  it.each([
    [0, 0],
    [1, 1],
    [REFS_LOGGED, REFS_LOGGED],
    [REFS_LOGGED + 2, REFS_LOGGED],
    [5000, REFS_LOGGED],
  ])('%d refs: %d names, every ref counted', (n, named) => {
    const refs = Array.from({ length: n }, (_, i) => `refs/heads/b${i}`);
    const f = refsField(refs);
    expect(f.refs).toEqual(refs.slice(0, named));
    expect(f.refCount).toBe(n);
  });
});

describe('phasesBetween', () => {
  it('a committed transaction: prepare, decision and commit add up to the total', () => {
    expect(phasesBetween({ started: 1000, prepared: 1040, decided: 1043, done: 1060 })).toEqual({
      ms: 60,
      prepareMs: 40,
      decideMs: 3,
      commitMs: 17,
    });
  });
  it('an abort before any decision has the prepare phase only', () => {
    expect(phasesBetween({ started: 1000, prepared: 1900, done: 1905 })).toEqual({ ms: 905, prepareMs: 900 });
  });
});

describe('refusedField', () => {
  it('names the refused refs and each reason once; accepted refs are left out', () => {
    const f = refusedField([
      { ref: 'refs/heads/main', result: { ok: false, reason: 'fetch first' } },
      { ref: 'refs/heads/ok', result: undefined },
      { ref: 'refs/heads/x', result: { ok: true } },
      { ref: 'refs/heads/dev', result: { ok: false, reason: 'fetch first' } },
      { ref: 'refs/tags/v1', result: { ok: false, reason: 'already exists' } },
    ]);
    expect(f).toEqual({
      refs: ['refs/heads/main', 'refs/heads/dev', 'refs/tags/v1'],
      refCount: 3,
      reasons: ['fetch first', 'already exists'],
    });
  });
  it('is null when nothing was refused', () => {
    expect(refusedField([{ ref: 'refs/heads/main', result: undefined }])).toBeNull();
  });
});

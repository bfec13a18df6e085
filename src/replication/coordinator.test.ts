import { describe, expect, it } from 'vitest';
import { pickDefaultBranch } from './coordinator.js';

const Z = '0'.repeat(40);
const A = 'a'.repeat(40);
const create = (ref: string): { ref: string; oldOid: string; newOid: string } => ({ ref, oldOid: Z, newOid: A });

describe('pickDefaultBranch', () => {
  const none = new Map<string, string>();
  it.each<[string, string | null, ReadonlyMap<string, string>, string[], string | null]>([
    ['HEAD names an existing branch', 'refs/heads/main', new Map([['refs/heads/main', A]]), ['refs/heads/x'], null],
    ['the push creates HEAD\'s branch', 'refs/heads/main', none, ['refs/heads/x', 'refs/heads/main'], null],
    ['unborn HEAD, master pushed', 'refs/heads/main', none, ['refs/heads/master'], 'refs/heads/master'],
    ['unborn HEAD, main wins over master', 'refs/heads/trunk', none, ['refs/heads/master', 'refs/heads/main'], 'refs/heads/main'],
    ['unborn HEAD, master wins over others', 'refs/heads/main', none, ['refs/heads/dev', 'refs/heads/master'], 'refs/heads/master'],
    ['unborn HEAD, else the first branch', 'refs/heads/main', none, ['refs/heads/dev', 'refs/heads/rel'], 'refs/heads/dev'],
    ['only tags', 'refs/heads/main', none, ['refs/tags/v1'], null],
    ['detached or missing HEAD', null, none, ['refs/heads/dev'], 'refs/heads/dev'],
  ])('%s', (_n, head, current, refs, expected) => {
    expect(pickDefaultBranch(head, current, refs.map(create))).toBe(expected);
  });
  it('ignores deletes', () => {
    expect(pickDefaultBranch('refs/heads/main', none, [{ ref: 'refs/heads/x', oldOid: A, newOid: Z }])).toBeNull();
  });
});

import { describe, expect, it } from 'vitest';
import { check, formatResult, linearizable, type ViolationKind } from './checker.js';
import { ZERO, type FinalState, type Op, type Outcome, type PushOp, type ReadOp, type ReplicaState } from './history.js';

const REPO = 'o/r';
const MAIN = 'refs/heads/main';
/** oid makes a readable fake object id: `c('a')` = 'aaaa…'. */
const c = (ch: string): string => ch.repeat(40);
const A = c('a');
const B = c('b');
const C = c('c');
const D = c('d');

let nextId = 1;
/** push is a CAS of MAIN (unless ref given) over [start, end]; ancestry: new's parent is old (ff). */
function push(
  client: string,
  oldOid: string,
  newOid: string,
  start: number,
  end: number,
  outcome: Outcome,
  more: Partial<PushOp> = {},
): PushOp {
  const ancestry: Record<string, string[]> = newOid === ZERO ? {} : { [newOid]: oldOid === ZERO ? [] : [oldOid] };
  return {
    kind: 'push',
    id: nextId++,
    client,
    repo: REPO,
    ref: MAIN,
    oldOid,
    newOid,
    force: false,
    ancestry,
    start,
    end,
    outcome,
    ...more,
  };
}
function read(client: string, value: string, start: number, end: number, ref = MAIN): ReadOp {
  return {
    kind: 'read',
    id: nextId++,
    client,
    repo: REPO,
    via: 'ls-remote',
    values: value === ZERO ? {} : { [ref]: value },
    complete: 'refs/heads/',
    start,
    end,
    outcome: 'ok',
  };
}

function replica(node: string, refs: Record<string, string>, more: Partial<ReplicaState> = {}): ReplicaState {
  const checksum = Object.entries(refs)
    .map(([k, v]) => `${k}=${v}`)
    .sort()
    .join(',');
  return { node, inSync: true, refs, checksum, fsckOk: true, lockFiles: [], ...more };
}
/** state is three identical, clean replicas holding `refs`. */
function state(refs: Record<string, string>, tweak: (r: ReplicaState[]) => ReplicaState[] = (r) => r): FinalState {
  return {
    repos: [
      {
        repo: REPO,
        converged: true,
        heldLock: null,
        replicas: tweak([replica('node-1', refs), replica('node-2', refs), replica('node-3', refs)]),
      },
    ],
  };
}

interface Case {
  name: string;
  history: Op[];
  final: FinalState;
  /** expect: 'pass', or the violation kinds that must be reported. */
  expect: 'pass' | ViolationKind[];
}

const cases: Case[] = [
  {
    name: 'sequential ff pushes and reads',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), read('c2', A, 11, 20), push('c2', A, B, 21, 30, 'ok'), read('c1', B, 31, 40)],
    final: state({ [MAIN]: B }),
    expect: 'pass',
  },
  {
    name: 'a lost acknowledged write',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'ok')],
    final: state({ [MAIN]: A }),
    expect: ['lost-write', 'not-linearizable'],
  },
  {
    name: 'an acknowledged delete that did not happen',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, ZERO, 20, 30, 'ok', { force: true })],
    final: state({ [MAIN]: A }),
    expect: ['not-linearizable'],
  },
  {
    name: 'a stale read after an acknowledged write',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'ok'), read('c2', A, 40, 50)],
    final: state({ [MAIN]: B }),
    expect: ['not-linearizable'],
  },
  {
    name: 'a stale read through a node cut off from the store (allowed by design)',
    history: [
      push('c1', ZERO, A, 0, 10, 'ok'),
      push('c1', A, B, 20, 30, 'ok'),
      { ...read('c2', A, 40, 50), mayBeStale: 'store unreachable from node-2' },
    ],
    final: state({ [MAIN]: B }),
    expect: 'pass',
  },
  {
    name: 'a read allowed to be stale that sees a value nobody wrote',
    history: [
      push('c1', ZERO, A, 0, 10, 'ok'),
      push('c1', A, B, 20, 30, 'failed'),
      { ...read('c2', B, 40, 50), mayBeStale: 'store unreachable from node-2' },
    ],
    final: state({ [MAIN]: A }),
    expect: ['phantom-read'],
  },
  {
    name: 'reads going backwards (non-monotonic) while a push is in flight',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 100, 'ok'), read('c2', B, 30, 40), read('c3', A, 50, 60)],
    final: state({ [MAIN]: B }),
    expect: ['not-linearizable'],
  },
  {
    name: 'two ok CAS from the same old value both succeeding',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 40, 'ok'), push('c2', A, C, 25, 45, 'ok'), read('c3', C, 50, 60)],
    final: state({ [MAIN]: C }),
    expect: ['not-linearizable', 'lost-write'],
  },
  {
    name: 'an unknown push that did happen',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'unknown'), read('c2', B, 40, 50)],
    final: state({ [MAIN]: B }),
    expect: 'pass',
  },
  {
    name: 'an unknown push that did not happen',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'unknown'), read('c2', A, 40, 50)],
    final: state({ [MAIN]: A }),
    expect: 'pass',
  },
  {
    name: 'an unknown push that took effect long after its client gave up (in-doubt, resolved later)',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'unknown'), read('c2', A, 40, 50), read('c2', B, 60, 70)],
    final: state({ [MAIN]: B }),
    expect: 'pass',
  },
  {
    name: 'an unknown push cannot take effect before it started',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), read('c2', B, 20, 30), push('c1', A, B, 40, 50, 'unknown')],
    final: state({ [MAIN]: B }),
    expect: ['not-linearizable'],
  },
  {
    name: 'a failed push never takes effect',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c2', A, B, 20, 30, 'failed'), read('c3', B, 40, 50)],
    final: state({ [MAIN]: B }),
    expect: ['not-linearizable'],
  },
  {
    name: 'concurrent overlapping CAS, first then second',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 60, 'ok'), push('c2', B, C, 25, 70, 'ok')],
    final: state({ [MAIN]: C }),
    expect: 'pass',
  },
  {
    name: 'concurrent overlapping CAS, second then first',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c2', B, C, 20, 60, 'ok'), push('c1', A, B, 25, 70, 'ok')],
    final: state({ [MAIN]: C }),
    expect: 'pass',
  },
  {
    name: 'concurrent writes where the read sees either order',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 60, 'ok'), read('c2', A, 25, 30), read('c3', B, 35, 40)],
    final: state({ [MAIN]: B }),
    expect: 'pass',
  },
  {
    name: 'the loser of a race fails and the winner stays',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 40, 'ok'), push('c2', A, C, 21, 41, 'failed')],
    final: state({ [MAIN]: B }),
    expect: 'pass',
  },
  {
    name: 'a force push after an acknowledged push legitimately replaces it',
    history: [
      push('c1', ZERO, A, 0, 10, 'ok'),
      push('c1', A, B, 20, 30, 'ok'),
      push('c2', B, C, 40, 50, 'ok', { force: true, ancestry: { [C]: [A] } }),
    ],
    final: state({ [MAIN]: C }),
    expect: 'pass',
  },
  {
    name: 'a force push from a value that does not contain the acknowledged commit cannot excuse its loss',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'ok'), push('c2', A, C, 40, 50, 'ok', { force: true })],
    final: state({ [MAIN]: C }),
    expect: ['not-linearizable', 'lost-write'],
  },
  {
    name: 'a force push then fast-forwards: the acknowledged commit was dropped by the force push',
    history: [
      push('c1', ZERO, A, 0, 10, 'ok'),
      push('c1', A, B, 20, 30, 'ok'),
      push('c2', B, C, 40, 50, 'unknown', { force: true, ancestry: { [C]: [A] } }),
      push('c3', C, D, 60, 70, 'ok'),
    ],
    final: state({ [MAIN]: D }),
    expect: 'pass',
  },
  {
    name: 'a delete and re-create of a branch',
    history: [
      push('c1', ZERO, A, 0, 10, 'ok'),
      push('c1', A, ZERO, 20, 30, 'ok', { force: true }),
      read('c2', ZERO, 35, 38),
      push('c2', ZERO, D, 40, 50, 'ok'),
    ],
    final: state({ [MAIN]: D }),
    expect: 'pass',
  },
  {
    name: 'an acknowledged commit lost under a later fast-forward',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'ok'), push('c2', A, C, 40, 50, 'unknown')],
    final: state({ [MAIN]: C }),
    expect: ['not-linearizable', 'lost-write'],
  },
  {
    name: 'a divergent replica (checksums differ)',
    history: [push('c1', ZERO, A, 0, 10, 'ok'), push('c1', A, B, 20, 30, 'ok')],
    final: state({ [MAIN]: B }, (r) => [r[0]!, r[1]!, replica('node-3', { [MAIN]: A })]),
    expect: ['divergent-replicas'],
  },
  {
    name: 'a replica the store does not consider in sync',
    history: [push('c1', ZERO, A, 0, 10, 'ok')],
    final: state({ [MAIN]: A }, (r) => [r[0]!, r[1]!, { ...r[2]!, inSync: false }]),
    expect: ['not-converged'],
  },
  {
    name: 'a leftover .lock file',
    history: [push('c1', ZERO, A, 0, 10, 'ok')],
    final: state({ [MAIN]: A }, (r) => [r[0]!, { ...r[1]!, lockFiles: ['refs/heads/main.lock'] }, r[2]!]),
    expect: ['lock-file'],
  },
  {
    name: 'a write lock still held',
    history: [push('c1', ZERO, A, 0, 10, 'ok')],
    final: { repos: [{ ...state({ [MAIN]: A }).repos[0]!, heldLock: { holder: 'node-2', token: 7 } }] },
    expect: ['held-lock'],
  },
  {
    name: 'fsck errors',
    history: [push('c1', ZERO, A, 0, 10, 'ok')],
    final: state({ [MAIN]: A }, (r) => [{ ...r[0]!, fsckOk: false, fsckOutput: 'missing blob 1234' }, r[1]!, r[2]!]),
    expect: ['fsck'],
  },
  {
    name: 'a replica disagreeing with the store checksum',
    history: [push('c1', ZERO, A, 0, 10, 'ok')],
    final: { repos: [{ ...state({ [MAIN]: A }).repos[0]!, expectedChecksum: 'something-else' }] },
    expect: ['checksum-mismatch'],
  },
];

describe('history checker', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, tc) => {
    const r = check(tc.history, tc.final);
    if (tc.expect === 'pass') {
      expect(r.violations, formatResult(r)).toEqual([]);
      expect(r.ok).toBe(true);
    } else {
      expect(r.ok).toBe(false);
      expect([...new Set(r.violations.map((v) => v.kind))].sort()).toEqual([...tc.expect].sort());
    }
  });

  it('a phantom read names the push that carried the value, failed, or says none did', () => {
    const stale = { mayBeStale: 'store unreachable from node-2' };
    const failed = push('c1', A, B, 20, 30, 'failed');
    const saw = { ...read('c2', B, 40, 50), ...stale };
    const rejected = check([push('c1', ZERO, A, 0, 10, 'ok'), failed, saw], state({ [MAIN]: A }));
    const phantom = rejected.violations.find((v) => v.kind === 'phantom-read')!;
    expect(phantom.message).toContain(`pushes that carried it: [20..30ms] #${failed.id} c1 push`);
    expect(phantom.message).toMatch(/=> failed$/);
    expect(phantom.minimal?.map((o) => o.id)).toEqual([failed.id, saw.id]);
    const never = check([push('c1', ZERO, A, 0, 10, 'ok'), { ...read('c2', B, 40, 50), ...stale }], state({ [MAIN]: A }));
    expect(never.violations.find((v) => v.kind === 'phantom-read')!.message).toContain('no push of the history carried it');
  });

  it('reports leaked temporary files as a warning, not a violation', () => {
    const r = check(
      [push('c1', ZERO, A, 0, 10, 'ok')],
      state({ [MAIN]: A }, (x) => [{ ...x[0]!, tempFiles: ['objects/pack/tmp_pack_x'] }, x[1]!, x[2]!]),
    );
    expect(r.ok).toBe(true);
    expect(r.warnings).toHaveLength(1);
    expect(formatResult(r)).toContain('warning: o/r on node-1: leaked temporary files');
  });

  it('shrinks a failing history to the ops that show the problem', () => {
    const noise: Op[] = [];
    let prev = A;
    const h: Op[] = [push('c1', ZERO, A, 0, 10, 'ok')];
    for (let i = 0; i < 30; i++) {
      const next = (i + 10).toString(16).padStart(2, '0').repeat(20);
      noise.push(push('c2', prev, next, 100 + i * 10, 105 + i * 10, 'ok'), read('c3', next, 106 + i * 10, 108 + i * 10));
      prev = next;
    }
    h.push(...noise, read('c9', A, 1000, 1010));
    const r = check(h, state({ [MAIN]: prev }));
    expect(r.ok).toBe(false);
    const v = r.violations.find((x) => x.kind === 'not-linearizable');
    expect(v?.minimal?.length).toBeLessThanOrEqual(3);
    expect(formatResult(r)).toContain('minimal history');
  });

  it('handles many concurrent unknown pushes without blowing up', () => {
    const h: Op[] = [push('c0', ZERO, A, 0, 5, 'ok')];
    let prev = A;
    for (let i = 0; i < 200; i++) {
      const next = (i + 16).toString(16).padStart(3, '0').repeat(14).slice(0, 40);
      h.push(push(`c${i % 4}`, prev, next, 10 + i * 3, 20 + i * 3, i % 7 === 0 ? 'unknown' : 'ok'));
      h.push(push(`c${(i + 1) % 4}`, prev, `${next.slice(0, 39)}f`, 11 + i * 3, 21 + i * 3, i % 5 === 0 ? 'unknown' : 'failed'));
      h.push(read(`r${i % 3}`, prev, 9 + i * 3, 12 + i * 3));
      prev = next;
    }
    const r = linearizable(h, MAIN, prev);
    expect(r.ok).toBe(true);
    expect(r.states).toBeLessThan(100_000);
  });
});

import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitRunner } from './runner.js';
import type { RefUpdate } from '../domain/ref-name.js';
import { parseUpdateRefFailure, RefTxnError, UpdateRefTxn, type RefTxnFailureKind } from './update-ref.js';

const ZERO = '0'.repeat(40);
const ENV = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 't',
  GIT_AUTHOR_EMAIL: 't@x',
  GIT_COMMITTER_NAME: 't',
  GIT_COMMITTER_EMAIL: 't@x',
};

/**
 * Each case makes real `git update-ref --stdin` refuse a transaction in a fresh bare repo (refs
 * `main` at A, `dir/leaf` at A, `packed` at A in packed-refs) and checks the kind and ref the
 * parser reads from git's stderr.
 */
describe('update-ref refusals parsed into kinds, from real git', () => {
  let root = '';
  let a = '';
  let b = '';
  const git = new GitRunner({ owner: `update-ref-test-${randomUUID()}`, instance: randomUUID(), maxProcesses: 8 });
  const sh = (cwd: string, ...args: string[]): string => execFileSync('git', args, { cwd, env: ENV, encoding: 'utf8' }).trim();

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'update-ref-'));
    const work = join(root, 'work');
    sh(root, 'init', '-q', '-b', 'main', work);
    sh(work, 'commit', '-q', '--allow-empty', '-m', 'a');
    a = sh(work, 'rev-parse', 'HEAD');
    sh(work, 'commit', '-q', '--allow-empty', '-m', 'b');
    b = sh(work, 'rev-parse', 'HEAD');
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** repo makes a bare repo holding both commits, with its refs set up as the cases expect. */
  function repo(): string {
    const path = join(root, `r-${randomUUID()}.git`);
    sh(root, 'clone', '-q', '--bare', join(root, 'work'), path);
    sh(path, 'update-ref', 'refs/heads/packed', a);
    sh(path, 'pack-refs', '--all');
    sh(path, 'update-ref', 'refs/heads/main', a);
    sh(path, 'update-ref', 'refs/heads/dir/leaf', a);
    return path;
  }

  async function refusal(path: string, changes: RefUpdate[]): Promise<RefTxnError> {
    const err = await UpdateRefTxn.prepare(git, path, changes).then(
      async (txn) => {
        await txn.abort();
        return null;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RefTxnError);
    return err as RefTxnError;
  }

  const cases: Array<[string, (p: string) => RefUpdate[], RefTxnFailureKind, string | null, ((p: string) => void)?]> = [
    ['old value moved', () => [{ ref: 'refs/heads/main', oldOid: b, newOid: b }], 'old-value', 'refs/heads/main'],
    ['old value moved, packed ref', () => [{ ref: 'refs/heads/packed', oldOid: b, newOid: b }], 'old-value', 'refs/heads/packed'],
    ['create of a ref that exists', () => [{ ref: 'refs/heads/main', oldOid: ZERO, newOid: b }], 'old-value', 'refs/heads/main'],
    ['update of a ref that is missing', () => [{ ref: 'refs/heads/nope', oldOid: a, newOid: b }], 'old-value', 'refs/heads/nope'],
    [
      'ref locked by a lock file',
      () => [{ ref: 'refs/heads/main', oldOid: a, newOid: b }],
      'locked',
      'refs/heads/main',
      (p) => writeFileSync(join(p, 'refs/heads/main.lock'), ''),
    ],
    [
      'packed-refs locked on a delete',
      () => [{ ref: 'refs/heads/packed', oldOid: a, newOid: ZERO }],
      'locked',
      null,
      (p) => writeFileSync(join(p, 'packed-refs.lock'), ''),
    ],
    [
      'file where a directory is needed',
      () => [{ ref: 'refs/heads/main/sub', oldOid: ZERO, newOid: a }],
      'df-conflict',
      'refs/heads/main/sub',
    ],
    ['directory where a file is needed', () => [{ ref: 'refs/heads/dir', oldOid: ZERO, newOid: a }], 'df-conflict', 'refs/heads/dir'],
    [
      'both in one transaction',
      () => [
        { ref: 'refs/heads/q', oldOid: ZERO, newOid: a },
        { ref: 'refs/heads/q/r', oldOid: ZERO, newOid: a },
      ],
      'df-conflict',
      'refs/heads/q',
    ],
    ['an object the repo lacks', () => [{ ref: 'refs/heads/z', oldOid: ZERO, newOid: '1'.repeat(40) }], 'missing-object', 'refs/heads/z'],
    ['an invalid ref name', () => [{ ref: 'refs/heads/a..b', oldOid: ZERO, newOid: a }], 'other', null],
  ];

  it.each(cases)('%s', async (_name, changes, kind, ref, setup) => {
    const path = repo();
    setup?.(path);
    const err = await refusal(path, changes(path));
    expect({ kind: err.kind, ref: err.ref }, err.message).toEqual({ kind, ref });
    expect(err.code).toBe('ERR_REF_TXN');
    // The reason is git's fatal line, not the advice that follows a lock failure.
    expect(err.message).not.toMatch(/^fatal:|remove the file manually/);
    expect(err.message.length).toBeGreaterThan(10);
  });

  it('a transaction git accepts commits', async () => {
    const path = repo();
    const txn = await UpdateRefTxn.prepare(git, path, [{ ref: 'refs/heads/main', oldOid: a, newOid: b }]);
    await txn.commit();
    expect(sh(path, 'rev-parse', 'refs/heads/main')).toBe(b);
  });

  it('reads stderr without a fatal line as other, keeping the text', () => {
    expect(parseUpdateRefFailure('')).toEqual({ kind: 'other', ref: null, message: 'update-ref failed' });
    expect(parseUpdateRefFailure('something odd\n')).toEqual({ kind: 'other', ref: null, message: 'something odd' });
  });
});

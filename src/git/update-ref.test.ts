import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cpSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitRunner } from './runner.js';
import type { RefUpdate } from '../domain/ref-name.js';
import {
  BULK_REF_UPDATES,
  parseUpdateRefFailure,
  RefSessions,
  RefTxnError,
  UpdateRefTxn,
  type RefTxnFailureKind,
  type Reuse,
} from './update-ref.js';

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

  async function refusal(path: string, changes: RefUpdate[], reuse?: Reuse): Promise<RefTxnError> {
    const err = await UpdateRefTxn.prepare(git, path, changes, reuse).then(
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

  it.each(cases)('%s, in a kept update-ref process', async (_name, changes, kind, ref, setup) => {
    const path = repo();
    const sessions = new RefSessions({ idleMs: 10_000, max: 4 });
    const reuse = { sessions, from: { incarnation: 'i', generation: 1 } };
    // A transaction that aborts leaves its process kept for the next one at the same state.
    await (await UpdateRefTxn.prepare(git, path, [{ ref: 'refs/heads/main', oldOid: a, newOid: b }], reuse)).abort();
    expect(sessions.size).toBe(1);
    setup?.(path);
    const err = await refusal(path, changes(path), reuse);
    expect(sessions.reused).toBe(1);
    expect({ kind: err.kind, ref: err.ref }, err.message).toEqual({ kind, ref });
    expect(err.message).not.toMatch(/^fatal:|remove the file manually/);
    await sessions.close();
  });

  it('reads full object ids without looking for refs of the same name (no ambiguity lookups)', async () => {
    const path = repo();
    // A ref named like object A: git would look it up for every A it reads, only to warn.
    sh(path, 'update-ref', `refs/heads/${a}`, b);
    const txn = await UpdateRefTxn.prepare(git, path, [{ ref: 'refs/heads/main', oldOid: a, newOid: b }]);
    await txn.commit();
    expect(sh(path, 'rev-parse', 'refs/heads/main')).toBe(b);
    expect((txn as unknown as { session: { stderrBuf: string } }).session.stderrBuf).toBe('');
    // The same through git's defaults warns: the lookup ran.
    const warned = execFileSync('sh', ['-c', `printf 'update refs/heads/main ${a} ${b}\\n' | git update-ref --stdin 2>&1`], {
      cwd: path,
      env: { ...ENV, LC_ALL: 'C' },
      encoding: 'utf8',
    });
    expect(warned).toMatch(/refname '[0-9a-f]{40}' is ambiguous/);
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

describe("RefSessions: an update-ref process kept for the replica's next transaction", () => {
  let root = '';
  let a = '';
  let b = '';
  let c = '';
  const git = new GitRunner({ owner: `ref-sessions-test-${randomUUID()}`, instance: randomUUID(), maxProcesses: 8 });
  const sh = (cwd: string, ...args: string[]): string => execFileSync('git', args, { cwd, env: ENV, encoding: 'utf8' }).trim();
  const at = (path: string, ref: string): string => sh(path, 'rev-parse', '--verify', '-q', ref);
  const pidOf = (txn: UpdateRefTxn): number => (txn as unknown as { session: { child: { pid: number } } }).session.child.pid;
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const until = async (ok: () => boolean): Promise<void> => {
    for (let i = 0; i < 100 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
  };

  /** moveMain prepares `refs/heads/main` from `oldOid` to `newOid`, reusing `sessions` from (incarnation, generation). */
  const moveMain = (path: string, sessions: RefSessions, oldOid: string, newOid: string, generation: number, incarnation = 'i') =>
    UpdateRefTxn.prepare(git, path, [{ ref: 'refs/heads/main', oldOid, newOid }], { sessions, from: { incarnation, generation } });

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'ref-sessions-'));
    const work = join(root, 'work');
    sh(root, 'init', '-q', '-b', 'main', work);
    for (const m of ['a', 'b', 'c']) sh(work, 'commit', '-q', '--allow-empty', '-m', m);
    [a, b, c] = ['HEAD~2', 'HEAD~1', 'HEAD'].map((r) => sh(work, 'rev-parse', r)) as [string, string, string];
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  function repo(): string {
    const path = join(root, `r-${randomUUID()}.git`);
    sh(root, 'clone', '-q', '--bare', join(root, 'work'), path);
    sh(path, 'update-ref', 'refs/heads/main', a);
    return path;
  }

  it('runs the next transaction from the state a commit left in the same process', async () => {
    const path = repo();
    const takes: boolean[] = [];
    const sessions = new RefSessions({ idleMs: 10_000, max: 4, onTake: (kept) => takes.push(kept) });
    const first = await moveMain(path, sessions, a, b, 4);
    await first.commit();
    expect(at(path, 'refs/heads/main')).toBe(b);
    const second = await UpdateRefTxn.prepare(
      git,
      path,
      [
        { ref: 'refs/heads/main', oldOid: b, newOid: c },
        { ref: 'refs/heads/new', oldOid: ZERO, newOid: a },
      ],
      { sessions, from: { incarnation: 'i', generation: 5 } },
    );
    expect(pidOf(second)).toBe(pidOf(first));
    expect(sessions.reused).toBe(1);
    // The metric's view: the first transaction found no kept process, the second did.
    expect(takes).toEqual([false, true]);
    await second.commit();
    expect([at(path, 'refs/heads/main'), at(path, 'refs/heads/new')]).toEqual([c, a]);
    // An old value that no longer holds is refused in the kept process as in a new one.
    await expect(moveMain(path, sessions, b, a, 6)).rejects.toMatchObject({ kind: 'old-value', ref: 'refs/heads/main' });
    expect(at(path, 'refs/heads/main')).toBe(c);
    await sessions.close();
  });

  it('starts a new process for another generation or incarnation, and closes the kept one', async () => {
    const path = repo();
    const takes: boolean[] = [];
    const sessions = new RefSessions({ idleMs: 10_000, max: 4, onTake: (kept) => takes.push(kept) });
    const first = await moveMain(path, sessions, a, b, 1);
    await first.commit();
    // Refs changed by another process (a repair's fetch): the replica is at another generation.
    sh(path, 'update-ref', 'refs/heads/main', c, b);
    sh(path, 'update-ref', 'refs/heads/side', a);
    sh(path, 'update-ref', '-d', 'refs/heads/side');
    const other = await moveMain(path, sessions, c, a, 7);
    expect(pidOf(other)).not.toBe(pidOf(first));
    await until(() => !alive(pidOf(first)));
    expect(alive(pidOf(first))).toBe(false);
    await other.abort();
    const another = await moveMain(path, sessions, c, a, 7, 'j');
    expect(pidOf(another)).not.toBe(pidOf(other));
    await another.commit();
    expect(at(path, 'refs/heads/main')).toBe(a);
    expect(sessions.reused).toBe(0);
    expect(takes).toEqual([false, false, false]);
    await sessions.close();
  });

  it('never writes into a directory a swap moved away: a new copy in place gets a new process', async () => {
    const path = repo();
    const sessions = new RefSessions({ idleMs: 10_000, max: 4 });
    const first = await moveMain(path, sessions, a, b, 1);
    await first.commit();
    // A repair's swap: a whole copy moved into place over the replica.
    const copy = `${path}.copy`;
    cpSync(path, copy, { recursive: true });
    renameSync(path, `${path}.old`);
    renameSync(copy, path);
    const next = await moveMain(path, sessions, b, c, 2);
    expect(pidOf(next)).not.toBe(pidOf(first));
    await next.commit();
    expect(at(path, 'refs/heads/main')).toBe(c);
    expect(at(`${path}.old`, 'refs/heads/main')).toBe(b);
    await sessions.close();
  });

  it('a bulk transaction runs in a process of its own that does not fsync each lock file, and is not kept', async () => {
    const path = repo();
    const sessions = new RefSessions({ idleMs: 10_000, max: 4 });
    const kept = await moveMain(path, sessions, a, b, 1);
    await kept.commit();
    const spawned: string[][] = [];
    const spy = Object.create(git) as GitRunner;
    spy.spawn = (args, opts) => {
      spawned.push([...Object.entries(opts.config ?? {}).map(([k, v]) => `${k}=${v}`), ...args]);
      return git.spawn(args, opts);
    };
    const many = Array.from({ length: BULK_REF_UPDATES }, (_, i) => ({ ref: `refs/heads/many/${i}`, oldOid: ZERO, newOid: a }));
    const bulk = await UpdateRefTxn.prepare(spy, path, many, { sessions, from: { incarnation: 'i', generation: 2 } });
    expect(pidOf(bulk)).not.toBe(pidOf(kept));
    // The kept process would not see the bulk transaction's refs: it is closed.
    await until(() => !alive(pidOf(kept)));
    expect(alive(pidOf(kept))).toBe(false);
    expect(spawned).toEqual([['core.warnAmbiguousRefs=false', 'core.fsync=objects', 'update-ref', '--stdin']]);
    await bulk.commit();
    expect(sh(path, 'for-each-ref', '--count=1000', 'refs/heads/many').split('\n')).toHaveLength(BULK_REF_UPDATES);
    await until(() => !alive(pidOf(bulk)));
    expect(alive(pidOf(bulk))).toBe(false);
    expect(sessions.reused).toBe(0);
    // One ref fewer is an ordinary transaction: a process that may be kept, fsyncing as the replica is configured.
    const fewer = many.slice(1).map((u) => ({ ...u, ref: `${u.ref}-x` }));
    const ordinary = await UpdateRefTxn.prepare(spy, path, fewer, { sessions, from: { incarnation: 'i', generation: 2 } });
    expect(spawned[1]).toEqual(['core.warnAmbiguousRefs=false', 'update-ref', '--stdin']);
    await ordinary.abort();
    await sessions.close();
  });

  it('a kept process that died is replaced; idle ones end after idleMs, and the oldest goes past max', async () => {
    const path = repo();
    const sessions = new RefSessions({ idleMs: 300, max: 2 });
    const first = await moveMain(path, sessions, a, b, 1);
    await first.abort();
    process.kill(pidOf(first), 'SIGKILL');
    await until(() => !alive(pidOf(first)));
    const next = await moveMain(path, sessions, a, b, 1);
    expect(pidOf(next)).not.toBe(pidOf(first));
    await next.commit();
    expect(at(path, 'refs/heads/main')).toBe(b);
    expect(sessions.size).toBe(1);
    await until(() => sessions.size === 0 && !alive(pidOf(next)));
    expect(sessions.size).toBe(0);
    expect(alive(pidOf(next))).toBe(false);

    const [p1, p2, p3] = [repo(), repo(), repo()];
    const kept: number[] = [];
    for (const p of [p1, p2, p3]) {
      const t = await moveMain(p, sessions, a, b, 1);
      kept.push(pidOf(t));
      await t.commit();
    }
    expect(sessions.size).toBe(2);
    await until(() => !alive(kept[0]!));
    expect(kept.map(alive)).toEqual([false, true, true]);
    await sessions.close();
    await until(() => !kept.some(alive));
    expect(kept.some(alive)).toBe(false);
  });
});

import type { ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { AppError } from '../domain/errors.js';
import type { RefUpdate } from '../domain/ref-name.js';
import { waitClose, type GitRunner } from './runner.js';

/**
 * RefTxnFailureKind is how `git update-ref --stdin` refused, as callers need to tell apart:
 * - `locked`: a `<ref>.lock` or `packed-refs.lock` exists (another transaction, or a lock file
 *   left by a process that died);
 * - `old-value`: the ref is not at the old value given (moved, already exists, or missing);
 * - `df-conflict`: a directory/file clash with another ref (`refs/heads/a` against `refs/heads/a/b`);
 * - `missing-object`: the new value names an object the repository does not have;
 * - `other`: anything else (a bad ref name, an I/O error, a git that died).
 */
export type RefTxnFailureKind = 'locked' | 'old-value' | 'df-conflict' | 'missing-object' | 'other';

/** RefTxnFailure is update-ref's refusal parsed: its kind, the ref it names (if any) and git's reason. */
export interface RefTxnFailure {
  readonly kind: RefTxnFailureKind;
  readonly ref: string | null;
  readonly message: string;
}

/** KINDS are update-ref's words for each kind (refs/files-backend.c, refs.c; git 2.36 to 2.47). */
const KINDS: ReadonlyArray<[RefTxnFailureKind, RegExp]> = [
  ['locked', /Unable to create '[^']*\.lock': File exists/],
  [
    'old-value',
    /is at [0-9a-f]+ but expected [0-9a-f]+|reference already exists|unable to resolve reference|reference is missing but expected/,
  ],
  [
    'df-conflict',
    /' exists; cannot create '|cannot process '[^']*' and '[^']*' at the same time|there is a non-empty directory '[^']*' blocking reference/,
  ],
  ['missing-object', /with nonexistent object/],
];

/**
 * parseUpdateRefFailure reads update-ref's stderr into a RefTxnFailure. The reason is git's
 * `fatal:` line (not the last line: a lock failure ends with a paragraph of advice).
 */
export function parseUpdateRefFailure(stderr: string): RefTxnFailure {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const fatal = lines.find((l) => l.startsWith('fatal: ') || l.startsWith('error: ')) ?? lines[0] ?? 'update-ref failed';
  const message = fatal.replace(/^(fatal|error): /, '');
  const kind = KINDS.find(([, re]) => re.test(message))?.[0] ?? 'other';
  const ref = /(?:cannot (?:lock|update) ref|blocking reference) '([^']+)'/.exec(message)?.[1] ?? null;
  return { kind, ref, message };
}

/** RefTxnError says update-ref refused the transaction: `kind` says how, `message` is git's reason. */
export class RefTxnError extends AppError {
  readonly kind: RefTxnFailureKind;
  readonly ref: string | null;

  constructor(failure: RefTxnFailure) {
    super('ERR_REF_TXN', [failure.message], { kind: failure.kind, ref: failure.ref });
    this.name = 'RefTxnError';
    this.kind = failure.kind;
    this.ref = failure.ref;
  }
}

/**
 * BULK_REF_UPDATES is the size from which a transaction's refs are not fsynced one by one: git
 * writes their lock files without an fsync each (`core.fsync=objects`), and the caller makes the
 * commit durable with one `syncfs` of the replica's file system (`syncRefs` in repo-storage.ts).
 * A mirror push's 3,890 refs: update-ref 0.9 s plus 0.06 s of syncfs, against 2.1 s with an
 * fsync per lock file (and 2,670 directory fsyncs at commit).
 */
export const BULK_REF_UPDATES = 100;

/**
 * NO_DWIM turns off git's check of every full object id for a ref of the same name
 * (`core.warnAmbiguousRefs`): for each id it reads, git looks up `<id>`, `refs/<id>`,
 * `refs/tags/<id>`, `refs/heads/<id>`, `refs/remotes/<id>` and `refs/remotes/<id>/HEAD`, only
 * to warn. That is half of update-ref's `stat` calls for a mirror push (88,931 of them for 3,890
 * refs; 42,251 without), and each lookup of a new id leaves a negative dentry in the kernel's
 * cache, which grows with every push a long-lived replica takes (update-ref of the same 3,890
 * refs slowed from 0.5 to 1.0 s here as 900,000 such lookups accumulated).
 */
export const NO_DWIM: Readonly<Record<string, string>> = { 'core.warnAmbiguousRefs': 'false' };

/** REF_SESSION_IDLE_MS is how long a kept update-ref process waits for its replica's next transaction. */
export const REF_SESSION_IDLE_MS = 10_000;

/** REF_SESSIONS_MAX caps the update-ref processes a node keeps idle (the least recently used goes first). */
export const REF_SESSIONS_MAX = 64;

/** REF_SESSION_ENV marks an update-ref process that may be kept between transactions (set to 1 in its environment). */
export const REF_SESSION_ENV = 'GIT_REPLICATION_REF_SESSION';

/** SessionTag names the replica state an idle session last saw: its incarnation and generation. */
export interface SessionTag {
  readonly incarnation: string;
  readonly generation: number;
}

/**
 * RefSession is one `git update-ref --stdin` process, which can run transactions one after
 * another (`start` after `commit` or `abort` opens the next). Its replies are read line by line.
 */
class RefSession {
  private stdoutBuf = '';
  private read = 0;
  stderrBuf = '';
  private lineWaiter: (() => void) | null = null;
  finished = false;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      this.stdoutBuf += d;
      this.wake();
    });
    child.stderr?.on('data', (d: string) => {
      this.stderrBuf += d;
    });
    child.stdin?.on('error', () => undefined);
    child.once('close', () => {
      this.finished = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.lineWaiter;
    this.lineWaiter = null;
    w?.();
  }

  /** waitFor reads replies up to `line` (true), or to the end of the process's output (false). */
  async waitFor(line: string): Promise<boolean> {
    for (;;) {
      for (let nl = this.stdoutBuf.indexOf('\n', this.read); nl >= 0; nl = this.stdoutBuf.indexOf('\n', this.read)) {
        const got = this.stdoutBuf.slice(this.read, nl);
        this.read = nl + 1;
        if (got === line) return true;
      }
      if (this.finished) return false;
      await new Promise<void>((r) => {
        this.lineWaiter = r;
      });
    }
  }

  /** next forgets what earlier transactions wrote: their replies and warnings. */
  next(): void {
    this.stdoutBuf = this.stdoutBuf.slice(this.read);
    this.read = 0;
    this.stderrBuf = '';
  }

  /** end closes the process's input (it exits; a transaction still open aborts) and waits for it. */
  async end(last = ''): Promise<void> {
    if (!this.finished) this.child.stdin?.end(last);
    await waitClose(this.child);
  }
}

interface IdleSession {
  readonly session: RefSession;
  readonly tag: SessionTag;
  readonly timer: NodeJS.Timeout;
}

/**
 * RefSessions keeps the update-ref process of a replica's last transaction for the next one
 * (one process start less per replica and push). A kept process is used again only for a
 * transaction that starts from the state it left: same incarnation, and the generation its
 * commit made (or the base of its abort). Refs changed by anything else (a repair's fetch) come
 * with another generation, and git's cache of loose ref names in that process would be stale, so
 * it is closed instead. A process whose working directory is no longer the replica's (a swap
 * moved a new copy into place) is closed too. Idle processes end after `idleMs`.
 */
export class RefSessions {
  private readonly idle = new Map<string, IdleSession>();
  /** reused counts the transactions that ran in a kept process (for tests). */
  reused = 0;

  constructor(
    private readonly opts: {
      readonly idleMs: number;
      readonly max: number;
      /** onTake hears of each transaction that asked for a kept process: whether it got one (metrics). */
      readonly onTake?: (kept: boolean) => void;
    },
  ) {}

  /** size is the number of idle processes kept now. */
  get size(): number {
    return this.idle.size;
  }

  /** take hands out the idle process of `repoPath` if it left the replica at `tag`; any other is closed. */
  take(repoPath: string, tag: SessionTag): RefSession | null {
    const kept = this.idle.get(repoPath);
    if (!kept) {
      this.opts.onTake?.(false);
      return null;
    }
    this.drop(repoPath, kept);
    const same = kept.tag.incarnation === tag.incarnation && kept.tag.generation === tag.generation;
    if (same && !kept.session.finished && sameDirectory(kept.session.child.pid, repoPath)) {
      this.reused++;
      this.opts.onTake?.(true);
      return kept.session;
    }
    void kept.session.end();
    this.opts.onTake?.(false);
    return null;
  }

  /** discard closes the idle process of `repoPath`, if any (its refs are about to change in another process). */
  discard(repoPath: string): void {
    const kept = this.idle.get(repoPath);
    if (!kept) return;
    this.drop(repoPath, kept);
    void kept.session.end();
  }

  /** put keeps a process that finished a transaction, leaving the replica at `tag`; it replaces one kept before. */
  put(repoPath: string, tag: SessionTag, session: RefSession): void {
    if (session.finished) return;
    const before = this.idle.get(repoPath);
    if (before) {
      this.drop(repoPath, before);
      void before.session.end();
    }
    if (this.idle.size >= this.opts.max) {
      const [oldestPath, oldest] = this.idle.entries().next().value as [string, IdleSession];
      this.drop(oldestPath, oldest);
      void oldest.session.end();
    }
    const timer = setTimeout(() => {
      if (this.idle.get(repoPath)?.session === session) {
        this.idle.delete(repoPath);
        void session.end();
      }
    }, this.opts.idleMs);
    timer.unref();
    session.next();
    this.idle.set(repoPath, { session, tag, timer });
  }

  private drop(repoPath: string, kept: IdleSession): void {
    clearTimeout(kept.timer);
    if (this.idle.get(repoPath) === kept) this.idle.delete(repoPath);
  }

  /** close ends every idle process (node shutdown). */
  async close(): Promise<void> {
    const all = [...this.idle.entries()];
    for (const [path, kept] of all) this.drop(path, kept);
    await Promise.all(all.map(([, kept]) => kept.session.end()));
  }
}

/** sameDirectory says whether process `pid` still works in the directory now at `path` (Linux: /proc/<pid>/cwd). */
function sameDirectory(pid: number | undefined, path: string): boolean {
  if (pid === undefined) return false;
  try {
    const cwd = statSync(`/proc/${pid}/cwd`);
    const now = statSync(path);
    return cwd.ino === now.ino && cwd.dev === now.dev;
  } catch {
    return false;
  }
}

/** Reuse lets a transaction run in a kept process and keep its own afterwards (RefSessions). */
export interface Reuse {
  readonly sessions: RefSessions;
  /** from is the replica's state the transaction starts from (incarnation, base generation). */
  readonly from: SessionTag;
}

/**
 * UpdateRefTxn is a prepared `git update-ref --stdin` transaction (git-update-ref(1)): after
 * `prepare: ok` the refs are locked and their old values verified; commit() or abort() finishes
 * it. End of input while prepared aborts with exit 0, so success is only ever read from
 * `commit: ok`, never from the exit code. With `reuse`, the process may be one a transaction
 * before left (RefSessions), and is kept for the next one after commit or abort.
 */
export class UpdateRefTxn {
  private done = false;

  private constructor(
    private readonly session: RefSession,
    private readonly repoPath: string,
    private readonly reuse: Reuse | undefined,
  ) {}

  private failure(): RefTxnError {
    return new RefTxnError(parseUpdateRefFailure(this.session.stderrBuf));
  }

  /**
   * prepare locks and verifies `changes` in the repo at `repoPath`; throws RefTxnError if git
   * refuses. A bulk transaction (BULK_REF_UPDATES refs or more) runs in a process of its own
   * that does not fsync its lock files: the caller must make its commit durable (syncRefs).
   */
  static async prepare(git: GitRunner, repoPath: string, changes: readonly RefUpdate[], reuseWanted?: Reuse): Promise<UpdateRefTxn> {
    const lines = ['start', ...changes.map((c) => `update ${c.ref} ${c.newOid} ${c.oldOid}`), 'prepare', ''].join('\n');
    const bulk = changes.length >= BULK_REF_UPDATES;
    // A kept process of this replica would not see the bulk transaction's refs: it goes.
    if (bulk) reuseWanted?.sessions.discard(repoPath);
    const reuse = bulk ? undefined : reuseWanted;
    const kept = reuse?.sessions.take(repoPath, reuse.from) ?? null;
    if (kept) {
      kept.child.stdin?.write(lines);
      if (await kept.waitFor('prepare: ok')) return new UpdateRefTxn(kept, repoPath, reuse);
      // A kept process that died meanwhile, or refused: the refusal counts only from a new one,
      // whose words are read as before.
      await kept.end();
    }
    // A process that may be kept says so in its environment (REF_SESSION_ENV): tools that look for git processes left behind tell it apart.
    const session = new RefSession(
      git.spawn(['update-ref', '--stdin'], {
        cwd: repoPath,
        ...(reuse ? { env: { [REF_SESSION_ENV]: '1' } } : {}),
        config: { ...NO_DWIM, ...(bulk ? { 'core.fsync': 'objects' } : {}) },
      }),
    );
    session.child.stdin?.write(lines);
    if (!(await session.waitFor('prepare: ok'))) {
      await session.end();
      throw new UpdateRefTxn(session, repoPath, undefined).failure();
    }
    return new UpdateRefTxn(session, repoPath, reuse);
  }

  /** commit applies the prepared changes; throws if git did not confirm. */
  async commit(): Promise<void> {
    this.done = true;
    const { session, reuse } = this;
    session.child.stdin?.write('commit\n');
    const ok = await session.waitFor('commit: ok');
    if (ok && reuse)
      reuse.sessions.put(this.repoPath, { incarnation: reuse.from.incarnation, generation: reuse.from.generation + 1 }, session);
    else await session.end();
    if (!ok) throw this.failure();
  }

  /** abort releases the locks without changing anything. */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const { session, reuse } = this;
    if (reuse && !session.finished) {
      session.child.stdin?.write('abort\n');
      if (await session.waitFor('abort: ok')) return reuse.sessions.put(this.repoPath, reuse.from, session);
    }
    await session.end('abort\n');
  }

  /** alive says whether the process still holds the prepared transaction. */
  get alive(): boolean {
    return !this.done && !this.session.finished;
  }
}

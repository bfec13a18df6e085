import type { ChildProcess } from 'node:child_process';
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
 * UpdateRefTxn is a prepared `git update-ref --stdin` transaction (git-update-ref(1)): after
 * `prepare: ok` the refs are locked and their old values verified; commit() or abort() finishes
 * it. End of input while prepared aborts with exit 0, so success is only ever read from
 * `commit: ok`, never from the exit code.
 */
export class UpdateRefTxn {
  private stdoutBuf = '';
  private stderrBuf = '';
  private lineWaiter: (() => void) | null = null;
  private finished = false;

  private constructor(private readonly child: ChildProcess) {
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

  private async waitFor(line: string): Promise<boolean> {
    for (;;) {
      if (this.stdoutBuf.split('\n').includes(line)) return true;
      if (this.finished) return false;
      await new Promise<void>((r) => {
        this.lineWaiter = r;
      });
    }
  }

  private failure(): RefTxnError {
    return new RefTxnError(parseUpdateRefFailure(this.stderrBuf));
  }

  /** prepare locks and verifies `changes` in the repo at `repoPath`; throws RefTxnError if git refuses. */
  static async prepare(git: GitRunner, repoPath: string, changes: readonly RefUpdate[]): Promise<UpdateRefTxn> {
    const child = git.spawn(['update-ref', '--stdin'], { cwd: repoPath });
    const txn = new UpdateRefTxn(child);
    const lines = ['start', ...changes.map((c) => `update ${c.ref} ${c.newOid} ${c.oldOid}`), 'prepare', ''].join('\n');
    child.stdin?.write(lines);
    if (!(await txn.waitFor('prepare: ok'))) {
      await waitClose(child);
      throw txn.failure();
    }
    return txn;
  }

  /** commit applies the prepared changes; throws if git did not confirm. */
  async commit(): Promise<void> {
    this.child.stdin?.end('commit\n');
    await waitClose(this.child);
    if (!this.stdoutBuf.split('\n').includes('commit: ok')) throw this.failure();
  }

  /** abort releases the locks without changing anything. */
  async abort(): Promise<void> {
    if (!this.finished) this.child.stdin?.end('abort\n');
    await waitClose(this.child);
  }

  /** alive says whether the process still holds the prepared transaction. */
  get alive(): boolean {
    return !this.finished;
  }
}

import type { ChildProcess } from 'node:child_process';
import { AppError } from '../domain/errors.js';
import { waitClose, type GitRunner } from './runner.js';

/** RefChange is one `update <ref> <new> <old>` line; zero oids mean create or delete. */
export interface RefChange {
  readonly ref: string;
  readonly oldOid: string;
  readonly newOid: string;
}

/** RefTxnError says update-ref refused the transaction; `message` is git's reason. */
export class RefTxnError extends AppError {
  constructor(message: string) {
    super('ERR_REF_TXN', 409, message);
    this.name = 'RefTxnError';
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
    child.stdout?.on('data', (d: string) => { this.stdoutBuf += d; this.wake(); });
    child.stderr?.on('data', (d: string) => { this.stderrBuf += d; });
    child.stdin?.on('error', () => undefined);
    child.once('close', () => { this.finished = true; this.wake(); });
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
      await new Promise<void>((r) => { this.lineWaiter = r; });
    }
  }

  private failure(): RefTxnError {
    const msg = this.stderrBuf.trim().replace(/^fatal: /gm, '').split('\n').pop() ?? 'update-ref failed';
    return new RefTxnError(msg || 'update-ref failed');
  }

  /** prepare locks and verifies `changes` in the repo at `repoPath`; throws RefTxnError if git refuses. */
  static async prepare(git: GitRunner, repoPath: string, changes: readonly RefChange[]): Promise<UpdateRefTxn> {
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

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';
import { commitFile, git, gitOk, workRepo } from '../helpers/git.js';

/** LogLine is a node's pino line, as far as these tests read it. */
type LogLine = Record<string, unknown> & { msg?: string; txnId?: string; refs?: string[]; refCount?: number };

/** logLines parses a node's JSON log; lines that are not JSON (none expected) are skipped. */
function logLines(log: string): LogLine[] {
  return log.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

describe('one log line per push', () => {
  let c: TestCluster;
  let work = '';

  async function waitForLine(node: number, match: (l: LogLine) => boolean): Promise<LogLine> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const line = logLines(c.node(node).log).find(match);
      if (line) return line;
      if (Date.now() > deadline) throw new Error(`no such log line on node ${node}:\n${c.node(node).log.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** auditedTxn is the transaction id the audit log gave the push of `ref` (a second, independent record). */
  async function auditedTxn(ref: string): Promise<string> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const events = ((await c.api(1, 'GET', '/admin/audit?limit=1000')).json.events ?? []) as Array<{
        action: string;
        refs?: string[];
        txn?: string;
      }>;
      const e = events.find((x) => x.action === 'push' && x.refs?.includes(ref));
      if (e?.txn) return e.txn;
      if (Date.now() > deadline) throw new Error(`push of ${ref} not in the audit log`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.createRepo(1, 'logs/repo');
    work = await workRepo();
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('a committed push: its refs, transaction id, outcome and phase timings on the coordinating node', async () => {
    await gitOk(['push', '-q', c.repoUrl(1, 'logs/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    const txn = await auditedTxn('refs/heads/main');
    const line = await waitForLine(1, (l) => l.txnId === txn && l.msg === 'transaction committed');
    expect(line).toMatchObject({
      repoId: 'logs/repo',
      kind: 'push',
      outcome: 'committed',
      refs: ['refs/heads/main'],
      refCount: 1,
      required: 2,
    });
    for (const k of ['ms', 'prepareMs', 'decideMs', 'commitMs']) expect(typeof line[k], k).toBe('number');
    expect(line.ms).toBe((line.prepareMs as number) + (line.decideMs as number) + (line.commitMs as number));
    // One line for the transaction, not one per phase or per replica.
    expect(logLines(c.node(1).log).filter((l) => l.txnId === txn && /^transaction (committed|aborted)/.test(l.msg ?? ''))).toHaveLength(1);
  });

  it('a push of 12 branches names 10 and counts 12', async () => {
    const refspecs = Array.from({ length: 12 }, (_, i) => `HEAD:refs/heads/many-${String(i).padStart(2, '0')}`);
    await gitOk(['push', '-q', c.repoUrl(2, 'logs/repo'), ...refspecs], { cwd: work });
    const txn = await auditedTxn('refs/heads/many-00');
    const line = await waitForLine(2, (l) => l.txnId === txn && l.msg === 'transaction committed');
    expect(line.refCount).toBe(12);
    expect(line.refs).toHaveLength(10);
    expect(line.refs?.every((r) => r.startsWith('refs/heads/many-'))).toBe(true);
  });

  it('a push the node refuses before any transaction has its line with the ref and the reason', async () => {
    // git itself refuses a non-fast-forward before sending; deleting the default branch reaches the node.
    const refused = await git(['push', c.repoUrl(3, 'logs/repo'), ':refs/heads/main'], { cwd: work });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/deletion of the current branch prohibited/);
    const line = await waitForLine(3, (l) => l.msg === 'push refused' && l.repoId === 'logs/repo');
    expect(line).toMatchObject({
      kind: 'push',
      outcome: 'refused',
      refs: ['refs/heads/main'],
      refCount: 1,
      reasons: ['deletion of the current branch prohibited'],
    });
    expect(typeof line.ms).toBe('number');
    expect(line.txnId).toBeUndefined();
  });

  it("a push without a quorum: the aborted transaction's line has the refs, the reason and the prepare time", async () => {
    await c.kill(2);
    await c.kill(3);
    await commitFile(work, 'late.txt', 'late\n', 'late');
    const r = await git(['push', c.repoUrl(1, 'logs/repo'), 'HEAD:refs/heads/late'], { cwd: work });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/replication quorum not reached/);
    const line = await waitForLine(1, (l) => l.outcome === 'aborted' && l.refs?.includes('refs/heads/late') === true);
    expect(line.msg).toMatch(/^transaction aborted: replication quorum not reached/);
    expect(line).toMatchObject({ repoId: 'logs/repo', kind: 'push', refCount: 1, prepared: 1, required: 2 });
    expect(typeof line.txnId).toBe('string');
    expect(typeof line.prepareMs).toBe('number');
  });
});

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { GitRunner } from './runner.js';

/** tagged lists the live processes whose environment carries `GIT_REPLICATION_OWNER=<owner>`. */
async function tagged(owner: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const environ = await readFile(`/proc/${pid}/environ`, 'latin1').catch(() => '');
    if (environ.split('\0').includes(`GIT_REPLICATION_OWNER=${owner}`)) out.push(Number(pid));
  }
  return out;
}

describe('GitRunner.reapPrevious', () => {
  it("kills an earlier incarnation's processes, including those forked while it scanned", async () => {
    const owner = `test-${randomUUID()}`;
    // A parent that keeps forking, as receive-pack starts index-pack: children born between a
    // scan of /proc and the parent's kill escape a single scan.
    const parent = spawn('bash', ['-c', 'while :; do sleep 30 & sleep 0.002; done'], {
      env: { PATH: process.env.PATH, GIT_REPLICATION_OWNER: owner, GIT_REPLICATION_INSTANCE: 'old' },
      stdio: 'ignore',
    });
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect((await tagged(owner)).length).toBeGreaterThan(10);
      const killed = await new GitRunner({ owner, instance: 'new', maxProcesses: 1 }).reapPrevious();
      expect(killed).toBeGreaterThan(10);
      expect(await tagged(owner)).toEqual([]);
    } finally {
      parent.kill('SIGKILL');
      for (const pid of await tagged(owner)) process.kill(pid, 'SIGKILL');
    }
  });

  it('spares processes of its own instance and of other owners', async () => {
    const owner = `test-${randomUUID()}`;
    const mine = spawn('sleep', ['30'], { env: { PATH: process.env.PATH, GIT_REPLICATION_OWNER: owner, GIT_REPLICATION_INSTANCE: 'new' } });
    const other = spawn('sleep', ['30'], {
      env: { PATH: process.env.PATH, GIT_REPLICATION_OWNER: `${owner}-x`, GIT_REPLICATION_INSTANCE: 'old' },
    });
    try {
      await new Promise((r) => setTimeout(r, 100));
      expect(await new GitRunner({ owner, instance: 'new', maxProcesses: 1 }).reapPrevious()).toBe(0);
      expect(mine.exitCode === null && mine.signalCode === null).toBe(true);
      expect(other.exitCode === null && other.signalCode === null).toBe(true);
    } finally {
      mine.kill('SIGKILL');
      other.kill('SIGKILL');
    }
  });
});

describe('GitRunner.acquire: a line for git process slots', () => {
  const runner = (maxProcesses: number, maxPerClient: number, slotWaitMs: number): GitRunner =>
    new GitRunner({ owner: `acquire-${randomUUID()}`, instance: 'i', maxProcesses, maxPerClient, slotWaitMs });
  const settledIn = async <T>(p: Promise<T>, ms = 50): Promise<'pending' | 'resolved' | 'rejected'> =>
    Promise.race([
      p.then(
        () => 'resolved' as const,
        () => 'rejected' as const,
      ),
      new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms)),
    ]);

  it('waits when every slot is taken and hands freed slots out first come, first served', async () => {
    const git = runner(2, 2, 5_000);
    const held = [await git.acquire('a'), await git.acquire('b')];
    const order: string[] = [];
    const waiters = ['c', 'd', 'e'].map((client) =>
      git.acquire(client).then((release) => {
        order.push(client);
        return release;
      }),
    );
    expect(await settledIn(waiters[0]!)).toBe('pending');
    expect(git.waitingCount).toBe(3);
    held[0]!();
    const c = await waiters[0]!;
    expect(order).toEqual(['c']);
    held[1]!();
    c();
    await Promise.all(waiters.slice(1));
    expect(order).toEqual(['c', 'd', 'e']);
    expect(git.waitingCount).toBe(0);
  });

  it('a process that cannot start gives its slot back, and the next in line gets it', async () => {
    const git = runner(1, 1, 5_000);
    const slot = await git.acquire('a');
    const next = git.acquire('b');
    expect(() => git.spawn(['no-such-subcommand'], { cwd: '/', slot })).toThrow(/not allowed/);
    (await next)();
    expect(git.runningCount).toBe(0);
  });

  it('a wait set past what a timer holds (1000 h) still waits', async () => {
    const git = runner(1, 1, 1000 * 3_600_000);
    const held = await git.acquire('a');
    const next = git.acquire('b');
    expect(await settledIn(next)).toBe('pending');
    held();
    (await next)();
  });

  it("a client over its share waits while other clients' requests go by", async () => {
    const git = runner(4, 1, 5_000);
    const a1 = await git.acquire('a');
    const a2 = git.acquire('a');
    expect(await settledIn(a2)).toBe('pending');
    const b = await git.acquire('b');
    expect(git.runningCount).toBe(2);
    a1();
    (await a2)();
    b();
    expect(git.runningCount).toBe(0);
  });

  it('answers 503 after slotWaitMs, at once when the line is full or the wait is 0, and when the request ends', async () => {
    const git = runner(1, 1, 200);
    const held = await git.acquire('a');
    await expect(git.acquire('b')).rejects.toMatchObject({ statusCode: 503 });
    await expect(git.acquire('b')).rejects.toThrow(/^waited 0.2 s for a git process slot: too many git processes running \(1 of 1\)/);
    // The line holds four times the limit, at least 64.
    const line = Array.from({ length: 64 }, (_, i) => git.acquire(`w${i}`));
    for (const p of line) p.catch(() => undefined);
    const started = Date.now();
    await expect(git.acquire('x')).rejects.toMatchObject({ statusCode: 503 });
    expect(Date.now() - started).toBeLessThan(100);
    await Promise.allSettled(line);
    const gone = new AbortController();
    const leaving = git.acquire('y', gone.signal);
    expect(git.waitingCount).toBe(1);
    gone.abort();
    await expect(leaving).rejects.toThrow(/ended while it waited/);
    expect(git.waitingCount).toBe(0);
    held();
    expect(git.runningCount).toBe(0);
    const noWait = runner(1, 1, 0);
    const only = await noWait.acquire('a');
    await expect(noWait.acquire('b')).rejects.toMatchObject({ statusCode: 503 });
    await expect(noWait.acquire('b')).rejects.toThrow(/^too many git processes running/);
    only();
  });
});

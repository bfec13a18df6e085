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

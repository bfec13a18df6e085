import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, TestCluster } from '../helpers/cluster.js';
import { commitFile, gitOk, workRepo } from '../helpers/git.js';

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

describe('git-replication verify and repair', () => {
  let c: TestCluster;
  let admin = '';
  let cwd = '';

  function cli(args: string[]): Promise<CliRun> {
    return new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args, '--url', c.url(1), '--token', admin], { cwd, timeout: 120_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      });
    });
  }

  beforeAll(async () => {
    // Node 3 repairs nothing by itself: only the CLI's request can.
    c = await TestCluster.start({ nodes: 3, env: { AUTH: 'tokens' }, nodeEnv: { 'node-3': { REPAIR_INTERVAL_MS: '0' } } });
    admin = await c.adminToken();
    c.authToken = admin;
    cwd = await mkdtemp(join(tmpdir(), 'gitrep-cli-maint-'));
    await c.createRepo(1, 'ops/repo');
    const work = await workRepo();
    const url = new URL(c.repoUrl(1, 'ops/repo'));
    url.username = 'x';
    url.password = admin;
    await gitOk(['push', '-q', url.toString(), 'HEAD:refs/heads/main'], { cwd: work });
    await commitFile(work, 'b.txt', 'b\n', 'b');
    await gitOk(['push', '-q', url.toString(), 'HEAD:refs/heads/other'], { cwd: work });
    await c.waitInSync('ops/repo');
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('verify: every replica ok', async () => {
    const r = await cli(['verify', 'ops/repo']);
    expect(r.code, r.stderr).toBe(0);
    for (const n of ['node-1', 'node-2', 'node-3']) expect(r.stdout).toContain(`ops/repo on ${n}: ok`);
  });

  it('a ref moved by hand on one replica: verify marks it and exits 1; repair brings it back', async () => {
    const path = c.replicaPath(3, 'ops/repo');
    const main = (await gitOk(['rev-parse', 'refs/heads/main'], { cwd: path })).trim();
    await gitOk(['update-ref', 'refs/heads/other', main], { cwd: path });
    const v = await cli(['verify', 'ops/repo']);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain('ops/repo on node-3: stale: marked for repair');
    expect(v.stdout).toContain('1 repos verified, 1 replicas marked for repair');
    const r = await cli(['repair', 'ops/repo', '--timeout', '60']);
    expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/node-3: (repaired, in sync|repair started)/);
    expect(r.stdout).toMatch(/ops\/repo: node-\d: in_sync; node-\d: in_sync; node-\d: in_sync\n$/);
    // Progress on a non-TTY stderr: plain lines, the last one all in sync, no bar or carriage return.
    expect(r.stderr).toMatch(/(^|\n)repair ops\/repo: 3 of 3 replicas in sync\n$/);
    expect(r.stderr).not.toMatch(/\r|\[#/);
    const all = await cli(['verify', '--all']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stderr).toBe('verify: 0 of 1 repos verified\nverify: 1 of 1 repos verified\n');
  }, 120_000);

  it('without a repo or --all, and for a bad name: one line, no call', async () => {
    const none = await cli(['verify']);
    expect(none.code).toBe(1);
    expect(none.stderr.trim()).toBe('git-replication: name a repository, or --all');
    const bad = await cli(['repair', '../etc']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
  });
});

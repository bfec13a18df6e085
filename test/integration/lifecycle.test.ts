import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePktLine } from '../../src/git/pkt-line.js';
import { MAIN, TestCluster, freePort, sleep, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, lsRemote, nodeGitProcesses, tempDir, workRepo } from '../helpers/git.js';

describe('graceful shutdown', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { SHUTDOWN_GRACE: '20s' } });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('SIGTERM during pushes: each push succeeded or was refused, nothing stays locked, exit 0', async () => {
    await c.createRepo(1, 'life/repo');
    const writers = await Promise.all([0, 1, 2, 3].map(async () => workRepo()));
    const results: Array<{ branch: string; commit: string; code: number; stderr: string }> = [];
    let stop = false;
    const loops = writers.map(async (dir, w) => {
      for (let i = 0; !stop && i < 200; i++) {
        const commit = await commitFile(dir, `f${w}.txt`, `${w} ${i}\n`, `w${w} ${i}`);
        const r = await git(['push', c.repoUrl(1, 'life/repo'), `HEAD:refs/heads/w${w}`], { cwd: dir, timeoutMs: 60_000 });
        results.push({ branch: `refs/heads/w${w}`, commit, code: r.code, stderr: r.stderr });
        if (r.code !== 0) await sleep(100);
      }
    });
    await waitFor(() => results.filter((r) => r.code === 0).length >= 4, 60_000, 'some pushes through node 1');
    const proc = c.node(1).proc!;
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    const code = await exited;
    stop = true;
    await Promise.all(loops);
    expect(code).toBe(0);
    // No lock left behind: the next push through another node goes through at once.
    expect((await c.repoStatus(2, 'life/repo')).lock).toBeNull();
    const refs = await lsRemote(c.repoUrl(2, 'life/repo'));
    for (const r of results.filter((x) => x.code === 0)) {
      // An acknowledged push is there (or a later one of the same writer moved the branch on).
      const tip = new RegExp(`^([0-9a-f]{40})\\t${r.branch}$`, 'm').exec(refs)?.[1];
      expect(tip, `${r.branch} acknowledged at ${r.commit}`).toBeDefined();
      const dir = writers[Number(r.branch.slice(-1))]!;
      expect((await git(['merge-base', '--is-ancestor', r.commit, tip!], { cwd: dir })).code).toBe(0);
    }
    // Every failure said why: refused, or cut off (unknown), never a hang.
    for (const r of results.filter((x) => x.code !== 0)) expect(r.stderr.trim().length).toBeGreaterThan(0);
    const after = await workRepo();
    await commitFile(after, 'after.txt', 'x\n', 'after');
    await gitOk(['push', '-q', c.repoUrl(2, 'life/repo'), 'HEAD:refs/heads/after'], { cwd: after });
    await c.restart(1);
  }, 180_000);

  it('/ready answers 503 while the node drains; past the grace period requests are cut and it exits 0', async () => {
    // A node whose grace period (1 s) is far shorter than the idle-body limit (30 s).
    await c.kill(3);
    await c.restart(3, { SHUTDOWN_GRACE: '1s' });
    const proc = c.node(3).proc!;
    const { request } = await import('node:http');
    const held = request(`${c.url(3)}/life/repo.git/git-receive-pack`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-git-receive-pack-request' },
    });
    held.on('error', () => undefined);
    // One command and no flush: receive-pack waits for the rest.
    const z = '0'.repeat(40);
    held.write(encodePktLine(`${z} ${'1'.repeat(40)} refs/heads/held\0 report-status\n`));
    await waitFor(async () => (await nodeGitProcesses(c.node(3).dataDir)).length > 0, 10_000, 'the held push runs receive-pack');
    const started = Date.now();
    proc.kill('SIGTERM');
    // Draining: /ready answers 503 (or the listener is already closed) while the held push runs.
    await waitFor(
      async () =>
        [503, 'closed'].includes(
          await fetch(`${c.url(3)}/ready`).then(
            (r) => r.status,
            () => 'closed',
          ),
        ),
      5_000,
      'node 3 not ready once draining',
    );
    await waitFor(() => proc.exitCode !== null, 15_000, 'node 3 exits');
    expect(proc.exitCode).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await nodeGitProcesses(c.node(3).dataDir)).toHaveLength(0);
    held.destroy();
    await c.restart(3);
  }, 90_000);
});

/** consecutiveFreePorts finds `n` free ports in a row on loopback. */
async function consecutiveFreePorts(n: number): Promise<number> {
  const { createServer } = await import('node:net');
  const free = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = await freePort();
    if (base + n >= 65535) continue;
    let ok = true;
    for (let i = 1; i < n && ok; i++) ok = await free(base + i);
    if (ok) return base;
  }
  throw new Error('no run of free ports');
}

describe('up supervises its nodes', () => {
  it('restarts a node killed with -9, says so, and stops cleanly on SIGTERM', async () => {
    const data = await tempDir();
    // `up` takes consecutive ports: find two free ones side by side (tests run in parallel).
    const base = await consecutiveFreePorts(2);
    const up = spawn(
      process.execPath,
      [MAIN, 'up', '--nodes', '2', '--data', data, '--base-port', String(base), '--no-ssh', '--log-level', 'warn'],
      {
        env: { ...process.env, NODE_TTL_MS: '2000', LOCK_TTL_MS: '4000' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    up.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    up.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    try {
      await waitFor(() => out.includes('2 nodes up') || up.exitCode !== null, 60_000, 'up started');
      if (up.exitCode !== null) throw new Error(`up exited (${up.exitCode}): ${out}`);
      const file = JSON.parse(await readFile(join(data, 'cluster.json'), 'utf8')) as { nodes: Array<{ id: string; pid: number }> };
      const before = file.nodes.find((n) => n.id === 'node-2')!.pid;
      process.kill(before, 'SIGKILL');
      await waitFor(() => /node-2 exited \(SIGKILL\); restarting it in 1 s/.test(out), 10_000, 'the exit reported');
      await waitFor(() => /node-2 restarted \(pid \d+\)/.test(out), 10_000, 'the restart reported');
      await waitFor(
        async () =>
          (await fetch(`http://127.0.0.1:${base + 1}/health`).then(
            (r) => r.status,
            () => 0,
          )) === 200,
        30_000,
        'node-2 healthy again',
      );
      await waitFor(
        async () => {
          const now = JSON.parse(await readFile(join(data, 'cluster.json'), 'utf8')) as { nodes: Array<{ id: string; pid: number }> };
          const pid = now.nodes.find((n) => n.id === 'node-2')!.pid;
          return pid !== before && pid > 0;
        },
        5_000,
        'cluster.json names the new pid',
      );
      // A second `up` on the same directory stops at once with the reason, and touches nothing.
      const second = spawn(process.execPath, [MAIN, 'up', '--nodes', '2', '--data', data, '--base-port', String(base), '--no-ssh'], {
        env: process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let secondOut = '';
      for (const s of [second.stdout, second.stderr]) s.on('data', (d: Buffer) => (secondOut += d.toString()));
      expect(await new Promise<number | null>((resolve) => second.once('exit', (c) => resolve(c)))).toBe(2);
      expect(secondOut).toMatch(/is in use by another node process \(pid \d+, per node\.pid\).*is a cluster already running/);
      expect(
        await fetch(`http://127.0.0.1:${base + 1}/health`).then(
          (r) => r.status,
          () => 0,
        ),
      ).toBe(200);
    } finally {
      up.kill('SIGTERM');
    }
    const code = await new Promise<number | null>((resolve) => up.once('exit', (c) => resolve(c)));
    expect(code).toBe(0);
    expect(
      await fetch(`http://127.0.0.1:${base + 1}/health`).then(
        () => 'up',
        () => 'down',
      ),
    ).toBe('down');
  }, 120_000);
});

describe('a second node process on a data directory in use', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 1 });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  /** serve runs `serve` with `args` and resolves with its exit code and output. */
  const serve = (args: string[]): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve) => {
      const p = spawn(process.execPath, [MAIN, 'serve', ...args], {
        env: { ...process.env, AUTH: 'open', GIT_REPLICATION_EXIT_WITH_PARENT: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      for (const s of [p.stdout, p.stderr]) s.on('data', (d: Buffer) => (out += d.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
      p.once('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });

  it('is refused before it touches anything: the running node keeps serving pushes', async () => {
    await c.createRepo(1, 'dir/repo');
    const dir = await workRepo();
    await gitOk(['push', c.repoUrl(1, 'dir/repo'), 'HEAD:refs/heads/main'], { cwd: dir });
    const n = c.node(1);
    // Before, the second process reaped the running node's git processes and replaced its
    // spawn socket: every push of the running node failed (500) until it was restarted.
    const second = await serve(['--id', n.id, '--port', String(await freePort()), '--data-dir', n.dataDir, '--store', c.store]);
    expect(second.code).toBe(2);
    expect(second.out).toContain(`data directory `);
    expect(second.out).toContain(`is in use by another node process (pid ${n.proc!.pid}, per node.pid)`);
    expect(second.out).not.toMatch(/\n\s+at /);
    for (let i = 0; i < 3; i++) {
      await commitFile(dir, `f${i}`, `${i}\n`, `after ${i}`);
      await gitOk(['push', c.repoUrl(1, 'dir/repo'), 'HEAD:refs/heads/main'], { cwd: dir });
    }
    expect(await lsRemote(c.repoUrl(1, 'dir/repo'))).toContain('refs/heads/main');
    // Its lock goes with it, kill -9 included: the same directory starts again.
    await c.restart(1);
    await commitFile(dir, 'g', 'g\n', 'after the restart');
    await gitOk(['push', c.repoUrl(1, 'dir/repo'), 'HEAD:refs/heads/main'], { cwd: dir });
  }, 120_000);

  it('a port in use is said in a line, not a stack trace', async () => {
    const other = await tempDir();
    const second = await serve([
      '--id',
      'node-x',
      '--port',
      String(c.node(1).port),
      '--data-dir',
      other,
      '--store',
      `sqlite:${join(other, 'store.db')}`,
    ]);
    expect(second.code).toBe(2);
    expect(second.out).toContain(`cannot listen on 127.0.0.1:${c.node(1).port}: the port is in use`);
    expect(second.out).not.toMatch(/\n\s+at /);
  }, 60_000);
});

import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MAIN, freePort, waitFor } from '../helpers/cluster.js';
import { tempDir } from '../helpers/git.js';

/** runUp starts `git-replication up` with one node, stdout a pipe (not a terminal), and gives its output so far. */
async function runUp(extra: string[]): Promise<{ out: () => string; stop: () => Promise<number | null> }> {
  const data = await tempDir();
  const base = await freePort();
  const up = spawn(process.execPath, [MAIN, 'up', '--nodes', '1', '--data', data, '--base-port', String(base), '--no-ssh', ...extra], {
    env: { ...process.env, NODE_TTL_MS: '2000', LOCK_TTL_MS: '4000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  up.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  up.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => up.once('exit', (c) => resolve(c)));
  await waitFor(() => stdout.includes('1 nodes up') || up.exitCode !== null, 60_000, 'up started');
  if (up.exitCode !== null) throw new Error(`up exited (${up.exitCode}): ${stdout}${stderr}`);
  return {
    out: () => stdout,
    stop: async () => {
      up.kill('SIGTERM');
      return exited;
    },
  };
}

describe('up: node logs', () => {
  it("on a pipe the nodes' logs stay JSON, one record per line", async () => {
    const r = await runUp([]);
    try {
      const records = r
        .out()
        .split('\n')
        .filter((l) => l.startsWith('{'));
      const parsed = records.map((l) => JSON.parse(l) as { msg?: string; node?: string; level?: number });
      expect(parsed.some((p) => p.msg === 'node started' && p.node === 'node-1' && p.level === 30)).toBe(true);
      expect(r.out()).not.toMatch(/INFO: node-1/);
    } finally {
      expect(await r.stop()).toBe(0);
    }
  }, 90_000);

  it('--log-format pretty: readable lines, even on a pipe', async () => {
    const r = await runUp(['--log-format', 'pretty']);
    try {
      expect(r.out()).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: node-1 node started /m);
      expect(r.out()).not.toMatch(/^\{"level"/m);
      // eslint-disable-next-line no-control-regex
      expect(r.out()).not.toMatch(/\u001b\[/);
    } finally {
      expect(await r.stop()).toBe(0);
    }
  }, 90_000);

  it('an unknown --log-format is refused before any node starts', async () => {
    const data = await tempDir();
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [MAIN, 'up', '--data', data, '--log-format', 'xml'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      p.once('exit', (code) => resolve({ code, stderr }));
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--log-format.*xml.*pretty, json/s);
  });
});

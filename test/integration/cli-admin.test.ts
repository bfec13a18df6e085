import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, TestCluster, freePort } from '../helpers/cluster.js';

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

describe('the admin and status commands against a cluster with token auth', () => {
  let c: TestCluster;
  let admin = '';
  // The CLI runs in an empty directory so a developer's ./data/admin-token cannot leak in.
  let cwd = '';

  /** cli runs the built CLI as a real process with no token in its environment unless given one. */
  function cli(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<CliRun> {
    const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
    if (!opts.env?.GIT_REPLICATION_TOKEN) delete env.GIT_REPLICATION_TOKEN;
    return new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args], { cwd: opts.cwd ?? cwd, env, timeout: 60_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** expectFailure checks the one-line `git-replication: <status> …` answer: no stack trace, no TypeError. */
  function expectFailure(r: CliRun, status: RegExp): void {
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(status);
    expect(r.stderr).not.toMatch(/TypeError|\n\s+at /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }

  async function api(method: string, path: string, token: string, body?: unknown): Promise<Response> {
    return fetch(`${c.url(1)}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  }

  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { AUTH: 'tokens' } });
    admin = await c.adminToken();
    cwd = await mkdtemp(join(tmpdir(), 'gitrep-cli-'));
    expect((await api('POST', '/repos', admin, { repo_id: 'cli/one' })).status).toBe(201);
  });
  afterAll(async () => {
    await c?.destroy();
    if (cwd) await rm(cwd, { recursive: true, force: true });
  });

  it('without a token every admin command exits 1 with the 401, not a TypeError', async () => {
    for (const args of [['node', 'list'], ['rebalance'], ['node', 'decommission', 'node-2']]) {
      expectFailure(await cli([...args, '--url', c.url(1)]), /^git-replication: 401 authentication required/);
    }
    expectFailure(await cli(['node', 'list', '--url', c.url(1), '--token', 'grt_not-a-token']), /^git-replication: 401 invalid token/);
  });

  it('an unreachable node is one line and exit 1', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    expectFailure(await cli(['node', 'list', '--url', closed, '--token', admin]), /^git-replication: cannot reach .*ECONNREFUSED/);
  });

  it('the token comes from --token, GIT_REPLICATION_TOKEN, --token-file or ./data/admin-token', async () => {
    const file = join(cwd, 'token');
    await writeFile(file, `${admin}\n`, { mode: 0o600 });
    const withDefault = await mkdtemp(join(tmpdir(), 'gitrep-cli-default-'));
    await mkdir(join(withDefault, 'data'));
    await writeFile(join(withDefault, 'data', 'admin-token'), `${admin}\n`, { mode: 0o600 });
    try {
      const ways: Array<{ args: string[]; env?: Record<string, string>; cwd?: string }> = [
        { args: ['--token', admin] },
        { args: [], env: { GIT_REPLICATION_TOKEN: admin } },
        { args: ['--token-file', file] },
        { args: [], cwd: withDefault },
      ];
      for (const way of ways) {
        const list = await cli(['node', 'list', '--url', c.url(2), ...way.args], way);
        expect(list.code, list.stderr).toBe(0);
        for (const n of c.nodes) expect(list.stdout).toContain(`${n.id}\t${n.url}\tlive`);
        const rebalance = await cli(['rebalance', '--url', c.url(2), ...way.args], way);
        expect(rebalance.code, rebalance.stderr).toBe(0);
        expect(rebalance.stdout).toMatch(/rebalance requested[^]*rebalance done: every repo is on its placement\n$/);
        // Progress goes to stderr as plain lines off a terminal: no bar, no carriage return.
        expect(rebalance.stderr).toMatch(/^rebalance: (\d+) of \1 repos on their placement$/m);
        expect(rebalance.stderr).not.toContain('\r');
      }
    } finally {
      await rm(withDefault, { recursive: true, force: true });
    }
    expectFailure(
      await cli(['node', 'list', '--url', c.url(1), '--token-file', join(cwd, 'missing')]),
      /^git-replication: cannot read token file/,
    );
  });

  it('a read-role token gets the 403', async () => {
    const r = await api('POST', '/admin/tokens', admin, { name: 'r', role: 'read' });
    expect(r.status).toBe(201);
    const reader = ((await r.json()) as { token: string }).token;
    expectFailure(
      await cli(['node', 'list', '--url', c.url(1), '--token', reader]),
      /^git-replication: 403 token 'r' has scope read; admin needed/,
    );
    expectFailure(await cli(['rebalance', '--url', c.url(1), '--token', reader]), /^git-replication: 403 /);
  });

  it('status prints the nodes and the repo count', async () => {
    const r = await cli(['status', '--url', c.url(1), '--token', admin]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^node node-1: healthy$/m);
    expect(r.stdout).toMatch(/^ {2}peer node-2 \S+ live$/m);
    expect(r.stdout).toMatch(/^ {2}peer node-3 \S+ live$/m);
    expect(r.stdout).toMatch(/^1 repos, 3 replicas, \d+ not in sync$/m);
    // Not a terminal: no colour codes.
    expect(r.stdout).not.toContain('\u001b[');
    const j = await cli(['status', '--url', c.url(2), '--token', admin, '--json']);
    expect(j.code, j.stderr).toBe(0);
    const doc = JSON.parse(j.stdout) as {
      node: { id: string; status: string; writes: string };
      peers: unknown[];
      repos: number;
      replicas: number;
      not_in_sync: unknown[];
    };
    expect(doc).toMatchObject({ node: { id: 'node-2', status: 'healthy', writes: 'available' }, repos: 1, replicas: 3 });
    expect(doc.peers).toHaveLength(2);
    expect(Array.isArray(doc.not_in_sync)).toBe(true);
  });

  it('decommission: an unknown id is a 404, a real one shows in node list', async () => {
    expectFailure(
      await cli(['node', 'decommission', 'no-such-node', '--url', c.url(1), '--token', admin]),
      /^git-replication: 404 node no-such-node not found/,
    );
    const r = await cli(['node', 'decommission', 'node-3', '--url', c.url(1), '--token', admin]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/node-3: decommissioned/);
    const list = await cli(['node', 'list', '--url', c.url(1), '--token', admin]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^node-3\t\S+\t(live|down)\tdecommissioned\t\d+ replicas$/m);
    expect(list.stdout).not.toMatch(/^node-[12]\t.*decommissioned/m);
  });
});

import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLocalCa, type LocalCa } from '../../src/cluster/local-ca.js';
import { MAIN, TestCluster, freePort, sleep, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, refsOf, tempDir, workRepo } from '../helpers/git.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** plainHttp sends a plain-HTTP request to a port and returns every byte the server sent back. */
function plainHttp(port: number): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = connect(port, '127.0.0.1', () => s.write('GET /repos HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n'));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
    });
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    s.setTimeout(10_000, () => s.destroy());
  });
}

describe('TLS: a 3-node cluster on HTTPS end to end', { timeout: 240_000 }, () => {
  let c: TestCluster;
  let dir: string;
  let pki: LocalCa;
  let otherCa: LocalCa;
  const sslCa = (): string[] => ['-c', `http.sslCAInfo=${pki.ca}`];

  beforeAll(async () => {
    dir = await tempDir('gitrep-tls-');
    pki = await makeLocalCa(join(dir, 'tls'), ['node-1', 'node-2', 'node-3', 'node-4', 'node-5']);
    otherCa = await makeLocalCa(join(dir, 'other'), []);
    // 4 nodes with R=3: each repo has one node that is not a replica and proxies its reads.
    c = await TestCluster.start({ nodes: 4, replicationFactor: 3, tls: { ca: pki.ca, certs: (id) => pki.nodes[id]! } });
  });
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('creates a repo over the HTTPS API, takes a push on node 1 and serves identical refs from every node', async () => {
    expect(c.url(1)).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const health = await c.api(1, 'GET', '/health');
    expect(health.json.peer_nodes).toEqual(expect.arrayContaining([expect.objectContaining({ url: c.url(2) })]));
    await c.createRepo(1, 'tls/demo');
    const work = await workRepo();
    await commitFile(work, 'b.txt', 'second\n', 'second');
    // The push is acknowledged after prepare and commit on a quorum of peers, over HTTPS.
    await gitOk([...sslCa(), 'push', '-q', c.repoUrl(1, 'tls/demo'), 'main', 'main:refs/heads/other'], { cwd: work });
    const st = await c.waitInSync('tls/demo');
    const outsider = [1, 2, 3, 4].find((i) => !st.replicas.some((r) => r.node === `node-${i}`));
    expect(outsider).toBeDefined();
    const head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    const expected = `${head} refs/heads/main\n${head} refs/heads/other\n`;
    for (const i of [1, 2, 3, 4]) {
      const clone = join(await tempDir('gitrep-tls-clone-'), 'r');
      await gitOk([...sslCa(), 'clone', '-q', '--mirror', c.repoUrl(i, 'tls/demo'), clone]);
      expect(await refsOf(clone), `clone from node ${i}${i === outsider ? ' (proxied)' : ''}`).toBe(expected);
    }
  });

  it('a replica that missed a push is repaired by a git fetch over HTTPS', async () => {
    const st = await c.repoStatus(1, 'tls/demo');
    const replicas = st.replicas.map((r) => Number(r.node.replace('node-', '')));
    const down = replicas[replicas.length - 1]!;
    const via = replicas[0]!;
    await c.kill(down);
    const work = join(await tempDir('gitrep-tls-work-'), 'w');
    await gitOk([...sslCa(), 'clone', '-q', c.repoUrl(via, 'tls/demo'), work]);
    await commitFile(work, 'c.txt', 'third\n', 'third');
    await gitOk([...sslCa(), 'push', '-q', c.repoUrl(via, 'tls/demo'), 'main'], { cwd: work });
    await c.restart(down);
    await c.waitInSync('tls/demo', via, 60_000);
    expect(await refsOf(c.replicaPath(down, 'tls/demo'))).toBe(await refsOf(c.replicaPath(via, 'tls/demo')));
  });

  it('git without the CA refuses the server certificate', async () => {
    const r = await git(['ls-remote', c.repoUrl(3, 'tls/demo')], { env: { GIT_SSL_CAINFO: otherCa.ca } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/certificate/i);
    const clone = join(await tempDir('gitrep-tls-noca-'), 'r');
    const r2 = await git(['clone', c.repoUrl(3, 'tls/demo'), clone]);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/certificate|SSL/i);
  });

  it('plain HTTP to a TLS port gets no data', async () => {
    const got = await plainHttp(c.node(1).port);
    expect(got).not.toMatch(/tls\/demo|"repos"/);
    expect(got).not.toMatch(/^HTTP\/1\.1 2/);
    const r = await git(['ls-remote', `http://127.0.0.1:${c.node(1).port}/tls/demo.git`]);
    expect(r.code).not.toBe(0);
  });

  it('a node whose --tls-ca does not match its peers cannot reach them: no quorum through it', async () => {
    const i = await c.addNode({ TLS_CA: otherCa.ca });
    const created = await c.api(i, 'POST', '/repos', { repo_id: 'tls/through-5' });
    expect(created.status, JSON.stringify(created.json)).toBe(503);
    expect(JSON.stringify(created.json)).toMatch(/quorum/);
    expect(c.node(i).log).toMatch(/certificate/i);
    // The other nodes trust node 5's certificate (the cluster's CA signed it) and nothing was created.
    expect((await c.api(1, 'GET', '/repos/tls/through-5')).status).toBe(404);
    const ok = await c.api(1, 'POST', '/repos', { repo_id: 'tls/through-1' });
    expect(ok.status, JSON.stringify(ok.json)).toBe(201);
  });
});

describe('TLS: serve refuses a half or broken configuration', () => {
  it.each([
    ['only --tls-cert', ['--tls-cert', '/nonexistent/cert.pem'], /--tls-cert .*--tls-key .*go together/],
    [
      'unreadable files',
      ['--tls-cert', '/nonexistent/cert.pem', '--tls-key', '/nonexistent/key.pem'],
      /cannot read --tls-cert \/nonexistent\/cert\.pem/,
    ],
    ['a CA that is not PEM', ['--tls-ca', '/etc/hostname'], /--tls-ca \/etc\/hostname is not a usable PEM certificate/],
  ])('%s: exit 2 with a message', async (_name, flags, message) => {
    const data = await tempDir('gitrep-tls-bad-');
    try {
      const r = await run(process.execPath, [MAIN, 'serve', '--port', String(await freePort()), '--data-dir', join(data, 'd'), ...flags]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
});

describe('TLS: up --tls', { timeout: 120_000 }, () => {
  it('makes a local CA and node certificates that verify, and serves HTTPS with them', async () => {
    const data = await tempDir('gitrep-up-tls-');
    const base = await freePort();
    const child = spawn(
      process.execPath,
      [MAIN, 'up', '--tls', '--nodes', '1', '--data', data, '--base-port', String(base), '--log-level', 'warn'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, GIT_REPLICATION_EXIT_WITH_PARENT: '1' },
      },
    );
    let out = '';
    const keep = (d: Buffer): void => {
      out += d.toString();
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    try {
      await waitFor(() => out.includes('Ctrl-C stops the cluster') || child.exitCode !== null, 60_000, 'up --tls');
      const tls = join(data, 'tls');
      expect(out).toContain(`https://127.0.0.1:${base}`);
      expect(out).toContain(`git -c http.sslCAInfo=${join(tls, 'ca.pem')} clone https://127.0.0.1:${base}/`);
      expect((await stat(tls)).mode & 0o777).toBe(0o700);
      for (const f of await readdir(tls)) expect((await stat(join(tls, f))).mode & 0o777, f).toBe(0o600);
      expect(existsSync(join(tls, 'ca-key.pem'))).toBe(true);
      for (const check of [
        ['-verify_ip', '127.0.0.1'],
        ['-verify_hostname', 'localhost'],
      ]) {
        const v = await run('openssl', ['verify', ...check, '-CAfile', join(tls, 'ca.pem'), join(tls, 'node-1.pem')]);
        expect(v.stdout + v.stderr).toMatch(/node-1\.pem: OK/);
      }
      const ls = await git(['-c', `http.sslCAInfo=${join(tls, 'ca.pem')}`, 'ls-remote', `https://127.0.0.1:${base}/demo/none.git`]);
      expect(ls.stderr).not.toMatch(/certificate|SSL/i);
      expect(JSON.parse(await readFile(join(data, 'cluster.json'), 'utf8'))).toMatchObject({
        nodes: [{ url: `https://127.0.0.1:${base}` }],
      });
    } finally {
      child.kill('SIGINT');
      await Promise.race([exited, sleep(20_000)]);
      await rm(data, { recursive: true, force: true });
    }
  });

  it('without openssl it fails and says what to install', async () => {
    const data = await tempDir('gitrep-up-tls-noossl-');
    try {
      const r = await run(
        process.execPath,
        [MAIN, 'up', '--tls', '--nodes', '1', '--data', data, '--base-port', String(await freePort())],
        { ...process.env, OPENSSL_BIN: '/nonexistent/openssl' },
      );
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/needs the openssl binary .*apt-get install openssl/);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
});

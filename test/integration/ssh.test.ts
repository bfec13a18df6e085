import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client, utils } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, sleep, TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, shallowCloneElsewhere, tempDir, workRepo } from '../helpers/git.js';
import { packsShipped } from '../helpers/staging.js';

/**
 * Git over SSH with the real ssh and git clients against a 3-node cluster with token auth and
 * replication factor 2, so one node holds no replica of the test repository and proxies its
 * sessions to one that does.
 */
/** NO_LFS says why the git-lfs client is missing, or null. */
const NO_LFS = (() => {
  try {
    execFileSync('git-lfs', ['version'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'git-lfs is not installed';
  }
})();

describe('git over ssh', () => {
  let c: TestCluster;
  let admin = '';
  let tmp = '';
  let work = '';
  let hostKey = '';
  const REPO = 'alice/site';
  let replicaNodes: number[] = [];
  let otherNode = 0;

  async function api(
    node: number,
    method: string,
    path: string,
    body?: unknown,
    token: string | null = admin,
  ): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(`${c.url(node)}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      json = { text };
    }
    return { status: res.status, json };
  }

  async function ok(node: number, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const r = await api(node, method, path, body);
    expect(r.status, `${method} ${path}: ${JSON.stringify(r.json)}`).toBeLessThan(300);
    return r.json;
  }

  /** keygen makes a client key pair and returns the private key's path. */
  async function keygen(name: string): Promise<string> {
    const file = join(tmp, name);
    await new Promise<void>((resolve, reject) =>
      execFile('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@test`, '-f', file], (err: Error | null) =>
        err ? reject(err) : resolve(),
      ),
    );
    return file;
  }

  function sshPort(node: number): number {
    return c.node(node).sshPort!;
  }

  function sshCommand(key: string): string {
    return `ssh -i ${key} -F ${join(tmp, 'ssh_config')} -o UserKnownHostsFile=${join(tmp, 'known_hosts')} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes`;
  }

  function sshUrl(node: number, repo = REPO): string {
    return `ssh://git@127.0.0.1:${sshPort(node)}/${repo}.git`;
  }

  function asUser(key: string): { env: NodeJS.ProcessEnv } {
    return { env: { GIT_SSH_COMMAND: sshCommand(key) } };
  }

  /** ssh runs the real ssh client with a remote command. */
  function ssh(key: string, node: number, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const argv = [...sshCommand(key).split(' ').slice(1), '-p', String(sshPort(node)), 'git@127.0.0.1', ...args];
      execFile('ssh', argv, { timeout: 30_000 }, (err, stdout, stderr) => {
        resolve({
          code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0,
          stdout,
          stderr,
        });
      });
    });
  }

  const keys: Record<string, string> = {};
  const exists = (path: string): Promise<boolean> =>
    access(path).then(
      () => true,
      () => false,
    );

  beforeAll(async () => {
    c = await TestCluster.start({
      nodes: 3,
      replicationFactor: 2,
      ssh: true,
      env: { AUTH: 'tokens', SSH_MAX_PER_USER: '3', SSH_IDLE_TIMEOUT: '4s', SSH_HANDSHAKE_TIMEOUT: '3s' },
    });
    admin = await c.adminToken();
    tmp = await tempDir('gitrep-ssh-');
    // Every node presents the cluster's one host key.
    const hk = await Promise.all([1, 2, 3].map(async (i) => (await api(i, 'GET', '/ssh/host-key', undefined, null)).json));
    hostKey = hk[0]!.key as string;
    expect(hk.map((h) => h.key)).toEqual([hostKey, hostKey, hostKey]);
    expect(hk.map((h) => h.port)).toEqual([1, 2, 3].map(sshPort));
    const lines = [1, 2, 3].map((i) => `[127.0.0.1]:${sshPort(i)},[node${i}]:${sshPort(i)} ${hostKey}`);
    await writeFile(join(tmp, 'known_hosts'), `${lines.join('\n')}\n`);
    // scp-style URLs (git@node2:owner/repo.git) take their port from the ssh config.
    await writeFile(join(tmp, 'ssh_config'), [1, 2, 3].map((i) => `Host node${i}\n  HostName 127.0.0.1\n  Port ${sshPort(i)}\n`).join(''));
    for (const u of ['alice', 'bob', 'carol']) {
      await ok(1, 'POST', '/users', { name: u });
      keys[u] = await keygen(u);
      const pub = await readFile(`${keys[u]}.pub`, 'utf8');
      await ok(2, 'POST', `/users/${u}/keys`, { name: 'laptop', key: pub });
    }
    keys.stranger = await keygen('stranger');
    await ok(1, 'POST', '/repos', { repo_id: REPO });
    await ok(1, 'PUT', `/repos/${REPO}/grants/user:bob`, { role: 'read' });
    const status = (await ok(1, 'GET', `/repos/${REPO}`)) as unknown as { replicas: Array<{ node: string }> };
    replicaNodes = status.replicas.map((r) => Number(r.node.replace('node-', '')));
    otherNode = [1, 2, 3].find((i) => !replicaNodes.includes(i))!;
    work = await workRepo();
  }, 120_000);

  afterAll(async () => {
    await c?.destroy();
  });

  /** newRepoReplica creates `repo` and returns the number of a node with a replica of it. */
  async function newRepoReplica(repo: string): Promise<number> {
    await ok(1, 'POST', '/repos', { repo_id: repo });
    const status = (await ok(1, 'GET', `/repos/${repo}`)) as unknown as { replicas: Array<{ node: string }> };
    return Number(status.replicas[0]!.node.replace('node-', ''));
  }

  it('pushes to one node and clones from every node, the node without a replica proxying', async () => {
    const teed = (): Promise<number> => packsShipped(c.url(replicaNodes[0]!), 'teed');
    const before = await teed();
    await gitOk(['push', '-q', sshUrl(replicaNodes[0]!), 'HEAD:refs/heads/main'], { cwd: work, ...asUser(keys.alice!) });
    // The pack went to the other replica while the client sent it, as over HTTP.
    expect(await teed()).toBe(before + 1);
    const head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    for (const node of [1, 2, 3]) {
      const dir = join(await tempDir(), 'clone');
      await gitOk(['clone', '-q', sshUrl(node), dir], asUser(keys.alice!));
      expect((await gitOk(['rev-parse', 'HEAD'], { cwd: dir })).trim(), `clone from node ${node}`).toBe(head);
    }
    // A push through the node without a replica is proxied to the replica set.
    const next = await commitFile(work, 'b.txt', 'b\n', 'second');
    await gitOk(['push', '-q', sshUrl(otherNode), 'HEAD:refs/heads/main'], { cwd: work, ...asUser(keys.alice!) });
    const ls = await gitOk(['ls-remote', sshUrl(replicaNodes[1]!), 'refs/heads/main'], asUser(keys.alice!));
    expect(ls.split('\t')[0]).toBe(next);
  }, 120_000);

  it("a push from a shallow clone naming a shallow commit the replica lacks takes the replica's links-checked mark away, before receive-pack reads it", async () => {
    const [coordinator, peer] = [replicaNodes[0]!, replicaNodes[1]!];
    const marker = (node: number): string => join(c.replicaPath(node, REPO), 'gitrep-links-checked');
    expect([await exists(marker(coordinator)), await exists(marker(peer))]).toEqual([true, true]);
    const { dir: shallow, shallow: s } = await shallowCloneElsewhere();
    // receive-pack refuses the branch at S (shallow update not allowed) and moves S in with the
    // other branch's objects; the peer's index-pack refuses S without its parent, so that branch
    // fails too (2 replicas, both needed), but the coordinator's replica holds S now.
    const r = await git(['push', sshUrl(coordinator), `${s}:refs/heads/shallow-s`, 'whole:refs/heads/whole'], {
      cwd: shallow,
      ...asUser(keys.alice!),
    });
    expect(r.stderr).toMatch(/shallow update not allowed/);
    expect((await git(['cat-file', '-t', s], { cwd: c.replicaPath(coordinator, REPO) })).stdout.trim()).toBe('commit');
    expect([await exists(marker(coordinator)), await exists(marker(peer))]).toEqual([false, true]);
  }, 60_000);

  it('a push whose shallow line cannot be noted on the replica ends with the reason, and changes nothing', async () => {
    const repo = 'alice/shallow-note';
    const node = await newRepoReplica(repo);
    // The mark a directory: its removal fails (EISDIR), as a failing disk would fail it.
    const marker = join(c.replicaPath(node, repo), 'gitrep-links-checked');
    await rm(marker);
    await mkdir(join(marker, 'x'), { recursive: true });
    const { dir: shallow, shallow: s } = await shallowCloneElsewhere();
    const r = await git(['push', sshUrl(node, repo), `${s}:refs/heads/shallow-s`, 'whole:refs/heads/whole'], {
      cwd: shallow,
      ...asUser(keys.alice!),
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/git-replication: the replica could not note a push from a shallow clone \(EISDIR\), try again\n/);
    expect(r.stderr).not.toContain('gitrep-links-checked');
    expect((await gitOk(['ls-remote', sshUrl(node, repo)], asUser(keys.alice!))).trim()).toBe('');
  }, 60_000);

  it("garbage pushed over SSH is refused with the reason before receive-pack reads it, and leaves the replica's mark", async () => {
    const repo = 'alice/garbage';
    const node = await newRepoReplica(repo);
    const marker = join(c.replicaPath(node, repo), 'gitrep-links-checked');
    expect(await exists(marker)).toBe(true);
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const argv = [
        ...sshCommand(keys.alice!).split(' ').slice(1),
        '-p',
        String(sshPort(node)),
        'git@127.0.0.1',
        `git-receive-pack '${repo}.git'`,
      ];
      const p = spawn('ssh', argv, { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.stdin.on('error', () => undefined);
      p.stdin.end('zzzz garbage\n');
      p.on('close', (code) => resolve({ code, stderr }));
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/git-replication: malformed pkt-line: bad length header 'zzzz'/);
    expect(await exists(marker)).toBe(true);
    expect(await exists(join(c.replicaPath(node, repo), 'gitrep-links-unchecked'))).toBe(false);
  }, 60_000);

  it('clones scp-style (git@node2:owner/repo.git) and with protocol v2', async () => {
    const dir = join(await tempDir(), 'scp');
    await gitOk(['clone', '-q', `git@node2:${REPO}.git`, dir], asUser(keys.bob!));
    const v2 = join(await tempDir(), 'v2');
    const r = await git(['-c', 'protocol.version=2', 'clone', sshUrl(3), v2], { env: { ...asUser(keys.bob!).env, GIT_TRACE_PACKET: '1' } });
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(r.stderr).toMatch(/clone< version 2/);
    expect(r.stderr).toMatch(/clone> command=fetch/);
  }, 60_000);

  it('a key of a user with read access cannot push; one without access does not see the repository', async () => {
    await commitFile(work, 'c.txt', 'c\n', 'third');
    const bob = await git(['push', sshUrl(1), 'HEAD:refs/heads/main'], { cwd: work, ...asUser(keys.bob!) });
    expect(bob.code).not.toBe(0);
    expect(bob.stderr).toContain(`permission denied: write access to ${REPO} needed`);
    const carol = await git(['clone', sshUrl(2), join(await tempDir(), 'x')], asUser(keys.carol!));
    expect(carol.code).not.toBe(0);
    expect(carol.stderr).toContain(`repository ${REPO} not found`);
    // The same answer as for a repository that does not exist.
    const missing = await git(['clone', sshUrl(2, 'alice/nothing'), join(await tempDir(), 'y')], asUser(keys.carol!));
    expect(missing.stderr).toContain('repository alice/nothing not found');
  }, 60_000);

  it("a former writer's push and fetch over SSH, through nodes that read the old repository's policy, see nothing of the one created again", async () => {
    const adminGit = {
      env: { GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: 'http.extraHeader', GIT_CONFIG_VALUE_0: `Authorization: Bearer ${admin}` },
    };
    /** receivePack asks for a push's ref advertisement as git push would, and sends no commands. */
    const receivePack = (node: number, repo: string): Promise<{ code: number; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        const argv = [...sshCommand(keys.carol!).split(' ').slice(1), '-n', '-p', String(sshPort(node)), 'git@127.0.0.1'];
        execFile('ssh', [...argv, `git-receive-pack '${repo}.git'`], { timeout: 30_000 }, (err, stdout, stderr) =>
          resolve({ code: err ? 1 : 0, stdout, stderr }),
        );
      });
    for (let attempt = 1; ; attempt++) {
      const repo = `alice/ssh-again-${attempt}`;
      await ok(1, 'POST', '/repos', { repo_id: repo });
      await ok(1, 'PUT', `/repos/${repo}/grants/user:carol`, { role: 'write' });
      const status = (await ok(1, 'GET', `/repos/${repo}`)) as unknown as { replicas: Array<{ node: string }> };
      const [pushNode, fetchNode] = status.replicas.map((r) => Number(r.node.replace('node-', '')));
      // Both replicas' nodes read the policy for carol (cached up to a second, counted from before the reads) ...
      const read = Date.now();
      for (const n of [pushNode!, fetchNode!]) expect((await git(['ls-remote', sshUrl(n, repo)], asUser(keys.carol!))).code).toBe(0);
      // ... then the repository is deleted and created again (its replicas on the same nodes), without
      // carol, and its owner pushes to it ...
      await ok(1, 'DELETE', `/repos/${repo}`);
      await ok(1, 'POST', '/repos', { repo_id: repo });
      await gitOk(['push', '-q', `${c.url(1)}/${repo}.git`, 'HEAD:refs/heads/secret'], { cwd: work, ...adminGit });
      // ... and carol, through those views of the old one, asks to push to it and reads it.
      const [pushed, fetched] = await Promise.all([
        receivePack(pushNode!, repo),
        git(['ls-remote', sshUrl(fetchNode!, repo)], asUser(keys.carol!)),
      ]);
      const within = Date.now() - read < 1_000;
      // Refused before receive-pack advertised the new repository's refs.
      expect(pushed.code).not.toBe(0);
      expect(pushed.stdout).not.toContain('refs/heads/secret');
      expect(pushed.stderr).toContain(`repository ${repo} not found`);
      expect(fetched.code).not.toBe(0);
      expect(fetched.stdout).not.toContain('refs/heads/secret');
      expect(fetched.stderr).toContain(`repository ${repo} not found`);
      if (within || attempt === 5) {
        expect(within, 'the delete, the create and the push took more than the policy cache time, five times').toBe(true);
        break;
      }
    }
  }, 60_000);

  it('refuses a key nobody registered', async () => {
    const r = await git(['clone', sshUrl(1), join(await tempDir(), 'z')], asUser(keys.stranger!));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Permission denied \(publickey\)/);
  }, 30_000);

  it('counts SSH commands by service and outcome, connections and refused sign-ins in /metrics', async () => {
    const [replica, proxy] = [replicaNodes[0]!, otherNode];
    const scrape = async (node: number): Promise<string> => (await fetch(`${c.url(node)}/metrics`)).text();
    /** value reads one series: the metric's line carrying every given label, whatever their order. */
    const value = (text: string, name: string, labels: Record<string, string> = {}): number => {
      const line = text
        .split('\n')
        .find(
          (l) =>
            (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)),
        );
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
    };
    const before = await Promise.all([scrape(replica), scrape(proxy)]);
    await gitOk(['clone', '-q', sshUrl(replica), join(await tempDir(), 'm1')], asUser(keys.alice!));
    await gitOk(['clone', '-q', sshUrl(proxy), join(await tempDir(), 'm2')], asUser(keys.alice!));
    expect((await ssh(keys.alice!, replica, ['ls', '/'])).code).toBe(1);
    expect((await git(['clone', sshUrl(replica), join(await tempDir(), 'm3')], asUser(keys.stranger!))).code).not.toBe(0);
    const after = await Promise.all([scrape(replica), scrape(proxy)]);
    const delta = (i: 0 | 1, name: string, labels: Record<string, string> = {}): number =>
      value(after[i], name, labels) - value(before[i], name, labels);
    // Its own clone, and the proxied one if the other node chose it to serve it.
    const served = delta(0, 'gitrep_ssh_commands_total', { service: 'git-upload-pack', outcome: 'ok' });
    expect([1, 2]).toContain(served);
    expect(delta(0, 'gitrep_ssh_command_seconds_count', { service: 'git-upload-pack' })).toBe(served);
    expect(delta(0, 'gitrep_ssh_commands_total', { service: 'other', outcome: 'refused' })).toBe(1);
    expect(delta(0, 'gitrep_ssh_auth_failures_total')).toBeGreaterThanOrEqual(1);
    // The node without a replica proxies its clone.
    expect(delta(1, 'gitrep_ssh_commands_total', { service: 'git-upload-pack', outcome: 'proxied' })).toBe(1);
    expect(after[0]).toMatch(/^gitrep_ssh_connections \d+$/m);
  }, 60_000);

  it('refuses other commands, a shell and paths outside the repositories, running nothing', async () => {
    for (const args of [
      ['ls', '/'],
      ['sh', '-c', 'id'],
      ["git-upload-pack '/../../etc'"],
      ["git-upload-archive '/alice/site.git'"],
      ['scp', '-t', '/tmp'],
    ]) {
      const r = await ssh(keys.alice!, 1, args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(
        /git-replication: (only git-upload-pack, git-receive-pack and git-lfs-authenticate may be run|'.*' is not a repository path)/,
      );
    }
    const shell = await ssh(keys.alice!, 2, []);
    expect(shell.stderr).toContain(
      'Hi alice! You are signed in, but only git-upload-pack, git-receive-pack and git-lfs-authenticate may be run',
    );
    const forward = await ssh(keys.alice!, 1, ['-o', 'ExitOnForwardFailure=yes', '-L', '0:127.0.0.1:22', 'true']);
    expect(forward.code).not.toBe(0);
  }, 60_000);

  it('registers keys: RSA 1024 refused, a key held by another user is a 409, users manage their own', async () => {
    const rsa1024 = utils.generateKeyPairSync('rsa', { bits: 1024 }).public;
    const small = await api(1, 'POST', '/users/alice/keys', { name: 'old', key: rsa1024 });
    expect(small.status).toBe(400);
    expect(small.json.error).toMatch(/RSA key of 1024 bits is too short/);
    const bobPub = await readFile(`${keys.bob!}.pub`, 'utf8');
    expect((await api(1, 'POST', '/users/alice/keys', { name: 'stolen', key: bobPub })).status).toBe(409);
    const aliceToken = (await ok(1, 'POST', '/tokens', { name: 'a', scope: 'admin', user: 'alice' })).token as string;
    const list = await api(3, 'GET', '/users/alice/keys', undefined, aliceToken);
    expect(list.status).toBe(200);
    expect((list.json.keys as Array<{ name: string; fingerprint: string }>).map((k) => k.name)).toEqual(['laptop']);
    expect((await api(3, 'GET', '/users/bob/keys', undefined, aliceToken)).status).toBe(403);
    const writeToken = (await ok(1, 'POST', '/tokens', { name: 'w', scope: 'write', user: 'alice' })).token as string;
    const stranger = await readFile(`${keys.stranger!}.pub`, 'utf8');
    expect((await api(1, 'POST', '/users/alice/keys', { name: 'x', key: stranger }, writeToken)).status).toBe(403);
  }, 30_000);

  it('a token that expires adds keys that expire by then, and an expired key no longer signs in', async () => {
    await ok(1, 'POST', '/users', { name: 'erin' });
    const soon = new Date(Date.now() + 6_000).toISOString();
    const short = (await ok(1, 'POST', '/tokens', { name: 'short', scope: 'admin', user: 'erin', expires_at: soon })).token as string;
    const file = await keygen('erin');
    const pub = await readFile(`${file}.pub`, 'utf8');
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const refused = await api(2, 'POST', '/users/erin/keys', { name: 'long', key: pub, expires_at: later }, short);
    expect(refused.status).toBe(403);
    expect(refused.json.error).toMatch(/expires at .* and may not add an SSH key that expires later/);
    expect((await api(2, 'POST', '/users/erin/keys', { name: 'past', key: pub, expires_at: '2001-01-01T00:00:00Z' })).status).toBe(400);
    const made = await api(2, 'POST', '/users/erin/keys', { name: 'temp', key: pub }, short);
    expect(made.status).toBe(201);
    expect(made.json.expiresAt).toBe(soon);
    expect((await ssh(file, 3, [])).stderr).toContain('Hi erin! You are signed in');
    await waitFor(async () => /Permission denied \(publickey\)/.test((await ssh(file, 1, [])).stderr), 15_000, 'expired key refused');
  }, 60_000);

  it('key add, list and remove through the CLI; a removed key no longer signs in', async () => {
    const file = await keygen('dave');
    await ok(1, 'POST', '/users', { name: 'dave' });
    const cli = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        execFile(process.execPath, [MAIN, ...args, '--url', c.url(2), '--token', admin], { timeout: 30_000 }, (err, stdout, stderr) => {
          resolve({
            code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0,
            stdout,
            stderr,
          });
        });
      });
    const added = await cli(['key', 'add', 'dave', `${file}.pub`, '--name', 'desk']);
    expect(added.code, added.stderr).toBe(0);
    const fingerprint = /key (SHA256:\S+) 'desk' \(ssh-ed25519\) added for dave/.exec(added.stdout)?.[1];
    expect(fingerprint).toBeDefined();
    const listed = await cli(['key', 'list', 'dave']);
    expect(listed.stdout).toContain(`${fingerprint}\tdesk\tssh-ed25519\tdave`);
    // dave has no access to alice's private repository: signed in, it does not exist for him.
    expect((await ssh(file, 3, [`git-upload-pack '/${REPO}.git'`])).stderr).toContain(`repository ${REPO} not found`);
    const removed = await cli(['key', 'remove', 'dave', fingerprint!]);
    expect(removed.code, removed.stderr).toBe(0);
    await waitFor(async () => /Permission denied \(publickey\)/.test((await ssh(file, 3, ['x'])).stderr), 5_000, 'removed key refused');
    expect((await cli(['key', 'add', 'dave', '/nonexistent.pub'])).stderr).toMatch(/cannot read \/nonexistent.pub/);
  }, 60_000);

  it('limits connections per user, closes idle ones, and survives garbage', async () => {
    const held: ChildProcess[] = [];
    for (let i = 0; i < 3; i++) {
      const argv = [...sshCommand(keys.carol!).split(' ').slice(1), '-N', '-p', String(sshPort(1)), 'git@127.0.0.1'];
      const p = spawn('ssh', argv, { stdio: 'ignore' });
      p.on('error', () => undefined);
      held.push(p);
    }
    try {
      await waitFor(
        async () =>
          (await ssh(keys.carol!, 1, [`git-upload-pack '/${REPO}.git'`])).stderr.includes(
            'too many SSH connections for user carol (at most 3 at a time)',
          ),
        10_000,
        'the fourth connection refused',
      );
      // Idle for SSH_IDLE_TIMEOUT (4 s): the node closes them.
      await waitFor(() => held.every((p) => p.exitCode !== null || p.signalCode !== null), 15_000, 'idle connections closed');
    } finally {
      for (const p of held) p.kill();
    }
    expect((await ssh(keys.carol!, 1, [`git-upload-pack '/${REPO}.git'`])).stderr).toContain(`repository ${REPO} not found`);
    // Garbage instead of an SSH handshake, and a connection cut mid-handshake: the node stays up.
    for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.concat([Buffer.from('SSH-2.0-x\r\n'), Buffer.alloc(4096, 0xff)])]) {
      const sock = connect(sshPort(1), '127.0.0.1');
      sock.on('error', () => undefined);
      const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
      sock.write(bytes);
      // The node refuses the bytes by closing the connection; one it holds open is cut after 2 s.
      await Promise.race([closed, sleep(2_000)]);
      sock.destroy();
    }
    expect((await fetch(`${c.url(1)}/health`)).status).toBe(200);
    await gitOk(['ls-remote', sshUrl(1)], asUser(keys.alice!));
  }, 60_000);

  /** signIn opens an ssh2 connection to node `node` with the key at `keyFile`. */
  async function signIn(keyFile: string, node: number): Promise<Client> {
    const client = new Client();
    const privateKey = await readFile(keyFile);
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', reject);
      client.connect({ host: '127.0.0.1', port: sshPort(node), username: 'git', privateKey, hostVerifier: () => true });
    });
    client.on('error', () => undefined);
    return client;
  }

  /** run execs `command` on an open connection: its exit code and stderr, or the channel's refusal. */
  function run(client: Client, command: string, endAfterMs = 0): Promise<{ code: number | null; stderr: string; refused?: string }> {
    return new Promise((resolve) => {
      client.exec(command, (err, stream) => {
        if (err) return resolve({ code: null, stderr: '', refused: err.message });
        let stderr = '';
        let code: number | null = null;
        stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        stream.on('data', () => undefined);
        stream.on('exit', (c: number | null) => (code = c));
        stream.on('close', () => resolve({ code, stderr }));
        if (endAfterMs > 0) setTimeout(() => stream.end(), endAfterMs);
      });
    });
  }

  it('connections that never sign in are bounded: past 128 from one address refused, all closed after the handshake time', async () => {
    // From an address no member connects from (127.0.0.1 is the members': they pass these caps).
    const socks = Array.from({ length: 134 }, () => {
      const sock = connect({ port: sshPort(1), host: '127.0.0.1', localAddress: '127.0.0.2' });
      sock.on('error', () => undefined);
      // The node's version line is read (and dropped): a socket with unread data never sees its end.
      sock.resume();
      const state = { closed: false };
      sock.once('close', () => (state.closed = true));
      return state;
    });
    await sleep(1_000);
    expect(socks.filter((s) => s.closed).length).toBeGreaterThanOrEqual(6);
    const metric = async (name: string): Promise<number> =>
      Number(new RegExp(`^${name} (\\d+)`, 'm').exec(await (await fetch(`${c.url(1)}/metrics`)).text())?.[1] ?? NaN);
    // Counted as what they are: connections waiting, and refusals (not failed sign-ins).
    expect(await metric('gitrep_ssh_connections_pending')).toBeGreaterThanOrEqual(120);
    expect(await metric('gitrep_ssh_connections_refused_total\\{reason="per_address"\\}')).toBeGreaterThanOrEqual(6);
    // SSH_HANDSHAKE_TIMEOUT is 3 s here; a connection that sent nothing used to stay for ever.
    await waitFor(async () => socks.every((s) => s.closed), 10_000, 'silent connections closed');
    expect(await metric('gitrep_ssh_connections_pending')).toBe(0);
    await gitOk(['ls-remote', sshUrl(1)], asUser(keys.alice!));
  }, 60_000);

  it('one connection opens at most 10 sessions at a time', async () => {
    const client = await signIn(keys.alice!, replicaNodes[0]!);
    try {
      const open = Array.from({ length: 10 }, () => run(client, `git-upload-pack '/${REPO}.git'`, 3_000));
      await sleep(500);
      const eleventh = await run(client, `git-upload-pack '/${REPO}.git'`);
      expect(eleventh.refused).toMatch(/open failure|failed/i);
      await Promise.all(open);
      // Those ended, the connection opens sessions again.
      expect((await run(client, `git-upload-pack '/${REPO}.git'`, 200)).refused).toBeUndefined();
    } finally {
      client.end();
    }
  }, 60_000);

  it('a channel idle for the idle time is closed, its git process ended, while another channel of the connection sends', async () => {
    const client = await signIn(keys.alice!, replicaNodes[0]!);
    try {
      const opened = (): Promise<{ stream: import('ssh2').ClientChannel; closed: Promise<string> }> =>
        new Promise((resolve, reject) =>
          client.exec(`git-upload-pack '/${REPO}.git'`, (err, stream) => {
            if (err) return reject(err);
            let stderr = '';
            stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
            stream.on('data', () => undefined);
            resolve({ stream, closed: new Promise((r) => stream.on('close', () => r(stderr))) });
          }),
        );
      const silent = await opened();
      const busy = await opened();
      let silentClosed = false;
      void silent.closed.then(() => (silentClosed = true));
      // The busy channel sends a byte every 1.5 s (a pkt-line length, slowly): the connection is not idle.
      for (let i = 0; i < 4 && !silentClosed; i++) {
        busy.stream.write('0');
        await sleep(1_500);
      }
      // SSH_IDLE_TIMEOUT is 4 s here.
      await waitFor(async () => silentClosed, 5_000, 'the silent channel closed');
      expect(await silent.closed).toMatch(/no data on this channel for 4 s/);
      busy.stream.end();
    } finally {
      client.end();
    }
  }, 60_000);

  it("a key removed while its connection stays open fails that connection's next command", async () => {
    const file = await keygen('alice-second');
    const made = (await ok(1, 'POST', '/users/alice/keys', { name: 'second', key: await readFile(`${file}.pub`, 'utf8') })) as unknown as {
      fingerprint: string;
    };
    const client = await signIn(file, 1);
    try {
      expect((await run(client, `git-upload-pack '/${REPO}.git'`, 200)).stderr).not.toMatch(/no longer registered/);
      await ok(1, 'DELETE', `/users/alice/keys/${encodeURIComponent(made.fingerprint)}`);
      await waitFor(
        async () =>
          /the key second this connection signed in with is no longer registered/.test(
            (await run(client, `git-upload-pack '/${REPO}.git'`, 200)).stderr,
          ),
        5_000,
        'the open connection refused',
      );
    } finally {
      client.end();
    }
  }, 60_000);

  it('records a push over SSH in the audit log with the user and key', async () => {
    await waitFor(
      async () => {
        const events = (await ok(2, 'GET', '/admin/audit?limit=1000')).events as Array<Record<string, unknown>>;
        return events.some((e) => e.action === 'push' && e.user === 'alice' && e.repo === REPO && e.token === 'ssh-key:laptop');
      },
      10_000,
      'ssh push in the audit log',
    );
  });

  it.skipIf(NO_LFS !== null)(
    "git lfs over SSH: git-lfs-authenticate hands a ticket for one repository's LFS API, at the access the key has",
    async () => {
      const repo = 'alice/media';
      await ok(1, 'POST', '/repos', { repo_id: repo });
      await ok(1, 'PUT', `/repos/${repo}/grants/user:bob`, { role: 'read' });
      // git-lfs set up as its users have it: the filters in the global config, the hooks in the work tree.
      const home = await tempDir('gitrep-ssh-lfs-home-');
      const global = join(home, 'gitconfig');
      await writeFile(global, '');
      const lfsEnv = { HOME: home, GIT_CONFIG_GLOBAL: global };
      await gitOk(['lfs', 'install', '--skip-repo'], { env: lfsEnv });
      const dir = await tempDir('gitrep-ssh-lfs-');
      await gitOk(['init', '-q', '-b', 'main', dir], { env: lfsEnv });
      await gitOk(['lfs', 'install', '--local'], { cwd: dir, env: lfsEnv });
      await gitOk(['lfs', 'track', '*.bin'], { cwd: dir, env: lfsEnv });
      const content = randomBytes(300_000);
      await writeFile(join(dir, 'a.bin'), content);
      await gitOk(['add', '.'], { cwd: dir, env: lfsEnv });
      await gitOk(['commit', '-q', '-m', 'lfs'], { cwd: dir, env: lfsEnv });
      const push = await git(['push', sshUrl(otherNode, repo), 'main'], { cwd: dir, env: { ...lfsEnv, ...asUser(keys.alice!).env } });
      expect(push.code, push.stderr).toBe(0);
      const listed = await ok(2, 'GET', `/repos/${repo}/lfs`);
      expect(listed.count).toBe(1);
      // bob reads: the clone's checkout downloads the object with a download ticket.
      const clone = join(await tempDir('gitrep-ssh-lfs-clone-'), 'c');
      await gitOk(['clone', '-q', sshUrl(replicaNodes[0]!, repo), clone], { env: { ...lfsEnv, ...asUser(keys.bob!).env } });
      expect((await readFile(join(clone, 'a.bin'))).equals(content)).toBe(true);
      // What git-lfs-authenticate answers, and what it refuses.
      const asked = await ssh(keys.bob!, otherNode, ['git-lfs-authenticate', `${repo}.git`, 'download']);
      expect(asked.code, asked.stderr).toBe(0);
      const answer = JSON.parse(asked.stdout) as { href: string; header: { Authorization: string }; expires_in: number };
      expect(answer.href).toBe(`${c.url(otherNode)}/${repo}.git/info/lfs`);
      expect(answer.expires_in).toBeGreaterThan(60);
      expect((await ssh(keys.bob!, otherNode, ['git-lfs-authenticate', `${repo}.git`, 'upload'])).stderr).toMatch(
        /git-replication: .*write/,
      );
      expect((await ssh(keys.carol!, otherNode, ['git-lfs-authenticate', `${repo}.git`, 'download'])).stderr).toMatch(/not found/);
      expect((await ssh(keys.bob!, otherNode, ['git-lfs-authenticate', '../x.git', 'download'])).stderr).toMatch(/not a repository path/);
      // The ticket opens that repository's LFS API at read, and nothing else.
      const ticket = answer.header.Authorization;
      const call = async (path: string, init: { method?: string; body?: string } = {}): Promise<number> =>
        (
          await fetch(`${c.url(1)}${path}`, {
            method: init.method ?? 'GET',
            headers: { authorization: ticket, ...(init.body ? { 'content-type': 'application/vnd.git-lfs+json' } : {}) },
            ...(init.body ? { body: init.body } : {}),
          })
        ).status;
      const oid = listed.objects as Array<{ oid: string; size: number }>;
      const batch = (operation: string): string => JSON.stringify({ operation, objects: oid });
      expect(await call(`/${repo}.git/info/lfs/objects/batch`, { method: 'POST', body: batch('download') })).toBe(200);
      expect(await call(`/${repo}.git/info/lfs/objects/${oid[0]!.oid}`)).toBe(200);
      expect(await call(`/${repo}.git/info/lfs/objects/batch`, { method: 'POST', body: batch('upload') })).toBe(403);
      expect(await call(`/${REPO}.git/info/lfs/objects/batch`, { method: 'POST', body: batch('download') })).toBe(401);
      expect(await call(`/${repo}.git/info/refs?service=git-upload-pack`)).toBe(401);
      expect(await call(`/repos/${repo}`)).toBe(401);
      expect(await call('/user')).toBe(401);
      expect(await call('/tokens', { method: 'POST', body: '{}' })).toBe(401);
      // Altered, it is no ticket: bob's made alice's, or one digit of its signature changed.
      const [, payload, sig] = /^Bearer lfs1\.([^.]+)\.(.+)$/.exec(ticket)!;
      const asAlice = Buffer.from(
        Buffer.from(payload!, 'base64url').toString('utf8').replace('"u":"bob"', '"u":"alice"').replace('"n":"read"', '"n":"write"'),
      ).toString('base64url');
      expect(
        (
          await fetch(`${c.url(1)}/${repo}.git/info/lfs/objects/${oid[0]!.oid}`, {
            headers: { authorization: `Bearer lfs1.${asAlice}.${sig}` },
          })
        ).status,
      ).toBe(401);
      const forged = ticket.replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A'));
      expect((await fetch(`${c.url(1)}/${repo}.git/info/lfs/objects/${oid[0]!.oid}`, { headers: { authorization: forged } })).status).toBe(
        401,
      );
    },
    90_000,
  );

  it('a push without quorum is refused with the same message as over HTTP', async () => {
    const [target, peer] = replicaNodes as [number, number];
    await c.kill(peer);
    await commitFile(work, 'd.txt', 'd\n', 'fourth');
    const overSsh = await git(['push', sshUrl(target), 'HEAD:refs/heads/main'], { cwd: work, ...asUser(keys.alice!) });
    const token = (await ok(target, 'POST', '/tokens', { name: 'http', scope: 'write', user: 'alice' })).token as string;
    const u = new URL(c.repoUrl(target, REPO));
    u.username = 'x';
    u.password = token;
    const overHttp = await git(['push', u.toString(), 'HEAD:refs/heads/main'], { cwd: work });
    for (const r of [overSsh, overHttp]) {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/\[remote rejected\] HEAD -> main \(replication quorum not reached: 1 of 2 replicas prepared, 2 required\)/);
    }
  }, 90_000);
});

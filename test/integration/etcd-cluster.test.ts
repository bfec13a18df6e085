import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, TestCluster, sleep, waitFor, type RepoStatus } from '../helpers/cluster.js';
import { startEtcd, startEtcdCluster, skipWithoutEtcd, type EtcdCluster, type EtcdHandle } from '../helpers/etcd.js';
import { commitFile, git, gitOk, lsRemote, refsOf, tempDir, workRepo } from '../helpers/git.js';
import { freePort } from '../helpers/ports.js';
import { errorMessage } from '../../src/domain/errors.js';

/**
 * A git cluster coordinated by a real etcd: the replication guarantees hold on etcd as on SQLite,
 * losing the store stops writes but not reads, and `up --store etcd` runs a local etcd.
 */

const NO_ETCD = skipWithoutEtcd();

/**
 * killStrays SIGKILLs processes whose arguments include `arg` and, unless `anyProgram`, the CLI:
 * the nodes a failed TestCluster.start leaves behind, or what a killed `up` started.
 */
async function killStrays(arg: string, anyProgram = false): Promise<void> {
  for (const p of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    const cmd = (await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if ((anyProgram || cmd.includes(MAIN)) && cmd.includes(arg)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** freeUpPorts finds a port p such that p, p+1, p+1000 and p+1001 are all free (`up`'s default layout for 2 nodes). */
async function freeUpPorts(): Promise<number> {
  const canBind = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
  for (let i = 0; i < 50; i++) {
    const p = await freePort();
    if (p + 1001 > 65535) continue;
    if ((await Promise.all([p, p + 1, p + 1000, p + 1001].map(canBind))).every(Boolean)) return p;
  }
  throw new Error('no free port range for up');
}

/** Pusher commits to a work repo and pushes `main`, remembering every push a server acknowledged. */
class Pusher {
  readonly acked: string[] = [];
  private n = 0;
  constructor(readonly dir: string) {}

  /** push commits one change and pushes it; returns the git result and the commit id. */
  async push(url: string): Promise<{ code: number; stderr: string; oid: string }> {
    this.n++;
    const oid = await commitFile(this.dir, 'counter.txt', `${this.n}\n`, `change ${this.n}`);
    const r = await git(['push', url, 'main'], { cwd: this.dir, timeoutMs: 60_000 });
    if (r.code === 0) this.acked.push(oid);
    return { code: r.code, stderr: r.stderr, oid };
  }

  /** pushOk pushes and fails the test with git's output when the push is refused. */
  async pushOk(url: string): Promise<string> {
    const r = await this.push(url);
    if (r.code !== 0) throw new Error(`push to ${url} failed (${r.code}): ${r.stderr}`);
    return r.oid;
  }

  /** forget drops the last local commit of a push that failed, so the next push fast-forwards from what the server has. */
  async forget(): Promise<void> {
    await gitOk(['reset', '-q', '--hard', 'HEAD~1'], { cwd: this.dir });
  }
}

/** dumpOnFailure prints the node and etcd logs after a failed test, so a failure can be diagnosed from CI output. */
function dumpOnFailure(ctx: { task: { result?: { state?: string } } }, c: TestCluster | undefined, etcds: readonly EtcdHandle[]): void {
  if (ctx.task.result?.state !== 'fail') return;
  if (c) process.stderr.write(`node logs:\n${c.logs()}\n`);
  for (const e of etcds) process.stderr.write(`--- etcd ${e.name}\n${e.logs().slice(-3000)}\n`);
}

/** mainOf reads `refs/heads/main` from a server's advertisement. */
async function mainOf(url: string): Promise<string | undefined> {
  const line = (await lsRemote(url)).split('\n').find((l) => l.endsWith('\trefs/heads/main'));
  return line?.split('\t')[0];
}

/** expectAllInSync checks every replica is in sync at the repo's generation with the repo's checksum. */
function expectAllInSync(st: RepoStatus, replicas: number): void {
  expect(st.replicas).toHaveLength(replicas);
  for (const r of st.replicas) {
    expect(r.state, `replica on ${r.node}`).toBe('in_sync');
    expect(r.generation, `generation on ${r.node}`).toBe(st.generation);
    expect(r.checksum, `checksum on ${r.node}`).toBe(st.checksum);
  }
}

/**
 * settle waits until the replicas on `nodes` are in sync at the repo's generation. Tests call it
 * after each write: a replica's own repair pass can demote it to `repairing` right after a commit
 * (RepairWorker reads the repo before the participant confirmed, then markReplica(..., generation
 * + 1) overwrites the fresh confirmation), and two demoted replicas at once make the next push
 * fail with "replication quorum not reached" whatever the store. A known bug, not an etcd one.
 */
async function settle(c: TestCluster, repoId: string, nodes: readonly number[], via = nodes[0]!): Promise<RepoStatus> {
  const ids = new Set(nodes.map((i) => c.node(i).id));
  let last: RepoStatus | null = null;
  await waitFor(
    async () => {
      last = await c.repoStatus(via, repoId);
      return last.replicas.filter((r) => ids.has(r.node)).every((r) => r.state === 'in_sync' && r.generation === last!.generation);
    },
    60_000,
    `replicas of ${repoId} on nodes ${nodes.join(',')} in sync`,
  );
  return last!;
}

/** expectReplicasIdentical checks the bare repos on the given nodes hold exactly the same refs. */
async function expectReplicasIdentical(c: TestCluster, repoId: string, nodes: readonly number[]): Promise<string> {
  const first = await refsOf(c.replicaPath(nodes[0]!, repoId));
  for (const i of nodes.slice(1)) expect(await refsOf(c.replicaPath(i, repoId)), `refs on node ${i}`).toBe(first);
  return first;
}

/** expectAckedPresent clones `url` and checks that every acknowledged commit is in the history of main. */
async function expectAckedPresent(url: string, acked: readonly string[], when: string): Promise<void> {
  const dir = await tempDir('gitrep-etcd-clone-');
  try {
    await gitOk(['clone', '-q', '--bare', url, dir], { timeoutMs: 60_000 });
    const head = (await gitOk(['rev-parse', 'refs/heads/main'], { cwd: dir })).trim();
    expect(head, `main cloned from ${url}`).toBe(acked[acked.length - 1]);
    for (const oid of acked) {
      const r = await git(['merge-base', '--is-ancestor', oid, 'refs/heads/main'], { cwd: dir });
      expect(r.code, `acknowledged ${oid} in the history cloned from ${url} (${when})`).toBe(0);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** waitStore polls `/health` of the given nodes until their store state is `want`. */
async function waitStore(c: TestCluster, nodes: readonly number[], want: boolean, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      for (const i of nodes) {
        const h = (await c.api(i, 'GET', '/health')).json as { store?: { reachable?: boolean } };
        if (h.store?.reachable !== want) return false;
      }
      return true;
    },
    timeoutMs,
    `store reachable=${want} on nodes ${nodes.join(',')}`,
  );
}

describe.skipIf(NO_ETCD)('3-node git cluster on one etcd', () => {
  const repo = 'acme/etcd';
  let etcd: EtcdHandle | undefined;
  let c: TestCluster | undefined;
  let store = '';
  let pusher: Pusher;
  /** refusedPush is git's stderr for the push refused while etcd was down. */
  let refusedPush = '';

  beforeAll(async () => {
    etcd = await startEtcd();
    store = `etcd://${etcd.hostPort}`;
    pusher = new Pusher(await workRepo());
    c = await TestCluster.start({ nodes: 3, store });
  });

  afterAll(async () => {
    await c?.destroy();
    if (store) await killStrays(store);
    await etcd?.cleanup();
    if (pusher) await rm(pusher.dir, { recursive: true, force: true });
  });

  afterEach((ctx) => dumpOnFailure(ctx, c, etcd ? [etcd] : []));

  const cluster = (): TestCluster => {
    if (!c) throw new Error('cluster did not start');
    return c;
  };

  it('a push to node 1 with git is cloned from node 3 with identical refs, every replica in sync', async () => {
    const c = cluster();
    await c.createRepo(1, repo);
    await settle(c, repo, [1, 2, 3]);
    // The initial commit, a branch and a tag in one push, then one more commit.
    await gitOk(['tag', 'v1'], { cwd: pusher.dir });
    await gitOk(['push', c.repoUrl(1, repo), 'main', 'main:refs/heads/dev', 'v1'], { cwd: pusher.dir, timeoutMs: 60_000 });
    pusher.acked.push((await gitOk(['rev-parse', 'HEAD'], { cwd: pusher.dir })).trim());
    await settle(c, repo, [1, 2, 3]);
    await pusher.pushOk(c.repoUrl(1, repo));

    const clone = await tempDir('gitrep-etcd-clone-');
    try {
      await gitOk(['clone', '-q', '--mirror', c.repoUrl(3, repo), clone], { timeoutMs: 60_000 });
      const st = await c.waitInSync(repo);
      expectAllInSync(st, 3);
      expect(st.generation).toBe(2);
      const onDisk = await expectReplicasIdentical(c, repo, [1, 2, 3]);
      expect(await refsOf(clone)).toBe(onDisk);
      expect(onDisk).toContain(`${pusher.acked[1]} refs/heads/main`);
      expect(onDisk).toContain(' refs/heads/dev');
      expect(onDisk).toContain(' refs/tags/v1');
      const advertised = await lsRemote(c.repoUrl(1, repo));
      for (const i of [2, 3]) expect(await lsRemote(c.repoUrl(i, repo))).toBe(advertised);
    } finally {
      await rm(clone, { recursive: true, force: true });
    }
  });

  it('with node 2 killed (-9) pushes keep succeeding; restarted, it catches up', async () => {
    const c = cluster();
    await settle(c, repo, [1, 2, 3]);
    await c.kill(2);
    for (let i = 0; i < 3; i++) {
      await pusher.pushOk(c.repoUrl(i % 2 === 0 ? 1 : 3, repo));
      await settle(c, repo, [1, 3]);
    }
    const during = await c.repoStatus(1, repo);
    expect(during.generation).toBe(5);
    expect(during.replicas.find((r) => r.node === 'node-2')?.state).not.toBe('in_sync');

    await c.restart(2);
    await c.waitMembership();
    const st = await c.waitInSync(repo, 2, 60_000);
    expectAllInSync(st, 3);
    await expectReplicasIdentical(c, repo, [1, 2, 3]);
    expect(await mainOf(c.repoUrl(2, repo))).toBe(pusher.acked[pusher.acked.length - 1]);
    await settle(c, repo, [1, 2, 3]);
    await pusher.pushOk(c.repoUrl(2, repo));
    expectAllInSync(await c.waitInSync(repo), 3);
  });

  it('with etcd killed a push fails and acknowledges nothing, reads keep working; after etcd restarts pushes work again and nothing acknowledged is lost', async () => {
    const c = cluster();
    const e = etcd!;
    // Nodes 1 and 3 served this repo just before the outage.
    await settle(c, repo, [1, 2, 3]);
    const before = pusher.acked[pusher.acked.length - 1];
    for (const i of [1, 3]) expect(await mainOf(c.repoUrl(i, repo))).toBe(before);

    await e.kill();
    const failed = await pusher.push(c.repoUrl(1, repo));
    refusedPush = failed.stderr;
    expect(failed.code, failed.stderr).not.toBe(0);
    expect(failed.stderr).toMatch(/503/);
    const api = await c.api(1, 'GET', `/repos/${repo}`);
    expect(api.status).toBe(503);
    expect(String(api.json.error)).toMatch(/coordination store unavailable/);
    await waitStore(c, [1, 2, 3], false, 15_000);
    const health = (await c.api(1, 'GET', '/health')).json;
    expect(health).toMatchObject({ status: 'degraded', writes: 'unavailable: coordination store unreachable' });
    // A push through a node that has to proxy or coordinate fails too, and nothing moved.
    const failed3 = await pusher.push(c.repoUrl(3, repo));
    expect(failed3.code, failed3.stderr).not.toBe(0);
    await pusher.forget();
    await pusher.forget();

    // Reads: ls-remote and a full clone from nodes whose replicas were in sync.
    for (const i of [1, 3]) {
      expect(await mainOf(c.repoUrl(i, repo))).toBe(before);
      await expectAckedPresent(c.repoUrl(i, repo), pusher.acked, 'etcd down');
    }
    for (const i of [1, 2, 3]) expect(await refsOf(c.replicaPath(i, repo))).toContain(`${before} refs/heads/main`);

    await e.restart();
    await waitStore(c, [1, 2, 3], true, 60_000);
    await settle(c, repo, [1, 2, 3]);
    // The first push after the outage may still meet a reconnecting client: allow a short retry.
    let again = await pusher.push(c.repoUrl(1, repo));
    for (let tries = 0; again.code !== 0 && tries < 5; tries++) {
      await pusher.forget();
      await sleep(1_000);
      again = await pusher.push(c.repoUrl(1, repo));
    }
    expect(again.code, again.stderr).toBe(0);
    await settle(c, repo, [1, 2, 3]);
    await pusher.pushOk(c.repoUrl(3, repo));
    const st = await c.waitInSync(repo, 1, 60_000);
    expectAllInSync(st, 3);
    await expectReplicasIdentical(c, repo, [1, 2, 3]);
    for (const i of [1, 2, 3]) await expectAckedPresent(c.repoUrl(i, repo), pusher.acked, 'after etcd restart');
  });

  // git prints the body of a refused request only when it is text/plain ("remote: ..."), so the
  // git endpoints answer errors in text.
  it('the push refused while etcd was down tells the git user why', () => {
    expect(refusedPush).toMatch(/remote: .*coordination store unavailable/);
  });
});

describe.skipIf(NO_ETCD)('reads while etcd is down from an in-sync replica the node has not served yet', () => {
  let etcd: EtcdHandle | undefined;
  let c: TestCluster | undefined;
  let store = '';
  let work = '';

  beforeAll(async () => {
    etcd = await startEtcd();
    store = `etcd://${etcd.hostPort}`;
    work = await workRepo();
    c = await TestCluster.start({ nodes: 3, store });
    await c.createRepo(1, 'acme/cold');
    await settle(c, 'acme/cold', [1, 2, 3]);
    await gitOk(['push', c.repoUrl(1, 'acme/cold'), 'main'], { cwd: work, timeoutMs: 60_000 });
    await settle(c, 'acme/cold', [1, 2, 3]);
    await c.restart(2);
    await c.waitMembership();
    expectAllInSync(await c.waitInSync('acme/cold', 2), 3);
  });

  afterAll(async () => {
    await c?.destroy();
    if (store) await killStrays(store);
    await etcd?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  afterEach((ctx) => dumpOnFailure(ctx, c, etcd ? [etcd] : []));

  // Node 2 is restarted so it has not served the repo since: what it knows of the repo comes from
  // its repair pass, which remembers every repo state it reads for reads during a store outage.
  it('ls-remote from node 2 works after etcd is killed', async () => {
    const cl = c!;
    // Let node 2's repair pass (every REPAIR_INTERVAL_MS) read the repo once before etcd goes away.
    await new Promise((res) => setTimeout(res, 2_000));
    await etcd!.kill();
    const head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    expect(await mainOf(cl.repoUrl(2, 'acme/cold'))).toBe(head);
  });
});

describe.skipIf(NO_ETCD)('3-node git cluster on a 3-member etcd cluster', () => {
  const repo = 'acme/ha';
  let etcds: EtcdCluster | undefined;
  let c: TestCluster | undefined;
  let store = '';
  let pusher: Pusher;

  beforeAll(async () => {
    etcds = await startEtcdCluster(3);
    store = `etcd://${etcds.members.map((m) => m.hostPort).join(',')}`;
    pusher = new Pusher(await workRepo());
    c = await TestCluster.start({ nodes: 3, store });
  });

  afterEach((ctx) => dumpOnFailure(ctx, c, etcds?.members ?? []));

  afterAll(async () => {
    await c?.destroy();
    if (store) await killStrays(store);
    await etcds?.cleanup();
    if (pusher) await rm(pusher.dir, { recursive: true, force: true });
  });

  it('killing the etcd leader has no effect on pushes and clones', async () => {
    const cl = c!;
    await cl.createRepo(1, repo);
    await settle(cl, repo, [1, 2, 3]);
    await pusher.pushOk(cl.repoUrl(1, repo));
    await settle(cl, repo, [1, 2, 3]);

    // Find the raft leader through etcd's JSON gateway and kill it (the harder case than a follower).
    const status = async (url: string): Promise<{ header: { member_id: string }; leader: string }> =>
      (await (await fetch(`${url}/v3/maintenance/status`, { method: 'POST', body: '{}' })).json()) as {
        header: { member_id: string };
        leader: string;
      };
    const members = etcds!.members;
    const ids = await Promise.all(members.map(async (m) => (await status(m.url)).header.member_id));
    const leaderId = (await status(members[0]!.url)).leader;
    const leader = members[ids.indexOf(leaderId)] ?? members[0]!;
    await leader.kill();

    for (const i of [1, 2, 3]) {
      const t0 = Date.now();
      await pusher.pushOk(cl.repoUrl(i, repo)).catch((err: unknown) => {
        // The nodes' warnings and errors say why (a 500 here was seen once and not reproduced since).
        const problems = cl.nodes.map(
          (n) =>
            `--- ${n.id}\n${n.log
              .split('\n')
              .filter((l) => /"level":(40|50|60)/.test(l))
              .slice(-30)
              .join('\n')}`,
        );
        throw new Error(`${errorMessage(err)}\n${problems.join('\n')}`);
      });
      // No stall either: a push that waited out call timeouts on the dead member would take far longer.
      expect(Date.now() - t0).toBeLessThan(15_000);
      await settle(cl, repo, [1, 2, 3]);
    }
    const clone = await tempDir('gitrep-etcd-clone-');
    try {
      await gitOk(['clone', '-q', '--mirror', cl.repoUrl(3, repo), clone], { timeoutMs: 60_000 });
      const st = await cl.waitInSync(repo, 2);
      expectAllInSync(st, 3);
      const onDisk = await expectReplicasIdentical(cl, repo, [1, 2, 3]);
      expect(await refsOf(clone)).toBe(onDisk);
      expect(onDisk).toContain(`${pusher.acked[pusher.acked.length - 1]} refs/heads/main`);
    } finally {
      await rm(clone, { recursive: true, force: true });
    }
    // "No effect": the pushes did not stall (above), and every node's heartbeat reaches the store.
    // A heartbeat sent into the election may have failed; the next one (a third of the node TTL
    // later) must get through.
    for (const i of [1, 2, 3]) {
      let last: unknown = null;
      await waitFor(
        async () => {
          last = (await cl.api(i, 'GET', '/health')).json;
          return (last as { status?: string }).status === 'healthy';
        },
        5_000,
        `node-${i} healthy after the etcd leader was killed`,
      ).catch((err: unknown) => {
        const storeLines = cl
          .node(i)
          .log.split('\n')
          .filter((l) => /store|etcd/i.test(l))
          .slice(-20);
        throw new Error(`${String(err)}: ${JSON.stringify(last)}\n${storeLines.join('\n')}`);
      });
    }
    for (const i of [1, 2, 3]) await expectAckedPresent(cl.repoUrl(i, repo), pusher.acked, 'etcd leader killed');
  });
});

describe('git-replication up --store etcd', () => {
  let up: ChildProcess | null = null;
  let data = '';
  let out = '';

  afterAll(async () => {
    if (up && up.exitCode === null && up.signalCode === null) up.kill('SIGKILL');
    if (data) {
      const file = await readFile(join(data, 'cluster.json'), 'utf8').catch(() => '');
      if (file) {
        const parsed = JSON.parse(file) as { nodes: Array<{ pid: number }>; etcd?: { pid: number | null } };
        for (const pid of [...parsed.nodes.map((n) => n.pid), parsed.etcd?.pid ?? -1]) {
          if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
        }
      }
      await killStrays(join(data, 'node-1'));
      await killStrays(join(data, 'node-2'));
      await killStrays(`--data-dir=${join(data, 'etcd', 'data')}`, true);
      await rm(data, { recursive: true, force: true });
    }
  });

  it.skipIf(NO_ETCD)('starts etcd and 2 nodes, writes cluster.json, and SIGINT stops everything, etcd included', async () => {
    data = await tempDir('gitrep-up-etcd-');
    const base = await freeUpPorts();
    const child = spawn(
      process.execPath,
      [MAIN, 'up', '--store', 'etcd', '--nodes', '2', '--data', data, '--base-port', String(base), '--log-level', 'warn'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    up = child;
    const keep = (d: Buffer): void => {
      out = (out + d.toString()).slice(-50_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));

    const clusterFile = join(data, 'cluster.json');
    await waitFor(() => existsSync(clusterFile) || child.exitCode !== null, 60_000, `cluster.json (output: ${out})`);
    expect(child.exitCode, out).toBeNull();
    const file = JSON.parse(await readFile(clusterFile, 'utf8')) as {
      store: string;
      nodes: Array<{ id: string; url: string; pid: number }>;
      etcd?: { url: string; pid: number; dataDir: string; managed: boolean };
    };
    const etcdUrl = `http://127.0.0.1:${base + 1000}`;
    expect(file.store).toBe(`etcd://127.0.0.1:${base + 1000}`);
    expect(file.etcd).toMatchObject({ url: etcdUrl, managed: true, dataDir: join(data, 'etcd', 'data') });
    expect(file.etcd!.pid).toBeGreaterThan(0);
    expect(alive(file.etcd!.pid)).toBe(true);
    expect(file.nodes.map((n) => n.url)).toEqual([`http://127.0.0.1:${base}`, `http://127.0.0.1:${base + 1}`]);
    expect(await (await fetch(`${etcdUrl}/health`)).json()).toMatchObject({ health: 'true' });
    for (const n of file.nodes) {
      const res = await fetch(`${n.url}/health`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'healthy', server_id: n.id, store: { kind: 'etcd', reachable: true } });
    }
    // The two nodes share the etcd: a repo created on one is listed by the other. With token
    // auth (the default) the first node to start wrote the cluster's admin token to its data dir.
    let token = '';
    for (const n of ['node-1', 'node-2']) token ||= (await readFile(join(data, n, 'admin-token'), 'utf8').catch(() => '')).trim();
    const headers: Record<string, string> = { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) };
    const created = await fetch(`${file.nodes[0]!.url}/repos`, { method: 'POST', headers, body: JSON.stringify({ repo_id: 'demo/up' }) });
    expect(created.status, await created.clone().text()).toBe(201);
    // Repos are private by default: the other node lists it to the admin.
    expect(await (await fetch(`${file.nodes[1]!.url}/repos`, { headers })).json()).toMatchObject({ repos: ['demo/up'] });

    child.kill('SIGINT');
    const code = await Promise.race([exited, sleep(40_000).then(() => 'timeout' as const)]);
    expect(code, out).toBe(0);
    expect(out).toMatch(/stopping cluster[\s\S]*stopping etcd/);
    for (const pid of [...file.nodes.map((n) => n.pid), file.etcd!.pid]) {
      await waitFor(() => !alive(pid), 5_000, `pid ${pid} gone`);
    }
    const after = await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(1_000) }).then(
      () => 'answered',
      () => 'refused',
    );
    expect(after).toBe('refused');
  });

  it('without an etcd binary it fails and says how to install etcd', async () => {
    const dir = await tempDir('gitrep-up-noetcd-');
    try {
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, [MAIN, 'up', '--store', 'etcd', '--nodes', '1', '--data', dir, '--base-port', '1'], {
          env: { ...process.env, ETCD_BIN: join(dir, 'no-such-etcd') },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        p.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
        });
        const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
        p.once('exit', (code) => {
          clearTimeout(t);
          resolve({ code, stderr });
        });
      });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/etcd/);
      expect(r.stderr).toMatch(/apt-get install etcd-server/);
      expect(existsSync(join(dir, 'cluster.json'))).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

import { makeLargeRepo } from '../helpers/large-repo.js';
import { encodePktLine } from '../../src/git/pkt-line.js';
import * as fs from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { spawn } from 'node:child_process';
import isogit from 'isomorphic-git';
import isoHttp from 'isomorphic-git/http/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import {
  commitFile,
  git,
  gitOk,
  GIT_ENV,
  lsRemote,
  nodeGitProcesses,
  refsOf,
  shallowCloneElsewhere,
  tempDir,
  workRepo,
  zombies,
} from '../helpers/git.js';

describe('smart HTTP against a single node', () => {
  let c: TestCluster;
  let work: string;
  let url: string;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 1, env: { MAX_GIT_PROCESSES: '8', MAX_GIT_PER_CLIENT: '8', GIT_SLOT_WAIT: '1s' } });
    await c.createRepo(1, 'git/basic');
    url = c.repoUrl(1, 'git/basic');
    work = await workRepo();
    await gitOk(['remote', 'add', 'origin', url], { cwd: work });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('clones an empty repo (v2 and v0)', async () => {
    for (const v of ['2', '0']) {
      const dir = await tempDir();
      const r = await git(['-c', `protocol.version=${v}`, 'clone', url, join(dir, 'w')]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/empty repository/);
    }
  });

  it('pushes the first branch, then clones it with v2, v1 and v0', async () => {
    const head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    const r = await git(['push', 'origin', 'main'], { cwd: work });
    expect(r.code, r.stderr).toBe(0);
    for (const v of ['2', '1', '0']) {
      const dir = await tempDir();
      await gitOk(['-c', `protocol.version=${v}`, 'clone', '-q', url, join(dir, 'w')]);
      expect((await gitOk(['rev-parse', 'HEAD'], { cwd: join(dir, 'w') })).trim()).toBe(head);
    }
    expect(await lsRemote(url)).toContain(`${head}\trefs/heads/main`);
    expect(await lsRemote(`${c.url(1)}/git/basic`)).toContain(head);
  });

  it('new branch, tags, fetch, force push and delete', async () => {
    await gitOk(['checkout', '-q', '-b', 'feature'], { cwd: work });
    const f1 = await commitFile(work, 'f.txt', '1\n', 'feature 1');
    await gitOk(['tag', '-a', 'v1.0', '-m', 'release'], { cwd: work });
    await gitOk(['tag', 'light'], { cwd: work });
    await gitOk(['push', '-q', 'origin', 'feature', '--tags'], { cwd: work });
    const other = join(await tempDir(), 'o');
    await gitOk(['clone', '-q', url, other]);
    await gitOk(['fetch', '-q', 'origin', '--tags'], { cwd: other });
    expect((await gitOk(['rev-parse', 'origin/feature'], { cwd: other })).trim()).toBe(f1);
    expect(await gitOk(['tag'], { cwd: other })).toMatch(/light\nv1\.0/);
    await gitOk(['reset', '-q', '--hard', 'HEAD~1'], { cwd: work });
    const f2 = await commitFile(work, 'g.txt', '2\n', 'rewritten');
    const plain = await git(['push', 'origin', 'feature'], { cwd: work });
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/non-fast-forward|fetch first|rejected/);
    await gitOk(['push', '-q', '--force', 'origin', 'feature'], { cwd: work });
    expect(await lsRemote(url)).toContain(`${f2}\trefs/heads/feature`);
    await gitOk(['push', '-q', 'origin', '--delete', 'feature'], { cwd: work });
    expect(await lsRemote(url)).not.toContain('refs/heads/feature');
    await gitOk(['fetch', '-q', '--prune', 'origin'], { cwd: other });
    expect(await gitOk(['branch', '-r'], { cwd: other })).not.toContain('feature');
    await gitOk(['checkout', '-q', 'main'], { cwd: work });
  });

  it('atomic push: one refused ref refuses all', async () => {
    await gitOk(['push', '-q', 'origin', 'main:refs/heads/a1', 'main:refs/heads/a2'], { cwd: work });
    const stale = join(await tempDir(), 's');
    await gitOk(['clone', '-q', url, stale]);
    await commitFile(work, 'x.txt', 'x\n', 'x');
    await gitOk(['push', '-q', 'origin', 'HEAD:refs/heads/a2'], { cwd: work });
    await commitFile(stale, 'y.txt', 'y\n', 'y');
    const r = await git(
      ['push', '--atomic', '--force', 'origin', 'HEAD:refs/heads/a1', 'HEAD:refs/heads/new-atomic', 'HEAD:refs/heads/a2'],
      { cwd: stale, env: { GIT_TRACE: '0' } },
    );
    // The client forces a2 over the server's newer value: receive-pack accepts force, so all go through.
    expect(r.code, r.stderr).toBe(0);
    const r2 = await git(['push', '--atomic', 'origin', 'HEAD:refs/heads/ok-one', 'HEAD~1:refs/heads/a1'], { cwd: stale });
    expect(r2.code).not.toBe(0);
    const refs = await lsRemote(url);
    expect(refs).not.toContain('refs/heads/ok-one');
  });

  it('push options reach the server without breaking the push', async () => {
    await commitFile(work, 'po.txt', 'po\n', 'push options');
    const r = await git(['push', '-o', 'ci.skip', '-o', 'reviewer=alice', 'origin', 'main'], { cwd: work });
    expect(r.code, r.stderr).toBe(0);
  });

  it('shallow and partial clones', async () => {
    for (let i = 0; i < 3; i++) await commitFile(work, `s${i}.txt`, `${i}\n`, `s${i}`);
    await gitOk(['push', '-q', 'origin', 'main'], { cwd: work });
    const shallow = join(await tempDir(), 'sh');
    await gitOk(['clone', '-q', '--depth', '1', url, shallow]);
    expect((await gitOk(['rev-list', '--count', 'HEAD'], { cwd: shallow })).trim()).toBe('1');
    await gitOk(['fetch', '-q', '--deepen', '2'], { cwd: shallow });
    expect((await gitOk(['rev-list', '--count', 'HEAD'], { cwd: shallow })).trim()).toBe('3');
    const partial = join(await tempDir(), 'pa');
    await gitOk(['clone', '-q', '--filter=blob:none', url, partial]);
    expect(await gitOk(['config', 'remote.origin.promisor'], { cwd: partial })).toMatch(/true/);
    expect(fs.readFileSync(join(partial, 's2.txt'), 'utf8')).toBe('2\n');
  });

  it('pushes from shallow clones: a shallow commit the replica has keeps its links checked; one it lacks, let in by receive-pack without its parent, takes that away', async () => {
    const replica = c.replicaPath(1, 'git/basic');
    const marker = join(replica, 'gitrep-links-checked');
    expect(fs.existsSync(marker)).toBe(true);
    // A shallow clone of this server pushes a commit on top: its shallow commit is here.
    const shallow = join(await tempDir(), 'sh-push');
    await gitOk(['clone', '-q', '--depth', '1', url, shallow]);
    await commitFile(shallow, 'from-shallow.txt', 'x\n', 'from a shallow clone');
    const r = await git(['push', 'origin', 'HEAD:refs/heads/from-shallow'], { cwd: shallow });
    expect(r.code, r.stderr).toBe(0);
    expect(fs.existsSync(marker)).toBe(true);
    // A shallow clone of another history: its shallow commit S is not here. The branch at S is
    // refused (git's own "shallow update not allowed"), a branch with its whole history is
    // taken, and receive-pack moved S in with it, without S's parent.
    const { dir: other, shallow: s } = await shallowCloneElsewhere();
    const mixed = await git(['push', url, `${s}:refs/heads/shallow-s`, 'whole:refs/heads/whole'], { cwd: other });
    expect(mixed.stderr).toMatch(/shallow-s \(shallow update not allowed\)/);
    expect(await lsRemote(url)).toMatch(/refs\/heads\/whole/);
    expect((await git(['cat-file', '-t', s], { cwd: replica })).stdout.trim()).toBe('commit');
    expect((await git(['cat-file', '-t', `${s}^`], { cwd: replica })).code).not.toBe(0);
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('a push whose shallow line cannot be noted on the replica is refused with the reason, and changes nothing', async () => {
    await c.createRepo(1, 'git/shallow-note');
    const noteUrl = c.repoUrl(1, 'git/shallow-note');
    // The mark a directory: its removal fails (EISDIR), as a failing disk would fail it.
    const marker = join(c.replicaPath(1, 'git/shallow-note'), 'gitrep-links-checked');
    fs.rmSync(marker);
    fs.mkdirSync(join(marker, 'x'), { recursive: true });
    const { dir: other, shallow: s } = await shallowCloneElsewhere();
    const r = await git(['push', noteUrl, `${s}:refs/heads/shallow-s`, 'whole:refs/heads/whole'], { cwd: other });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/the replica could not note a push from a shallow clone \(EISDIR\), try again\n/);
    expect(r.stderr).not.toContain('gitrep-links-checked');
    expect((await lsRemote(noteUrl)).trim()).toBe('');
  });

  it('isomorphic-git clones and pushes over its own HTTP transport', async () => {
    const dir = await tempDir('gitrep-iso-');
    await isogit.clone({ fs, http: isoHttp, dir, url, ref: 'main', singleBranch: true });
    fs.writeFileSync(join(dir, 'iso.txt'), 'from isomorphic-git\n');
    await isogit.add({ fs, dir, filepath: 'iso.txt' });
    const oid = await isogit.commit({ fs, dir, message: 'iso commit', author: { name: 'Iso', email: 'iso@example.com' } });
    const res = await isogit.push({ fs, http: isoHttp, dir, url, ref: 'main', remoteRef: 'refs/heads/iso' });
    expect(res.ok).toBe(true);
    expect(await lsRemote(url)).toContain(`${oid}\trefs/heads/iso`);
  });

  it('unknown repo is a 404 git prints; dumb HTTP and bad content types are refused', async () => {
    const r = await git(['clone', c.repoUrl(1, 'git/missing'), join(await tempDir(), 'm')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not found/);
    expect((await fetch(`${url}/info/refs`)).status).toBe(400);
    const wrongType = await fetch(`${url}/git-upload-pack`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '0000' });
    expect(wrongType.status).toBe(415);
    expect((await fetch(`${c.url(1)}/git/..%2F..%2Fetc/info/refs?service=git-upload-pack`)).status).toBe(400);
  });

  it('malformed pkt-lines are a 400 and start nothing that lingers', async () => {
    for (const body of ['zzzz', '0005', '00ffshort', '']) {
      const res = await fetch(`${url}/git-upload-pack`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-git-upload-pack-request' },
        body,
      });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.text()).toMatch(/malformed pkt-line/);
    }
    const push = await fetch(`${url}/git-receive-pack`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-git-receive-pack-request' },
      body: 'garbage!',
    });
    expect(push.status).toBe(400);
    await waitFor(async () => (await nodeGitProcesses(c.node(1).dataDir)).length === 0, 5_000, 'no git processes');
  });

  it('gzip request bodies are accepted', async () => {
    const head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    const body = gzipSync(Buffer.from(`0032want ${head}\n00000009done\n`));
    const res = await fetch(`${url}/git-upload-pack`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-git-upload-pack-request', 'content-encoding': 'gzip' },
      body,
    });
    expect(res.status).toBe(200);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(bytes.subarray(0, 8).toString()).toBe('0008NAK\n');
    expect(bytes.includes(Buffer.from('PACK'))).toBe(true);
  });

  it('caps concurrent git processes: a request waits in line, then 503 with Retry-After; a stalled fetch request holds none', async () => {
    const head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    const held: Array<ReturnType<typeof httpRequest>> = [];
    const stall = (service: string, line: string): void => {
      const req = httpRequest(`${url}/${service}`, { method: 'POST', headers: { 'content-type': `application/x-${service}-request` } });
      req.on('error', () => undefined);
      req.write(line);
      held.push(req);
    };
    // A want with no flush or done: the request is read whole before git starts, so none runs.
    for (let i = 0; i < 8; i++) stall('git-upload-pack', `0032want ${head}\n`);
    await new Promise((r) => setTimeout(r, 500));
    expect(await nodeGitProcesses(c.node(1).dataDir)).toHaveLength(0);
    expect((await fetch(`${url}/info/refs?service=git-upload-pack`)).status).toBe(200);
    // A push's body streams into receive-pack, which holds a slot while it waits for the rest.
    for (let i = 0; i < 8; i++) stall('git-receive-pack', encodePktLine(`${head} ${head} refs/heads/x${i}\0 report-status\n`).toString());
    await waitFor(async () => (await nodeGitProcesses(c.node(1).dataDir)).length >= 8, 10_000, 'eight stalled git processes');
    const asked = Date.now();
    const res = await fetch(`${url}/info/refs?service=git-upload-pack`);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(await res.text()).toMatch(/waited 1 s for a git process slot: too many git processes running \(8 of 8\)/);
    expect(Date.now() - asked).toBeGreaterThanOrEqual(900);
    for (const r of held) r.destroy();
    await waitFor(async () => (await nodeGitProcesses(c.node(1).dataDir)).length === 0, 10_000, 'stalled processes killed');
    expect((await fetch(`${url}/info/refs?service=git-upload-pack`)).status).toBe(200);
  });
});

// Made at run time (git fast-import), the size of express: the tests need nothing outside this repository.
describe('a large repository (3,900 refs, 11k commits, a 15 MB pack)', () => {
  let c: TestCluster;
  let mirror: string;
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 1 });
    mirror = join(await tempDir(), 'large.git');
    await makeLargeRepo(mirror);
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('mirror-pushes it and clones it back identical', async () => {
    await c.createRepo(1, 'big/express');
    const url = c.repoUrl(1, 'big/express');
    const r = await git(['push', '-q', '--mirror', url], { cwd: mirror, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    const back = join(await tempDir(), 'back.git');
    await gitOk(['clone', '-q', '--mirror', url, back], { timeoutMs: 300_000 });
    expect(await refsOf(back)).toBe(await refsOf(mirror));
    expect((await refsOf(mirror)).split('\n').length).toBeGreaterThan(3000);
  });

  it('a client killed mid-clone leaves no git process and no zombie behind', async () => {
    const url = c.repoUrl(1, 'big/express');
    const nodePid = c.node(1).proc!.pid!;
    for (let round = 0; round < 3; round++) {
      const dir = join(await tempDir(), 'k');
      const child = spawn('git', ['clone', '-q', '--mirror', url, dir], { env: GIT_ENV, stdio: 'ignore' });
      await waitFor(
        async () => (await nodeGitProcesses(c.node(1).dataDir)).some((p) => p.cmd.includes('pack-objects')),
        20_000,
        'pack-objects running',
      );
      child.kill('SIGKILL');
      await waitFor(async () => (await nodeGitProcesses(c.node(1).dataDir)).length === 0, 10_000, 'server git processes gone');
    }
    // Every process the node started is reaped by its own parent: none is left a zombie of the node.
    const zombiesOfNode = async (): Promise<string[]> => (await zombies()).filter((z) => z.split(' ')[3] === String(nodePid));
    await waitFor(async () => (await zombiesOfNode()).length === 0, 5_000, 'no zombie of the node').catch(() => undefined);
    expect(await zombiesOfNode()).toEqual([]);
  });
});

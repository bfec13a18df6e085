import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, TestCluster, sleep, waitFor } from '../helpers/cluster.js';
import { git, gitOk, tempDir } from '../helpers/git.js';

/**
 * Git LFS through the real git-lfs client: objects pushed through one node are on every replica,
 * a clone through another gets them, a replica that missed an upload gets it back, and the
 * batch and object endpoints hold to the repository's permissions and refuse bad objects.
 */

function gitLfsMissing(): string | null {
  try {
    execFileSync('git-lfs', ['version'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'git-lfs is not installed (Debian: apt-get install git-lfs)';
  }
}
const NO_LFS = gitLfsMissing();
if (NO_LFS) console.warn(`lfs.test skipped: ${NO_LFS}`);

const LFS_TYPE = 'application/vnd.git-lfs+json';

/** lfsObjects lists the LFS objects a node holds (any repository): oid → size. */
function lfsObjects(dataDir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'tmp') continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/^[0-9a-f]{64}$/.test(e.name)) out.set(e.name, statSync(p).size);
    }
  };
  walk(join(dataDir, 'lfs'));
  return out;
}

/** BatchAnswer is what the tests read of a batch answer. */
interface BatchAnswer {
  transfer: string;
  objects: Array<{
    oid: string;
    actions?: Record<string, { href: string; header?: Record<string, string> }>;
    error?: { code: number };
  }>;
}

/** answer parses a JSON answer's text. */
function answer<T = { message: string }>(text: string): T {
  return JSON.parse(text) as T;
}

/** waitDown waits until node `via` sees `id` as down (out of the membership). */
async function waitDown(c: TestCluster, via: number, id: string): Promise<void> {
  const down = async (): Promise<boolean> =>
    ((await c.api(via, 'GET', '/health')).json.peer_nodes as Array<{ id: string; live: boolean }>).some((p) => p.id === id && !p.live);
  await waitFor(down, 20_000, `${id} out of the membership`);
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe.skipIf(NO_LFS !== null)('Git LFS on a 3-node cluster', () => {
  let c: TestCluster;
  let admin = '';
  let writer = '';
  let reader = '';
  let env: NodeJS.ProcessEnv = {};
  let work = '';
  let bigOid = '';
  /** out is the backup directory the backup test makes (the delete test backs up into it again). */
  let out = '';
  const repo = 'media/assets';

  function url(node: number, token: string | null): string {
    const u = new URL(`${c.url(node)}/${repo}.git`);
    if (token) {
      u.username = 'x';
      u.password = token;
    }
    return u.toString();
  }

  async function call(node: number, method: string, path: string, token: string | null, body?: Buffer | string, type = LFS_TYPE) {
    const res = await fetch(`${c.url(node)}${path}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': type } : {}) },
      body,
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text };
  }

  function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? 1 : 0, stdout, stderr }),
      );
    });
  }

  function batch(node: number, token: string | null, operation: string, objects: Array<{ oid: string; size: number }>) {
    return call(node, 'POST', `/${repo}.git/info/lfs/objects/batch`, token, JSON.stringify({ operation, transfers: ['basic'], objects }));
  }

  async function commitBlob(name: string, content: Buffer): Promise<string> {
    await writeFile(join(work, name), content);
    await gitOk(['add', name], { cwd: work, env });
    await gitOk(['commit', '-q', '-m', name], { cwd: work, env });
    return sha256(content);
  }

  beforeAll(async () => {
    // Node 2 never syncs (only a read through it brings it an object it lacks); the others every second.
    c = await TestCluster.start({
      nodes: 3,
      env: { AUTH: 'tokens', LFS_SYNC_INTERVAL_MS: '1000' },
      nodeEnv: { 'node-2': { LFS_SYNC_INTERVAL_MS: '0' } },
    });
    admin = await c.adminToken();
    c.authToken = admin;
    for (const u of ['wendy', 'rita']) expect((await c.api(1, 'POST', '/users', { name: u })).status).toBe(201);
    expect((await c.api(1, 'POST', '/orgs', { name: 'media' })).status).toBe(201);
    expect((await c.api(1, 'POST', '/repos', { repo_id: repo })).status).toBe(201);
    expect((await c.api(1, 'PUT', `/repos/${repo}/grants/user:wendy`, { role: 'write' })).status).toBe(200);
    expect((await c.api(1, 'PUT', `/repos/${repo}/grants/user:rita`, { role: 'read' })).status).toBe(200);
    writer = (await c.api(1, 'POST', '/tokens', { name: 'w', scope: 'write', user: 'wendy' })).json.token as string;
    reader = (await c.api(1, 'POST', '/tokens', { name: 'r', scope: 'read', user: 'rita' })).json.token as string;
    // A client set up as git-lfs's users have it: the filters in the global config, the hooks in the work tree.
    const home = await tempDir('gitrep-lfs-home-');
    const global = join(home, 'gitconfig');
    await writeFile(global, '');
    env = { HOME: home, GIT_CONFIG_GLOBAL: global };
    await gitOk(['lfs', 'install', '--skip-repo'], { env });
    work = await tempDir('gitrep-lfs-work-');
    await gitOk(['init', '-q', '-b', 'main', work], { env });
    await gitOk(['lfs', 'install', '--local'], { cwd: work, env });
    await gitOk(['lfs', 'track', '*.bin'], { cwd: work, env });
    await gitOk(['add', '.gitattributes'], { cwd: work, env });
    await gitOk(['commit', '-q', '-m', 'track'], { cwd: work, env });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('a push through one node stores the objects on every replica; a clone through another gets them', async () => {
    const big = randomBytes(3 * 1024 * 1024 + 17);
    const small = randomBytes(100);
    bigOid = await commitBlob('big.bin', big);
    const smallOid = await commitBlob('small.bin', small);
    await gitOk(['push', '-q', url(1, writer), 'main'], { cwd: work, env });
    // Answered once W (2) held them; the third has it at once or shortly after.
    await waitFor(() => c.nodes.every((n) => lfsObjects(n.dataDir).get(bigOid) === big.length), 10_000, 'the object on every node');
    for (const n of c.nodes) expect(lfsObjects(n.dataDir).get(smallOid)).toBe(100);
    const clone = join(await tempDir('gitrep-lfs-clone-'), 'c');
    await gitOk(['clone', '-q', url(2, reader), clone], { env });
    expect((await readFile(join(clone, 'big.bin'))).equals(big)).toBe(true);
    expect((await readFile(join(clone, 'small.bin'))).equals(small)).toBe(true);
    // What git holds is the pointer, not the content.
    const pointer = await gitOk(['show', 'HEAD:small.bin'], { cwd: work, env });
    expect(pointer).toContain(`oid sha256:${smallOid}`);
  });

  it('a replica frozen during an upload gets the object from the others, without a read', async () => {
    c.pause(3);
    let oid = '';
    try {
      const content = randomBytes(200_000);
      oid = await commitBlob('frozen.bin', content);
      const r = await git(['push', '-q', url(1, writer), 'main'], { cwd: work, env, timeoutMs: 90_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(lfsObjects(c.node(1).dataDir).get(oid)).toBe(200_000);
      expect(lfsObjects(c.node(2).dataDir).get(oid)).toBe(200_000);
      expect(lfsObjects(c.node(3).dataDir).has(oid)).toBe(false);
    } finally {
      c.resume(3);
    }
    // LfsSync (every second here) fetches it; nobody reads it through node 3.
    await waitFor(() => lfsObjects(c.node(3).dataDir).get(oid) === 200_000, 30_000, 'node 3 to fetch the object it missed');
  });

  it('a read through a replica that lacks an object serves it from another and keeps it', async () => {
    // Node 2 (which does not sync) loses an object, as a disk might; the next read through it still gets it.
    const content = randomBytes(50_000);
    const oid = await commitBlob('lost.bin', content);
    await gitOk(['push', '-q', url(1, writer), 'main'], { cwd: work, env });
    await waitFor(() => lfsObjects(c.node(2).dataDir).has(oid), 10_000, 'node 2 to hold the object');
    const incarnations = readdirSync(join(c.node(2).dataDir, 'lfs')).filter((d) => d !== 'tmp');
    for (const inc of incarnations) await rm(join(c.node(2).dataDir, 'lfs', inc, oid.slice(0, 2), oid.slice(2, 4), oid), { force: true });
    expect(lfsObjects(c.node(2).dataDir).has(oid)).toBe(false);
    const got = await fetch(`${c.url(2)}/${repo}.git/info/lfs/objects/${oid}`, { headers: { authorization: `Bearer ${reader}` } });
    expect(got.status).toBe(200);
    expect(sha256(Buffer.from(await got.arrayBuffer()))).toBe(oid);
    await waitFor(() => lfsObjects(c.node(2).dataDir).get(oid) === 50_000, 10_000, 'node 2 to keep the object it served');
  });

  it('file locks: git lfs lock, locks and unlock through different nodes; one lock per path; others cannot unlock without force', async () => {
    await gitOk(['remote', 'add', 'origin', url(1, writer)], { cwd: work, env });
    const locked = await gitOk(['lfs', 'lock', '--json', 'big.bin'], { cwd: work, env });
    // git-lfs 3.3 prints the lock it made in a list.
    const printed = answer<Array<{ id: string; path: string; owner: { name: string } }>>(locked);
    expect(printed.length).toBe(1);
    const lock = printed[0]!;
    expect(lock).toMatchObject({ path: 'big.bin', owner: { name: 'wendy' } });
    // Seen through another node (the locks are in the store).
    await gitOk(['remote', 'set-url', 'origin', url(3, writer)], { cwd: work, env });
    expect(await gitOk(['lfs', 'locks'], { cwd: work, env })).toMatch(/big\.bin\s+wendy\s+ID:/);
    // The owner's push verifies the locks (no "does not support the locking API" warning).
    await gitOk(['commit', '-q', '--allow-empty', '-m', 'locked'], { cwd: work, env });
    const push = await git(['push', 'origin', 'main'], { cwd: work, env });
    expect(push.code, push.stderr).toBe(0);
    expect(push.stderr).not.toMatch(/locking API/);
    // Another writer: the path is taken (409 naming the lock), the lock is "theirs", no unlock without force, no force without admin.
    expect((await c.api(1, 'POST', '/users', { name: 'walt' })).status).toBe(201);
    expect((await c.api(1, 'PUT', `/repos/${repo}/grants/user:walt`, { role: 'write' })).status).toBe(200);
    const walt = (await c.api(1, 'POST', '/tokens', { name: 'w', scope: 'write', user: 'walt' })).json.token as string;
    const taken = await call(2, 'POST', `/${repo}.git/info/lfs/locks`, walt, JSON.stringify({ path: 'big.bin' }));
    expect(taken.status).toBe(409);
    expect(answer<{ lock: { id: string } }>(taken.text).lock.id).toBe(lock.id);
    const verify = answer<{ ours: unknown[]; theirs: Array<{ id: string }> }>(
      (await call(2, 'POST', `/${repo}.git/info/lfs/locks/verify`, walt, '{}')).text,
    );
    expect(verify.ours).toEqual([]);
    expect(verify.theirs.map((l) => l.id)).toEqual([lock.id]);
    expect((await call(2, 'POST', `/${repo}.git/info/lfs/locks/${lock.id}/unlock`, walt, '{}')).status).toBe(403);
    expect((await call(2, 'POST', `/${repo}.git/info/lfs/locks/${lock.id}/unlock`, walt, '{"force":true}')).status).toBe(403);
    expect((await call(2, 'POST', `/${repo}.git/info/lfs/locks`, reader, JSON.stringify({ path: 'x.bin' }))).status).toBe(403);
    expect((await call(2, 'GET', `/${repo}.git/info/lfs/locks?path=big.bin`, reader)).status).toBe(200);
    // Its owner unlocks it; then walt may lock it, and an admin force-unlocks walt's.
    await gitOk(['lfs', 'unlock', 'big.bin'], { cwd: work, env });
    const mine = await call(1, 'POST', `/${repo}.git/info/lfs/locks`, walt, JSON.stringify({ path: 'big.bin' }));
    expect(mine.status).toBe(201);
    const waltLock = answer<{ lock: { id: string } }>(mine.text).lock.id;
    expect((await call(3, 'POST', `/${repo}.git/info/lfs/locks/${waltLock}/unlock`, admin, '{"force":true}')).status).toBe(200);
    expect(answer<{ locks: unknown[] }>((await call(3, 'GET', `/${repo}.git/info/lfs/locks`, reader)).text).locks).toEqual([]);
    await gitOk(['remote', 'remove', 'origin'], { cwd: work, env });
  });

  it('holds to the repository permissions: 401 without credentials, 403 to upload with read, 404 to others', async () => {
    const objects = [{ oid: sha256(Buffer.from('x')), size: 1 }];
    const anon = await batch(2, null, 'download', objects);
    expect(anon.status).toBe(401);
    expect(anon.headers.get('www-authenticate')).toMatch(/^Basic/);
    expect(answer(anon.text).message).toMatch(/authentication required/);
    expect((await batch(2, reader, 'upload', objects)).status).toBe(403);
    expect((await batch(2, reader, 'download', objects)).status).toBe(200);
    expect(
      (await call(3, 'PUT', `/${repo}.git/info/lfs/objects/${objects[0]!.oid}`, reader, Buffer.from('x'), 'application/octet-stream'))
        .status,
    ).toBe(403);
    const stranger = (await c.api(1, 'POST', '/users', { name: 'sam' })).status;
    expect(stranger).toBe(201);
    const sam = (await c.api(1, 'POST', '/tokens', { name: 's', scope: 'write', user: 'sam' })).json.token as string;
    expect((await batch(1, sam, 'download', objects)).status).toBe(404);
    expect((await call(1, 'GET', `/${repo}.git/info/lfs/objects/${objects[0]!.oid}`, sam)).status).toBe(404);
    expect(
      (await call(1, 'PUT', `/${repo}.git/info/lfs/objects/${objects[0]!.oid}`, sam, Buffer.from('x'), 'application/octet-stream')).status,
    ).toBe(404);
  });

  it('answers a batch: held objects need no upload, missing ones are 404 to download', async () => {
    const held = [...lfsObjects(c.node(1).dataDir)][0]!;
    const missing = { oid: sha256(randomBytes(8)), size: 8 };
    const up = answer<BatchAnswer>((await batch(2, writer, 'upload', [{ oid: held[0], size: held[1] }, missing])).text);
    expect(up.transfer).toBe('basic');
    expect(up.objects[0]?.actions).toBeUndefined();
    expect(up.objects[1]?.actions?.upload?.href).toBe(`${c.url(2)}/${repo}.git/info/lfs/objects/${missing.oid}`);
    expect(up.objects[1]?.actions?.upload?.header?.Authorization).toBe(`Bearer ${writer}`);
    const down = answer<BatchAnswer>((await batch(2, reader, 'download', [{ oid: held[0], size: held[1] }, missing])).text);
    expect(down.objects[0]?.actions?.download?.href).toContain(held[0]);
    expect(down.objects[1]?.error?.code).toBe(404);
  });

  it('refuses objects whose content is not their oid, bad ids and bad batches, and stores nothing', async () => {
    const content = randomBytes(1000);
    const oid = sha256(content);
    const wrong = await call(1, 'PUT', `/${repo}.git/info/lfs/objects/${oid}`, writer, randomBytes(1000), 'application/octet-stream');
    expect(wrong.status).toBe(400);
    expect(answer(wrong.text).message).toMatch(/does not match its oid/);
    const short = await call(
      1,
      'PUT',
      `/${repo}.git/info/lfs/objects/${sha256(Buffer.from('ab'))}`,
      writer,
      Buffer.from('a'),
      'application/octet-stream',
    );
    expect(short.status).toBe(400);
    await sleep(300);
    for (const n of c.nodes) expect(lfsObjects(n.dataDir).has(oid)).toBe(false);
    expect((await call(1, 'GET', `/${repo}.git/info/lfs/objects/..%2F..%2Fetc`, writer)).status).toBe(400);
    expect((await call(1, 'GET', `/${repo}.git/info/lfs/objects/${oid.toUpperCase()}`, writer)).status).toBe(400);
    expect(
      (await call(1, 'POST', `/${repo}.git/info/lfs/objects/batch`, writer, '{"operation":"upload","objects":[{"oid":"x","size":1}]}'))
        .status,
    ).toBe(400);
    expect((await call(1, 'POST', `/${repo}.git/info/lfs/objects/batch`, writer, '{"operation":')).status).toBe(400);
    expect((await batch(1, writer, 'delete', [])).status).toBe(400);
    const algo = await call(
      1,
      'POST',
      `/${repo}.git/info/lfs/objects/batch`,
      writer,
      JSON.stringify({ operation: 'upload', objects: [], hash_algo: 'sha512' }),
    );
    expect(algo.status).toBe(409);
    // An encoded body (its length is not the object's), an object past the limit in a batch.
    const gz = await fetch(`${c.url(1)}/${repo}.git/info/lfs/objects/${oid}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' },
      body: gzipSync(content),
    });
    expect(gz.status).toBe(415);
    const huge = answer<BatchAnswer>((await batch(1, writer, 'upload', [{ oid, size: 6 * 1024 ** 3 }])).text);
    expect(huge.objects[0]?.error?.code).toBe(422);
    expect(huge.objects[0]?.actions).toBeUndefined();
    // Then the right content is taken.
    expect((await call(1, 'PUT', `/${repo}.git/info/lfs/objects/${oid}`, writer, content, 'application/octet-stream')).status).toBe(200);
    expect(lfsObjects(c.node(1).dataDir).get(oid)).toBe(1000);
  });

  it('an upload with two replicas frozen is a 503 once they leave the membership, not a wait for them', async () => {
    c.pause(2);
    c.pause(3);
    try {
      const content = randomBytes(5_000);
      const started = Date.now();
      const r = await call(1, 'PUT', `/${repo}.git/info/lfs/objects/${sha256(content)}`, writer, content, 'application/octet-stream');
      expect(r.status).toBe(503);
      expect(answer(r.text).message).toMatch(/is on 1 of 3 replicas, 2 required/);
      // The node's time-to-live here is 2 s; the peer calls' own time-out is an hour.
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      c.resume(2);
      c.resume(3);
    }
    await c.waitMembership();
  });

  it('an upload that stalls holds no connection to the peers: replication through the node goes on', async () => {
    // 150 uploads from another address, each stopped after its first byte, as an outside review sent them.
    const stalled: Socket[] = [];
    const path = `/${repo}.git/info/lfs/objects/${'c'.repeat(64)}`;
    for (let i = 0; i < 150; i++) {
      const s = connect({ host: '127.0.0.1', port: c.node(1).port, localAddress: '127.0.0.2' });
      s.on('error', () => undefined);
      s.write(
        `PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${writer}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000000\r\n\r\nx`,
      );
      stalled.push(s);
    }
    try {
      await sleep(1_000);
      const started = Date.now();
      expect((await c.api(1, 'POST', '/repos', { repo_id: 'media/during-stall' })).status).toBe(201);
      await gitOk(['commit', '-q', '--allow-empty', '-m', 'during'], { cwd: work, env });
      const r = await git(['push', '-q', url(1, writer), 'main'], { cwd: work, env, timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      for (const s of stalled) s.destroy();
    }
  });

  it('an upload racing the deletion of its repository is a 404 and leaves nothing on any replica', async () => {
    const doomed = 'media/doomed';
    expect((await c.api(1, 'POST', '/repos', { repo_id: doomed })).status).toBe(201);
    const content = randomBytes(2 * 1024 * 1024);
    const oid = sha256(content);
    const before = c.nodes.map((n) => new Set(readdirSync(join(n.dataDir, 'lfs'))));
    const body = Readable.from(
      (async function* () {
        for (let i = 0; i < content.length; i += 256 * 1024) {
          yield content.subarray(i, i + 256 * 1024);
          await sleep(150);
        }
      })(),
    );
    const put = request(`${c.url(1)}/${doomed}.git/info/lfs/objects/${oid}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/octet-stream', 'content-length': String(content.length) },
      body,
    });
    await sleep(500);
    expect((await c.api(2, 'DELETE', `/repos/${doomed}`)).status).toBe(200);
    const res = await put;
    expect(res.statusCode).toBe(404);
    await res.body.text();
    for (const [i, n] of c.nodes.entries()) {
      const added = readdirSync(join(n.dataDir, 'lfs')).filter((d) => !before[i]!.has(d));
      expect(added, n.id).toEqual([]);
    }
  });

  it("a node's start removes objects of incarnations it holds no replica of, and keeps its own", async () => {
    const dir = join(c.node(3).dataDir, 'lfs');
    const own = readdirSync(dir).filter((d) => d !== 'tmp');
    expect(own.length).toBe(1);
    // As a node stopped between dropping a replica and its objects would leave them.
    const orphan = 'a0a0a0a0-0000-4000-8000-00000000dead';
    const content = randomBytes(64);
    const oid = sha256(content);
    await mkdir(join(dir, orphan, oid.slice(0, 2), oid.slice(2, 4)), { recursive: true });
    await writeFile(join(dir, orphan, 'repo'), 'media/gone\n');
    await writeFile(join(dir, orphan, oid.slice(0, 2), oid.slice(2, 4), oid), content);
    const before = lfsObjects(c.node(3).dataDir).size;
    await c.restart(3);
    expect(existsSync(join(dir, orphan))).toBe(false);
    expect(lfsObjects(c.node(3).dataDir).size).toBe(before - 1);
    expect(readdirSync(dir).filter((d) => d !== 'tmp')).toEqual(own);
  });

  it('a backup copies the objects, and a restore after the repository was deleted brings them back', async () => {
    const held = lfsObjects(c.node(1).dataDir);
    const listed = await c.api(3, 'GET', `/repos/${repo}/lfs`);
    expect(listed.status).toBe(200);
    expect(listed.json.complete).toBe(true);
    expect(new Map((listed.json.objects as Array<{ oid: string; size: number }>).map((o) => [o.oid, o.size]))).toEqual(held);
    out = await tempDir('gitrep-lfs-backup-');
    // One replica of three down: the other two list every acknowledged object (each is on W = 2).
    c.pause(3);
    let backup: { code: number; stdout: string; stderr: string };
    try {
      await waitDown(c, 2, 'node-3');
      expect((await c.api(2, 'GET', `/repos/${repo}/lfs`)).json.complete).toBe(true);
      backup = await cli(['backup', '--out', out, '--url', c.url(2), '--token', admin]);
    } finally {
      c.resume(3);
    }
    await c.waitMembership();
    expect(backup.code, backup.stdout + backup.stderr).toBe(0);
    expect(backup.stdout).toContain(`${held.size} LFS objects (${held.size} copied)`);
    // A second run copies none again.
    expect((await cli(['backup', '--out', out, '--url', c.url(3), '--token', admin])).stdout).toContain(
      `${held.size} LFS objects (0 copied)`,
    );
    expect((await c.api(1, 'DELETE', `/repos/${repo}`)).status).toBe(200);
    await waitFor(() => c.nodes.every((n) => lfsObjects(n.dataDir).size === 0), 15_000, 'the objects gone from every node');
    const restore = await cli(['restore', out, '--force', '--url', c.url(3), '--token', admin]);
    expect(restore.code, restore.stdout + restore.stderr).toBe(0);
    expect(restore.stdout).toContain(`${held.size} LFS objects`);
    await waitFor(() => c.nodes.every((n) => lfsObjects(n.dataDir).size === held.size), 10_000, 'every object back on every node');
    for (const n of c.nodes) expect(lfsObjects(n.dataDir)).toEqual(held);
    const clone = join(await tempDir('gitrep-lfs-restored-'), 'c');
    await gitOk(['clone', '-q', url(2, reader), clone], { env });
    expect(sha256(await readFile(join(clone, 'big.bin')))).toBe(bigOid);
  });

  it('deleting the repository deletes its objects on every replica; one made again in its name has none, in a backup too', async () => {
    expect(c.nodes.every((n) => lfsObjects(n.dataDir).size > 0)).toBe(true);
    expect((await call(1, 'POST', `/${repo}.git/info/lfs/locks`, writer, JSON.stringify({ path: 'kept.bin' }))).status).toBe(201);
    expect((await c.api(2, 'DELETE', `/repos/${repo}`)).status).toBe(200);
    await waitFor(() => c.nodes.every((n) => lfsObjects(n.dataDir).size === 0), 15_000, 'the objects gone from every node');
    // A backup taken again after the repository was made anew keeps none of the old one's
    // objects: a restore would have made them (private ones) the new repository's.
    expect((await c.api(1, 'POST', '/repos', { repo_id: repo, visibility: 'public' })).status).toBe(201);
    expect(answer<{ locks: unknown[] }>((await call(2, 'GET', `/${repo}.git/info/lfs/locks`, null)).text).locks).toEqual([]);
    const again = await cli(['backup', '--out', out, '--url', c.url(1), '--token', admin]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    const incarnations = readdirSync(join(out, 'lfs', repo));
    const now = (await c.api(1, 'GET', `/repos/${repo}`)).json.incarnation as string;
    expect(incarnations.every((i) => i === now)).toBe(true);
    expect(existsSync(join(out, 'lfs', repo, now)) ? readdirSync(join(out, 'lfs', repo, now)) : []).toEqual([]);
  });
});

describe.skipIf(NO_LFS !== null)('Git LFS objects of a replica that moves', () => {
  let c: TestCluster;
  afterAll(async () => {
    await c?.destroy();
  });

  it('a repository with one replica moved off a decommissioned node keeps its objects (handed over before the drop)', async () => {
    c = await TestCluster.start({ nodes: 3, replicationFactor: 1, nodeEnv: { 'node-3': { PUBLIC_URL: 'https://git.example.com/' } } });
    const repo = 'solo/assets';
    await c.createRepo(1, repo);
    const from = (await c.repoStatus(1, repo)).replicas[0]!.node;
    const home = await tempDir('gitrep-lfs-home-');
    const global = join(home, 'gitconfig');
    await writeFile(global, '');
    const env = { HOME: home, GIT_CONFIG_GLOBAL: global };
    await gitOk(['lfs', 'install', '--skip-repo'], { env });
    const work = await tempDir('gitrep-lfs-work-');
    await gitOk(['init', '-q', '-b', 'main', work], { env });
    await gitOk(['lfs', 'install', '--local'], { cwd: work, env });
    await gitOk(['lfs', 'track', '*.bin'], { cwd: work, env });
    const content = randomBytes(100_000);
    await writeFile(join(work, 'a.bin'), content);
    await gitOk(['add', '.'], { cwd: work, env });
    await gitOk(['commit', '-q', '-m', 'a'], { cwd: work, env });
    await gitOk(['push', '-q', c.repoUrl(1, repo), 'main'], { cwd: work, env });
    const oid = sha256(content);
    const holder = c.nodes.find((n) => n.id === from)!;
    expect(lfsObjects(holder.dataDir).get(oid)).toBe(100_000);
    expect((await c.api(1, 'POST', `/admin/nodes/${from}/decommission`)).status).toBe(200);
    let to = '';
    await waitFor(
      async () => {
        const s = await c.repoStatus(1, repo);
        to = s.replicas.length === 1 && s.replicas[0]!.node !== from && s.replicas[0]!.state === 'in_sync' ? s.replicas[0]!.node : '';
        return to !== '' && !existsSync(c.replicaPath(Number(from.slice('node-'.length)), repo));
      },
      60_000,
      'the replica moved and the old one dropped',
    );
    expect(lfsObjects(c.nodes.find((n) => n.id === to)!.dataDir).get(oid)).toBe(100_000);
    // The replica's directory goes first, its objects just after.
    await waitFor(() => lfsObjects(holder.dataDir).size === 0, 10_000, "the old replica's objects gone");
    const clone = join(await tempDir('gitrep-lfs-moved-'), 'c');
    await gitOk(['clone', '-q', c.repoUrl(1, repo), clone], { env });
    expect((await readFile(join(clone, 'a.bin'))).equals(content)).toBe(true);
    // A node given --public-url names it in its links, whatever Host the request came with.
    const res = await fetch(`${c.url(3)}/${repo}.git/info/lfs/objects/batch`, {
      method: 'POST',
      headers: { 'content-type': LFS_TYPE, host: 'evil.example' },
      body: JSON.stringify({ operation: 'download', objects: [{ oid, size: 100_000 }] }),
    });
    const links = answer<BatchAnswer>(await res.text());
    expect(links.objects[0]?.actions?.download?.href).toBe(`https://git.example.com/${repo}.git/info/lfs/objects/${oid}`);
    // Its one replica frozen and out of the membership: through another node, a 503, not "does not exist".
    const holderNow = Number(to.slice('node-'.length));
    const other = [1, 2, 3].find((i) => i !== holderNow && c.node(i).id !== from)!;
    c.pause(holderNow);
    try {
      await waitDown(c, other, to);
      const r = await fetch(`${c.url(other)}/${repo}.git/info/lfs/objects/batch`, {
        method: 'POST',
        headers: { 'content-type': LFS_TYPE },
        body: JSON.stringify({ operation: 'download', objects: [{ oid, size: 100_000 }] }),
      });
      expect(r.status).toBe(503);
      expect((await fetch(`${c.url(other)}/${repo}.git/info/lfs/objects/${oid}`)).status).toBe(503);
    } finally {
      c.resume(holderNow);
    }
  });
});

describe.skipIf(NO_LFS !== null)('Git LFS objects of a replica set that grows', () => {
  let c: TestCluster;
  afterAll(async () => {
    await c?.destroy();
  });

  it('a replica just added, holding no object yet, does not make a listing complete or an object "missing"', async () => {
    // No sync anywhere: the added replica gets objects only as they are read through it.
    c = await TestCluster.start({ nodes: 1, replicationFactor: 2, env: { LFS_SYNC_INTERVAL_MS: '0' } });
    const repo = 'grow/assets';
    await c.createRepo(1, repo);
    const content = randomBytes(10_000);
    const oid = sha256(content);
    const put = await fetch(`${c.url(1)}/${repo}.git/info/lfs/objects/${oid}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: content,
    });
    expect(put.status).toBe(200);
    await c.addNode();
    await c.waitMembership();
    await waitFor(async () => (await c.repoStatus(2, repo)).replicas.length === 2, 30_000, 'the set grown to both nodes');
    await c.waitInSync(repo, 2, 30_000);
    expect(lfsObjects(c.node(2).dataDir).has(oid)).toBe(false);
    c.pause(1);
    try {
      await waitDown(c, 2, 'node-1');
      const listed = await c.api(2, 'GET', `/repos/${repo}/lfs`);
      expect(listed.json.complete).toBe(false);
      expect((await fetch(`${c.url(2)}/${repo}.git/info/lfs/objects/${oid}`)).status).toBe(503);
      const batch = await fetch(`${c.url(2)}/${repo}.git/info/lfs/objects/batch`, {
        method: 'POST',
        headers: { 'content-type': LFS_TYPE },
        body: JSON.stringify({ operation: 'download', objects: [{ oid, size: 10_000 }] }),
      });
      expect(batch.status).toBe(503);
    } finally {
      c.resume(1);
    }
    // Once node 1 is back, a read through node 2 gets it (and node 2 keeps it).
    await c.waitMembership();
    const got = await fetch(`${c.url(2)}/${repo}.git/info/lfs/objects/${oid}`);
    expect(got.status).toBe(200);
    expect(sha256(Buffer.from(await got.arrayBuffer()))).toBe(oid);
  });
});

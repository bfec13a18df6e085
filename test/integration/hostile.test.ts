import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { request, type Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bodyDigest, repairHop, signHop, signPeerRequest } from '../../src/auth/peer-signature.js';
import { PROTOCOL, PROTOCOL_HEADER } from '../../src/cluster/protocol.js';
import { encodePktLine } from '../../src/git/pkt-line.js';
import { sleep, TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, nodeGitProcesses, refsOf, tempDir, workRepo } from '../helpers/git.js';

/**
 * The hostile-request suite: every request an outsider (or a token holder overstepping, or a
 * local user with a stolen secret) can send gets its 4xx or 503, never a 5xx; afterwards every
 * node has the same pid, the store and every replica are unchanged, and no git process is left.
 */

interface RawRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** full: send all, read the answer; stall: send the body, keep the connection open, read the answer; abort: send part, then close. */
  mode?: 'full' | 'stall' | 'abort';
  /** contentLength overrides the declared length (larger than the body for stall and abort). */
  contentLength?: number;
}

interface RawAnswer {
  status: number | 'closed';
  headers: string;
  body: string;
}

/** raw sends exactly these bytes (no client-side normalisation of the path, as curl --path-as-is). */
function raw(port: number, req: RawRequest, timeoutMs = 20_000, onSocket?: (s: Socket) => void): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const body = req.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body, 'latin1');
    const headers = { host: '127.0.0.1', connection: 'close', ...req.headers };
    const hasLength = Object.keys(headers).some((h) => h.toLowerCase() === 'content-length');
    let head = `${req.method} ${req.path} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
    if (!hasLength && (body.length > 0 || req.contentLength !== undefined || req.method === 'POST'))
      head += `content-length: ${req.contentLength ?? body.length}\r\n`;
    const socket = connect(port, '127.0.0.1');
    onSocket?.(socket);
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      const split = text.indexOf('\r\n\r\n');
      resolve({
        status: m ? Number(m[1]) : 'closed',
        headers: split === -1 ? text : text.slice(0, split),
        body: split === -1 ? '' : text.slice(split + 4),
      });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', finish);
    socket.write(Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body]));
    if (req.mode === 'abort') setTimeout(() => socket.destroy(), 200);
  });
}

const UP = 'application/x-git-upload-pack-request';
const RP = 'application/x-git-receive-pack-request';
const ZERO = '0'.repeat(40);
const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });
const json = (t: string | null): Record<string, string> => ({ 'content-type': 'application/json', ...(t ? bearer(t) : {}) });

describe('hostile requests against a 3-node cluster with token auth', () => {
  let c: TestCluster;
  let admin = '';
  let readTok = '';
  let writeTok = '';
  let head = '';
  let soloHolder = 0;
  let soloOther = 0;
  const pids: number[] = [];

  beforeAll(async () => {
    c = await TestCluster.start({
      nodes: 3,
      // SEND_IDLE_TIMEOUT: the stalled clone's test; a client that reads keeps its answer.
      env: { AUTH: 'tokens', SEND_IDLE_TIMEOUT: '2s' },
      nodeEnv: {
        'node-1': { BODY_IDLE_TIMEOUT: '1500ms', MAX_FETCH_REQUEST_SIZE: '64k', MAX_PUSH_SIZE: '1m' },
        'node-2': { MAX_GIT_PER_CLIENT: '2', REPLICATION_FACTOR: '1', GIT_SLOT_WAIT: '0' },
        'node-3': { MAX_GIT_PROCESSES: '8', MAX_GIT_PER_CLIENT: '8', MAX_FETCH_REQUEST_SIZE: '64m', GIT_SLOT_WAIT: '0' },
      },
    });
    admin = await c.adminToken();
    c.authToken = admin;
    // Public, so anonymous reads reach the checks on the request itself.
    for (const [node, id] of [
      [1, 'acme/widgets'],
      [2, 'acme/solo'],
    ] as const) {
      const r = await c.api(node, 'POST', '/repos', { repo_id: id, visibility: 'public' });
      expect(r.status, JSON.stringify(r.json)).toBe(201);
    }
    const solo = await c.repoStatus(1, 'acme/solo');
    soloHolder = Number(solo.replicas[0]!.node.slice('node-'.length));
    soloOther = [1, 2, 3].find((i) => i !== soloHolder)!;
    const mk = async (role: string): Promise<string> =>
      (await c.api(1, 'POST', '/admin/tokens', { name: `t-${role}`, role })).json.token as string;
    readTok = await mk('read');
    writeTok = await mk('write');
    const work = await workRepo();
    head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    const push = new URL(c.repoUrl(1, 'acme/widgets'));
    push.username = 'x';
    push.password = writeTok;
    await gitOk(['push', '-q', push.toString(), 'HEAD:refs/heads/main'], { cwd: work });
    await c.waitInSync('acme/widgets');
    for (const n of c.nodes) pids.push(n.proc!.pid!);
  });
  afterAll(async () => {
    await c?.destroy();
  });

  /** state is everything a refused request must not change: store rows and every replica's refs. */
  async function state(): Promise<string> {
    const db = new Database(join(c.root, 'cluster.db'), { readonly: true });
    try {
      const rows = [
        // Audit events and last-used times are logs of what was tried, not state.
        db.prepare("SELECT key FROM meta WHERE key NOT LIKE 'audit/%' AND key NOT LIKE 'token-used/%' ORDER BY key").all(),
        db.prepare('SELECT repo_id, incarnation, replicas, generation, checksum FROM repos ORDER BY repo_id').all(),
        db.prepare('SELECT repo_id, node_id, generation, checksum, state FROM replicas ORDER BY repo_id, node_id').all(),
        db.prepare('SELECT count(*) AS n FROM txns').get(),
      ];
      const disks: string[] = [];
      for (let i = 1; i <= 3; i++) {
        for (const repo of ['acme/widgets', 'acme/solo']) {
          const path = c.replicaPath(i, repo);
          const exists = await stat(path).then(
            () => true,
            () => false,
          );
          disks.push(`${i} ${repo} ${exists ? await refsOf(path) : '-'}`);
        }
      }
      return JSON.stringify({ rows, disks });
    } finally {
      db.close();
    }
  }

  async function expectUnharmed(before: string): Promise<void> {
    c.nodes.forEach((n, i) => {
      expect(n.proc?.exitCode ?? null, `node ${i + 1} exited`).toBeNull();
      expect(n.proc?.pid).toBe(pids[i]);
    });
    for (const n of c.nodes) {
      await waitFor(async () => (await nodeGitProcesses(n.dataDir)).length === 0, 15_000, `no git processes left on ${n.id}`);
    }
    expect(await state()).toBe(before);
  }

  const port = (i: number): number => c.node(i).port;
  const W = '/acme/widgets.git';
  const pkts = (...lines: string[]): Buffer => Buffer.concat(lines.map((l) => (l === '0000' ? Buffer.from('0000') : encodePktLine(l))));

  // [name, node, request, expected status (or one of several: the route may not match at all)]
  const cases: Array<[string, number, () => RawRequest, number | number[] | 'closed']> = [
    // Admin routes: authorisation belongs to the route that matched, however the path is spelled.
    [
      'POST /admin/tokens, no credentials',
      1,
      () => ({ method: 'POST', path: '/admin/tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      401,
    ],
    [
      'POST /%61dmin/tokens (encoded a)',
      1,
      () => ({ method: 'POST', path: '/%61dmin/tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      401,
    ],
    [
      'POST /a%64min/tokens (encoded d)',
      2,
      () => ({ method: 'POST', path: '/a%64min/tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      401,
    ],
    [
      'POST /admin/%74okens (encoded t)',
      3,
      () => ({ method: 'POST', path: '/admin/%74okens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      401,
    ],
    [
      'POST /%2561dmin/tokens (double encoded)',
      1,
      () => ({ method: 'POST', path: '/%2561dmin/tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST /ADMIN/tokens (mixed case)',
      1,
      () => ({ method: 'POST', path: '/ADMIN/tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST //admin/tokens (double slash)',
      1,
      () => ({ method: 'POST', path: '//admin/tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST /admin//tokens (inner double slash)',
      1,
      () => ({ method: 'POST', path: '/admin//tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST /admin/tokens/ (trailing slash)',
      1,
      () => ({ method: 'POST', path: '/admin/tokens/', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST /admin/./tokens (dot segment)',
      1,
      () => ({ method: 'POST', path: '/admin/./tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST /repos/../admin/tokens (dot-dot)',
      1,
      () => ({ method: 'POST', path: '/repos/../admin/tokens', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST /admin/tokens?x=1 (query)',
      1,
      () => ({ method: 'POST', path: '/admin/tokens?x=1', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      401,
    ],
    [
      'POST /admin/tokens;x (matrix param)',
      1,
      () => ({ method: 'POST', path: '/admin/tokens;x', headers: json(null), body: '{"name":"x","role":"admin"}' }),
      [401, 404],
    ],
    [
      'POST /admin/tokens with a read token',
      1,
      () => ({ method: 'POST', path: '/admin/tokens', headers: json(readTok), body: '{"name":"x","role":"admin"}' }),
      403,
    ],
    [
      'POST /admin/tokens with a write token',
      2,
      () => ({ method: 'POST', path: '/admin/tokens', headers: json(writeTok), body: '{"name":"x","role":"admin"}' }),
      403,
    ],
    [
      'POST /admin/tokens with a bad token',
      1,
      () => ({ method: 'POST', path: '/admin/tokens', headers: json('grt_nope'), body: '{"name":"x","role":"admin"}' }),
      401,
    ],
    ['GET /admin/nodes, no credentials', 1, () => ({ method: 'GET', path: '/admin/nodes' }), 401],
    ['GET /%61dmin/nodes', 2, () => ({ method: 'GET', path: '/%61dmin/nodes' }), 401],
    ['GET /a%64min/nodes', 3, () => ({ method: 'GET', path: '/a%64min/nodes' }), 401],
    ['POST /%61dmin/nodes/node-3/decommission', 1, () => ({ method: 'POST', path: '/%61dmin/nodes/node-3/decommission' }), 401],
    [
      'POST /admin/nodes/node-3/decommission with a write token',
      1,
      () => ({ method: 'POST', path: '/admin/nodes/node-3/decommission', headers: bearer(writeTok) }),
      403,
    ],
    ['POST /%61dmin/rebalance', 1, () => ({ method: 'POST', path: '/%61dmin/rebalance' }), 401],
    ['POST /admin/rebalance with a read token', 2, () => ({ method: 'POST', path: '/admin/rebalance', headers: bearer(readTok) }), 403],
    // Repository API.
    ['DELETE /repos/acme/widgets, no credentials', 1, () => ({ method: 'DELETE', path: '/repos/acme/widgets' }), 401],
    ['DELETE /repos/acme/%77idgets, no credentials', 1, () => ({ method: 'DELETE', path: '/repos/acme/%77idgets' }), 401],
    [
      'DELETE /repos/acme/widgets with a write token',
      3,
      () => ({ method: 'DELETE', path: '/repos/acme/widgets', headers: bearer(writeTok) }),
      403,
    ],
    ['POST /repos, no credentials', 1, () => ({ method: 'POST', path: '/repos', headers: json(null), body: '{"repo_id":"evil/x"}' }), 401],
    [
      'POST /repos with a read token',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(readTok), body: '{"repo_id":"evil/x"}' }),
      403,
    ],
    [
      'POST /repos, malformed Basic header',
      1,
      () => ({
        method: 'POST',
        path: '/repos',
        headers: { 'content-type': 'application/json', authorization: 'Basic !!!' },
        body: '{"repo_id":"evil/x"}',
      }),
      401,
    ],
    ['POST /repos, malformed JSON', 1, () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":' }), 400],
    [
      'POST /repos, repo_id as an array',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":["evil/x"]}' }),
      400,
    ],
    [
      'POST /repos, repo_id as a number',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":123456}' }),
      400,
    ],
    [
      'POST /repos, path traversal',
      2,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":"../../etc"}' }),
      400,
    ],
    [
      'POST /repos, owner named admin',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":"admin/tokens"}' }),
      400,
    ],
    [
      'POST /repos, owner named replicate',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":"replicate/x"}' }),
      400,
    ],
    [
      'POST /repos, name ending in .git',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":"evil/x.git"}' }),
      400,
    ],
    [
      'POST /repos, extra property',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":"evil/x","path":"/etc"}' }),
      400,
    ],
    [
      'POST /repos, 2 MB body',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: `{"repo_id":"${'a'.repeat(2 * 1024 * 1024)}"}` }),
      413,
    ],
    [
      'POST /repos, text/plain',
      1,
      () => ({ method: 'POST', path: '/repos', headers: { 'content-type': 'text/plain', ...bearer(admin) }, body: 'evil/x' }),
      415,
    ],
    [
      'POST /repos, body aborted mid-way',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":"ev', contentLength: 1000, mode: 'abort' }),
      'closed',
    ],
    ['GET /repos/..%2f..%2fetc/passwd', 1, () => ({ method: 'GET', path: '/repos/..%2f..%2fetc/passwd' }), [400, 404]],
    ['GET /repos/acme/nope', 1, () => ({ method: 'GET', path: '/repos/acme/nope' }), 404],
    ['GET a 300-character route parameter', 1, () => ({ method: 'GET', path: `/repos/acme/${'x'.repeat(300)}` }), [400, 404, 414]],
    ['100 KB of headers', 1, () => ({ method: 'GET', path: '/health', headers: { 'x-big': 'x'.repeat(100 * 1024) } }), 431],
    // Git routes: reads are anonymous, but inputs are checked.
    ['info/refs without service (dumb HTTP)', 1, () => ({ method: 'GET', path: `${W}/info/refs` }), 400],
    ['info/refs with an unknown service', 1, () => ({ method: 'GET', path: `${W}/info/refs?service=git-evil` }), 400],
    [
      'info/refs with two services',
      1,
      () => ({ method: 'GET', path: `${W}/info/refs?service=git-upload-pack&service=git-receive-pack` }),
      [400, 401],
    ],
    ['info/refs for receive-pack, no credentials', 2, () => ({ method: 'GET', path: `${W}/info/refs?service=git-receive-pack` }), 401],
    [
      'info/refs for receive-pack, read token',
      2,
      () => ({ method: 'GET', path: `${W}/info/refs?service=git-receive-pack`, headers: bearer(readTok) }),
      403,
    ],
    // Anonymous: the same 401 as a private repository, so existence is not shown.
    [
      'info/refs of a repo that does not exist',
      1,
      () => ({ method: 'GET', path: '/acme/nope.git/info/refs?service=git-upload-pack' }),
      401,
    ],
    [
      'info/refs of a repo that does not exist, signed in',
      1,
      () => ({ method: 'GET', path: '/acme/nope.git/info/refs?service=git-upload-pack', headers: bearer(readTok) }),
      404,
    ],
    [
      'info/refs with an encoded traversal',
      1,
      () => ({ method: 'GET', path: '/..%2f..%2fetc/passwd.git/info/refs?service=git-upload-pack' }),
      [400, 404],
    ],
    ['info/refs with a dot-dot repo', 1, () => ({ method: 'GET', path: '/acme/%2e%2e/info/refs?service=git-upload-pack' }), [400, 404]],
    [
      'upload-pack with the wrong content-type',
      1,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: { 'content-type': 'text/plain' }, body: pkts('0000') }),
      415,
    ],
    [
      'upload-pack, bad pkt-line length',
      1,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: { 'content-type': UP }, body: 'zzzzwant' }),
      400,
    ],
    [
      'upload-pack, pkt-line length 0003',
      1,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: { 'content-type': UP }, body: '0003' }),
      400,
    ],
    [
      'upload-pack, truncated pkt-line',
      2,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: { 'content-type': UP }, body: '0032want 12' }),
      400,
    ],
    [
      'upload-pack, empty body',
      3,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: { 'content-type': UP }, body: '' }),
      400,
    ],
    // git's own answer to a want it will not serve is an ERR packet in a 200 (as git http-backend).
    [
      'upload-pack, want of an unknown object',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP },
        body: pkts(`want ${'1'.repeat(40)}\n`, '0000', 'done\n'),
      }),
      200,
    ],
    [
      'upload-pack, want that is not hex',
      2,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP },
        body: pkts(`want ${'z'.repeat(40)}\n`, '0000', 'done\n'),
      }),
      400,
    ],
    [
      'upload-pack, an unknown command',
      3,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: { 'content-type': UP }, body: pkts('frobnicate\n', '0000') }),
      400,
    ],
    [
      'upload-pack, gzip header but not gzip',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP, 'content-encoding': 'gzip' },
        body: 'not gzip at all',
      }),
      400,
    ],
    [
      'upload-pack, unknown content-encoding',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP, 'content-encoding': 'br' },
        body: pkts('0000'),
      }),
      415,
    ],
    [
      'upload-pack, larger than the request limit',
      1,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: { 'content-type': UP }, body: '0000'.repeat(20_000) }),
      413,
    ],
    [
      'upload-pack, gzip past the request limit',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP, 'content-encoding': 'gzip' },
        body: gzipSync(Buffer.from('0000'.repeat(100_000))),
      }),
      413,
    ],
    [
      'upload-pack, gzip bomb (ratio)',
      3,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP, 'content-encoding': 'gzip' },
        body: gzipSync(Buffer.from('0000'.repeat(5_000_000))),
      }),
      413,
    ],
    [
      'upload-pack, body idle',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP },
        body: pkts(`want ${head}\n`),
        contentLength: 10_000,
        mode: 'stall',
      }),
      408,
    ],
    [
      'upload-pack, aborted mid-body',
      2,
      () => ({
        method: 'POST',
        path: `${W}/git-upload-pack`,
        headers: { 'content-type': UP },
        body: pkts(`want ${head}\n`),
        contentLength: 10_000,
        mode: 'abort',
      }),
      'closed',
    ],
    [
      'receive-pack, no credentials',
      1,
      () => ({ method: 'POST', path: `${W}/git-receive-pack`, headers: { 'content-type': RP }, body: pkts('0000') }),
      401,
    ],
    [
      'receive-pack, read token',
      2,
      () => ({ method: 'POST', path: `${W}/git-receive-pack`, headers: { 'content-type': RP, ...bearer(readTok) }, body: pkts('0000') }),
      403,
    ],
    [
      'receive-pack, token as Basic user name, bad',
      3,
      () => ({
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, authorization: `Basic ${Buffer.from('grt_nope:').toString('base64')}` },
        body: pkts('0000'),
      }),
      401,
    ],
    [
      'receive-pack, bad pkt-line',
      1,
      () => ({ method: 'POST', path: `${W}/git-receive-pack`, headers: { 'content-type': RP, ...bearer(writeTok) }, body: 'zzzz' }),
      400,
    ],
    [
      'receive-pack, declares more than the push limit',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, ...bearer(writeTok) },
        body: '0000',
        contentLength: 64 * 1024 * 1024,
        mode: 'stall',
      }),
      413,
    ],
    [
      'receive-pack, commands past their limit',
      3,
      () => ({
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, ...bearer(writeTok), 'content-encoding': 'gzip' },
        body: manyCommands(),
      }),
      413,
    ],
    [
      'receive-pack, body idle',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, ...bearer(writeTok) },
        body: pkts(`${head} ${head} refs/heads/idle\0 report-status\n`),
        contentLength: 10_000,
        mode: 'stall',
      }),
      408,
    ],
    [
      'receive-pack, aborted mid-body',
      1,
      () => ({
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, ...bearer(writeTok) },
        body: pkts(`${ZERO} ${head} refs/heads/abort\0 report-status\n`),
        contentLength: 10_000,
        mode: 'abort',
      }),
      'closed',
    ],
    // A JSON body Fastify reads whole: cut when its client stops sending, on any route or none.
    [
      'POST /repos, JSON body idle',
      1,
      () => ({ method: 'POST', path: '/repos', headers: json(admin), body: '{"repo_id":', contentLength: 100, mode: 'stall' }),
      408,
    ],
    [
      'POST to no route, anonymous, JSON body idle',
      1,
      () => ({ method: 'POST', path: '/nope', headers: json(null), body: '{', contentLength: 100, mode: 'stall' }),
      408,
    ],
    [
      'upload-pack, anonymous, a JSON body idle',
      1,
      () => ({ method: 'POST', path: `${W}/git-upload-pack`, headers: json(null), body: '{', contentLength: 100, mode: 'stall' }),
      408,
    ],
    // Peer routes: only signed calls from members, for this node's incarnation, with the body signed.
    [
      '/replicate/commit unsigned',
      1,
      () => ({ method: 'POST', path: '/replicate/commit', headers: json(null), body: '{"transaction_id":"t","coordinator_id":"node-2"}' }),
      401,
    ],
    [
      '/%72eplicate/commit unsigned',
      1,
      () => ({
        method: 'POST',
        path: '/%72eplicate/commit',
        headers: json(null),
        body: '{"transaction_id":"t","coordinator_id":"node-2"}',
      }),
      401,
    ],
    [
      '/replicate/prepare with an admin token but no signature',
      2,
      () => ({ method: 'POST', path: '/replicate/prepare', headers: json(admin), body: '{}' }),
      401,
    ],
    [
      '/replicate/stage unsigned, with a pack behind its metadata',
      2,
      () => ({
        method: 'POST',
        path: '/replicate/stage',
        headers: { 'content-type': 'application/x-git-replication-prepare' },
        body: `49\n{"repo_id":"a/b","pack_hash":"${'1'.repeat(40)}","x":"yyyyyyyyyyyy"}PACK-garbage`,
      }),
      401,
    ],
    [
      '/replicate/stage-upload unsigned, with a pack behind its metadata',
      2,
      () => ({
        method: 'POST',
        path: '/replicate/stage-upload',
        headers: { 'content-type': 'application/x-git-replication-prepare' },
        body: `22\n{"repo_id":"a/b","x":"y"}PACK-garbage`,
      }),
      401,
    ],
    [
      '/%72eplicate/stage-upload unsigned, percent-encoded',
      3,
      () => ({
        method: 'POST',
        path: '/%72eplicate/stage-upload',
        headers: { 'content-type': 'application/x-git-replication-prepare' },
        body: `22\n{"repo_id":"a/b","x":"y"}PACK-garbage`,
      }),
      401,
    ],
    [
      '/%72eplicate/unstage unsigned',
      3,
      () => ({
        method: 'POST',
        path: '/%72eplicate/unstage',
        headers: json(null),
        body: `{"repo_id":"a/b","pack_hash":"${'1'.repeat(40)}"}`,
      }),
      401,
    ],
    [
      '/replicate/abort with a garbage signature',
      3,
      () => ({
        method: 'POST',
        path: '/replicate/abort',
        headers: { ...json(null), 'x-replication-auth': 'node-2:1:2:3:4' },
        body: '{"transaction_id":"t","coordinator_id":"node-2"}',
      }),
      401,
    ],
  ];

  /** manyCommands is a gzip push body of 34 MB of valid commands, past the 32 MiB cap, and no flush. */
  function manyCommands(): Buffer {
    const lines: Buffer[] = [];
    for (let i = 0; lines.length * 100 < 34 * 1024 * 1024; i++)
      lines.push(encodePktLine(`${ZERO} ${head} refs/heads/many/${String(i).padStart(20, '0')}\n`));
    return gzipSync(Buffer.concat(lines), { level: 1 });
  }

  it(`has at least 60 cases (${cases.length})`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(60);
  });

  it.each(cases)('%s', async (_name, node, make, expected) => {
    const before = await state();
    const answer = await raw(port(node), make());
    const allowed = Array.isArray(expected) ? expected : [expected];
    expect(allowed, `answer ${answer.status}: ${answer.headers.split('\r\n')[0] ?? ''} ${answer.body.slice(0, 300)}`).toContain(
      answer.status,
    );
    if (typeof answer.status === 'number') expect(answer.status).toBeLessThan(500);
    if (answer.status === 200) expect(answer.body).toMatch(/ERR /);
    await expectUnharmed(before);
  });

  /**
   * trickle posts to no route on node 1, on a kept-alive connection, a body of 1,000 bytes
   * declared: `first`, then `byte` every 400 ms, until the node closes the connection (15 s at
   * most); the answer as text, and how long it took.
   */
  async function trickle(type: string, first: string, byte: string): Promise<{ text: string; ms: number }> {
    const socket = connect(port(1), '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(`POST /nope HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: ${type}\r\ncontent-length: 1000\r\n\r\n${first}`);
    const started = Date.now();
    const drip = setInterval(() => socket.write(byte), 400);
    await Promise.race([closed, sleep(15_000)]);
    clearInterval(drip);
    socket.destroy();
    return { text: Buffer.concat(chunks).toString('latin1'), ms: Date.now() - started };
  }

  it('a JSON body sent a byte at a time, never idle, is cut after twice the body idle time (408), its connection closed', async () => {
    const before = await state();
    const { text, ms } = await trickle('application/json', '{', ' ');
    // node-1's body idle time is 1.5 s: the whole body had 3 s.
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    expect(text).toContain('request body not received within 3 s');
    expect(ms).toBeLessThan(10_000);
    await expectUnharmed(before);
  });

  it("a git body sent to a route that is not git's, trickled on a kept-alive connection, is answered and its connection closed", async () => {
    const before = await state();
    const { text, ms } = await trickle(RP, '0000', 'x');
    expect(text).toMatch(/^HTTP\/1\.1 404/);
    expect(text.toLowerCase()).toContain('connection: close');
    expect(ms).toBeLessThan(10_000);
    await expectUnharmed(before);
  });

  describe('peer signatures made with the real secret (a local user who read it, or a captured header)', () => {
    function secretAndEpochs(): { secret: string; epoch: Record<string, string> } {
      const db = new Database(join(c.root, 'cluster.db'), { readonly: true });
      try {
        const secret = (db.prepare("SELECT value FROM meta WHERE key = 'peer_secret'").get() as { value: string }).value;
        const epoch = Object.fromEntries(
          (db.prepare('SELECT id, started_at FROM nodes').all() as Array<{ id: string; started_at: string }>).map((r) => [
            r.id,
            r.started_at,
          ]),
        );
        return { secret, epoch };
      } finally {
        db.close();
      }
    }
    /** onePack makes a real, valid pack of one blob holding `content` (in a scratch repo), with the blob's id. */
    async function onePack(content: string): Promise<{ blob: string; pack: Buffer }> {
      const work = await tempDir();
      await gitOk(['init', '-q', work]);
      const blob = (await gitOk(['hash-object', '-w', '--stdin'], { cwd: work, input: content })).trim();
      const pack = await new Promise<Buffer>((resolve) => {
        const p = spawn('git', ['pack-objects', '--stdout'], { cwd: work });
        const out: Buffer[] = [];
        p.stdout.on('data', (d: Buffer) => out.push(d));
        p.on('close', () => resolve(Buffer.concat(out)));
        p.stdin.end(`${blob}\n`);
      });
      return { blob, pack };
    }
    /**
     * framedToNode1 sends node 1 a framed peer call (`<len>\n<json>`, then `rest`) signed by node 2
     * for its metadata. `declared` is the length the rest is said to have (more than is sent,
     * for a body that stalls or whose sender goes away: `mode`).
     */
    async function framedToNode1(
      path: string,
      meta: object,
      rest: Buffer,
      opts: { declared?: number; mode?: 'stall' | 'abort' } = {},
    ): Promise<RawAnswer> {
      const { secret, epoch } = secretAndEpochs();
      const json = Buffer.from(JSON.stringify(meta));
      const head = Buffer.concat([Buffer.from(`${json.length}\n`), json]);
      const contentLength = head.length + (opts.declared ?? rest.length);
      const auth = signPeerRequest(
        secret,
        'node-2',
        { id: 'node-1', epoch: epoch['node-1']! },
        { method: 'POST', path, contentLength, digest: bodyDigest(json) },
      );
      return raw(
        port(1),
        {
          method: 'POST',
          path,
          headers: {
            'content-type': 'application/x-git-replication-prepare',
            'x-replication-auth': auth,
            [PROTOCOL_HEADER]: String(PROTOCOL.max),
          },
          body: Buffer.concat([head, rest]),
          contentLength,
          ...(opts.mode ? { mode: opts.mode } : {}),
        },
        15_000,
      );
    }
    const abortBody = JSON.stringify({ transaction_id: 'no-such-txn', coordinator_id: 'node-2', repo_id: 'acme/widgets' });
    const signed = (
      secret: string,
      caller: string,
      to: { id: string; epoch: string },
      body: string,
      path = '/replicate/abort',
    ): Record<string, string> => ({
      'content-type': 'application/json',
      'x-replication-auth': signPeerRequest(secret, caller, to, {
        method: 'POST',
        path,
        contentLength: Buffer.byteLength(body),
        digest: bodyDigest(body),
      }),
      [PROTOCOL_HEADER]: String(PROTOCOL.max),
    });

    it('a correctly signed call from a member is accepted (the control case)', async () => {
      const { secret, epoch } = secretAndEpochs();
      const a = await raw(port(1), {
        method: 'POST',
        path: '/replicate/abort',
        headers: signed(secret, 'node-2', { id: 'node-1', epoch: epoch['node-1']! }, abortBody),
        body: abortBody,
      });
      expect(a.status).toBe(200);
    });

    it.each([
      ['from a node id that is not a member', 'intruder', 'node-1', null, null],
      ['made for another node', 'node-2', 'node-3', null, null],
      ['made for an earlier incarnation of the node', 'node-2', 'node-1', '2020-01-01T00:00:00.000Z', null],
      [
        'whose body was replaced in transit',
        'node-2',
        'node-1',
        null,
        JSON.stringify({ transaction_id: 'other', coordinator_id: 'node-2', repo_id: 'acme/widgets' }),
      ],
    ])('refuses a call %s', async (_n, caller, signedFor, epochOverride, sentBody) => {
      const before = await state();
      const { secret, epoch } = secretAndEpochs();
      const headers = signed(secret, caller, { id: signedFor, epoch: epochOverride ?? epoch[signedFor]! }, abortBody);
      const body = sentBody ?? abortBody;
      const a = await raw(port(1), {
        method: 'POST',
        path: '/replicate/abort',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
        body,
      });
      expect(a.status).toBe(401);
      await expectUnharmed(before);
    });

    it('refuses a correctly signed call in a protocol version this node does not speak (426)', async () => {
      const { secret, epoch } = secretAndEpochs();
      const headers = { ...signed(secret, 'node-2', { id: 'node-1', epoch: epoch['node-1']! }, abortBody), [PROTOCOL_HEADER]: '1' };
      const a = await raw(port(1), { method: 'POST', path: '/replicate/abort', headers, body: abortBody });
      expect(a.status).toBe(426);
      expect(a.body).toMatch(/replication protocol 1; this node speaks 2/);
    });

    it('refuses a replayed header', async () => {
      const { secret, epoch } = secretAndEpochs();
      const headers = signed(secret, 'node-2', { id: 'node-1', epoch: epoch['node-1']! }, abortBody);
      expect((await raw(port(1), { method: 'POST', path: '/replicate/abort', headers, body: abortBody })).status).toBe(200);
      expect((await raw(port(1), { method: 'POST', path: '/replicate/abort', headers, body: abortBody })).status).toBe(401);
    });

    it('a staged pack that stops arriving is ended after the body idle time (408): no index-pack is left waiting', async () => {
      const before = await state();
      // A real pack of one blob of random text (about 50 KiB packed): only its first 4 KiB are sent.
      const { pack } = await onePack(randomBytes(49_152).toString('base64'));
      const started = Date.now();
      const a = await framedToNode1(
        '/replicate/stage',
        { repo_id: 'acme/widgets', pack_hash: pack.subarray(-20).toString('hex') },
        pack.subarray(0, 4096),
        { declared: pack.length, mode: 'stall' },
      );
      // node-1's body idle time is 1.5 s.
      expect(a.status, a.body).toBe(408);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(await nodeGitProcesses(c.node(1).dataDir)).toEqual([]);
      await expectUnharmed(before);
    });

    it('a staged pack whose sender goes away mid-body is refused quietly: no server error, no git process left', async () => {
      const before = await state();
      const { pack } = await onePack(randomBytes(49_152).toString('base64'));
      const logFrom = c.node(1).log.length;
      await framedToNode1(
        '/replicate/stage',
        { repo_id: 'acme/widgets', pack_hash: pack.subarray(-20).toString('hex') },
        pack.subarray(0, 4096),
        { declared: pack.length, mode: 'abort' },
      );
      await waitFor(async () => (await nodeGitProcesses(c.node(1).dataDir)).length === 0, 15_000, 'the stage to end');
      // A peer that went away is no server fault: nothing logged at error level (a 500 would be).
      await new Promise((r) => setTimeout(r, 300));
      expect(c.node(1).log.slice(logFrom)).not.toMatch(/"level":50/);
      await expectUnharmed(before);
    });

    it('a signed copy during an upload that is no pack, or that stops halfway, is refused: no git process, no .keep left', async () => {
      const before = await state();
      const meta = { repo_id: 'acme/widgets' };
      const a = await framedToNode1('/replicate/stage-upload', meta, Buffer.from('PACK this is not a pack at all'));
      expect(a.status, a.body).toBeGreaterThanOrEqual(400);
      expect(a.status, a.body).toBeLessThan(500);
      const { pack } = await onePack(randomBytes(49_152).toString('base64'));
      const b = await framedToNode1('/replicate/stage-upload', meta, pack.subarray(0, 4096), { declared: pack.length, mode: 'stall' });
      expect(b.status, b.body).toBe(408);
      // Tips that are not object ids (a ref name, a number, a non-UTF-8 byte) are refused before any git runs.
      for (const tips of [['HEAD'], [7], ['\u00ff'.repeat(40)], 'x']) {
        const t = await framedToNode1('/replicate/stage-upload', { ...meta, tips }, pack);
        expect(t.status, t.body).toBe(400);
        expect(t.body).toMatch(/tips must be a list/);
      }
      expect(await nodeGitProcesses(c.node(1).dataDir)).toEqual([]);
      const packDir = join(c.replicaPath(1, 'acme/widgets'), 'objects', 'pack');
      expect((await readdir(packDir)).filter((f) => f.endsWith('.keep') || f.startsWith('tmp_'))).toEqual([]);
      await expectUnharmed(before);
    });

    it.each(['stall', 'abort'] as const)(
      'a signed copy or prepare refused before its pack is read survives its sender then going quiet (%s): the node stays up',
      async (mode) => {
        const before = await state();
        const { pack } = await onePack(randomBytes(49_152).toString('base64'));
        const cut = { declared: pack.length, mode };
        // No replica of this repo here: the copy is refused before index-pack reads a byte of it.
        const a = await framedToNode1('/replicate/stage-upload', { repo_id: 'acme/nowhere' }, pack.subarray(0, 4096), cut);
        // The answer waits for the body to end (stalled: the idle guard ends it), and stays the refusal.
        if (mode === 'stall') expect(a.status, a.body).toBe(409);
        // A prepare that says it carries no pack, with bytes behind its metadata that stop coming.
        const repo = await c.repoStatus(1, 'acme/widgets');
        const prepare = {
          transaction_id: `quiet-${mode}`,
          coordinator_id: 'node-2',
          repo_id: 'acme/widgets',
          operation: 'push',
          incarnation: repo.incarnation,
          base_generation: repo.generation + 5,
          fencing_token: 1,
          new_checksum: repo.checksum,
          updates: [],
          has_pack: false,
        };
        const b = await framedToNode1('/replicate/prepare', prepare, pack.subarray(0, 4096), cut);
        if (mode === 'stall') expect(b.status, b.body).toBeGreaterThanOrEqual(400);
        // Past node-1's body idle time (1.5 s): the drained rest of a refused body fails quietly.
        await new Promise((r) => setTimeout(r, 2_500));
        expect((await fetch(`${c.url(1)}/health`)).status).toBe(200);
        await expectUnharmed(before);
      },
    );

    /**
     * undiciToNode1 makes a framed call signed as node-2 through undici, the peer client's HTTP
     * client (which stops sending a body once it has the answer); `body` builds the body from the
     * frame's head (a Buffer is sent with its length, a stream chunked).
     */
    async function undiciToNode1(path: string, meta: object, body: (head: Buffer) => Buffer | Readable): Promise<Dispatcher.ResponseData> {
      const { secret, epoch } = secretAndEpochs();
      const json = Buffer.from(JSON.stringify(meta));
      const sent = body(Buffer.concat([Buffer.from(`${json.length}\n`), json]));
      const auth = signPeerRequest(
        secret,
        'node-2',
        { id: 'node-1', epoch: epoch['node-1']! },
        { method: 'POST', path, contentLength: Buffer.isBuffer(sent) ? sent.length : null, digest: bodyDigest(json) },
      );
      return request(`${c.url(1)}${path}`, {
        method: 'POST',
        body: sent,
        headers: {
          'content-type': 'application/x-git-replication-prepare',
          'x-replication-auth': auth,
          [PROTOCOL_HEADER]: String(PROTOCOL.max),
        },
      });
    }

    it('a stage of a pack the node holds already is answered only once its body was read to the end', async () => {
      // A peer client (undici) that has its answer stops sending the body and keeps the
      // connection: answered early, the request stayed open here until the idle guard failed it.
      const { pack } = await onePack(randomBytes(32_768).toString('base64'));
      const meta = { repo_id: 'acme/widgets', pack_hash: pack.subarray(-20).toString('hex') };
      expect((await framedToNode1('/replicate/stage', meta, pack)).status).toBe(200);
      let sentAll = false;
      const res = await undiciToNode1('/replicate/stage', meta, (head) =>
        Readable.from(
          (async function* () {
            yield Buffer.concat([head, pack.subarray(0, 1024)]);
            await new Promise((r) => setTimeout(r, 500));
            yield pack.subarray(1024);
            sentAll = true;
          })(),
        ),
      );
      const answeredAfterAll = sentAll;
      expect(res.statusCode, await res.body.text()).toBe(200);
      expect(answeredAfterAll).toBe(true);
    });

    it('a copy whose pack index-pack refuses at its first bytes is answered once the rest was read, on a connection kept open', async () => {
      // index-pack gives up on the header; the 4 MiB behind it are read off the request (not
      // left behind a guard nobody reads until the body idle time closes the connection).
      const res = await undiciToNode1('/replicate/stage-upload', { repo_id: 'acme/widgets' }, (head) =>
        Buffer.concat([head, Buffer.from('PACK not a pack'), randomBytes(4 * 1024 * 1024)]),
      );
      const text = await res.body.text();
      expect(res.statusCode, text).toBeGreaterThanOrEqual(400);
      expect(res.statusCode, text).toBeLessThan(500);
      expect(text).toMatch(/pack rejected/);
      expect(res.headers.connection).not.toBe('close');
    });

    it('a prepare whose pack was swapped in transit is refused by the participant', async () => {
      const before = await state();
      const repo = await c.repoStatus(1, 'acme/widgets');
      // A real, valid pack of one blob: its own hash is not the signed one.
      const { blob, pack } = await onePack('swapped\n');
      const a = await framedToNode1(
        '/replicate/prepare',
        {
          transaction_id: 'swap-1',
          coordinator_id: 'node-2',
          repo_id: 'acme/widgets',
          operation: 'push',
          incarnation: repo.incarnation,
          base_generation: repo.generation,
          fencing_token: 1,
          new_checksum: repo.checksum,
          updates: [],
          has_pack: true,
          pack_hash: 'a'.repeat(40),
        },
        pack,
      );
      expect(a.status, a.body).toBe(409);
      expect(a.body).toMatch(/not the signed/);
      await expectUnharmed(before);
      // The swapped pack did not stay in the replica.
      expect((await git(['cat-file', '-e', blob], { cwd: c.replicaPath(1, 'acme/widgets') })).code).not.toBe(0);
    });
  });

  it('a request line naming the whole URL (absolute-form) is proxied by its path, to the peer', async () => {
    const before = await state();
    const answer = await raw(port(soloOther), {
      method: 'GET',
      path: 'http://evil.example/acme/solo.git/info/refs?service=git-upload-pack',
      headers: { host: 'evil.example' },
    });
    expect(answer.status, answer.body.slice(0, 300)).toBe(200);
    expect(answer.body).toContain('# service=git-upload-pack');
    await expectUnharmed(before);
  });

  it('a client hop header does not stop a proxied read (only a member-signed one does)', async () => {
    const url = `${c.url(soloOther)}/acme/solo.git/info/refs?service=git-upload-pack`;
    expect((await fetch(url, { headers: { 'x-replication-hop': 'node-9' } })).status).toBe(200);
    const { secret } = ((): { secret: string } => {
      const db = new Database(join(c.root, 'cluster.db'), { readonly: true });
      try {
        return { secret: (db.prepare("SELECT value FROM meta WHERE key = 'peer_secret'").get() as { value: string }).value };
      } finally {
        db.close();
      }
    })();
    // A genuine hop to a node without a replica is answered there, never proxied again.
    expect((await fetch(url, { headers: { 'x-replication-hop': signHop(secret, '127.0.0.1') } })).status).toBe(503);
  });

  it("a repair's signed hop reads the one repository it names, no other (a captured one read every private repository)", async () => {
    const db = new Database(join(c.root, 'cluster.db'), { readonly: true });
    const secret = (db.prepare("SELECT value FROM meta WHERE key = 'peer_secret'").get() as { value: string }).value;
    db.close();
    expect((await c.api(1, 'POST', '/repos', { repo_id: 'acme/hidden' })).status).toBe(201);
    const holder = Number((await c.waitInSync('acme/hidden')).replicas[0]!.node.slice('node-'.length));
    const url = `${c.url(holder)}/acme/hidden.git/info/refs?service=git-upload-pack`;
    const hop = (value: string): Promise<number> =>
      fetch(url, { headers: { 'x-replication-hop': signHop(secret, value) } }).then((r) => r.status);
    expect((await fetch(url)).status).toBe(401);
    expect(await hop(repairHop('node-2', 'acme/widgets'))).toBe(401);
    expect(await hop('repair:node-2')).toBe(401);
    expect(await hop(repairHop('node-2', 'acme/hidden'))).toBe(200);
    expect((await c.api(1, 'DELETE', '/repos/acme/hidden')).status).toBe(200);
  });

  it('what anonymous callers see: no replica paths, no lock, no store error text', async () => {
    const anon = (await (await fetch(`${c.url(1)}/repos/acme/widgets`)).json()) as Record<string, unknown>;
    expect(anon).not.toHaveProperty('path');
    expect(anon).not.toHaveProperty('lock');
    expect(JSON.stringify(anon)).not.toContain(c.root);
    const asAdmin = (await (await fetch(`${c.url(1)}/repos/acme/widgets`, { headers: bearer(admin) })).json()) as Record<string, unknown>;
    expect(asAdmin.path).toBe(c.replicaPath(1, 'acme/widgets'));
    const health = (await (await fetch(`${c.url(1)}/health`)).json()) as {
      store: Record<string, unknown>;
      status: string;
      server_id: string;
      load: unknown;
      peers: number;
    };
    expect(health).toMatchObject({ status: 'healthy', server_id: 'node-1' });
    expect(health.store).not.toHaveProperty('error');
    const healthAdmin = (await (await fetch(`${c.url(1)}/health`, { headers: bearer(admin) })).json()) as {
      store: Record<string, unknown>;
    };
    expect(healthAdmin.store).toHaveProperty('error');
  });

  it('data dirs are 0700 and the store and transaction log 0600', async () => {
    for (const n of c.nodes) {
      expect((await stat(n.dataDir)).mode & 0o777).toBe(0o700);
      expect((await stat(join(n.dataDir, 'node.db'))).mode & 0o777).toBe(0o600);
    }
    for (const f of ['cluster.db', 'cluster.db-wal', 'cluster.db-shm']) {
      const st = await stat(join(c.root, f)).catch(() => null);
      if (st) expect(st.mode & 0o777, f).toBe(0o600);
    }
  });

  it('all git slots busy: the next request gets 503, and its client going away does not end the node', async () => {
    const before = await state();
    const sockets: Socket[] = [];
    const stalls: Array<Promise<RawAnswer>> = [];
    for (let i = 0; i < 8; i++) {
      const req: RawRequest = {
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, ...bearer(writeTok) },
        body: pkts(`${head} ${head} refs/heads/s${i}\0 report-status\n`),
        contentLength: 100_000,
        mode: 'stall',
      };
      stalls.push(raw(port(3), req, 60_000, (s) => sockets.push(s)));
    }
    await waitFor(
      async () => (await nodeGitProcesses(c.node(3).dataDir)).length >= 8,
      15_000,
      'eight receive-packs waiting for their bodies',
    );
    const full = await raw(port(3), {
      method: 'POST',
      path: `${W}/git-upload-pack`,
      headers: { 'content-type': UP },
      body: pkts(`want ${head}\n`, '0000', 'done\n'),
    });
    expect(full.status).toBe(503);
    expect(full.headers).toMatch(/retry-after: 1/i);
    // The crash of old: a push refused for want of a slot, whose client then goes away mid-body.
    const ninth = await raw(port(3), {
      method: 'POST',
      path: `${W}/git-receive-pack`,
      headers: { 'content-type': RP, ...bearer(writeTok) },
      body: pkts(`${head} ${head} refs/heads/x\0 report-status\n`),
      contentLength: 100_000,
      mode: 'abort',
    });
    expect([503, 'closed']).toContain(ninth.status);
    for (const s of sockets) s.destroy();
    await Promise.all(stalls);
    await expectUnharmed(before);
    expect((await fetch(`${c.url(3)}/acme/widgets.git/info/refs?service=git-upload-pack`)).status).toBe(200);
  }, 90_000);

  it('a push refused for its body encoding gives its git slot back (node 2: 2 per client, no line)', async () => {
    const before = await state();
    for (let i = 0; i < 3; i++) {
      const a = await raw(port(2), {
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, 'content-encoding': 'br', ...bearer(writeTok) },
        body: pkts(`${head} ${head} refs/heads/enc${i}\0 report-status\n`, '0000'),
      });
      expect(a.status).toBe(415);
    }
    expect((await raw(port(2), { method: 'GET', path: `${W}/info/refs?service=git-upload-pack` })).status).toBe(200);
    await expectUnharmed(before);
  });

  it('one client address cannot take every slot (node 2: at most 2 per client)', async () => {
    const before = await state();
    const sockets: Socket[] = [];
    const stalls: Array<Promise<RawAnswer>> = [];
    for (let i = 0; i < 2; i++) {
      const req: RawRequest = {
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, ...bearer(writeTok) },
        body: pkts(`${head} ${head} refs/heads/p${i}\0 report-status\n`),
        contentLength: 100_000,
        mode: 'stall',
      };
      stalls.push(raw(port(2), req, 60_000, (s) => sockets.push(s)));
    }
    await waitFor(async () => (await nodeGitProcesses(c.node(2).dataDir)).length >= 2, 15_000, 'two receive-packs waiting');
    const third = await raw(port(2), { method: 'GET', path: `${W}/info/refs?service=git-upload-pack` });
    expect(third.status).toBe(503);
    expect(third.body).toMatch(/too many git requests from this client/);
    for (const s of sockets) s.destroy();
    await Promise.all(stalls);
    await expectUnharmed(before);
  }, 60_000);

  it('a clone whose client stops reading is ended after the send idle time (2 s), its git process and slot freed', async () => {
    // Its replicas not on node 1, whose 1.5 s body idle limit a 24 MiB shipment on a loaded
    // machine can trip (a prepare refused): names are tried until placement leaves node 1 out.
    let big = '';
    for (let i = 0; !big; i++) {
      const id = `acme/big-${i}`;
      expect((await c.api(2, 'POST', '/repos', { repo_id: id, visibility: 'public' })).status).toBe(201);
      if ((await c.repoStatus(2, id)).replicas.some((r) => r.node === 'node-1'))
        expect((await c.api(2, 'DELETE', `/repos/${id}`)).status).toBe(200);
      else big = id;
    }
    // A pack larger than every buffer between git and the client (pipe, Node's, both sockets'): 24 MiB that do not compress.
    const work = await workRepo();
    await writeFile(join(work, 'big.bin'), randomBytes(24 * 1024 * 1024));
    await gitOk(['add', 'big.bin'], { cwd: work });
    await gitOk(['commit', '-q', '-m', 'big'], { cwd: work });
    const tip = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    const push = new URL(c.repoUrl(2, big));
    push.username = 'x';
    push.password = writeTok;
    await gitOk(['push', '-q', push.toString(), 'HEAD:refs/heads/main'], { cwd: work });
    const holder = Number((await c.waitInSync(big, 2)).replicas[0]!.node.slice('node-'.length));
    let socket: Socket | null = null;
    const answer = raw(
      port(holder),
      {
        method: 'POST',
        path: `/${big}.git/git-upload-pack`,
        headers: { 'content-type': UP },
        body: pkts(`want ${tip}\n`, '0000', 'done\n'),
      },
      60_000,
      (s) => {
        socket = s;
        s.pause();
      },
    );
    const uploadPacks = async (): Promise<number> =>
      (await nodeGitProcesses(c.node(holder).dataDir)).filter((p) => p.cmd.includes('upload-pack')).length;
    await waitFor(async () => (await uploadPacks()) > 0, 15_000, 'upload-pack serving the clone');
    const started = Date.now();
    await waitFor(async () => (await uploadPacks()) === 0, 20_000, 'upload-pack of the stalled clone ended');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(c.node(holder).log).toMatch(/client's socket did not drain for the send idle time/);
    (socket as Socket | null)?.resume();
    const got = await answer;
    // The answer was cut: a whole pack of 24 MiB never arrived.
    expect(got.body.length).toBeLessThan(24 * 1024 * 1024);
    expect(c.nodes.every((n) => n.proc?.exitCode === null)).toBe(true);
    expect((await fetch(`${c.url(holder)}/${big}.git/info/refs?service=git-upload-pack`)).status).toBe(200);
  }, 90_000);

  describe('pushes: what the client is told is what happened', () => {
    let work = '';
    const pushUrl = (i: number): string => {
      const u = new URL(c.repoUrl(i, 'acme/widgets'));
      u.username = 'x';
      u.password = writeTok;
      return u.toString();
    };
    beforeAll(async () => {
      work = await tempDir();
      await gitOk(['clone', '-q', pushUrl(1), work]);
    });

    it('a ref name that is not UTF-8 is refused, and created nowhere', async () => {
      const before = await state();
      // Node passes argv as UTF-8: bash's $'\\xe9' puts the raw byte in git's argument.
      const bash = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn('bash', ['-c', `git push "$URL" HEAD:refs/heads/caf$'\\xe9' 2>&1`], {
          cwd: work,
          env: { ...process.env, URL: pushUrl(2), GIT_TERMINAL_PROMPT: '0' },
        });
        let out = '';
        p.stdout.on('data', (d: Buffer) => {
          out += d.toString('latin1');
        });
        p.on('close', (code) => resolve({ code, out }));
      });
      expect(bash.code, bash.out).not.toBe(0);
      expect(bash.out).toMatch(/remote rejected.*funny refname \(not UTF-8\)/);
      await expectUnharmed(before);
    });

    it('a command with trailing words after the ref name moves nothing', async () => {
      const before = await state();
      const other = await commitFile(work, 'other.txt', 'other\n', 'other');
      await gitOk(['push', '-q', pushUrl(1), `${other}:refs/heads/side`], { cwd: work });
      // The third replica confirms after the push is acknowledged (W of R): wait for it.
      await c.waitInSync('acme/widgets');
      const mid = await state();
      // Old main, new commit (already on the server via side), and a name with a space in it.
      const { createHash } = await import('node:crypto');
      const packHead = Buffer.from([...Buffer.from('PACK'), 0, 0, 0, 2, 0, 0, 0, 0]);
      const emptyPack = Buffer.concat([packHead, createHash('sha1').update(packHead).digest()]);
      const body = Buffer.concat([
        pkts(`${head} ${other} refs/heads/main trailing-words\0 report-status\n`),
        Buffer.from('0000'),
        emptyPack,
      ]);
      const a = await raw(port(3), {
        method: 'POST',
        path: `${W}/git-receive-pack`,
        headers: { 'content-type': RP, ...bearer(writeTok) },
        body,
      });
      expect(a.status).toBe(200);
      // A report names a ref up to its first space, so receive-pack cannot match ours to this
      // command and says the hook failed to report: a refusal either way, and nothing moved.
      expect(a.body).toMatch(/ng refs\/heads\/main trailing-words (funny refname|proc-receive failed to report status)/);
      expect(await state()).toBe(mid);
      expect(mid).not.toBe(before);
      for (let i = 1; i <= 3; i++) expect(await refsOf(c.replicaPath(i, 'acme/widgets'))).toContain(`${head} refs/heads/main`);
    });

    it("a directory/file clash gets git's reason, not a quorum message", async () => {
      const before = await state();
      const r = await git(['push', pushUrl(1), 'HEAD:refs/heads/main/sub'], { cwd: work });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain("cannot lock ref 'refs/heads/main/sub': 'refs/heads/main' exists");
      expect(r.stderr).not.toMatch(/quorum/);
      await expectUnharmed(before);
    });

    it('deleting the branch HEAD names is refused, as git does', async () => {
      const before = await state();
      const r = await git(['push', pushUrl(2), ':refs/heads/main'], { cwd: work });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('deletion of the current branch prohibited');
      await expectUnharmed(before);
    });

    it('a pack past the push limit is refused (node 1: 1 MiB)', async () => {
      const before = await state();
      const { randomBytes } = await import('node:crypto');
      const { writeFile } = await import('node:fs/promises');
      await writeFile(join(work, 'big.bin'), randomBytes(3 * 1024 * 1024));
      await gitOk(['add', 'big.bin'], { cwd: work });
      await gitOk(['commit', '-q', '-m', 'big'], { cwd: work });
      const r = await git(['push', pushUrl(1), 'HEAD:refs/heads/big'], { cwd: work });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/pack exceeds maximum allowed size|413/);
      await expectUnharmed(before);
    });
  });
});

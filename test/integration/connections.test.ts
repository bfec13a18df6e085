import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, sleep, waitFor } from '../helpers/cluster.js';
import { gitOk, workRepo } from '../helpers/git.js';
import { connectFrom } from '../helpers/sockets.js';

/**
 * What connections alone can hold of a node: a client that opened thousands of connections and
 * sent nothing took every file descriptor of the node (it stopped answering, and failed its part
 * of every transaction) for as long as it kept them.
 */
describe('HTTP connections: a first request in time, a share per address, a cap in all', () => {
  let c: TestCluster;
  const PER_ADDRESS = 20;
  const MAX = 45;
  const held: Socket[] = [];

  beforeAll(async () => {
    c = await TestCluster.start({
      nodes: 1,
      env: { MAX_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS), MAX_CONNECTIONS: String(MAX), HEADERS_TIMEOUT: '3s' },
    });
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await c?.destroy();
  });

  /** open connects from `from` and says whether the node closed it within `ms`, having sent nothing. */
  async function open(from: string, ms = 500): Promise<{ socket: Socket; closed: boolean }> {
    const opened = await connectFrom(Number(new URL(c.url(1)).port), from, ms);
    held.push(opened.socket);
    return opened;
  }

  /** health asks GET /health from `from` on a fresh connection: its status, or 0 if the connection was closed unanswered. */
  function health(from: string): Promise<number> {
    return new Promise((resolve) => {
      const req = request(`${c.url(1)}/health`, { localAddress: from, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(0));
      req.setTimeout(5_000, () => req.destroy());
      req.end();
    });
  }

  function closedAll(sockets: readonly Socket[]): boolean {
    return sockets.every((s) => s.destroyed || s.readyState === 'closed');
  }

  it('one address holds at most its share; others are served meanwhile; silent connections are closed after the headers time', async () => {
    const mine = await Promise.all(Array.from({ length: PER_ADDRESS }, () => open('127.0.0.2', 300)));
    expect(mine.filter((o) => o.closed)).toHaveLength(0);
    // The next from that address is closed at once, sent nothing.
    expect((await open('127.0.0.2')).closed).toBe(true);
    expect(await health('127.0.0.2')).toBe(0);
    // Another address is served meanwhile.
    expect(await health('127.0.0.3')).toBe(200);
    // None of them sent a request: all closed after the headers time (3 s).
    await waitFor(async () => closedAll(mine.map((o) => o.socket)), 8_000, 'the silent connections closed');
    expect(await health('127.0.0.2')).toBe(200);
    const metrics = await (await fetch(`${c.url(1)}/metrics`)).text();
    expect(metrics).toMatch(/gitrep_http_connections_refused_total\{reason="per_address"\} [1-9]/);
    expect(metrics).toMatch(/gitrep_http_connections_refused_total\{reason="no_request"\} [1-9]/);
  }, 30_000);

  it('past the cap in all, new connections are closed at once; the node serves again once they go', async () => {
    const opened: Array<{ socket: Socket; closed: boolean }> = [];
    // From several addresses, each within its share, until the node closes one at once.
    for (let a = 4; a < 10 && !opened.some((o) => o.closed); a++)
      opened.push(...(await Promise.all(Array.from({ length: PER_ADDRESS }, () => open(`127.0.0.${a}`, 300)))));
    const kept = opened.filter((o) => !o.closed);
    expect(opened.some((o) => o.closed)).toBe(true);
    expect(kept.length).toBeLessThanOrEqual(MAX);
    expect(kept.length).toBeGreaterThan(MAX - 10);
    expect(await health('127.0.0.20')).toBe(0);
    for (const o of kept) o.socket.destroy();
    await waitFor(async () => (await health('127.0.0.20')) === 200, 5_000, 'served again');
    expect(await (await fetch(`${c.url(1)}/metrics`)).text()).toMatch(/gitrep_http_connections_refused_total\{reason="max"\} [1-9]/);
  }, 30_000);

  it('a connection that made a request stays open between requests past the headers time (keep-alive), and git works', async () => {
    const port = Number(new URL(c.url(1)).port);
    const socket = connect({ port, host: '127.0.0.1' });
    held.push(socket);
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString();
    });
    const ask = async (): Promise<void> => {
      const before = (got.match(/HTTP\/1\.1 200/g) ?? []).length;
      socket.write('GET /health HTTP/1.1\r\nhost: x\r\n\r\n');
      await waitFor(async () => (got.match(/HTTP\/1\.1 200/g) ?? []).length > before, 3_000, 'answered');
    };
    await ask();
    await sleep(4_000);
    expect(socket.destroyed).toBe(false);
    await ask();
    socket.destroy();
    await c.createRepo(1, 'conn/repo');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(1, 'conn/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    expect(await gitOk(['ls-remote', c.repoUrl(1, 'conn/repo')])).toContain('refs/heads/main');
  }, 30_000);
});

describe('HTTP connections: a flood of client connections does not cut a node off from its peers', () => {
  let c: TestCluster;
  const held: Socket[] = [];
  beforeAll(async () => {
    // Caps small enough for a test to fill; the flood's connections stay for the headers time.
    c = await TestCluster.start({
      nodes: 3,
      env: { MAX_CONNECTIONS: '30', MAX_CONNECTIONS_PER_ADDRESS: '10', HEADERS_TIMEOUT: '25s' },
    });
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await c?.destroy();
  });

  /** fill opens `n` connections from each of `addresses` to node `node`, sending nothing; returns how many the node kept. */
  async function fill(node: number, addresses: readonly string[], n: number): Promise<number> {
    const port = Number(new URL(c.url(node)).port);
    const kept = await Promise.all(
      addresses.flatMap((from) =>
        Array.from({ length: n }, async () => {
          const { socket, closed } = await connectFrom(port, from);
          held.push(socket);
          return !closed;
        }),
      ),
    );
    return kept.filter(Boolean).length;
  }

  it('with two of three nodes at their client cap, a push through the third still reaches every replica', async () => {
    // Node 3 starts again, so its connections to the others are new ones, made during the flood.
    await c.kill(3);
    const flood = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];
    // Each node keeps what is left of its 30 (its peers' connections count too), and closes the rest.
    for (const node of [1, 2]) expect(await fill(node, flood, 10)).toBeGreaterThan(20);
    await c.restart(3);
    // A client from another address finds nodes 1 and 2 full ...
    const refused = await connectFrom(Number(new URL(c.url(1)).port), '127.0.0.6');
    held.push(refused.socket);
    expect(refused.closed).toBe(true);
    // ... but their peer gets through: the create and the push reach all three replicas.
    await c.createRepo(3, 'flood/repo');
    const work = await workRepo();
    await gitOk(['push', '-q', c.repoUrl(3, 'flood/repo'), 'HEAD:refs/heads/main'], { cwd: work });
    // The push is answered at its quorum; the third replica's commit may land a moment later.
    const status = await c.waitInSync('flood/repo', 3, 15_000);
    expect(status.replicas.map((r) => r.state)).toEqual(['in_sync', 'in_sync', 'in_sync']);
    // Both flooded peers took node 3's commits themselves (not a repair later).
    const metrics = await (await fetch(`${c.url(3)}/metrics`)).text();
    const committed = [...metrics.matchAll(/^gitrep_commit_seconds_count\{peer="([^"]+)"\} (\d+)/gm)].filter((m) => Number(m[2]) >= 1);
    expect(committed.map((m) => m[1])).toEqual(expect.arrayContaining(['node-1', 'node-2']));
    // The flood was still there all along.
    expect(held.filter((s) => !s.destroyed && s.readyState === 'open').length).toBeGreaterThan(40);
  }, 60_000);
});

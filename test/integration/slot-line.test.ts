import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePktLine } from '../../src/git/pkt-line.js';
import { TestCluster, waitFor } from '../helpers/cluster.js';
import { commitFile, git, gitOk, lsRemote, nodeGitProcesses, tempDir, workRepo } from '../helpers/git.js';

/**
 * A node with 2 git process slots (so 2 for one client address too), which every client here
 * shares: requests that find none free wait in line (`--git-slot-wait`) instead of a 503.
 */
describe('git requests wait in line for a process slot', () => {
  let c: TestCluster;
  const repo = 'line/repo';
  let head = '';

  beforeAll(async () => {
    c = await TestCluster.start({
      nodes: 1,
      // Each push holds its slot a while in its transaction, so the line forms for certain.
      env: { MAX_GIT_PROCESSES: '2', MAX_GIT_PER_CLIENT: '2', GIT_REPLICATION_FAILPOINTS: 'coordinator.beforePrepare=delay(300)' },
    });
    await c.createRepo(1, repo);
    const base = await workRepo();
    head = (await gitOk(['rev-parse', 'HEAD'], { cwd: base })).trim();
    await gitOk(['push', '-q', c.repoUrl(1, repo), 'HEAD:refs/heads/main'], { cwd: base });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  async function waiting(): Promise<number> {
    return ((await (await fetch(`${c.url(1)}/health`)).json()) as { git_waiting: number }).git_waiting;
  }

  it('10 clients of one address pushing at once all succeed, served in turn', async () => {
    const clients = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const dir = await tempDir('gitrep-line-');
        await gitOk(['clone', '-q', c.repoUrl(1, repo), dir]);
        return { dir, commit: await commitFile(dir, `f${i}.txt`, `${i}\n`, `c${i}`) };
      }),
    );
    let most = 0;
    let running = true;
    const watch = (async () => {
      while (running) {
        most = Math.max(most, await waiting());
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const results = await Promise.all(clients.map((cl, i) => git(['push', c.repoUrl(1, repo), `HEAD:refs/heads/b${i}`], { cwd: cl.dir })));
    running = false;
    await watch;
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    // Without the line, 8 of the 10 would have had a 503.
    expect(most).toBeGreaterThan(0);
    const refs = await lsRemote(c.repoUrl(1, repo));
    clients.forEach((cl, i) => expect(refs).toContain(`${cl.commit}\trefs/heads/b${i}`));
    expect(await waiting()).toBe(0);
  }, 120_000);

  it('a client that goes away while it waits leaves the line; the next one in line gets the freed slot', async () => {
    const port = Number(new URL(c.url(1)).port);
    const sockets: Socket[] = [];
    /** open sends a request head (and `body`) and keeps the socket open; its answer collects in `answer.text`. */
    const open = (head: string, body: Buffer = Buffer.alloc(0)) => {
      const s = connect(port, '127.0.0.1');
      const answer = { text: '', closed: false };
      s.on('data', (d: Buffer) => (answer.text += d.toString('latin1')));
      s.on('close', () => (answer.closed = true));
      s.on('error', () => undefined);
      s.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
      sockets.push(s);
      return { socket: s, answer };
    };
    const path = `/${repo}.git`;
    // Two pushes whose bodies stall take both slots: their receive-packs wait for the pack.
    const cmd = encodePktLine(`${head} ${head} refs/heads/stall\0 report-status\n`);
    const stalls = [0, 1].map(() =>
      open(
        `POST ${path}/git-receive-pack HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-git-receive-pack-request\r\ncontent-length: 100000\r\n\r\n`,
        cmd,
      ),
    );
    await waitFor(async () => (await nodeGitProcesses(c.node(1).dataDir)).length >= 2, 15_000, 'two receive-packs holding the slots');
    const get = `GET ${path}/info/refs?service=git-upload-pack HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`;
    const leaver = open(get);
    await waitFor(async () => (await waiting()) === 1, 10_000, 'a request waiting in line');
    const stayer = open(get);
    await waitFor(async () => (await waiting()) === 2, 10_000, 'two requests waiting in line');
    leaver.socket.destroy();
    await waitFor(async () => (await waiting()) === 1, 10_000, 'the one that went away to leave the line');
    expect(stayer.answer.text).toBe('');
    // A stalled push goes away: its slot goes to the one still waiting.
    stalls[0]!.socket.destroy();
    await waitFor(async () => stayer.answer.closed, 15_000, 'the waiting request to be answered');
    expect(stayer.answer.text).toMatch(/^HTTP\/1\.1 200/);
    expect(stayer.answer.text).toContain('refs/heads/main');
    for (const s of sockets) s.destroy();
    await waitFor(async () => (await waiting()) === 0 && (await nodeGitProcesses(c.node(1).dataDir)).length === 0, 15_000, 'an idle node');
    expect((await fetch(`${c.url(1)}/health`)).status).toBe(200);
  }, 60_000);
});

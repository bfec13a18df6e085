import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { descendants } from '../bench/proc.js';
import { serveArgs } from '../src/cli/serve-args.js';

/** projectRoot walks up from this file to the directory holding package.json. */
function projectRoot(): string {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/** MAIN is the built CLI that test clusters run as real processes. */
export const MAIN = join(projectRoot(), 'dist', 'cli', 'main.js');

/**
 * freePort finds a free loopback port below the kernel's ephemeral range (32768+ on Linux).
 * A port the kernel hands out for `listen(0)` is one it also hands to outgoing connections, so
 * between this check and the node's own listen any client socket of a parallel test could take
 * it (seen in CI as EADDRINUSE). Ports below that range are only ever taken by an explicit bind.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (handedOut.has(port)) continue;
    if (await canListen(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no free port found in 20000-31999');
}

const handedOut = new Set<number>();

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** TestNode is one node process of a test cluster. */
export interface TestNode {
  readonly id: string;
  readonly port: number;
  readonly url: string;
  readonly dataDir: string;
  /** sshPort is the node's SSH port (clusters started with `ssh: true`). */
  readonly sshPort?: number;
  proc: ChildProcess | null;
  log: string;
}

/** ClusterOptions shape a test cluster. */
export interface ClusterOptions {
  nodes: number;
  writeQuorum?: number;
  replicationFactor?: number;
  /** env for every node, e.g. short TTLs; per-node env via `nodeEnv`. */
  env?: Record<string, string>;
  nodeEnv?: Record<string, Record<string, string>>;
  store?: string;
  /** nodeStore gives a node another `--store` URL for the same store (e.g. through a fault proxy). */
  nodeStore?: Record<string, string>;
  /**
   * tls starts every node with HTTPS (TLS_CERT, TLS_KEY, TLS_CA in its env; `nodeEnv` may
   * override them): `certs(id)` names a node's certificate and key, `ca` the CA that signed them.
   * URLs are then `https://127.0.0.1:<port>` and the harness's own calls trust `ca`.
   */
  tls?: { ca: string; certs: (nodeId: string) => { cert: string; key: string } };
  /** ssh gives every node a free SSH port (`--ssh-port`, in TestNode.sshPort). */
  ssh?: boolean;
  /** main is the CLI the nodes run (default MAIN, this checkout's dist/; the benchmark runs a snapshot). */
  main?: string;
  /** root is the directory for data dirs and the SQLite store (default a new temp dir); destroy() removes it. */
  root?: string;
  /** productionTimers leaves out FAST_ENV, so the nodes run with the timers a real deployment has. */
  productionTimers?: boolean;
}

/** HarnessFetch is the subset of fetch the harness uses (global fetch, or undici's with a CA). */
type HarnessFetch = (
  url: string,
  init?: { method?: string; headers?: Record<string, string>; body?: string },
) => Promise<{ ok: boolean; status: number; text(): Promise<string>; json(): Promise<unknown> }>;

/** FAST_ENV shortens the cluster's timers so failure tests run in seconds. */
export const FAST_ENV: Record<string, string> = {
  NODE_TTL_MS: '2000',
  LOCK_TTL_MS: '4000',
  RESOLVE_AFTER_MS: '1000',
  REPAIR_INTERVAL_MS: '300',
  LOG_LEVEL: 'info',
  GIT_REPLICATION_EXIT_WITH_PARENT: '1',
  AUTH: 'open',
  STAGE_TTL_MS: '3000',
};

/**
 * TestCluster (used by the integration tests and `npm run chaos`) runs N real node processes on free ports with temp data dirs and one shared store,
 * and lets tests kill (-9), stop (SIGSTOP), resume and restart them.
 */
export class TestCluster {
  readonly nodes: TestNode[] = [];
  /** authToken, when set, is sent as a Bearer token by api() (clusters with AUTH=tokens). */
  authToken: string | null = null;
  private readonly fetch: HarnessFetch;
  private readonly agent: Agent | null;
  private constructor(
    readonly root: string,
    readonly store: string,
    private readonly opts: ClusterOptions,
  ) {
    this.agent = opts.tls ? new Agent({ connect: { ca: readFileSync(opts.tls.ca) } }) : null;
    const agent = this.agent;
    this.fetch = agent ? (url, init) => undiciFetch(url, { ...init, dispatcher: agent }) : (url, init) => fetch(url, init);
  }

  /** scheme is `https` for a cluster started with `tls`, else `http`. */
  get scheme(): 'http' | 'https' {
    return this.opts.tls ? 'https' : 'http';
  }

  /** start launches every node and waits until each is healthy and sees all the others. */
  static async start(opts: ClusterOptions): Promise<TestCluster> {
    const root = opts.root ?? (await mkdtemp(join(tmpdir(), 'gitrep-cluster-')));
    const c = new TestCluster(root, opts.store ?? `sqlite:${join(root, 'cluster.db')}`, opts);
    for (let i = 1; i <= opts.nodes; i++) c.nodes.push(await c.newNode(i));
    try {
      await Promise.all(c.nodes.map((n) => c.spawn(n)));
      await c.waitStarted(c.nodes);
      await c.waitMembership();
    } catch (err) {
      // A cluster that failed to start must not outlive the test that asked for it.
      await c.destroy();
      throw err;
    }
    return c;
  }

  private async newNode(i: number): Promise<TestNode> {
    const port = await freePort();
    const ssh = this.opts.ssh ? { sshPort: await freePort() } : {};
    return {
      id: `node-${i}`,
      port,
      url: `${this.scheme}://127.0.0.1:${port}`,
      dataDir: join(this.root, `node-${i}`),
      proc: null,
      log: '',
      ...ssh,
    };
  }

  /**
   * waitStarted waits for new nodes to be healthy. A node that lost its port to another process
   * between freePort and its own listen (EADDRINUSE) is started again on fresh ports.
   */
  private async waitStarted(nodes: TestNode[], extraEnv: Record<string, string> = {}): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.waitHealthy(nodes);
        return;
      } catch (err) {
        const clashed = nodes.filter((n) => n.proc?.exitCode !== null && n.log.includes('EADDRINUSE'));
        if (attempt >= 3 || clashed.length === 0) throw err;
        for (const old of clashed) {
          const i = this.nodes.indexOf(old);
          const fresh = await this.newNode(i + 1);
          this.nodes[i] = fresh;
          nodes[nodes.indexOf(old)] = fresh;
          await this.spawn(fresh, extraEnv);
        }
      }
    }
  }

  node(i: number): TestNode {
    const n = this.nodes[i - 1];
    if (!n) throw new Error(`no node ${i}`);
    return n;
  }

  url(i: number): string {
    return this.node(i).url;
  }

  /** repoUrl is the clone URL of a repo on node i. */
  repoUrl(i: number, repoId: string): string {
    return `${this.url(i)}/${repoId}.git`;
  }

  /** replicaPath is where node i keeps a repo. */
  replicaPath(i: number, repoId: string): string {
    return join(this.node(i).dataDir, 'repos', `${repoId}.git`);
  }

  private async spawn(n: TestNode, extraEnv: Record<string, string> = {}): Promise<void> {
    const tls = this.opts.tls ? { ...this.opts.tls.certs(n.id), ca: this.opts.tls.ca } : null;
    const tlsEnv: Record<string, string> = tls ? { TLS_CERT: tls.cert, TLS_KEY: tls.key, TLS_CA: tls.ca } : {};
    const timers = this.opts.productionTimers ? {} : FAST_ENV;
    const env = { ...process.env, ...timers, ...tlsEnv, ...this.opts.env, ...this.opts.nodeEnv?.[n.id], ...extraEnv };
    const args = serveArgs(this.opts.main ?? MAIN, {
      id: n.id,
      port: n.port,
      dataDir: n.dataDir,
      store: this.opts.nodeStore?.[n.id] ?? this.store,
      ...(this.opts.writeQuorum ? { writeQuorum: this.opts.writeQuorum } : {}),
      ...(n.sshPort !== undefined ? { sshPort: n.sshPort } : {}),
      // A node given its own REPLICATION_FACTOR keeps it (the flag would override the variable).
      ...(this.opts.nodeEnv?.[n.id]?.REPLICATION_FACTOR === undefined
        ? { replicationFactor: this.opts.replicationFactor ?? Math.min(3, this.opts.nodes) }
        : {}),
    });
    const proc = spawn(process.execPath, args, {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    n.log = '';
    const keep = (d: Buffer): void => {
      n.log = (n.log + d.toString()).slice(-200_000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    n.proc = proc;
  }

  private async waitHealthy(nodes: TestNode[] = this.nodes, timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const n of nodes) {
      for (;;) {
        // A process killed by a signal (a fail point's crash is a SIGKILL) has no exit code, only
        // a signal: missing that, a node that crashed while starting was waited for 90 s.
        if (n.proc && (n.proc.exitCode !== null || n.proc.signalCode !== null))
          throw new Error(`${n.id} exited (${n.proc.signalCode ?? `code ${n.proc.exitCode}`}) while starting: ${n.log.slice(-2000)}`);
        try {
          if ((await this.fetch(`${n.url}/health`)).ok) break;
        } catch {
          // not up yet
        }
        if (Date.now() > deadline) throw new Error(`${n.id} not healthy: ${n.log.slice(-2000)}`);
        await sleep(50);
      }
    }
  }

  /** waitMembership waits until every running node sees every other running node live. */
  async waitMembership(timeoutMs = 20_000): Promise<void> {
    const running = this.nodes.filter((n) => n.proc && n.proc.exitCode === null && n.proc.signalCode === null);
    await waitFor(
      async () => {
        // Each node's view of the others (`/status.json`), with their start times: a node killed
        // and started again reads live to the others from its old registration until they read
        // the new one, and a peer call signed for its old start time is refused.
        const own = new Map<string, string>();
        const seen = new Map<string, Map<string, { live: boolean; startedAt: string }>>();
        for (const n of running) {
          const st = (await (await this.fetch(`${n.url}/status.json?limit=1`)).json()) as {
            nodes: Array<{ id: string; live: boolean; self: boolean; started_at: string }>;
          };
          for (const v of st.nodes) if (v.self) own.set(n.id, v.started_at);
          seen.set(n.id, new Map(st.nodes.filter((v) => !v.self).map((v) => [v.id, { live: v.live, startedAt: v.started_at }])));
        }
        for (const n of running) {
          for (const o of running) {
            const view = seen.get(n.id)!.get(o.id);
            if (o !== n && (!view?.live || view.startedAt !== own.get(o.id))) return false;
          }
        }
        return true;
      },
      timeoutMs,
      'cluster membership',
    );
  }

  /**
   * kill sends a signal (default SIGKILL) to node i and waits for it to exit. A node process
   * killed alone leaves its git children running, as a crashed process does; with `tree` they
   * are killed too, as when the machine goes down (and nothing is left behind after a test).
   */
  async kill(i: number, signal: NodeJS.Signals = 'SIGKILL', opts: { tree?: boolean } = {}): Promise<void> {
    const n = this.node(i);
    const p = n.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null || p.pid === undefined) return;
    const tree = opts.tree ? await descendants(p.pid) : [];
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(signal);
    await exited;
    for (const pid of tree.reverse()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited with its parent
      }
    }
  }

  /** pause / resume send SIGSTOP / SIGCONT. */
  pause(i: number): void {
    this.node(i).proc?.kill('SIGSTOP');
  }

  resume(i: number): void {
    this.node(i).proc?.kill('SIGCONT');
  }

  /** restart starts node i again on the same port and data dir. */
  async restart(i: number, extraEnv: Record<string, string> = {}): Promise<void> {
    const n = this.node(i);
    await this.kill(i);
    await this.spawn(n, extraEnv);
    await this.waitHealthy([n]);
  }

  /** addNode starts one more node (node N+1) with the cluster's store and waits until all see it. */
  async addNode(extraEnv: Record<string, string> = {}): Promise<number> {
    const i = this.nodes.length + 1;
    const n = await this.newNode(i);
    this.nodes.push(n);
    await this.spawn(n, extraEnv);
    await this.waitStarted([n], extraEnv);
    await this.waitMembership();
    return i;
  }

  /** exited resolves when node i exits by itself (for crash fail points). */
  async exited(i: number, timeoutMs = 30_000): Promise<void> {
    const p = this.node(i).proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await Promise.race([
      new Promise<void>((r) => p.once('exit', () => r())),
      sleep(timeoutMs).then(() => {
        throw new Error(`node ${i} did not exit`);
      }),
    ]);
  }

  /**
   * adminToken waits for the admin token the cluster's first start writes to one node's data
   * dir (clusters with AUTH=tokens) and returns it.
   */
  async adminToken(timeoutMs = 10_000): Promise<string> {
    let token = '';
    await waitFor(
      async () => {
        for (const n of this.nodes) token ||= (await readFile(join(n.dataDir, 'admin-token'), 'utf8').catch(() => '')).trim();
        return token !== '';
      },
      timeoutMs,
      'admin token file',
    );
    return token;
  }

  /** api calls the JSON API of node i, with `token` (null: none) or else the cluster's authToken. */
  async api(
    i: number,
    method: string,
    path: string,
    body?: unknown,
    token: string | null = this.authToken,
  ): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await this.fetch(`${this.url(i)}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
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

  /** createRepo creates a repo through node i and asserts it worked. */
  async createRepo(i: number, repoId: string): Promise<void> {
    const r = await this.api(i, 'POST', '/repos', { repo_id: repoId });
    if (r.status !== 201) throw new Error(`create ${repoId} failed: ${r.status} ${JSON.stringify(r.json)}`);
  }

  /** repoStatus reads `GET /repos/:id` on node i. */
  async repoStatus(i: number, repoId: string): Promise<RepoStatus> {
    return (await this.api(i, 'GET', `/repos/${repoId}`)).json as unknown as RepoStatus;
  }

  /** waitInSync waits until every replica of a repo is in sync (repair finished). */
  async waitInSync(repoId: string, via = 1, timeoutMs = 30_000): Promise<RepoStatus> {
    let last: RepoStatus | null = null;
    try {
      await waitFor(
        async () => {
          last = await this.repoStatus(via, repoId);
          return last.replicas.every((r) => r.state === 'in_sync');
        },
        timeoutMs,
        `replicas of ${repoId} in sync`,
      );
    } catch (err) {
      // What a failure needs to be understood: the replicas as the store sees them, and what each node said about the repo.
      const said = this.nodes
        .map((n) => {
          const lines = n.log.split('\n').filter((l) => l.includes(repoId) || /"level":(40|50|60)/.test(l));
          return `--- ${n.id}\n${lines.slice(-25).join('\n')}`;
        })
        .join('\n');
      throw new Error(`${(err as Error).message}; last status ${JSON.stringify(last)}\n${said}`, { cause: err });
    }
    return last!;
  }

  /** stopAll kills every node and removes the data. */
  async destroy(): Promise<void> {
    await Promise.all(
      this.nodes.map((_, i) => {
        this.resume(i + 1);
        return this.kill(i + 1, 'SIGKILL', { tree: true });
      }),
    );
    await this.agent?.close();
    await rm(this.root, { recursive: true, force: true });
  }

  /** logs returns all node logs, for failure messages. */
  logs(): string {
    return this.nodes.map((n) => `--- ${n.id}\n${n.log.slice(-5000)}`).join('\n');
  }
}

/** RepoStatus is the body of `GET /repos/:owner/:repo`. */
export interface RepoStatus {
  repo_id: string;
  generation: number;
  checksum: string;
  incarnation: string;
  lock: { holder: string; token: number } | null;
  replicas: Array<{ node: string; generation: number | null; checksum: string | null; state: string; live: boolean }>;
}

/** sleep waits. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** waitFor polls a condition until it holds or the time is up. */
export async function waitFor(cond: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await cond()) return;
    } catch {
      // retry until the deadline
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

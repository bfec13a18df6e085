import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestCluster } from '../chaos/cluster.js';
import { descendants } from './proc.js';
import { errorText, freePort, gitOk, lastLines, run, sleep } from './util.js';

/** ServerId names a server under test. */
export type ServerId = 'cluster3' | 'single' | 'node-git-server' | 'http-backend';

/** SERVER_IDS lists the servers in the order they are reported. */
export const SERVER_IDS: readonly ServerId[] = ['cluster3', 'single', 'node-git-server', 'http-backend'];

/** SERVER_DESCRIPTIONS say what each server is. */
export const SERVER_DESCRIPTIONS: Record<ServerId, string> = {
  cluster3: 'this project, 3 node processes, R=3, W=2 (default majority), one shared SQLite store, token auth, private repos',
  single: 'this project, 1 node process, R=1 (replication off), SQLite store, token auth, private repos',
  'node-git-server': 'node-git-server 1.0.0 in its own Node process (autoCreate, every push accepted)',
  'http-backend': 'git http-backend behind a minimal Node CGI bridge in its own process (http.receivepack=true)',
};

/** ServerUnderTest is one running server: where its repos are and which processes are its own. */
export interface ServerUnderTest {
  readonly id: ServerId;
  /** nodes is the number of server processes clients can talk to. */
  readonly nodes: number;
  /** pids are the root processes of the server (RSS and CPU are summed over their trees). */
  pids(): number[];
  /** createRepo makes an empty repo `owner/name` that accepts pushes. */
  createRepo(repoId: string): Promise<void>;
  /** url is the clone URL of a repo for client number `client` (clients are spread over a cluster's nodes). */
  url(repoId: string, client?: number): string;
  /** logTail is the end of the server's output, for error messages. */
  logTail(): string;
  /** metricsUrls are the Prometheus endpoints of this project's nodes (absent elsewhere). */
  readonly metricsUrls?: readonly string[];
  /** nodeControl kills and restarts single nodes of this project's clusters (absent elsewhere). */
  readonly nodeControl?: NodeControl;
  stop(): Promise<void>;
}

/** NodeControl kills and restarts the nodes of a running cluster, numbered from 0. */
export interface NodeControl {
  /** baseUrl is node `i`'s HTTP root (no trailing slash). */
  baseUrl(i: number): string;
  /** apiHeaders authenticate REST calls (the admin token). */
  readonly apiHeaders: Record<string, string>;
  /** kill sends SIGKILL to node `i` and every process it started. */
  kill(i: number): Promise<void>;
  /** restart starts node `i` again with its old data directory and port; resolves when /health answers. */
  restart(i: number): Promise<{ spawnedAt: number; readyAt: number }>;
}

/** PROJECT is the checkout the benchmark runs from (this file is dist-tools/bench/servers.js). */
const PROJECT = fileURLToPath(new URL('../..', import.meta.url));
/** DIST is the project's compiled server (dist/, from `npm run build`) that the nodes run. */
const DIST = join(PROJECT, 'dist');
/** HERE is this compiled directory, holding the comparison servers' scripts. */
const HERE = fileURLToPath(new URL('.', import.meta.url));

/**
 * snapshotApp copies what the package ships (package.json's `files`: dist/, the spawn helper,
 * the relays) and package.json into `dir` (node_modules is linked), and returns the copy's
 * dist/. The servers run from the copy: a rebuild of dist/ by someone else while the benchmark
 * runs cannot hand a node half-written modules, and every node of a run runs the same build.
 * The copy is checked by loading the CLI; a copy taken during a rebuild is retaken. (Until
 * 2026-12-04 it left helpers/ out, so the benchmark's nodes started git through the Node.js
 * spawn helper, not the Python one an installed node uses.)
 */
export async function snapshotApp(dir: string): Promise<string> {
  const shipped = (JSON.parse(await readFile(join(PROJECT, 'package.json'), 'utf8')) as { files: string[] }).files.filter(
    (f) => f !== 'dist',
  );
  let last = '';
  for (let attempt = 0; attempt < 10; attempt++) {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await cp(DIST, join(dir, 'dist'), { recursive: true });
    for (const f of shipped) await cp(join(PROJECT, f), join(dir, f), { recursive: true });
    await cp(join(PROJECT, 'package.json'), join(dir, 'package.json'));
    await symlink(join(PROJECT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    const check = await run(process.execPath, [join(dir, 'dist', 'cli', 'main.js'), '--version'], { env: process.env, timeoutMs: 30_000 });
    if (check.code === 0) return join(dir, 'dist');
    last = lastLines(check.stderr, 6);
    await sleep(2_000);
  }
  throw new Error(`dist/ does not load (is a build running?): ${last}`);
}

/** SERVER_GIT_ENV is the environment of the comparison servers' git: no system or user config. */
const SERVER_GIT_ENV: NodeJS.ProcessEnv = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: tmpdir(),
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  LC_ALL: 'C',
};

/** Managed is a child process whose output is kept (the last 200 kB) and which is stopped with its whole tree. */
class Managed {
  log = '';
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    const keep = (d: Buffer): void => {
      this.log = (this.log + d.toString()).slice(-200_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.on('error', (err) => keep(Buffer.from(`spawn error: ${errorText(err)}\n`)));
    this.exited = new Promise((r) => {
      if (child.exitCode !== null || child.signalCode !== null) r();
      else child.once('exit', () => r());
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * stop sends SIGTERM (a node shuts down cleanly and kills its git processes), waits up to
   * `graceMs`, then SIGKILLs the process and every descendant it had, so nothing is left running.
   * With `graceMs` 0 there is no SIGTERM: the process tree dies as in a crash.
   */
  async stop(graceMs: number): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined) return;
    const tree = this.alive ? await descendants(pid) : [];
    if (this.alive && graceMs > 0) {
      this.child.kill('SIGTERM');
      await Promise.race([this.exited, sleep(graceMs)]);
    }
    if (this.alive) {
      this.child.kill('SIGKILL');
      await Promise.race([this.exited, sleep(5_000)]);
    }
    for (const p of tree.reverse()) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // exited with its parent
      }
    }
  }
}

async function waitHttp(
  url: string,
  proc: Managed,
  timeoutMs: number,
  ok: (res: Response) => Promise<boolean> = async () => true,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.alive) throw new Error(`${proc.name} exited: ${proc.log.slice(-2000)}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (await ok(res)) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${proc.name} not ready after ${timeoutMs} ms: ${proc.log.slice(-2000)}`);
    await sleep(50);
  }
}

/**
 * NODE_ENV is added to the project's nodes' environment: token auth, as a production server runs
 * (every git request is authenticated and authorised against a private repo; the comparison
 * servers check nothing, so the cost of that shows in the ratios, and workload 1 reports it
 * alone), and exit-with-parent, so a killed benchmark leaves no node behind.
 */
const NODE_ENV: NodeJS.ProcessEnv = { AUTH: 'tokens', GIT_REPLICATION_EXIT_WITH_PARENT: '1' };

/** startProjectCluster runs `nodes` processes of this project through the test cluster harness, with production timers. */
async function startProjectCluster(
  id: ServerId,
  root: string,
  dist: string,
  nodes: number,
  replicationFactor: number,
  logLevel: string,
): Promise<ServerUnderTest> {
  const cluster = await TestCluster.start({
    nodes,
    replicationFactor,
    root,
    main: join(dist, 'cli', 'main.js'),
    productionTimers: true,
    env: { ...NODE_ENV, LOG_LEVEL: logLevel },
  });
  let token: string;
  try {
    token = await cluster.adminToken();
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  cluster.authToken = token;
  const apiHeaders = { authorization: `Bearer ${token}` };
  const nodeControl: NodeControl = {
    baseUrl: (i) => cluster.url(i + 1),
    apiHeaders,
    kill: (i) => cluster.kill(i + 1, 'SIGKILL', { tree: true }),
    async restart(i) {
      const spawnedAt = performance.now();
      await cluster.restart(i + 1);
      return { spawnedAt, readyAt: performance.now() };
    },
  };
  return {
    id,
    nodes,
    pids: () => cluster.nodes.map((n) => n.proc?.pid ?? -1),
    async createRepo(repoId) {
      let last = '';
      for (let attempt = 0; attempt < 20; attempt++) {
        const r = await cluster.api(1, 'POST', '/repos', { repo_id: repoId });
        last = `${r.status} ${JSON.stringify(r.json)}`;
        if (r.status === 201) return;
        if (r.status !== 503) break;
        await sleep(250);
      }
      throw new Error(`${id}: create ${repoId} failed: ${last}`);
    },
    url: (repoId, client = 0) => `${cluster.url((client % nodes) + 1).replace('http://', `http://x:${token}@`)}/${repoId}.git`,
    logTail: () => cluster.nodes.map((n) => `--- ${n.id}\n${n.log.slice(-20_000)}`).join('\n'),
    metricsUrls: cluster.nodes.map((n) => `${n.url}/metrics`),
    nodeControl,
    stop: () => cluster.destroy(),
  };
}

/** startScriptServer runs one of the comparison servers (a script beside this one) serving bare repos under `root/repos`. */
async function startScriptServer(id: ServerId, root: string, script: string, receivePackConfig: boolean): Promise<ServerUnderTest> {
  const repos = join(root, 'repos');
  await mkdir(repos, { recursive: true });
  const port = await freePort();
  // stdin stays open: the script exits when it closes, so a killed benchmark leaves no server behind.
  const child = spawn(process.execPath, [join(HERE, script), repos, String(port)], {
    env: SERVER_GIT_ENV,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const proc = new Managed(id, child);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/`, proc, 30_000);
  } catch (err) {
    await proc.stop(1_000);
    throw err;
  }
  return {
    id,
    nodes: 1,
    pids: () => [child.pid ?? -1],
    async createRepo(repoId) {
      const dir = join(repos, `${repoId}.git`);
      await gitOk(['init', '-q', '--bare', '-b', 'main', dir]);
      if (receivePackConfig) await gitOk(['config', 'http.receivepack', 'true'], { cwd: dir });
    },
    url: (repoId) => `${url}/${repoId}.git`,
    logTail: () => proc.log.slice(-20_000),
    async stop() {
      child.stdin?.end();
      await proc.stop(2_000);
    },
  };
}

/**
 * startServer starts one server under test in `root` (an empty temp directory), running the
 * compiled tree `dist` (a snapshotApp copy; default the dist/ the benchmark runs from).
 */
export async function startServer(id: ServerId, root: string, opts: { dist?: string; logLevel?: string } = {}): Promise<ServerUnderTest> {
  const logLevel = opts.logLevel ?? 'warn';
  const dist = opts.dist ?? DIST;
  switch (id) {
    case 'cluster3':
      return startProjectCluster(id, root, dist, 3, 3, logLevel);
    case 'single':
      return startProjectCluster(id, root, dist, 1, 1, logLevel);
    case 'node-git-server':
      return startScriptServer(id, root, 'ngs-server.js', false);
    case 'http-backend':
      return startScriptServer(id, root, 'cgi-bridge.js', true);
  }
}

import { freePort } from '../../chaos/cluster.js';
import { etcdArgs, etcdEnv, etcdHealthy, findEtcdBinary, type EtcdMember } from '../../src/cluster/local-etcd.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** EtcdHandle is one etcd process the tests own: its client URL and ways to break it. */
export interface EtcdHandle {
  /** url is the client URL, e.g. `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** hostPort is the client address without a scheme, e.g. `127.0.0.1:PORT`. */
  readonly hostPort: string;
  readonly name: string;
  readonly dataDir: string;
  /** stop ends the process with SIGTERM and waits for it; the data dir stays for restart(). */
  stop(): Promise<void>;
  /** kill ends the process with SIGKILL (a crash) and waits for it; the data dir stays. */
  kill(): Promise<void>;
  /** restart stops the process if it runs, starts it again on the same ports and data dir, and waits until it is healthy. */
  restart(): Promise<void>;
  /** pause freezes the process (SIGSTOP): it keeps its sockets open but answers nothing. */
  pause(): void;
  /** resume continues a paused process (SIGCONT). */
  resume(): void;
  /** cleanup kills the process and removes its data dir; safe to call twice. */
  cleanup(): Promise<void>;
  /** logs returns the tail of the process's stderr, for failure messages. */
  logs(): string;
}

/** EtcdCluster is several etcd members that form one cluster. */
export interface EtcdCluster {
  readonly members: readonly EtcdHandle[];
  /** urls are every member's client URL, for EtcdStore's `hosts`. */
  readonly urls: readonly string[];
  /** cleanup kills every member and removes the data dirs. */
  cleanup(): Promise<void>;
}

const HEALTH_TIMEOUT_MS = 20_000;
const LOG_TAIL_CHARS = 8_000;

let cachedBinary: string | null | undefined;
let warnedMissing = false;

/**
 * etcdBinary returns the path of an executable `etcd` (on PATH, then /usr/bin, /usr/local/bin), or
 * null when none is installed. $ETCD_BIN, when set, is the only candidate (a specific build, or a
 * missing path to force the skip).
 */
export function etcdBinary(): string | null {
  if (cachedBinary === undefined) cachedBinary = findEtcdBinary();
  return cachedBinary;
}

/**
 * skipWithoutEtcd is true when no etcd binary is installed, for `describe.skipIf(skipWithoutEtcd())`;
 * it says so once on stderr so a skipped suite is never mistaken for a passing one.
 */
export function skipWithoutEtcd(): boolean {
  if (etcdBinary()) return false;
  if (!warnedMissing) {
    warnedMissing = true;
    process.stderr.write('etcd tests skipped: no etcd binary (apt-get install etcd-server)\n');
  }
  return true;
}

/** live holds every process this module started, so they die with the test worker even if afterAll never runs. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

class EtcdProcess implements EtcdHandle {
  readonly url: string;
  readonly hostPort: string;
  readonly name: string;
  readonly dataDir: string;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private stderrTail = '';
  private cleaned = false;

  constructor(
    private readonly binary: string,
    private readonly config: EtcdMember,
    private readonly rootDir: string,
  ) {
    this.hostPort = `127.0.0.1:${config.clientPort}`;
    this.url = `http://${this.hostPort}`;
    this.name = config.name;
    this.dataDir = config.dataDir;
  }

  /** spawn starts the process without waiting for health (cluster members must start together). */
  spawn(): void {
    if (this.cleaned) throw new Error(`etcd ${this.name} was cleaned up`);
    if (this.running()) return;
    installExitHook();
    const child = spawn(this.binary, etcdArgs(this.config), { stdio: ['ignore', 'ignore', 'pipe'], env: etcdEnv() });
    live.add(child);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-LOG_TAIL_CHARS);
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        live.delete(child);
        resolve();
      });
      child.once('error', (err) => {
        this.stderrTail += `\nspawn error: ${err.message}`;
        live.delete(child);
        resolve();
      });
    });
    this.child = child;
  }

  private running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** waitHealthy polls `GET /health` until etcd reports a leader; it fails early if the process exits. */
  async waitHealthy(timeoutMs = HEALTH_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running()) throw new Error(`etcd ${this.name} exited while starting:\n${this.stderrTail}`);
      if (await etcdHealthy(this.url)) return;
      await sleep(100);
    }
    throw new Error(`etcd ${this.name} not healthy after ${timeoutMs} ms:\n${this.stderrTail}`);
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || !this.running()) return;
    if (sig !== 'SIGKILL') child.kill('SIGCONT');
    child.kill(sig);
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    await this.signal('SIGTERM');
  }

  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  async restart(): Promise<void> {
    await this.stop();
    this.spawn();
    await this.waitHealthy();
  }

  pause(): void {
    if (!this.running() || !this.child) return;
    this.child.kill('SIGSTOP');
    // Return only once the process is stopped (state T): on a loaded machine the signal can
    // land after the caller's next request was already answered.
    const pid = this.child.pid;
    const until = Date.now() + 2_000;
    while (pid !== undefined && Date.now() < until) {
      const stat = readStat(pid);
      if (stat === null || / [Tt] /.test(stat.slice(stat.lastIndexOf(')')))) break;
    }
  }

  resume(): void {
    if (this.running()) this.child?.kill('SIGCONT');
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    await this.kill();
    this.cleaned = true;
    await rm(this.rootDir, { recursive: true, force: true });
  }

  logs(): string {
    return this.stderrTail;
  }
}

/** startMembers starts `size` members on fresh ports and data dirs and waits until all are healthy; it retries on a port race. */
async function startMembers(size: number): Promise<EtcdProcess[]> {
  const binary = etcdBinary();
  if (!binary) throw new Error('no etcd binary (apt-get install etcd-server)');
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const token = `test-${process.pid}-${Date.now()}-${attempt}`;
    const configs: Array<Omit<EtcdMember, 'initialCluster'> & { rootDir: string }> = [];
    for (let i = 0; i < size; i++) {
      const rootDir = await mkdtemp(join(tmpdir(), 'etcd-test-'));
      configs.push({
        name: `m${i}`,
        clientPort: await freePort(),
        peerPort: await freePort(),
        dataDir: join(rootDir, 'data'),
        clusterToken: token,
        fastElection: true,
        rootDir,
      });
    }
    const initialCluster = configs.map((c) => `${c.name}=http://127.0.0.1:${c.peerPort}`).join(',');
    const members = configs.map((c) => new EtcdProcess(binary, { ...c, initialCluster }, c.rootDir));
    try {
      for (const m of members) m.spawn();
      await Promise.all(members.map((m) => m.waitHealthy()));
      return members;
    } catch (err) {
      lastError = err;
      await Promise.all(members.map((m) => m.cleanup()));
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

function readStat(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
}

/** startEtcd starts one etcd on free ports with a temp data dir and resolves once it serves requests. */
export async function startEtcd(): Promise<EtcdHandle> {
  const [member] = await startMembers(1);
  if (!member) throw new Error('etcd did not start');
  return member;
}

/** startEtcdCluster starts `size` etcd processes that form one cluster (`--initial-cluster`) and waits until every member is healthy. */
export async function startEtcdCluster(size = 3): Promise<EtcdCluster> {
  const members = await startMembers(size);
  return {
    members,
    urls: members.map((m) => m.url),
    cleanup: async () => {
      await Promise.all(members.map((m) => m.cleanup()));
    },
  };
}

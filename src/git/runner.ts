import type { SpawnHelper } from './spawner.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { AppError, unavailable } from '../domain/errors.js';

/** GitError says a git command failed; `stderr` holds git's own words. */
export class GitError extends AppError {
  constructor(args: readonly string[], code: number | null, signal: string | null, stderr: string) {
    const what = signal ? `killed by ${signal}` : `exit ${code}`;
    super('ERR_GIT', [args[0] ?? '', what, stderr.trim().split('\n').slice(-3).join(' | ')], {
      args: [...args],
      exitCode: code,
      signal,
      stderr,
    });
    this.name = 'GitError';
  }
}

/** GitResult is the buffered outcome of a short git command. */
export interface GitResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number | null;
}

/** SpawnOptions tune one git process. */
export interface SpawnOptions {
  readonly cwd: string;
  /** env is added to the runner's fixed environment. */
  readonly env?: Record<string, string>;
  /** config entries are passed as `git -c key=value` before the subcommand. */
  readonly config?: Record<string, string>;
  readonly signal?: AbortSignal;
  /** timeoutMs kills the process when it runs longer. */
  readonly timeoutMs?: number;
  /**
   * slot is a slot of the client-facing limit taken beforehand (GitRunner.acquire): the process
   * holds it, released at its exit, or at once if it cannot start. Without one the process is
   * not counted (the node's own work).
   */
  readonly slot?: () => void;
}

/** SlotWaiter is a request waiting in line for a git process slot. */
interface SlotWaiter {
  readonly client: string | undefined;
  grant(release: () => void): void;
}

const SAFE_SUBCOMMANDS = new Set([
  'init',
  'config',
  'upload-pack',
  'receive-pack',
  'update-ref',
  'for-each-ref',
  'symbolic-ref',
  'rev-parse',
  'index-pack',
  'rev-list',
  'fetch',
  'clone',
  'fsck',
  'cat-file',
  'pack-objects',
  'show-ref',
  'count-objects',
  'http-backend',
  'gc',
  'repack',
  'commit-tree',
  'hash-object',
  'mktree',
  'check-ref-format',
  'ls-remote',
  'bundle',
]);

/**
 * GitRunner is the one way the node starts git: argv arrays only, a fixed set of subcommands,
 * a clean environment, a timeout and abort signal on every process, a cap on the processes that
 * serve clients, and a marker in each process's environment so a restarted node can find and
 * reap what its previous incarnation left running (DESIGN §5, restart rules).
 */
export class GitRunner {
  private running = 0;
  private readonly perClient = new Map<string, number>();
  private readonly waiting: SlotWaiter[] = [];
  private readonly children = new Set<ChildProcess>();

  constructor(
    private readonly opts: {
      /** owner marks processes of this node: `<dataDir>` */
      readonly owner: string;
      /** instance distinguishes this process's children from a previous incarnation's. */
      readonly instance: string;
      readonly maxProcesses: number;
      /** maxPerClient caps the counted processes one client address holds (default: maxProcesses). */
      readonly maxPerClient?: number;
      /** slotWaitMs is how long acquire waits in line for a slot (0 or absent: it refuses at once). */
      readonly slotWaitMs?: number;
      readonly gitBinary?: string;
      /** helper starts git when it is running (a smaller process to fork); else the node spawns git itself. */
      readonly helper?: SpawnHelper;
    },
  ) {}

  /** runningCount is the number of counted git processes alive now. */
  get runningCount(): number {
    return this.running;
  }

  /** waitingCount is the number of requests waiting in line for a slot now. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /**
   * acquire takes a slot of the process limit, and of the client's share of it (one address
   * cannot take every slot); with none free it waits in line, first come first served, for up to
   * `slotWaitMs` (then a 503 with Retry-After says it waited). A client over its share waits
   * while other clients' requests go by. The line is bounded (four times the limit, at least 64;
   * for one client four times its share, at least 32): past that, and with `slotWaitMs` 0, the
   * 503 is immediate. An aborted `signal` leaves the line.
   */
  acquire(client?: string, signal?: AbortSignal): Promise<() => void> {
    const now = this.take(client);
    if (now) return Promise.resolve(now);
    // Node's timers hold at most 2^31-1 ms (24.8 days); a longer setting would fire at once.
    const waitMs = Math.min(this.opts.slotWaitMs ?? 0, 2 ** 31 - 1);
    const perClient = this.opts.maxPerClient ?? this.opts.maxProcesses;
    const sameClient = client === undefined ? 0 : this.waiting.filter((w) => w.client === client).length;
    if (
      waitMs <= 0 ||
      this.waiting.length >= Math.max(64, 4 * this.opts.maxProcesses) ||
      sameClient >= Math.max(32, 4 * perClient) ||
      signal?.aborted
    ) {
      return Promise.reject(unavailable(this.fullReason(client), { retryAfter: 1 }));
    }
    return new Promise((resolve, reject) => {
      const leave = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
      };
      const waiter: SlotWaiter = {
        client,
        grant: (release) => {
          leave();
          resolve(release);
        },
      };
      const onAbort = (): void => {
        leave();
        reject(unavailable('the request ended while it waited for a git process slot'));
      };
      const timer = setTimeout(() => {
        leave();
        reject(unavailable(`waited ${waitMs / 1000} s for a git process slot: ${this.fullReason(client)}`, { retryAfter: 1 }));
      }, waitMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  private fullReason(client: string | undefined): string {
    if (this.running >= this.opts.maxProcesses)
      return `too many git processes running (${this.running} of ${this.opts.maxProcesses}), try again`;
    const perClient = this.opts.maxPerClient ?? this.opts.maxProcesses;
    const held = client === undefined ? 0 : (this.perClient.get(client) ?? 0);
    return `too many git requests from this client (${held} of ${perClient}), try again`;
  }

  /** take takes a slot if the limit and the client's share allow, returning its release; else null. */
  private take(client: string | undefined): (() => void) | null {
    if (this.running >= this.opts.maxProcesses) return null;
    const perClient = this.opts.maxPerClient ?? this.opts.maxProcesses;
    const held = client === undefined ? 0 : (this.perClient.get(client) ?? 0);
    if (client !== undefined && held >= perClient) return null;
    this.running++;
    if (client !== undefined) this.perClient.set(client, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      if (client !== undefined) {
        const n = (this.perClient.get(client) ?? 1) - 1;
        if (n <= 0) this.perClient.delete(client);
        else this.perClient.set(client, n);
      }
      this.wake();
    };
  }

  /** wake hands freed slots to the waiters that may take them, oldest first. */
  private wake(): void {
    for (let i = 0; i < this.waiting.length && this.running < this.opts.maxProcesses;) {
      const w = this.waiting[i]!;
      const release = this.take(w.client);
      if (release) w.grant(release);
      else i++;
    }
  }

  /** spawn starts git with `args` (subcommand first) and returns the child; the caller reads its streams. */
  spawn(args: readonly string[], options: SpawnOptions): ChildProcess {
    const release = options.slot ?? (() => undefined);
    try {
      return this.start(args, options, release);
    } catch (err) {
      // A process that never started gives its slot back.
      release();
      throw err;
    }
  }

  private start(args: readonly string[], options: SpawnOptions, release: () => void): ChildProcess {
    const sub = args[0];
    if (!sub || !SAFE_SUBCOMMANDS.has(sub)) throw new Error(`git subcommand not allowed: ${String(sub)}`);
    const argv: string[] = [];
    for (const [k, v] of Object.entries(options.config ?? {})) argv.push('-c', `${k}=${v}`);
    argv.push(...args);
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      LANG: 'C',
      LC_ALL: 'C',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_TERMINAL_PROMPT: '0',
      GIT_REPLICATION_OWNER: this.opts.owner,
      GIT_REPLICATION_INSTANCE: this.opts.instance,
      ...options.env,
    };
    const file = this.opts.gitBinary ?? 'git';
    const helper = this.opts.helper;
    const child = helper?.usable
      ? helper.spawn(file, argv, {
          ...(options.cwd ? { cwd: options.cwd } : {}),
          env,
          ...(options.signal ? { signal: options.signal } : {}),
        })
      : spawn(file, argv, { cwd: options.cwd, env, stdio: ['pipe', 'pipe', 'pipe'], signal: options.signal, killSignal: 'SIGKILL' });
    this.children.add(child);
    closed.set(child, new Promise((resolve) => child.once('close', (code, sig) => resolve([code, sig]))));
    let timer: NodeJS.Timeout | undefined;
    if (options.timeoutMs) {
      timer = setTimeout(() => {
        void terminate(child);
      }, options.timeoutMs);
      timer.unref();
    }
    // An abort makes spawn emit 'error'; the caller sees it as an exit by signal.
    child.on('error', () => undefined);
    child.once('close', () => {
      if (timer) clearTimeout(timer);
      this.children.delete(child);
      release();
    });
    return child;
  }

  /** run runs a short git command to completion and buffers its output. */
  async run(args: readonly string[], options: SpawnOptions & { input?: string | Buffer; okCodes?: readonly number[] }): Promise<GitResult> {
    const child = this.spawn(args, options);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    child.stdin?.on('error', () => undefined);
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
    const [code, signal] = await waitClose(child);
    const result = { stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code };
    const ok = options.okCodes ?? [0];
    if (signal !== null || code === null || !ok.includes(code)) throw new GitError(args, code, signal, result.stderr);
    return result;
  }

  /** killAll kills every git process this runner started (shutdown). */
  async killAll(): Promise<void> {
    await Promise.all([...this.children].map((c) => terminate(c)));
  }

  /**
   * reapPrevious kills git processes left by an earlier incarnation of this node (same owner,
   * other instance), found by the marker in /proc/<pid>/environ. Returns how many it killed.
   * A process can fork between the /proc listing and its kill (receive-pack starting
   * index-pack, which would then write its pack's .keep after the start-up sweep), so it
   * scans again until a scan finds none, and waits for the killed to be gone.
   */
  async reapPrevious(): Promise<number> {
    let total = 0;
    for (let round = 0; round < REAP_ROUNDS; round++) {
      const killed = await this.reapOnce();
      total += killed.length;
      if (killed.length === 0) break;
      const until = Date.now() + 2_000;
      while (Date.now() < until) {
        const alive = await Promise.all(killed.map(async (pid) => !(await isZombie(pid))));
        if (!alive.includes(true)) break;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    return total;
  }

  private async reapOnce(): Promise<number[]> {
    const killed: number[] = [];
    let pids: string[];
    try {
      pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p));
    } catch {
      return killed;
    }
    const ownerTag = `GIT_REPLICATION_OWNER=${this.opts.owner}`;
    const instanceTag = `GIT_REPLICATION_INSTANCE=${this.opts.instance}`;
    for (const pid of pids) {
      let environ: string;
      try {
        environ = await readFile(`/proc/${pid}/environ`, 'latin1');
      } catch {
        continue;
      }
      const vars = environ.split('\0');
      if (vars.includes(ownerTag) && !vars.includes(instanceTag)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
          killed.push(Number(pid));
        } catch {
          // already gone
        }
      }
    }
    return killed;
  }
}

/** REAP_ROUNDS bounds reapPrevious's scans (each after the processes the last one killed are gone). */
const REAP_ROUNDS = 10;

async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const p of text.trim().split(/\s+/)) if (p) out.push(Number(p));
  }
  return out;
}

async function isZombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat === '' || / Z /.test(stat.slice(stat.lastIndexOf(')')));
}

/**
 * terminate kills a git process and everything it started, bottom-up: the leaves first, so each
 * parent (upload-pack waiting on pack-objects, bash waiting on its relays) sees its child die and
 * reaps it, and nothing is orphaned to an init that may never reap it. Then the process itself.
 */
export async function terminate(child: ChildProcess): Promise<void> {
  const pid = child.pid;
  if (child.exitCode !== null || child.signalCode !== null) return;
  if (pid === undefined) {
    // Not started yet (the spawn helper has not reported it): the kill is carried out as it
    // starts, before it can start anything. A direct spawn without a pid failed, and closes.
    child.kill('SIGKILL');
    await Promise.race([waitClose(child), new Promise((r) => setTimeout(r, 5_000).unref())]);
    return;
  }
  for (let round = 0; round < 20; round++) {
    const tree: number[] = [];
    const leaves: number[] = [];
    const walk = async (p: number): Promise<void> => {
      const kids = await childrenOf(p);
      if (p !== pid && kids.length === 0) leaves.push(p);
      for (const k of kids) {
        tree.push(k);
        await walk(k);
      }
    };
    await walk(pid);
    const live: number[] = [];
    for (const l of leaves) if (!(await isZombie(l))) live.push(l);
    if (tree.length === 0) break;
    for (const l of live) {
      try {
        process.kill(l, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill('SIGKILL');
  await waitClose(child);
}

const closed = new WeakMap<ChildProcess, Promise<[number | null, string | null]>>();

/** waitClose resolves with the exit code and signal once the process and its pipes closed. */
export function waitClose(child: ChildProcess): Promise<[number | null, string | null]> {
  const p = closed.get(child);
  if (p) return p;
  return new Promise((resolve) => child.once('close', (code, signal) => resolve([code, signal])));
}

import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import type { SpawnReport, SpawnRequest } from './spawn-helper.js';

/** MAX_SOCKET_PATH is the longest Unix socket path Linux takes (108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * STREAMS_JOIN_GRACE_MS is how long after a process's exit the node still waits for the sockets
 * of its streams. The helper connects them before it starts the process, so by its exit they
 * are at most waiting to be accepted; one still missing then never comes, and without an end
 * its stream would keep 'close' from ever coming (a repair waited on such a fetch for good).
 */
export const STREAMS_JOIN_GRACE_MS = 5_000;

/** HELPER_SCRIPT is the Node.js helper's compiled entry point, beside this module. */
export const HELPER_SCRIPT = new URL('./spawn-helper.js', import.meta.url);

/** PYTHON_HELPER is the Python helper (`helpers/` at the package's root, from src/git or dist/git alike). */
export const PYTHON_HELPER = new URL('../../helpers/spawn-helper.py', import.meta.url);

/**
 * C_HELPER is the compiled C helper that `npm run build` makes (scripts/build-c.sh) when a C
 * compiler is there: `dist/helpers/c/spawn-helper` at the package's root, from src/git or dist/git alike.
 */
export const C_HELPER = new URL('../../dist/helpers/c/spawn-helper', import.meta.url);

/**
 * builtBinaryRuns says whether a program `npm run build` compiled is there and runs on this
 * machine: it answers `--check` with exit 0 (the C relay and the C spawn helper both do).
 */
export function builtBinaryRuns(file: string): boolean {
  if (!existsSync(file)) return false;
  return spawnSync(file, ['--check'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

/** cHelperUsable says whether the compiled C helper is there and runs. Asked once, when a node starts. */
export function cHelperUsable(): boolean {
  return builtBinaryRuns(fileURLToPath(C_HELPER));
}

/** HelperKind names a spawn helper by its language: all three speak one protocol. */
export type HelperKind = 'c' | 'python' | 'node';

/** HELPERS are the helpers' entry points by kind. */
export const HELPERS: Readonly<Record<HelperKind, URL>> = { c: C_HELPER, python: PYTHON_HELPER, node: HELPER_SCRIPT };

/**
 * pickHelper is the cheapest spawn helper that runs here, asked once when a node starts: the C
 * one (posix_spawn, no interpreter), else Python (vfork: about 0.5 ms of its CPU per process),
 * else the Node.js one (a fork of a 50 MB process: about 1.2 ms).
 */
export function pickHelper(): HelperKind {
  if (cHelperUsable()) return 'c';
  return pythonHelperUsable() ? 'python' : 'node';
}

/**
 * pythonHelperUsable says whether the Python helper can run here: the script is there and a
 * `python3` of 3.8 or later is on PATH. Asked once, when a node starts.
 */
export function pythonHelperUsable(): boolean {
  if (!existsSync(PYTHON_HELPER)) return false;
  const r = spawnSync('python3', ['-c', 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)'], {
    stdio: 'ignore',
    timeout: 10_000,
  });
  return r.status === 0;
}

/**
 * HelperChild is a process started through the spawn helper, with the parts of ChildProcess the
 * node uses: stdin, stdout and stderr streams (usable at once; they are joined to git's sockets
 * when those connect), pid (once the helper reports it), exitCode, signalCode, kill(), and the
 * `spawn`, `exit`, `close` and `error` events in ChildProcess's order.
 */
class HelperChild extends EventEmitter {
  readonly stdin = new PassThrough();
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  pid: number | undefined = undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  killed = false;
  private pendingSignal: NodeJS.Signals | null = null;
  private exited = false;
  private outputsOpen = 2;
  private closed = false;

  constructor(
    /** onUnjoined hears of streams given up: which fds never joined, and how the process had exited. */
    private readonly onUnjoined: (child: HelperChild, fds: number[], exit: string) => void = () => undefined,
    private readonly joinGraceMs = STREAMS_JOIN_GRACE_MS,
  ) {
    super();
    // An output counts as done once closed: ended and read, or destroyed by its reader.
    for (const out of [this.stdout, this.stderr]) out.once('close', () => this.outputEnded());
    // A writer of stdin whose process is gone gets an error, as with a pipe (EPIPE), never a stall.
    this.stdin.on('error', () => undefined);
    // A writer that gives up instead (its source failed, and pipeline() destroyed stdin) must
    // not leave git waiting for the rest for ever: its socket is closed, as a pipe's end would
    // be, and git reads end of input. (pipe() ends the socket only when stdin ends.)
    this.stdin.once('close', () => {
      if (!this.stdin.writableFinished) this.stdinSocket?.destroy();
    });
  }

  private readonly attached = new Set<number>();
  private stdinSocket: Socket | null = null;
  private stdinFed = false;
  private gaveUp = false;

  /**
   * attach joins the streams to the sockets git holds (fd 0, 1, 2); a second socket for one fd is
   * refused, and so is one coming after its stream was given up or ended (by giveUpUnjoined or
   * helperGone): piped into an ended stream, its data would be a write after end.
   */
  attach(fd: number, socket: Socket): void {
    // (stdin ended by its writer still holds what is to be fed; one destroyed is seen by feedStdin.)
    const ended = fd !== 0 && (fd === 1 ? this.stdout : this.stderr).writableEnded;
    if (this.attached.has(fd) || this.gaveUp || ended) {
      socket.destroy();
      return;
    }
    this.attached.add(fd);
    if (fd === 0) {
      socket.on('error', (err) => this.stdin.destroy(err));
      socket.on('close', () => {
        if (!this.stdin.writableFinished) this.stdin.destroy(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
      });
      // Read (nothing comes) so that git closing its end is seen.
      socket.resume();
      this.stdinSocket = socket;
      this.feedStdin();
      return;
    }
    const out = fd === 1 ? this.stdout : this.stderr;
    socket.on('error', () => socket.destroy());
    // A socket cut without an end still ends the stream: 'close' must come.
    socket.on('close', () => {
      if (!out.writableEnded) out.end();
    });
    socket.pipe(out);
    socket.resume();
  }

  /**
   * feedStdin starts writing stdin to git's socket once git runs: until then the helper holds a
   * copy of the socket, and its own reads would take bytes meant for git.
   */
  private feedStdin(): void {
    if (this.stdinSocket && this.stdin.destroyed && !this.stdin.writableFinished) {
      this.stdinSocket.destroy();
      return;
    }
    if (this.stdinSocket && this.pid !== undefined && !this.stdinFed) {
      this.stdinFed = true;
      this.stdin.pipe(this.stdinSocket);
    }
  }

  started(pid: number): void {
    this.pid = pid;
    this.feedStdin();
    this.emit('spawn');
    if (this.pendingSignal) this.kill(this.pendingSignal);
  }

  ended(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exited) return;
    this.exited = true;
    this.exitCode = code;
    this.signalCode = signal;
    this.emit('exit', code, signal);
    // As ChildProcess does on exit (flushStdio): output is drained, read or not (a reader that
    // went away left it paused), so 'close' still comes.
    for (const out of [this.stdout, this.stderr]) if (!out.readableEnded) out.resume();
    this.maybeClose();
    if (!this.closed && this.attached.size < 3) setTimeout(() => this.giveUpUnjoined(), this.joinGraceMs).unref();
  }

  /**
   * giveUpUnjoined ends the streams whose sockets never reached the node after the process
   * exited (STREAMS_JOIN_GRACE_MS): their output is lost, a writer of stdin gets EPIPE, and
   * 'close' comes, as a failure (SIGPIPE) whatever the exit code was: a process that succeeded
   * but whose output was dropped must not pass for one that printed nothing (an empty
   * for-each-ref is a repo without refs). The helper reports each such process (a load run left
   * 818 of them on one node, and the repair waiting on one of them stuck for good).
   */
  private giveUpUnjoined(): void {
    const fds = [0, 1, 2].filter((fd) => !this.attached.has(fd));
    if (this.closed || fds.length === 0) return;
    this.gaveUp = true;
    const exit = String(this.signalCode ?? this.exitCode);
    // A signal it died of (a time-out's SIGKILL) is kept; an exit code is not.
    this.exitCode = null;
    this.signalCode ??= 'SIGPIPE';
    if (!this.attached.has(0) && !this.stdin.destroyed) this.stdin.destroy(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    for (const [fd, out] of [
      [1, this.stdout],
      [2, this.stderr],
    ] as const)
      if (!this.attached.has(fd) && !out.writableEnded) out.end();
    this.onUnjoined(this, fds, exit);
  }

  failed(message: string): void {
    this.emit('error', new Error(`spawn: ${message}`));
    if (!this.stdout.writableEnded) this.stdout.end();
    if (!this.stderr.writableEnded) this.stderr.end();
    this.stdin.destroy();
    this.ended(null, 'SIGKILL');
  }

  /**
   * helperGone: the helper died. A process it never started fails; one it started is killed,
   * since its exit could no longer be reported (and streams never joined never will be), so
   * it is ended, not left running while the node counts it gone.
   */
  helperGone(): void {
    if (this.pid === undefined) {
      this.failed('the spawn helper exited');
      return;
    }
    if (!this.exited) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    for (const [fd, out] of [
      [1, this.stdout],
      [2, this.stderr],
    ] as const)
      if (!this.attached.has(fd) && !out.writableEnded) out.end();
    this.ended(this.exitCode, this.signalCode ?? 'SIGKILL');
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    const sig = typeof signal === 'number' ? 'SIGKILL' : signal;
    if (this.exited) return false;
    if (this.pid === undefined) {
      this.pendingSignal = sig;
      return true;
    }
    try {
      process.kill(this.pid, sig);
      this.killed = true;
      return true;
    } catch {
      return false;
    }
  }

  private outputEnded(): void {
    this.outputsOpen--;
    this.maybeClose();
  }

  private maybeClose(): void {
    if (this.closed || !this.exited || this.outputsOpen > 0) return;
    this.closed = true;
    this.emit('close', this.exitCode, this.signalCode);
  }
}

/**
 * SpawnHelper starts git through a small helper process, so the fork git needs is of that
 * process, not of the node (pickHelper): helpers/spawn-helper.c when it was built, else
 * helpers/spawn-helper.py when Python is there, else src/git/spawn-helper.ts.
 * All speak the same protocol. One per node; `usable` is false until it runs, and again if it
 * dies (GitRunner then spawns directly until it is started again).
 */
export class SpawnHelper {
  private helper: ChildProcess | null = null;
  private server: Server | null = null;
  private nextId = 1;
  private readonly children = new Map<number, HelperChild>();
  private stopping = false;
  private unjoinedCount = 0;
  private unjoinedReportedAt = 0;
  private unjoinedLast = '';
  private unjoinedTimer: NodeJS.Timeout | null = null;
  private readonly turnedAway = new Map<string, number>();

  constructor(
    private readonly socketPath: string,
    private readonly onProblem: (message: string) => void = () => undefined,
    /** script is the helper's entry point: the compiled spawn-helper.js beside this module (default), PYTHON_HELPER or C_HELPER. */
    private readonly script: URL | string = HELPER_SCRIPT,
    /** joinGraceMs: how long after a process's exit its streams' sockets are still waited for (STREAMS_JOIN_GRACE_MS). */
    private readonly joinGraceMs = STREAMS_JOIN_GRACE_MS,
  ) {}

  /** usable says whether spawns go through the helper now. */
  get usable(): boolean {
    return this.helper !== null && this.helper.connected;
  }

  /** start listens on the socket and starts the helper; false (and spawns stay direct) when it cannot. */
  async start(): Promise<boolean> {
    if (!existsSync(this.script)) {
      this.onProblem(`spawn helper ${String(this.script)} not found (not built?): git is spawned directly`);
      return false;
    }
    if (Buffer.byteLength(this.socketPath) > MAX_SOCKET_PATH) {
      this.onProblem(`socket path ${this.socketPath} is longer than ${MAX_SOCKET_PATH} bytes: git is spawned directly`);
      return false;
    }
    await unlink(this.socketPath).catch(() => undefined);
    const server = createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.onProblem(`spawn helper socket: ${err.message}`));
    this.server = server;
    this.launch();
    return true;
  }

  /** kind is the helper's language, by its script. */
  get kind(): HelperKind {
    const script = String(this.script);
    return script.endsWith('.py') ? 'python' : script.endsWith('.js') ? 'node' : 'c';
  }

  private launch(): void {
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
    const script = typeof this.script === 'string' ? this.script : fileURLToPath(this.script);
    // Every way the IPC channel carries JSON lines (a C or Python child finds it at NODE_CHANNEL_FD).
    const ipc = { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] as ('ignore' | 'inherit' | 'ipc')[], env, serialization: 'json' as const };
    const helper =
      this.kind === 'c'
        ? spawn(script, [this.socketPath], ipc)
        : this.kind === 'python'
          ? spawn('python3', ['-I', '-S', script, this.socketPath], ipc)
          : // Nothing of the node's own flags (a test's profiler, say): the helper is to stay small.
            fork(script, [this.socketPath], { ...ipc, execArgv: [] });
    helper.on('message', (m: SpawnReport) => this.onReport(m));
    helper.once('exit', (code, signal) => {
      if (this.helper === helper) this.helper = null;
      // Processes it started keep running; what they were asked for can no longer be reported.
      for (const child of this.children.values()) child.helperGone();
      if (!this.stopping) {
        this.onProblem(`spawn helper exited (${signal ?? code}); starting it again`);
        setTimeout(() => {
          if (!this.stopping) this.launch();
        }, 100).unref();
      }
    });
    helper.on('error', (err) => this.onProblem(`spawn helper: ${err.message}`));
    this.helper = helper;
  }

  /** spawn starts `file` with `args` through the helper; the result stands in for a ChildProcess. */
  spawn(file: string, args: readonly string[], opts: { cwd?: string; env: NodeJS.ProcessEnv; signal?: AbortSignal }): ChildProcess {
    const helper = this.helper;
    if (!helper?.connected) throw new Error('spawn helper not running');
    const id = this.nextId++;
    const child = new HelperChild((c, fds, exit) => this.unjoined(c, fds, args[0] ?? file, exit), this.joinGraceMs);
    this.children.set(id, child);
    child.once('close', () => this.children.delete(id));
    const request: SpawnRequest = { id, file, args, ...(opts.cwd ? { cwd: opts.cwd } : {}), env: opts.env };
    helper.send(request, (err) => {
      if (err) {
        this.children.delete(id);
        child.failed(err.message);
      }
    });
    if (opts.signal) {
      const onAbort = (): void => void child.kill('SIGKILL');
      if (opts.signal.aborted) onAbort();
      else opts.signal.addEventListener('abort', onAbort, { once: true });
      child.once('exit', () => opts.signal?.removeEventListener('abort', onAbort));
    }
    return child as unknown as ChildProcess;
  }

  private accept(socket: Socket): void {
    let head = '';
    let known = false;
    // Sockets turned away are counted by why, for the report of processes whose streams never
    // joined: the cause of such losses under overload is not known yet.
    const away = (why: string): void => {
      this.turnedAway.set(why, (this.turnedAway.get(why) ?? 0) + 1);
      socket.destroy();
    };
    socket.once('error', (err: NodeJS.ErrnoException) => (known ? socket.destroy() : away(`error ${err.code ?? err.message}`)));
    socket.once('end', () => {
      if (!known) away('ended before its first line');
    });
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      const nl = head.indexOf('\n');
      if (nl < 0) {
        if (head.length > 64) away('no first line');
        return;
      }
      socket.off('data', onData);
      socket.pause();
      const m = /^(\d+) ([012])$/.exec(head.slice(0, nl));
      const child = m ? this.children.get(Number(m[1])) : undefined;
      if (!m) return away('a bad first line');
      if (!child) return away('no such process (closed already)');
      known = true;
      const rest = head.slice(nl + 1);
      if (rest) socket.unshift(Buffer.from(rest, 'latin1'));
      child.attach(Number(m[2]), socket);
    };
    socket.on('data', onData);
  }

  /** unjoined counts processes whose streams never reached the node and reports them, at most once a minute with the count since. */
  private unjoined(child: HelperChild, fds: number[], what: string, exit: string): void {
    this.unjoinedCount++;
    this.unjoinedLast = `${what}, pid ${child.pid ?? '?'}, exit ${exit}, fds ${fds.join(',')}`;
    const wait = this.unjoinedReportedAt + 60_000 - Date.now();
    if (wait <= 0) this.reportUnjoined();
    // Those of the rest of the minute are reported at its end, not only when another comes.
    else this.unjoinedTimer ??= setTimeout(() => this.reportUnjoined(), wait).unref();
  }

  private reportUnjoined(): void {
    if (this.unjoinedTimer) clearTimeout(this.unjoinedTimer);
    this.unjoinedTimer = null;
    if (this.unjoinedCount === 0) return;
    this.unjoinedReportedAt = Date.now();
    this.onProblem(
      `${this.unjoinedCount} git process(es) exited with stream sockets that never reached the node (the last: ${this.unjoinedLast}; ` +
        `missing ${this.joinGraceMs} ms after its exit): their output was dropped and they count as failed; ` +
        `sockets turned away since the last report: ${[...this.turnedAway].map(([why, n]) => `${why} ${n}`).join(', ') || 'none'}`,
    );
    this.unjoinedCount = 0;
    this.turnedAway.clear();
  }

  private onReport(m: SpawnReport): void {
    const child = this.children.get(m.id);
    if (!child) return;
    // The report of an exit can come before git's sockets are accepted: the child stays known
    // until it closes (all its streams ended), so they still find it.
    if ('pid' in m) child.started(m.pid);
    else if ('error' in m) child.failed(m.error);
    else child.ended(m.code, m.signal);
  }

  /** stop ends the helper and the socket; processes it started are left to the node's killAll. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.reportUnjoined();
    this.helper?.disconnect();
    this.helper = null;
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await unlink(this.socketPath).catch(() => undefined);
  }
}

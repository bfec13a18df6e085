/**
 * The spawn helper: a small process a node starts once (`SpawnHelper`) that starts git for it.
 * libuv forks the calling process for every spawn, and the fork costs the parent in proportion
 * to its memory: a 120-170 MB node paid 2.9-5.2 ms of blocked event loop per git process, this
 * process about 1 ms (docs/BENCHMARKS.md). The node sends `{ id, file, args, cwd, env }` over
 * the IPC channel; the helper connects three sockets to the node's Unix socket (a first line
 * `<id> <fd>` says which stream each is), hands them to git as its stdin, stdout and stderr (git
 * reads and writes them directly, nothing is copied here), and reports `{ id, pid }`, then
 * `{ id, code, signal }` when git exits, or `{ id, error }`. It exits when the node does (its
 * IPC channel closes); git processes it started are the node's to reap, as before.
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';

/** SpawnRequest asks the helper to start a process. */
export interface SpawnRequest {
  readonly id: number;
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  readonly env: NodeJS.ProcessEnv;
}

/** SpawnReport is what the helper says of a request: started (pid), exited (code, signal), or failed. */
export type SpawnReport =
  | { readonly id: number; readonly pid: number }
  | { readonly id: number; readonly code: number | null; readonly signal: NodeJS.Signals | null }
  | { readonly id: number; readonly error: string };

function open(socketPath: string, id: number, fd: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(socketPath, () => {
      // Handed to git (and this copy destroyed) only once the line is with the kernel: a write
      // still queued here would be dropped by destroy().
      s.write(`${id} ${fd}\n`, (err) => {
        s.off('error', reject);
        // The node may close its end at any time (it lost the socket, or gave up on the process):
        // an error then is the stream's end, never this helper's (unhandled, it ended the helper).
        s.on('error', () => undefined);
        if (err) reject(err);
        else resolve(s);
      });
    });
    s.once('error', reject);
  });
}

function report(r: SpawnReport): void {
  if (process.connected) process.send?.(r);
}

async function start(socketPath: string, req: SpawnRequest): Promise<void> {
  let socks: Socket[] = [];
  try {
    const opened = await Promise.allSettled([0, 1, 2].map((fd) => open(socketPath, req.id, fd)));
    // Those that connected are closed (finally) when another did not.
    socks = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    const failed = opened.find((o) => o.status === 'rejected');
    if (failed) throw failed.reason;
    const child = spawn(req.file, [...req.args], { cwd: req.cwd, env: req.env, stdio: socks });
    child.once('error', (err) => report({ id: req.id, error: err.message }));
    child.once('exit', (code, signal) => report({ id: req.id, code, signal }));
    if (child.pid !== undefined) report({ id: req.id, pid: child.pid });
  } catch (err) {
    report({ id: req.id, error: err instanceof Error ? err.message : String(err) });
  } finally {
    // git holds its own copies of the sockets; the node sees a stream end once git closes it.
    for (const s of socks) s.destroy();
  }
}

/** main runs the helper: `node spawn-helper.js <socket path>`, with an IPC channel to the node. */
function main(): void {
  const socketPath = process.argv[2];
  if (!socketPath || !process.send) {
    process.stderr.write('spawn-helper: run by a node, with its socket path and an IPC channel\n');
    process.exit(2);
  }
  process.on('message', (m: SpawnRequest) => void start(socketPath, m));
  process.on('disconnect', () => process.exit(0));
  // The node's shutdown signals are the node's: the helper ends with its IPC channel.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => undefined);
}

main();

import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';

/** CLIENT_ENV is a clean git client environment: no system or user config, a fixed identity. */
export const CLIENT_ENV: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  HOME: tmpdir(),
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_TERMINAL_PROMPT: '0',
  GIT_AUTHOR_NAME: 'Chaos',
  GIT_AUTHOR_EMAIL: 'chaos@example.com',
  GIT_COMMITTER_NAME: 'Chaos',
  GIT_COMMITTER_EMAIL: 'chaos@example.com',
  LC_ALL: 'C',
};

/** GitCall is a finished git command; `timedOut` says it was killed at its deadline. */
export interface GitCall {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/** running tracks every client git process group, so a run can kill what is left on exit. */
const running = new Set<number>();

/**
 * runGit runs the real git CLI in its own process group and never throws. At `timeoutMs` the
 * whole group (git and its remote helpers) is killed with SIGKILL.
 */
export function runGit(
  args: readonly string[],
  opts: { cwd?: string; input?: string; timeoutMs: number; env?: NodeJS.ProcessEnv },
): Promise<GitCall> {
  return new Promise((resolve) => {
    const child = spawn('git', args, {
      cwd: opts.cwd,
      env: { ...CLIENT_ENV, ...opts.env },
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const pid = child.pid;
    if (pid !== undefined) running.add(pid);
    let out = '';
    let err = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (out.length < 4_000_000) out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 64_000) err += d;
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(pid);
    }, opts.timeoutMs);
    child.on('error', (e) => {
      err += `\nspawn error: ${e.message}`;
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (pid !== undefined) running.delete(pid);
      resolve({ code, stdout: out, stderr: err, timedOut });
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is gone
  }
}

/** killAllGit kills every client git process group still running. */
export function killAllGit(): void {
  for (const pid of running) killGroup(pid);
  running.clear();
}

/** gitOrThrow runs git and throws with its stderr when it fails. */
export async function gitOrThrow(args: readonly string[], opts: { cwd?: string; input?: string; timeoutMs?: number }): Promise<string> {
  const r = await runGit(args, { ...opts, timeoutMs: opts.timeoutMs ?? 60_000 });
  if (r.code !== 0) throw new Error(`git ${args.join(' ')} failed (${r.timedOut ? 'timeout' : String(r.code)}): ${r.stderr.trim()}`);
  return r.stdout;
}

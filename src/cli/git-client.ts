import { spawn } from 'node:child_process';
import { CliError } from './http-client.js';

/** GIT_TIMEOUT_MS bounds one client git process of the CLI (a clone of a large repository included). */
export const GIT_TIMEOUT_MS = 2 * 3_600_000;

/**
 * CLIENT_SUBCOMMANDS are what the CLI runs: the client side of backup and restore. The node's
 * GitRunner has its own, server-side, list (no `push`), which this does not widen.
 */
const CLIENT_SUBCOMMANDS = new Set(['clone', 'fetch', 'push', 'for-each-ref', 'symbolic-ref', 'ls-remote', 'config']);

/** GitClientOptions tune one client git command. */
export interface GitClientOptions {
  readonly cwd?: string;
  /** token is sent as `Authorization: Bearer` on every HTTP request of this command. */
  readonly token?: string | null;
  readonly timeoutMs?: number;
}

/** GitOutput is a finished git command's output. */
export interface GitOutput {
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * gitEnv is the caller's environment without its GIT_* variables (a stray GIT_DIR would point
 * every command elsewhere), without the user's git config (an `insteadOf` would send a backup
 * somewhere else), and with the token passed as config through the environment: it never
 * appears in a process list, a remote URL, or the mirror's config file. A CA given to the CLI
 * (`NODE_EXTRA_CA_CERTS`) is git's CA too.
 */
function gitEnv(token: string | null | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GIT_')) env[k] = v;
  const config: Array<[string, string]> = [];
  if (token) config.push(['http.extraHeader', `Authorization: Bearer ${token}`]);
  const ca = process.env.GIT_SSL_CAINFO ?? process.env.NODE_EXTRA_CA_CERTS;
  if (ca) config.push(['http.sslCAInfo', ca]);
  config.forEach(([k, v], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = k;
    env[`GIT_CONFIG_VALUE_${i}`] = v;
  });
  return {
    ...env,
    GIT_CONFIG_COUNT: String(config.length),
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    LC_ALL: 'C',
  };
}

/**
 * runGit runs a client git command (argv array, subcommand first, a timeout) and returns its
 * output; a failure is a CliError quoting git's last lines of stderr.
 */
export function runGit(args: readonly string[], opts: GitClientOptions = {}): Promise<GitOutput> {
  const sub = args[0];
  if (!sub || !CLIENT_SUBCOMMANDS.has(sub)) throw new Error(`git subcommand not allowed: ${String(sub)}`);
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...args], { cwd: opts.cwd, env: gitEnv(opts.token), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-8_192);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? GIT_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CliError(`cannot run git: ${e.message}`, null, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString();
      if (code === 0) return resolve({ stdout, stderr: err });
      const why = signal ? `killed by ${signal}` : `exit ${code}`;
      const lines = err
        .trim()
        .split('\n')
        .filter((l) => l.trim() !== '')
        .slice(-2)
        .join(' | ');
      reject(new CliError(`git ${sub} failed (${why})${lines ? `: ${lines}` : ''}`));
    });
  });
}

import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { errorMessage } from '../domain/errors.js';

/** TOKEN_ENV is the environment variable the CLI reads a token from. */
export const TOKEN_ENV = 'GIT_REPLICATION_TOKEN';
/** DEFAULT_TOKEN_FILE is where `npm start` / `git-replication up` keep the first admin token. */
export const DEFAULT_TOKEN_FILE = './data/admin-token';
const TIMEOUT_MS = 30_000;

/** ClientOptions are the options `addClientOptions` puts on a command. */
export interface ClientOptions {
  url: string;
  token?: string;
  tokenFile?: string;
}

/** CliError is a failure the CLI reports as one line on stderr and exit code 1, never a stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly status: number | null = null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

/** addClientOptions adds `--url`, `--token` and `--token-file` to a command that talks to a node. */
export function addClientOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'any node of the cluster', 'http://127.0.0.1:3001')
    .addOption(
      new Option('--token <token>', `API token (default: $${TOKEN_ENV}, else ${DEFAULT_TOKEN_FILE} if it exists)`).conflicts('tokenFile'),
    )
    .option('--token-file <path>', 'read the API token from this file');
}

/**
 * resolveToken picks the token: `--token`, then `--token-file`, then `$GIT_REPLICATION_TOKEN`, then
 * `./data/admin-token` when it exists, else none. Explicit flags win over the environment (the
 * usual CLI rule), and a named file that cannot be read is an error, a missing default file is not.
 */
export async function resolveToken(o: ClientOptions, env: NodeJS.ProcessEnv = process.env): Promise<string | null> {
  if (o.token !== undefined) return nonEmpty(o.token, '--token');
  if (o.tokenFile !== undefined) return nonEmpty(await readTokenFile(o.tokenFile), `token file ${o.tokenFile}`);
  const fromEnv = env[TOKEN_ENV]?.trim();
  if (fromEnv) return fromEnv;
  return (await readTokenFile(DEFAULT_TOKEN_FILE, { missingOk: true })) || null;
}

async function readTokenFile(path: string, opts: { missingOk?: boolean } = {}): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if (opts.missingOk && (err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw new CliError(`cannot read token file ${path}: ${errorMessage(err)}`, null, { cause: err });
  }
}

function nonEmpty(token: string, from: string): string {
  const t = token.trim();
  if (!t) throw new CliError(`${from} is empty`);
  return t;
}

/** ApiClient calls one node's JSON API with the CLI's token; every failure becomes a CliError. */
export class ApiClient {
  private readonly base: string;

  constructor(
    url: string,
    private readonly token: string | null,
  ) {
    this.base = url.replace(/\/+$/, '');
  }

  /** get reads a JSON resource. */
  async get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  /** post calls an operation; `body`, when given, is sent as JSON. */
  async post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  /** put sets a resource to the JSON `body`. */
  async put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, body);
  }

  /** patch changes fields of a resource. */
  async patch<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PATCH', path, body);
  }

  /** delete removes a resource. */
  async delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${this.base}${path}`;
    const headers: Record<string, string> = this.token ? { authorization: `Bearer ${this.token}` } : {};
    // Only a request with a body says it is JSON: Fastify refuses an empty JSON body.
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      text = await res.text();
    } catch (err) {
      throw new CliError(`cannot reach ${this.base}: ${connectionReason(err)}`, null, { cause: err });
    }
    if (!res.ok) {
      const hint = res.status === 401 && !this.token ? ` (no token: use --token, --token-file or $${TOKEN_ENV})` : '';
      throw new CliError(`${res.status} ${errorText(text, res.statusText)}${hint}`, res.status);
    }
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new CliError(`${method} ${url}: answer is not JSON`, res.status, { cause: err });
    }
  }
}

/** errorText is the `error` field of a JSON error body, else the body's first line, else the status text. */
function errorText(body: string, statusText: string): string {
  try {
    const parsed = JSON.parse(body) as unknown;
    if (parsed && typeof parsed === 'object' && 'error' in parsed && typeof parsed.error === 'string') return parsed.error;
  } catch {
    // not JSON: a proxy's page or a git route's text
  }
  const line = body.trim().split('\n', 1)[0]?.slice(0, 200) ?? '';
  return line || statusText;
}

/** connectionReason digs the useful part out of fetch's "fetch failed" (the cause: ECONNREFUSED, …). */
function connectionReason(err: unknown): string {
  if (err instanceof DOMException && err.name === 'TimeoutError') return `no answer in ${TIMEOUT_MS / 1000} s`;
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof AggregateError && cause.errors.length > 0) return errorMessage(cause.errors[0]);
  return errorMessage(cause ?? err);
}

/**
 * withApi runs a command's body with a client for `--url` and the resolved token; a CliError is
 * printed as `git-replication: <message>` and sets exit code 1.
 */
export async function withApi(o: ClientOptions, run: (api: ApiClient) => Promise<void>): Promise<void> {
  try {
    await run(new ApiClient(o.url, await resolveToken(o)));
  } catch (err) {
    if (!(err instanceof CliError)) throw err;
    process.stderr.write(`git-replication: ${err.message}\n`);
    process.exitCode = 1;
  }
}

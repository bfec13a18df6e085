import type { Command } from 'commander';
import { DEFAULTS, startNode, type NodeConfig, type RunningNode } from '../app.js';
import { TlsConfigError, type TlsFiles } from '../cluster/tls.js';
import { errorMessage } from '../domain/errors.js';
import { parseWriteQuorum } from '../domain/quorum.js';
import { parseFsckIgnore } from '../git/fsck-policy.js';
import { parseStoreUrl } from '../store/open.js';
import { SSH_DEFAULTS } from '../ssh/server.js';
import { examples } from './help.js';

interface ServeOptions {
  port?: string; id?: string; dataDir?: string; peers?: string; store?: string; writeQuorum?: string;
  replicationFactor?: string; host?: string; advertiseUrl?: string; maxGitProcesses?: string; logLevel?: string; replaceAfter?: string; auth?: string;
  maxGitPerClient?: string; bodyIdleTimeout?: string; shutdownGrace?: string; txnRetention?: string; minFreeDisk?: string; fsckIgnore?: string; maxPushSize?: string; maxFetchRequestSize?: string; maxInflateRatio?: string;
  tlsCert?: string; tlsKey?: string; tlsCa?: string;
  sshPort?: string; sshMaxPerUser?: string; sshIdleTimeout?: string; sshSessionTimeout?: string; sshMaxAuthTries?: string;
}

/** tlsFiles reads --tls-cert/--tls-key/--tls-ca (TLS_CERT, TLS_KEY, TLS_CA); cert and key come together. */
function tlsFiles(o: ServeOptions, env: NodeJS.ProcessEnv): TlsFiles | undefined {
  const pick = (flag: string | undefined, name: string): string | undefined => (flag ?? env[name]) || undefined;
  const cert = pick(o.tlsCert, 'TLS_CERT');
  const key = pick(o.tlsKey, 'TLS_KEY');
  const ca = pick(o.tlsCa, 'TLS_CA');
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error(`--tls-cert (TLS_CERT) and --tls-key (TLS_KEY) go together: only ${cert === undefined ? '--tls-key' : '--tls-cert'} is given`);
  }
  if (cert === undefined && ca === undefined) return undefined;
  return { ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}), ...(ca !== undefined ? { ca } : {}) };
}

/** parseSize reads `512k`, `100m`, `2g` or plain bytes. */
export function parseSize(value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const m = /^(\d+(?:\.\d+)?)([kmg])?i?b?$/i.exec(value.trim());
  if (!m) throw new Error(`invalid size '${value}': use e.g. 512k, 100m, 2g`);
  const unit = { k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').toLowerCase()] ?? 1;
  const n = Math.round(Number(m[1]) * unit);
  if (n < 1) throw new Error(`size must be at least 1 byte, got '${value}'`);
  return n;
}

function parseAuth(value: string | undefined): 'open' | 'tokens' {
  if (value === undefined || value === '') return DEFAULTS.auth;
  if (value === 'open' || value === 'tokens') return value;
  throw new Error(`--auth must be tokens or open, got '${value}'`);
}

/** parseDuration reads `90s`, `10m`, `1h` or plain milliseconds. */
export function parseDuration(value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw new Error(`invalid duration '${value}': use e.g. 500ms, 90s, 10m, 1h`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms'] ?? 1;
  return Math.round(n * unit);
}

function int(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got '${value}'`);
  return n;
}

/** positive refuses a value below `min` (a 0 retention would prune transactions in flight). */
function positive(value: number, name: string, min: number): number {
  if (value < min) throw new Error(`${name} must be at least ${min} ms, got ${value}`);
  return value;
}

/** serveConfig turns flags and the seed's environment variables into a NodeConfig. */
export function serveConfig(o: ServeOptions, env: NodeJS.ProcessEnv): NodeConfig {
  const dataDir = o.dataDir ?? env.DATA_DIR ?? './data';
  const peers = (o.peers ?? env.PEER_URLS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const storeValue = o.store ?? env.STORE_URL;
  if (peers.length > 0 && !storeValue) {
    throw new Error('peers are configured but no --store (STORE_URL) is given: nodes with separate stores would silently form separate clusters. ' +
      'Give every node the same store, e.g. --store sqlite:/shared/cluster.db on one machine or --store etcd://host:2379');
  }
  const replicationFactor = int(o.replicationFactor ?? env.REPLICATION_FACTOR, 'replication factor', DEFAULTS.replicationFactor);
  if (replicationFactor < 1) throw new Error('replication factor must be >= 1');
  const tls = tlsFiles(o, env);
  const maxGitProcesses = int(o.maxGitProcesses ?? env.MAX_GIT_PROCESSES, 'max git processes', DEFAULTS.maxGitProcesses);
  if (maxGitProcesses < 1) throw new Error('max git processes must be >= 1');
  return {
    nodeId: o.id ?? env.SERVER_ID ?? 'server-1',
    host: o.host ?? env.HOST ?? DEFAULTS.host,
    port: int(o.port ?? env.PORT, 'port', 3000),
    advertiseUrl: o.advertiseUrl ?? env.ADVERTISE_URL,
    dataDir,
    store: parseStoreUrl(storeValue, dataDir),
    writeQuorum: parseWriteQuorum(o.writeQuorum ?? env.WRITE_QUORUM),
    replicationFactor,
    maxGitProcesses,
    maxGitPerClient: int(o.maxGitPerClient ?? env.MAX_GIT_PER_CLIENT, 'max git processes per client', Math.max(1, Math.ceil(maxGitProcesses / 2))),
    bodyIdleMs: parseDuration(o.bodyIdleTimeout ?? env.BODY_IDLE_TIMEOUT, DEFAULTS.bodyIdleMs),
    shutdownGraceMs: parseDuration(o.shutdownGrace ?? env.SHUTDOWN_GRACE, DEFAULTS.shutdownGraceMs),
    fsckIgnore: parseFsckIgnore(o.fsckIgnore ?? env.FSCK_IGNORE),
    minFreeDiskBytes: parseSize(o.minFreeDisk ?? env.MIN_FREE_DISK, DEFAULTS.minFreeDiskBytes),
    txnRetentionMs: positive(parseDuration(o.txnRetention ?? env.TXN_RETENTION, DEFAULTS.txnRetentionMs), 'txn retention', 60_000),
    maxPushBytes: parseSize(o.maxPushSize ?? env.MAX_PUSH_SIZE, DEFAULTS.maxPushBytes),
    maxUploadRequestBytes: parseSize(o.maxFetchRequestSize ?? env.MAX_FETCH_REQUEST_SIZE, DEFAULTS.maxUploadRequestBytes),
    maxInflateRatio: int(o.maxInflateRatio ?? env.MAX_INFLATE_RATIO, 'max inflate ratio', DEFAULTS.maxInflateRatio),
    nodeTtlMs: int(env.NODE_TTL_MS, 'NODE_TTL_MS', DEFAULTS.nodeTtlMs),
    lockTtlMs: int(env.LOCK_TTL_MS, 'LOCK_TTL_MS', DEFAULTS.lockTtlMs),
    resolveAfterMs: int(env.RESOLVE_AFTER_MS, 'RESOLVE_AFTER_MS', DEFAULTS.resolveAfterMs),
    stageTtlMs: int(env.STAGE_TTL_MS, 'STAGE_TTL_MS', DEFAULTS.stageTtlMs),
    repairIntervalMs: int(env.REPAIR_INTERVAL_MS, 'REPAIR_INTERVAL_MS', DEFAULTS.repairIntervalMs),
    verifyIntervalMs: int(env.VERIFY_INTERVAL_MS, 'VERIFY_INTERVAL_MS', DEFAULTS.verifyIntervalMs),
    fsckIntervalMs: int(env.FSCK_INTERVAL_MS, 'FSCK_INTERVAL_MS', DEFAULTS.fsckIntervalMs),
    repackAfterPacks: int(env.REPACK_AFTER_PACKS, 'REPACK_AFTER_PACKS', DEFAULTS.repackAfterPacks),
    replaceAfterMs: parseDuration(o.replaceAfter ?? env.REPLACE_AFTER, DEFAULTS.replaceAfterMs),
    stewardIntervalMs: int(env.STEWARD_INTERVAL_MS, 'STEWARD_INTERVAL_MS', DEFAULTS.stewardIntervalMs),
    auth: parseAuth(o.auth ?? env.AUTH),
    logLevel: o.logLevel ?? env.LOG_LEVEL ?? DEFAULTS.logLevel,
    ...(tls ? { tls } : {}),
    ...sshConfig(o, env),
  };
}

/** sshConfig reads --ssh-port (SSH_PORT; unset: no SSH server) and the SSH limits. */
function sshConfig(o: ServeOptions, env: NodeJS.ProcessEnv): Pick<NodeConfig, 'sshPort' | 'sshLimits'> {
  const port = o.sshPort ?? env.SSH_PORT;
  if (port === undefined || port === '' || port === 'off') return {};
  return {
    sshPort: int(port, 'ssh port', 0),
    sshLimits: {
      ...SSH_DEFAULTS,
      maxConnectionsPerUser: int(o.sshMaxPerUser ?? env.SSH_MAX_PER_USER, 'ssh connections per user', SSH_DEFAULTS.maxConnectionsPerUser),
      idleMs: parseDuration(o.sshIdleTimeout ?? env.SSH_IDLE_TIMEOUT, SSH_DEFAULTS.idleMs),
      sessionMs: parseDuration(o.sshSessionTimeout ?? env.SSH_SESSION_TIMEOUT, SSH_DEFAULTS.sessionMs),
      maxAuthAttempts: int(o.sshMaxAuthTries ?? env.SSH_MAX_AUTH_TRIES, 'ssh auth attempts', SSH_DEFAULTS.maxAuthAttempts),
    },
  };
}

/** registerServe adds `git-replication serve`: run one node. */
export function registerServe(program: Command): void {
  program.command('serve')
    .description('run one node')
    .addHelpText('after', examples(
      'git-replication serve --id node-1 --port 3001 --data-dir /var/lib/gitrep --store sqlite:/var/lib/gitrep/cluster.db',
      'git-replication serve --id node-2 --port 3000 --host 0.0.0.0 --advertise-url http://10.0.0.2:3000 --store etcd://10.0.0.10:2379',
    ))
    .option('--port <port>', 'HTTP port (env PORT, default 3000)')
    .option('--id <id>', 'node id (env SERVER_ID, default server-1)')
    .option('--data-dir <dir>', 'data directory (env DATA_DIR, default ./data)')
    .option('--peers <urls>', 'comma-separated peer URLs (env PEER_URLS); needs --store')
    .option('--store <url>', 'coordination store: sqlite:<path> or etcd://host:port[,host:port] (env STORE_URL)')
    .option('--write-quorum <n>', 'replicas that must confirm a write (env WRITE_QUORUM, default majority)')
    .option('--replication-factor <n>', 'replicas per repo (env REPLICATION_FACTOR, default 3)')
    .option('--host <host>', 'listen address (env HOST, default 127.0.0.1)')
    .option('--advertise-url <url>', 'URL other nodes use to reach this one (env ADVERTISE_URL)')
    .option('--max-git-processes <n>', 'concurrent git processes serving clients (env MAX_GIT_PROCESSES, default 64)')
    .option('--max-git-per-client <n>', 'of those, at most this many for one client address (env MAX_GIT_PER_CLIENT, default half)')
    .option('--body-idle-timeout <duration>', 'end a git request whose body is silent this long, 408 (env BODY_IDLE_TIMEOUT, default 30s)')
    .option('--max-push-size <size>', 'largest pack a push may send, 413 beyond (env MAX_PUSH_SIZE, default 2g)')
    .option('--max-fetch-request-size <size>', 'largest fetch request (wants and haves) once decompressed (env MAX_FETCH_REQUEST_SIZE, default 10m)')
    .option('--max-inflate-ratio <n>', 'a gzip request body may inflate at most n times (env MAX_INFLATE_RATIO, default 100)')
    .option('--log-level <level>', 'pino log level (env LOG_LEVEL, default info)')
    .option('--auth <mode>', 'tokens: pushes and admin calls need a token (default); open: no checks, trusted networks only (env AUTH)')
    .option('--fsck-ignore <ids>', "git fsck message ids let through in pushed and fetched objects: 'default' (git's warn-level checks, e.g. zeroPaddedFilemode, badTimezone), 'none', or a comma list (env FSCK_IGNORE)")
    .option('--min-free-disk <size>', 'take no new writes with less free space under the data dir (env MIN_FREE_DISK, default 256m)')
    .option('--txn-retention <duration>', 'prune transaction records older than this, at least 1m (env TXN_RETENTION, default 24h)')
    .option('--shutdown-grace <duration>', 'on SIGTERM, how long requests in flight may finish (env SHUTDOWN_GRACE, default 30s)')
    .option('--replace-after <duration>', 're-create the replicas of a node down this long, e.g. 10m (env REPLACE_AFTER, default 10m)')
    .option('--tls-cert <pem>', 'serve HTTPS with this certificate (chain); needs --tls-key (env TLS_CERT)')
    .option('--tls-key <pem>', 'private key of --tls-cert (env TLS_KEY)')
    .option('--tls-ca <pem>', 'CA that https:// peers are verified against, default the system CAs (env TLS_CA)')
    .option('--ssh-port <port>', 'serve Git over SSH on this port (env SSH_PORT; default off)')
    .option('--ssh-max-per-user <n>', 'SSH connections one user may hold at once (env SSH_MAX_PER_USER, default 10)')
    .option('--ssh-idle-timeout <duration>', 'close an SSH connection without data this long (env SSH_IDLE_TIMEOUT, default 60s)')
    .option('--ssh-session-timeout <duration>', 'close any SSH connection after this long (env SSH_SESSION_TIMEOUT, default 1h)')
    .option('--ssh-max-auth-tries <n>', 'keys a client may offer per SSH connection (env SSH_MAX_AUTH_TRIES, default 6)')
    .action(async (o: ServeOptions) => {
      let cfg: NodeConfig;
      try {
        cfg = serveConfig(o, process.env);
      } catch (err) {
        process.stderr.write(`git-replication serve: ${errorMessage(err)}\n`);
        process.exit(2);
      }
      let node: RunningNode;
      try {
        node = await startNode(cfg);
      } catch (err) {
        if (!(err instanceof TlsConfigError)) throw err;
        process.stderr.write(`git-replication serve: ${err.message}\n`);
        process.exit(2);
      }
      const stop = (): void => {
        node.close().then(() => process.exit(0), () => process.exit(1));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      if (process.env.GIT_REPLICATION_EXIT_WITH_PARENT === '1') {
        // Test clusters set this so a killed test runner never leaves nodes behind.
        const parent = process.ppid;
        setInterval(() => { if (process.ppid !== parent) stop(); }, 1_000).unref();
      }
    });
}

import type { Command } from 'commander';
import { startNode, type NodeConfig, type RunningNode } from '../app.js';
import { describeDefault, loadSettings, SETTINGS, type SettingName, type Settings, type SettingSpec } from '../config.js';
import { protocolFromEnv } from '../cluster/protocol.js';
import { DataDirInUseError } from '../cluster/data-dir-lock.js';
import { TlsConfigError, type TlsFiles } from '../cluster/tls.js';
import { errorMessage } from '../domain/errors.js';
import { parseWriteQuorum } from '../domain/quorum.js';
import { parseFsckIgnore } from '../git/fsck-policy.js';
import { HELPERS, type HelperKind } from '../git/spawner.js';
import { parseStoreUrl } from '../store/open.js';
import { SSH_DEFAULTS } from '../ssh/server.js';
import { defaultMaxConnections } from '../http/connection-guard.js';
import { examples } from './help.js';

/** ServeOptions are commander's values of `serve`'s flags, by optionKey. */
type ServeOptions = Readonly<Record<string, unknown>>;

/** tlsFiles reads --tls-cert/--tls-key/--tls-ca; cert and key come together. */
function tlsFiles(s: Settings): TlsFiles | undefined {
  const { tlsCert: cert, tlsKey: key, tlsCa: ca } = s;
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error(
      `--tls-cert (TLS_CERT) and --tls-key (TLS_KEY) go together: only ${cert === undefined ? '--tls-key' : '--tls-cert'} is given`,
    );
  }
  if (cert === undefined && ca === undefined) return undefined;
  return { ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}), ...(ca !== undefined ? { ca } : {}) };
}

/** onOff reads an on/off setting. */
function onOff(name: string, value: string): boolean {
  if (value === 'on') return true;
  if (value === 'off') return false;
  throw new Error(`${name}: must be on or off, got '${value.slice(0, 40)}'`);
}

function spawnHelperSetting(value: string): boolean | HelperKind {
  if (Object.hasOwn(HELPERS, value)) return value as HelperKind;
  if (value === 'on' || value === 'off') return onOff('GIT_SPAWN_HELPER', value);
  throw new Error(`GIT_SPAWN_HELPER: must be on, off, ${Object.keys(HELPERS).join(', ')}, got '${value.slice(0, 40)}'`);
}

function parseAuth(value: string): 'open' | 'tokens' {
  if (value === 'open' || value === 'tokens') return value;
  throw new Error(`--auth (AUTH) must be tokens or open, got '${value}'`);
}

/** serveConfig turns flags and environment variables, read and checked by loadSettings, into a NodeConfig. */
export function serveConfig(o: ServeOptions, env: NodeJS.ProcessEnv): NodeConfig {
  const s = loadSettings(o, env);
  const peers = (s.peers ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (peers.length > 0 && !s.store) {
    throw new Error(
      'peers are configured but no --store (STORE_URL) is given: nodes with separate stores would silently form separate clusters. ' +
        'Give every node the same store, e.g. --store sqlite:/shared/cluster.db on one machine or --store etcd://host:2379',
    );
  }
  const tls = tlsFiles(s);
  return {
    nodeId: s.nodeId,
    host: s.host,
    port: s.port,
    advertiseUrl: s.advertiseUrl,
    publicUrl: parsePublicUrl(s.publicUrl),
    dataDir: s.dataDir,
    store: parseStoreUrl(s.store, s.dataDir),
    writeQuorum: parseWriteQuorum(s.writeQuorum),
    replicationFactor: s.replicationFactor,
    maxGitProcesses: s.maxGitProcesses,
    maxGitPerClient: s.maxGitPerClient ?? Math.max(1, Math.ceil(s.maxGitProcesses / 2)),
    gitSlotWaitMs: s.gitSlotWaitMs,
    headersTimeoutMs: s.headersTimeoutMs,
    maxConnections: s.maxConnections ?? defaultMaxConnections(),
    maxConnectionsPerAddress: s.maxConnectionsPerAddress,
    bodyIdleMs: s.bodyIdleMs,
    sendIdleMs: s.sendIdleMs,
    shutdownGraceMs: s.shutdownGraceMs,
    fsckIgnore: parseFsckIgnore(s.fsckIgnore),
    minFreeDiskBytes: s.minFreeDiskBytes,
    txnRetentionMs: s.txnRetentionMs,
    expiredCredentialRetentionMs: s.expiredCredentialRetentionMs,
    maxTokensPerUser: s.maxTokensPerUser,
    maxSshKeysPerUser: s.maxSshKeysPerUser,
    maxApiWritesPerMinute: s.maxApiWritesPerMinute,
    maxReposPerOwner: s.maxReposPerOwner,
    maxOrgsPerUser: s.maxOrgsPerUser,
    maxPushBytes: s.maxPushBytes,
    maxLfsObjectBytes: s.maxLfsObjectBytes,
    maxUploadRequestBytes: s.maxUploadRequestBytes,
    maxInflateRatio: s.maxInflateRatio,
    nodeTtlMs: s.nodeTtlMs,
    lockTtlMs: s.lockTtlMs,
    resolveAfterMs: s.resolveAfterMs,
    stageTtlMs: s.stageTtlMs,
    repairIntervalMs: s.repairIntervalMs,
    lfsSyncIntervalMs: s.lfsSyncIntervalMs,
    verifyIntervalMs: s.verifyIntervalMs,
    fsckIntervalMs: s.fsckIntervalMs,
    repackAfterPacks: s.repackAfterPacks,
    replaceAfterMs: s.replaceAfterMs,
    stewardIntervalMs: s.stewardIntervalMs,
    timing: {
      lockWaitMs: s.lockWaitMs,
      prepareTimeoutMs: s.prepareTimeoutMs,
      commitTimeoutMs: s.commitTimeoutMs,
      peerTimeoutMs: s.peerTimeoutMs,
      commitWaitMs: s.commitWaitMs,
      catchUpMs: s.catchUpMs,
      gitTimeoutMs: s.gitTimeoutMs,
      settleMs: s.settleMs,
      courtesyMs: s.courtesyMs,
      uploadWaitMs: s.uploadWaitMs,
      swapLockWaitMs: s.swapLockWaitMs,
      fullPassMs: s.fullPassMs,
    },
    maxGroupPushes: s.maxGroupPushes,
    gitSpawnHelper: spawnHelperSetting(s.gitSpawnHelper),
    maxQueuedPushes: s.maxQueuedPushes,
    maxRefsPerPush: s.maxRefsPerPush,
    auth: parseAuth(s.auth),
    ...(s.failpoints ? { failpoints: s.failpoints } : {}),
    ...(s.protocol ? { protocol: protocolFromEnv(s.protocol) } : {}),
    logLevel: s.logLevel,
    ...(tls ? { tls } : {}),
    ...sshConfig(s),
  };
}

/** sshConfig reads --ssh-port (unset or off: no SSH server) and the SSH limits. */
function sshConfig(s: Settings): Pick<NodeConfig, 'sshPort' | 'sshLimits'> {
  const port = s.sshPort;
  if (port === undefined || port === 'off') return {};
  if (!/^\d+$/.test(port) || Number(port) > 65_535)
    throw new Error(`--ssh-port (SSH_PORT): must be a port number or off, got '${port.slice(0, 40)}'`);
  return {
    sshPort: Number(port),
    sshLimits: {
      ...SSH_DEFAULTS,
      maxConnectionsPerUser: s.sshMaxConnectionsPerUser,
      idleMs: s.sshIdleMs,
      sessionMs: s.sshSessionMs,
      maxAuthAttempts: s.sshMaxAuthAttempts,
      handshakeMs: s.sshHandshakeMs,
    },
  };
}

/** optionHelp is a flag's help line: its doc, environment variable and default. */
function optionHelp(name: SettingName): string {
  const spec: SettingSpec = SETTINGS[name];
  const d = describeDefault(name);
  return `${spec.doc} (env ${spec.env}${d ? `, default ${d}` : ''})`;
}

/** registerServe adds `git-replication serve`: run one node. */
export function registerServe(program: Command): void {
  const command = program
    .command('serve')
    .description('run one node')
    .addHelpText(
      'after',
      examples(
        'git-replication serve --id node-1 --port 3001 --data-dir /var/lib/gitrep --store sqlite:/var/lib/gitrep/cluster.db',
        'git-replication serve --id node-2 --port 3000 --host 0.0.0.0 --advertise-url http://10.0.0.2:3000 --store etcd://10.0.0.10:2379',
      ),
    );
  for (const name of Object.keys(SETTINGS) as SettingName[]) {
    const spec: SettingSpec = SETTINGS[name];
    if (spec.flag)
      command.option(
        `${spec.flag} <${spec.arg ?? (spec.kind === 'ms' ? 'duration' : spec.kind === 'bytes' ? 'size' : 'n')}>`,
        optionHelp(name),
      );
  }
  command.action(async (o: ServeOptions) => {
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
      // What an operator can fix is said in a line, not a stack trace.
      const listen = err as { code?: string; syscall?: string; address?: string; port?: number };
      if (listen.syscall === 'listen' && (listen.code === 'EADDRINUSE' || listen.code === 'EACCES'))
        process.stderr.write(
          `git-replication serve: cannot listen on ${listen.address ?? cfg.host}:${listen.port ?? cfg.port}: ` +
            `${listen.code === 'EADDRINUSE' ? 'the port is in use (another node or program)' : 'permission denied'}\n`,
        );
      else if (err instanceof TlsConfigError || err instanceof DataDirInUseError)
        process.stderr.write(`git-replication serve: ${err.message}\n`);
      else throw err;
      process.exit(2);
    }
    const stop = (): void => {
      node.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    if (process.env.GIT_REPLICATION_EXIT_WITH_PARENT === '1') {
      // Test clusters set this so a killed test runner never leaves nodes behind.
      const parent = process.ppid;
      setInterval(() => {
        if (process.ppid !== parent) stop();
      }, 1_000).unref();
    }
  });
}

/** parsePublicUrl reads `--public-url`: an http(s) URL, without a query, kept without its trailing slash (null: none given). */
export function parsePublicUrl(value: string | null | undefined): string | null {
  if (value === null || value === undefined || value === '') return null;
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new Error(`--public-url (PUBLIC_URL) must be an http(s) URL, got '${value.slice(0, 200)}'`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.search || u.hash || u.username || u.password)
    throw new Error(
      `--public-url (PUBLIC_URL) must be an http(s) URL without credentials, query or fragment, got '${value.slice(0, 200)}'`,
    );
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

/**
 * The node's settings in one place: each with its unit in its name (`…Ms`, `…Bytes`), default,
 * environment variable and `serve` flag, and validation. `loadSettings` reads them once at start
 * and returns them frozen; `app.ts` passes the values down as parameters, so nothing deeper reads
 * the environment. docs/OPERATIONS.md ("Settings") lists every one; config.test.ts checks it.
 */

/** SettingKind is how a setting's text is read: a duration (`500ms`, `90s`, `10m`, `1h`, plain ms), a size (`512k`, `100m`, `2g`, plain bytes), a count, or text. */
export type SettingKind = 'ms' | 'bytes' | 'count' | 'text';

/** SettingSpec describes one setting. */
export interface SettingSpec {
  readonly kind: SettingKind;
  /** env is the environment variable; the flag, when there is one, wins over it. */
  readonly env: string;
  /** flag is `serve`'s option, if the setting has one. */
  readonly flag?: string;
  /** arg names the flag's value in `--help` (default from the kind: duration, size, n). */
  readonly arg?: string;
  /** default applies when neither is given; null: unset (or, for a count, derived: see doc). */
  readonly default: number | string | null;
  /** min: a smaller value is refused at start (timings default to 1: a 0 TTL or interval makes no sense). */
  readonly min?: number;
  readonly doc: string;
}

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const MIB = 1024 ** 2;

/** SETTINGS is every setting of a node, in the order `serve --help` and the docs show them. */
export const SETTINGS = {
  nodeId: { kind: 'text', env: 'SERVER_ID', flag: '--id', default: 'server-1', arg: 'id', doc: 'node id' },
  port: { kind: 'count', env: 'PORT', flag: '--port', default: 3000, min: 0, arg: 'port', doc: 'HTTP port (0: any free port)' },
  host: { kind: 'text', env: 'HOST', flag: '--host', default: '127.0.0.1', arg: 'host', doc: 'listen address' },
  advertiseUrl: {
    kind: 'text',
    env: 'ADVERTISE_URL',
    flag: '--advertise-url',
    default: null,
    arg: 'url',
    doc: 'URL other nodes use to reach this one (default from --host and --port)',
  },
  publicUrl: {
    kind: 'text',
    env: 'PUBLIC_URL',
    flag: '--public-url',
    default: null,
    arg: 'url',
    doc: "URL clients reach the cluster at (a load balancer's), for the links given to git-lfs (default: the scheme and Host of each request; over SSH, --advertise-url)",
  },
  dataDir: { kind: 'text', env: 'DATA_DIR', flag: '--data-dir', default: './data', arg: 'dir', doc: 'data directory' },
  peers: { kind: 'text', env: 'PEER_URLS', flag: '--peers', default: null, arg: 'urls', doc: 'comma-separated peer URLs; needs --store' },
  store: {
    kind: 'text',
    env: 'STORE_URL',
    flag: '--store',
    default: null,
    arg: 'url',
    doc: 'coordination store: sqlite:<path> or etcd://host:port[,host:port] (default sqlite in the data dir)',
  },
  writeQuorum: {
    kind: 'text',
    env: 'WRITE_QUORUM',
    flag: '--write-quorum',
    default: null,
    arg: 'n',
    doc: 'replicas that must confirm a write (default a majority)',
  },
  replicationFactor: {
    kind: 'count',
    env: 'REPLICATION_FACTOR',
    flag: '--replication-factor',
    default: 3,
    min: 1,
    doc: 'replicas per repo',
  },
  maxGitProcesses: {
    kind: 'count',
    env: 'MAX_GIT_PROCESSES',
    flag: '--max-git-processes',
    default: 64,
    min: 1,
    doc: "concurrent git processes serving clients; also the copies of other nodes' uploads this node indexes at once (more are staged after)",
  },
  maxGitPerClient: {
    kind: 'count',
    env: 'MAX_GIT_PER_CLIENT',
    flag: '--max-git-per-client',
    default: null,
    min: 1,
    doc: 'of those, at most this many for one client address (default half)',
  },
  gitSlotWaitMs: {
    kind: 'ms',
    env: 'GIT_SLOT_WAIT',
    flag: '--git-slot-wait',
    default: 30 * SECOND,
    min: 0,
    doc: 'a git request finding no free slot (or its client over its share) waits in line this long, then 503 (0: 503 at once)',
  },
  headersTimeoutMs: {
    kind: 'ms',
    env: 'HEADERS_TIMEOUT',
    flag: '--headers-timeout',
    default: 30 * SECOND,
    min: 1,
    doc: "a request's headers must arrive within this once begun, a connection's first request within this of its opening, a TLS handshake within this",
  },
  maxConnections: {
    kind: 'count',
    env: 'MAX_CONNECTIONS',
    flag: '--max-connections',
    default: null,
    min: 1,
    doc: "clients' HTTP connections open at once; more are closed at once, the members' have a quarter more (default half the process's open-file limit, at most 16384)",
  },
  maxConnectionsPerAddress: {
    kind: 'count',
    env: 'MAX_CONNECTIONS_PER_ADDRESS',
    flag: '--max-connections-per-address',
    default: 512,
    min: 0,
    doc: 'of those, at most this many from one client address (an IPv6 /64; 0: no cap, for clients behind one proxy address)',
  },
  bodyIdleMs: {
    kind: 'ms',
    env: 'BODY_IDLE_TIMEOUT',
    flag: '--body-idle-timeout',
    default: 30 * SECOND,
    min: 1,
    doc: 'end a git request whose body is silent this long, 408',
  },
  sendIdleMs: {
    kind: 'ms',
    env: 'SEND_IDLE_TIMEOUT',
    flag: '--send-idle-timeout',
    default: 10 * MINUTE,
    min: 0,
    doc: "end a git answer whose client's socket has not drained this long (its git process and slot freed; 0: never)",
  },
  maxPushBytes: {
    kind: 'bytes',
    env: 'MAX_PUSH_SIZE',
    flag: '--max-push-size',
    default: 2 * 1024 * MIB,
    min: 1,
    doc: 'largest pack a push may send, 413 beyond',
  },
  maxLfsObjectBytes: {
    kind: 'bytes',
    env: 'MAX_LFS_OBJECT_SIZE',
    flag: '--max-lfs-object-size',
    default: 5 * 1024 * MIB,
    min: 1,
    doc: 'largest Git LFS object an upload may send, 413 beyond',
  },
  maxUploadRequestBytes: {
    kind: 'bytes',
    env: 'MAX_FETCH_REQUEST_SIZE',
    flag: '--max-fetch-request-size',
    default: 10 * MIB,
    min: 1,
    doc: 'largest fetch request (wants and haves) once decompressed',
  },
  maxInflateRatio: {
    kind: 'count',
    env: 'MAX_INFLATE_RATIO',
    flag: '--max-inflate-ratio',
    default: 100,
    min: 1,
    doc: 'a gzip request body may inflate at most n times',
  },
  logLevel: { kind: 'text', env: 'LOG_LEVEL', flag: '--log-level', default: 'info', arg: 'level', doc: 'pino log level' },
  auth: {
    kind: 'text',
    env: 'AUTH',
    flag: '--auth',
    default: 'tokens',
    arg: 'mode',
    doc: 'tokens: pushes and admin calls need a token; open: no checks, trusted networks only',
  },
  fsckIgnore: {
    kind: 'text',
    env: 'FSCK_IGNORE',
    flag: '--fsck-ignore',
    default: 'default',
    arg: 'ids',
    doc: "git fsck message ids let through in pushed and fetched objects: 'default' (git's warn-level checks, e.g. zeroPaddedFilemode, badTimezone), 'none', or a comma list",
  },
  minFreeDiskBytes: {
    kind: 'bytes',
    env: 'MIN_FREE_DISK',
    flag: '--min-free-disk',
    default: 256 * MIB,
    min: 1,
    doc: 'take no new writes with less free space under the data dir',
  },
  txnRetentionMs: {
    kind: 'ms',
    env: 'TXN_RETENTION',
    flag: '--txn-retention',
    default: 24 * HOUR,
    min: MINUTE,
    doc: 'prune transaction records older than this, at least 1m',
  },
  expiredCredentialRetentionMs: {
    kind: 'ms',
    env: 'EXPIRED_CREDENTIAL_RETENTION',
    flag: '--expired-credential-retention',
    default: 7 * 24 * HOUR,
    min: 1,
    doc: 'tokens and SSH keys that expired longer ago than this are deleted (until then they are listed, and refused with the time they expired)',
  },
  maxTokensPerUser: {
    kind: 'count',
    env: 'MAX_TOKENS_PER_USER',
    flag: '--max-tokens-per-user',
    default: 1000,
    min: 1,
    doc: 'unexpired tokens one user may hold; creating one more is a 409',
  },
  maxReposPerOwner: {
    kind: 'count',
    env: 'MAX_REPOS_PER_OWNER',
    flag: '--max-repos-per-owner',
    default: 10_000,
    min: 0,
    doc: 'repositories one user or organisation may hold (checked before and after a create; cluster admins may create past it); one more is a 409; 0: no cap',
  },
  maxOrgsPerUser: {
    kind: 'count',
    env: 'MAX_ORGS_PER_USER',
    flag: '--max-orgs-per-user',
    default: 100,
    min: 0,
    doc: 'organisations one user may have created that exist (the creator counts, not the owners; cluster admins may create past it); one more is a 409; 0: no cap',
  },
  maxApiWritesPerMinute: {
    kind: 'count',
    env: 'MAX_API_WRITES_PER_MINUTE',
    flag: '--max-api-writes-per-minute',
    default: 600,
    min: 0,
    doc: "REST writes (creates, deletes, grants, members, tokens, keys) one user may make through a node per minute, a minute's worth at once (cluster admins, and revoking a token or SSH key, are not counted); past it 429 with Retry-After; 0: no limit",
  },
  maxSshKeysPerUser: {
    kind: 'count',
    env: 'MAX_SSH_KEYS_PER_USER',
    flag: '--max-ssh-keys-per-user',
    default: 100,
    min: 1,
    doc: 'unexpired SSH keys one user may hold; adding one more is a 409',
  },
  shutdownGraceMs: {
    kind: 'ms',
    env: 'SHUTDOWN_GRACE',
    flag: '--shutdown-grace',
    default: 30 * SECOND,
    min: 0,
    doc: 'on SIGTERM, how long requests in flight may finish',
  },
  replaceAfterMs: {
    kind: 'ms',
    env: 'REPLACE_AFTER',
    flag: '--replace-after',
    default: 10 * MINUTE,
    min: 1,
    doc: 're-create the replicas of a node down this long',
  },
  tlsCert: {
    kind: 'text',
    env: 'TLS_CERT',
    flag: '--tls-cert',
    default: null,
    arg: 'pem',
    doc: 'serve HTTPS with this certificate (chain, PEM file); needs --tls-key',
  },
  tlsKey: { kind: 'text', env: 'TLS_KEY', flag: '--tls-key', default: null, arg: 'pem', doc: 'private key of --tls-cert' },
  tlsCa: {
    kind: 'text',
    env: 'TLS_CA',
    flag: '--tls-ca',
    default: null,
    arg: 'pem',
    doc: 'CA that https:// peers are verified against (default the system CAs)',
  },
  maxQueuedPushes: {
    kind: 'count',
    env: 'MAX_QUEUED_PUSHES',
    flag: '--max-queued-pushes',
    default: 256,
    min: 1,
    doc: 'pushes to one repo that may wait on one node; more are refused at once with a retry message',
  },
  maxRefsPerPush: {
    kind: 'count',
    env: 'MAX_REFS_PER_PUSH',
    flag: '--max-refs-per-push',
    default: 5000,
    min: 1,
    doc: 'refs one push may update; a push naming more is refused whole (push in batches)',
  },
  sshPort: {
    kind: 'text',
    env: 'SSH_PORT',
    flag: '--ssh-port',
    default: null,
    arg: 'port',
    doc: 'serve Git over SSH on this port (0: any free port; unset or off: no SSH)',
  },
  sshMaxConnectionsPerUser: {
    kind: 'count',
    env: 'SSH_MAX_PER_USER',
    flag: '--ssh-max-per-user',
    default: 10,
    min: 1,
    doc: 'SSH connections one user may hold at once',
  },
  sshIdleMs: {
    kind: 'ms',
    env: 'SSH_IDLE_TIMEOUT',
    flag: '--ssh-idle-timeout',
    default: 60 * SECOND,
    min: 1,
    doc: 'close an SSH connection without data this long',
  },
  sshSessionMs: {
    kind: 'ms',
    env: 'SSH_SESSION_TIMEOUT',
    flag: '--ssh-session-timeout',
    default: HOUR,
    min: 1,
    doc: 'close any SSH connection after this long',
  },
  sshHandshakeMs: {
    kind: 'ms',
    env: 'SSH_HANDSHAKE_TIMEOUT',
    default: 10 * SECOND,
    min: 1,
    doc: 'close an SSH connection not signed in this long after it was opened',
  },
  sshMaxAuthAttempts: {
    kind: 'count',
    env: 'SSH_MAX_AUTH_TRIES',
    flag: '--ssh-max-auth-tries',
    default: 6,
    min: 1,
    doc: 'keys a client may offer per SSH connection',
  },
  // Timers without a flag: tests shorten them through the environment (chaos/cluster.ts FAST_ENV).
  nodeTtlMs: { kind: 'ms', env: 'NODE_TTL_MS', default: 5 * SECOND, min: 1, doc: 'a node missing heartbeats this long counts as down' },
  lockTtlMs: {
    kind: 'ms',
    env: 'LOCK_TTL_MS',
    default: 15 * SECOND,
    min: 1,
    doc: 'a repo write lock held by a dead node expires after this',
  },
  lockWaitMs: {
    kind: 'ms',
    env: 'LOCK_WAIT_MS',
    default: 30 * SECOND,
    min: 1,
    doc: 'how long a write waits for a contested repo write lock before 503 busy',
  },
  prepareTimeoutMs: {
    kind: 'ms',
    env: 'PREPARE_TIMEOUT_MS',
    default: 2 * MINUTE,
    min: 1,
    doc: "how long a coordinator waits for a replica's prepare (pack included)",
  },
  commitTimeoutMs: {
    kind: 'ms',
    env: 'COMMIT_TIMEOUT_MS',
    default: 30 * SECOND,
    min: 1,
    doc: "how long a coordinator waits for a replica's commit or abort",
  },
  peerTimeoutMs: { kind: 'ms', env: 'PEER_TIMEOUT_MS', default: 30 * SECOND, min: 1, doc: 'default time-out of other peer calls' },
  settleMs: {
    kind: 'ms',
    env: 'SETTLE_MS',
    default: 10 * SECOND,
    min: 1,
    doc: 'how long a coordinator whose decision write failed keeps asking the store which decision stands',
  },
  maxGroupPushes: {
    kind: 'count',
    env: 'MAX_GROUP_PUSHES',
    default: 64,
    min: 1,
    doc: 'queued pushes to one repo that join one replicated transaction',
  },
  courtesyMs: {
    kind: 'ms',
    env: 'COURTESY_MS',
    default: 0,
    min: 0,
    doc: 'after a transaction on a repo another node also wanted, a node with more pushes queued waits this long (plus up to half again) before it takes the lock again (0: not at all; the lock line already hands the lock to nodes in turn)',
  },
  uploadWaitMs: {
    kind: 'ms',
    env: 'UPLOAD_WAIT_MS',
    default: 30 * SECOND,
    min: 1,
    doc: 'how long a clone or fetch waits for a swap or drop of its replica to finish',
  },
  swapLockWaitMs: {
    kind: 'ms',
    env: 'SWAP_LOCK_WAIT_MS',
    default: 10 * SECOND,
    min: 1,
    doc: "how long a replica copied by repair waits for the repo's write lock to be swapped in, and a steward's change of a replica set for it; also bounds a fetch repair's last round under that lock (its wait and its fetch)",
  },
  commitWaitMs: {
    kind: 'ms',
    env: 'COMMIT_WAIT_MS',
    default: 3 * SECOND,
    min: 1,
    doc: 'how long a replica one generation behind is taken for a commit on its way: a push waits for its own replica, a read for a first confirmation, repair before it starts',
  },
  catchUpMs: {
    kind: 'ms',
    env: 'CATCH_UP_MS',
    default: 10 * SECOND,
    min: 1,
    doc: "how long a push waits for this node's replica to be caught up before 'replica catching up'",
  },
  resolveAfterMs: {
    kind: 'ms',
    env: 'RESOLVE_AFTER_MS',
    default: 5 * SECOND,
    min: 1,
    doc: 'a participant prepared this long asks the store for the decision',
  },
  stageTtlMs: {
    kind: 'ms',
    env: 'STAGE_TTL_MS',
    default: 5 * MINUTE,
    min: 1,
    doc: 'how long a pack staged ahead of its prepare is kept for it',
  },
  gitTimeoutMs: {
    kind: 'ms',
    env: 'GIT_TIMEOUT_MS',
    default: HOUR,
    min: 1,
    doc: 'longest a git process of a request, prepare, repair, repack or fsck may run',
  },
  repairIntervalMs: {
    kind: 'ms',
    env: 'REPAIR_INTERVAL_MS',
    default: SECOND,
    min: 0,
    doc: 'how often the repair pass runs (0: this node repairs nothing)',
  },
  lfsSyncIntervalMs: {
    kind: 'ms',
    env: 'LFS_SYNC_INTERVAL_MS',
    flag: '--lfs-sync-interval',
    default: 10 * MINUTE,
    min: 0,
    doc: 'how often a node fetches the Git LFS objects its replicas lack from the other replicas, and sweeps those of replicas gone (0: never, not even after a repair; objects come only as they are read)',
  },
  verifyIntervalMs: {
    kind: 'ms',
    env: 'VERIFY_INTERVAL_MS',
    default: 5 * MINUTE,
    min: 0,
    doc: 'how often in-sync replicas are checksummed (0: never)',
  },
  fsckIntervalMs: {
    kind: 'ms',
    env: 'FSCK_INTERVAL_MS',
    default: HOUR,
    min: 0,
    doc: 'how often replicas get git fsck --connectivity-only (0: never)',
  },
  stewardIntervalMs: { kind: 'ms', env: 'STEWARD_INTERVAL_MS', default: 2 * SECOND, min: 1, doc: 'how often the steward checks placement' },
  fullPassMs: {
    kind: 'ms',
    env: 'FULL_PASS_MS',
    default: 30 * SECOND,
    min: 1,
    doc: 'repair and steward passes read every repo at least this often, even when the change feed names none',
  },
  repackAfterPacks: {
    kind: 'count',
    env: 'REPACK_AFTER_PACKS',
    default: 20,
    min: 0,
    doc: 'an in-sync replica with more packs than this is repacked (0: never)',
  },
  gitSpawnHelper: {
    kind: 'text',
    env: 'GIT_SPAWN_HELPER',
    default: 'on',
    arg: 'on|off|c|python|node',
    doc: 'on: git is started by a small helper process, cheaper to fork than the node (c: the compiled C helper, python: the Python helper, node: the Node.js one; on: C when it was built, else Python when python3 is on PATH); off: by the node itself',
  },
  // For tests: fault injection and protocol versions (upgrade tests run old and new side by side).
  failpoints: {
    kind: 'text',
    env: 'GIT_REPLICATION_FAILPOINTS',
    default: null,
    doc: 'fault points, e.g. participant.afterPrepare=crash (an unknown name stops start-up)',
  },
  protocol: {
    kind: 'text',
    env: 'GIT_REPLICATION_PROTOCOL',
    default: null,
    doc: "replication protocol versions this node speaks, N or N-M (default this build's)",
  },
} as const satisfies Record<string, SettingSpec>;

/** SettingName names a setting. */
export type SettingName = keyof typeof SETTINGS;

type ValueOf<S extends SettingSpec> = S['kind'] extends 'text'
  ? S['default'] extends string
    ? string
    : string | undefined
  : S['default'] extends number
    ? number
    : number | undefined;

/** Settings are the values a node runs with, read and checked once at start. */
export type Settings = { readonly [K in SettingName]: ValueOf<(typeof SETTINGS)[K]> };

/** Timing is the write path's and the workers' time-outs and waits, handed down from app.ts. */
export type Timing = Pick<
  Settings,
  | 'lockWaitMs'
  | 'prepareTimeoutMs'
  | 'commitTimeoutMs'
  | 'peerTimeoutMs'
  | 'commitWaitMs'
  | 'catchUpMs'
  | 'gitTimeoutMs'
  | 'settleMs'
  | 'courtesyMs'
  | 'uploadWaitMs'
  | 'swapLockWaitMs'
  | 'fullPassMs'
>;

/** ConfigError says a setting's value is refused; its message is one line naming the setting. */
export class ConfigError extends Error {
  constructor(
    readonly setting: SettingName,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** DEFAULTS are the settings' defaults (null where unset or derived). */
export const DEFAULTS = Object.freeze(Object.fromEntries(Object.entries(SETTINGS).map(([k, s]) => [k, s.default]))) as {
  readonly [K in SettingName]: (typeof SETTINGS)[K]['default'];
};

/** optionKey is the property commander gives a flag's value: `--body-idle-timeout` → `bodyIdleTimeout`. */
export function optionKey(flag: string): string {
  return flag.replace(/^--/, '').replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** label names a setting as an operator sets it: `--flag (ENV)` or `ENV`. */
export function settingLabel(name: SettingName): string {
  const s: SettingSpec = SETTINGS[name];
  return s.flag ? `${s.flag} (${s.env})` : s.env;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: SECOND, m: MINUTE, h: HOUR };
const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: MIB, g: 1024 * MIB };

/** parseValue reads one setting's text; throws ConfigError naming it. */
function parseValue(name: SettingName, text: string): number | string {
  const spec: SettingSpec = SETTINGS[name];
  if (spec.kind === 'text') return text;
  const bad = (why: string): ConfigError => new ConfigError(name, `${settingLabel(name)}: ${why}, got '${text.slice(0, 40)}'`);
  let n: number;
  if (spec.kind === 'ms') {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
    if (!m) throw bad('must be a duration such as 500ms, 90s, 10m, 1h (plain numbers are ms)');
    n = Number(m[1]) * (DURATION_UNITS[m[2] ?? 'ms'] ?? 1);
  } else if (spec.kind === 'bytes') {
    const m = /^(\d+(?:\.\d+)?)([kmg])?i?b?$/i.exec(text.trim());
    if (!m) throw bad('must be a size such as 512k, 100m, 2g (plain numbers are bytes)');
    n = Math.round(Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? 1));
  } else {
    if (!/^\d+$/.test(text.trim())) throw bad('must be a non-negative integer');
    n = Number(text.trim());
  }
  // A size may be huge (a test sets MIN_FREE_DISK=100000000g to simulate a full disk): it is rounded, never fractional.
  if (spec.kind === 'bytes' ? !Number.isFinite(n) : !Number.isSafeInteger(n))
    throw bad(`must be a whole number of ${spec.kind === 'ms' ? 'milliseconds' : spec.kind === 'bytes' ? 'bytes' : 'units'}`);
  if (spec.min !== undefined && n < spec.min)
    throw bad(`must be at least ${spec.min}${spec.kind === 'ms' ? ' ms' : spec.kind === 'bytes' ? ' bytes' : ''}`);
  return n;
}

/**
 * loadSettings reads every setting from `flags` (commander's option values, by optionKey) or
 * else `env`, else its default, and checks each: a value that is not a whole number of its unit,
 * or below its minimum, throws ConfigError. The result is frozen.
 */
export function loadSettings(flags: Readonly<Record<string, unknown>>, env: NodeJS.ProcessEnv): Settings {
  const out: Record<string, number | string | null> = {};
  for (const name of Object.keys(SETTINGS) as SettingName[]) {
    const spec: SettingSpec = SETTINGS[name];
    const fromFlag = spec.flag ? flags[optionKey(spec.flag)] : undefined;
    const text = typeof fromFlag === 'string' ? fromFlag : env[spec.env];
    out[name] = text === undefined || text === '' ? spec.default : parseValue(name, text);
  }
  for (const [k, v] of Object.entries(out)) if (v === null) delete out[k];
  return Object.freeze(out) as unknown as Settings;
}

/** describeDefault writes a default as an operator would type it (`30s`, `256m`), for help and docs. */
export function describeDefault(name: SettingName): string {
  const spec: SettingSpec = SETTINGS[name];
  const d = spec.default;
  if (d === null) return '';
  if (typeof d === 'string' || spec.kind === 'count' || d === 0) return String(d);
  const units: Array<[string, number]> =
    spec.kind === 'ms'
      ? [
          ['h', HOUR],
          ['m', MINUTE],
          ['s', SECOND],
          ['ms', 1],
        ]
      : [
          ['g', 1024 * MIB],
          ['m', MIB],
          ['k', 1024],
          ['', 1],
        ];
  const [unit, size] = units.find(([, u]) => d % u === 0) ?? ['', 1];
  return `${d / size}${unit}`;
}

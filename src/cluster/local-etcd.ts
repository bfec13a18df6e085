import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, closeSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** ETCD_INSTALL_HINT tells a user without etcd how to get it. */
export const ETCD_INSTALL_HINT =
  'install etcd (Debian/Ubuntu: apt-get install etcd-server; elsewhere a release from https://github.com/etcd-io/etcd/releases), ' +
  'set ETCD_BIN to its path, or pass --etcd-url to use an etcd that is already running';

/** PEER_PORT_OFFSET is how far the peer port sits above the client port. */
const PEER_PORT_OFFSET = 1;
const HEALTH_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const LOG_TAIL_CHARS = 4_000;

/**
 * findEtcdBinary returns an executable `etcd`: $ETCD_BIN when set (and only it), else the first on
 * PATH, else /usr/bin/etcd or /usr/local/bin/etcd; null when there is none.
 */
export function findEtcdBinary(env: NodeJS.ProcessEnv = process.env): string | null {
  const candidates = env.ETCD_BIN
    ? [env.ETCD_BIN]
    : [
        ...(env.PATH ?? '')
          .split(delimiter)
          .filter(Boolean)
          .map((dir) => join(dir, 'etcd')),
        '/usr/bin/etcd',
        '/usr/local/bin/etcd',
      ];
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not there or not executable: try the next
    }
  }
  return null;
}

/** LocalEtcdOptions configure a single-member etcd for a local cluster. */
export interface LocalEtcdOptions {
  /** dir holds the member's data (`<dir>/data`) and its log (`<dir>/etcd.log`). */
  readonly dir: string;
  /** clientPort is where nodes connect; the peer port is clientPort + 1 unless peerPort is given. */
  readonly clientPort: number;
  readonly peerPort?: number;
  /** binary is the etcd executable; default findEtcdBinary(). */
  readonly binary?: string;
  readonly healthTimeoutMs?: number;
}

/** LocalEtcd is a running etcd process owned by `git-replication up`. */
export interface LocalEtcd {
  /** url is the client URL, `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** storeUrl is the `--store` value nodes use: `etcd://127.0.0.1:PORT`. */
  readonly storeUrl: string;
  readonly pid: number;
  readonly dataDir: string;
  readonly logFile: string;
  /** exited resolves when the process exits, with its exit code or signal. */
  readonly exited: Promise<string>;
  /** running says whether the process has not exited. */
  running(): boolean;
  /** stop ends etcd with SIGTERM (SIGKILL after 10 s) and waits for it to exit. */
  stop(): Promise<void>;
  /** killNow sends SIGKILL without waiting, for a process that is exiting anyway. */
  killNow(): void;
}

/** EtcdMember is one member of an etcd cluster. */
export interface EtcdMember {
  readonly name: string;
  /** host is the address the member listens on and advertises (default 127.0.0.1). */
  readonly host?: string;
  readonly dataDir: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** initialCluster is `name=peerUrl,...` of every member; default this member alone. */
  readonly initialCluster?: string;
  readonly clusterToken: string;
  /** fastElection shortens raft's timers so a new leader is elected well under a second after a kill (tests). */
  readonly fastElection?: boolean;
}

/**
 * etcdArgs is the command line of one etcd member: the one place `up` and the tests' etcd
 * clusters get their etcd flags from. It sets no logging flags: their names changed between
 * 3.3 and 3.5.
 */
export function etcdArgs(m: EtcdMember): string[] {
  const host = m.host ?? '127.0.0.1';
  const client = `http://${host}:${m.clientPort}`;
  const peer = `http://${host}:${m.peerPort}`;
  return [
    `--name=${m.name}`,
    `--data-dir=${m.dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${m.initialCluster ?? `${m.name}=${peer}`}`,
    `--initial-cluster-token=${m.clusterToken}`,
    '--initial-cluster-state=new',
    // Keep one hour of history; older revisions are compacted so the database does not grow without bound.
    '--auto-compaction-mode=periodic',
    '--auto-compaction-retention=1h',
    ...(m.fastElection ? ['--heartbeat-interval=50', '--election-timeout=500'] : []),
  ];
}

/** etcdEnv is the environment without inherited ETCD_* variables, which etcd reads as flags. */
export function etcdEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('ETCD_')) env[key] = value;
  }
  // Debian's etcd 3.4 refuses to start on architectures other than amd64 unless told to.
  const goArch: Record<string, string> = { arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x', arm: 'arm', ia32: '386' };
  const arch = goArch[process.arch];
  if (arch) env.ETCD_UNSUPPORTED_ARCH = arch;
  return env;
}

async function logTail(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.slice(-LOG_TAIL_CHARS).trim();
}

/**
 * startLocalEtcd starts a single-member etcd on 127.0.0.1 (client and peer ports), its data under
 * `<dir>/data` so a restart of `up` keeps the cluster's records, and waits until it reports
 * healthy. The process gets its own process group, so a terminal's Ctrl-C reaches only `up`,
 * which stops the nodes before etcd.
 */
export async function startLocalEtcd(opts: LocalEtcdOptions): Promise<LocalEtcd> {
  const binary = opts.binary ?? findEtcdBinary();
  if (!binary) throw new Error(`no etcd binary found on PATH or in /usr/bin: ${ETCD_INSTALL_HINT}`);
  const clientPort = opts.clientPort;
  const peerPort = opts.peerPort ?? clientPort + PEER_PORT_OFFSET;
  for (const [name, port] of [
    ['client', clientPort],
    ['peer', peerPort],
  ] as const) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`etcd ${name} port ${port} out of range`);
  }
  const dataDir = join(opts.dir, 'data');
  const logFile = join(opts.dir, 'etcd.log');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const url = `http://127.0.0.1:${clientPort}`;

  // Something answering on the client port is another etcd (perhaps from an earlier `up`), which would make ours fail to bind.
  if (await etcdHealthy(url)) {
    throw new Error(`an etcd already answers at ${url}: stop it, pass --etcd-url ${url} to use it, or choose another --etcd-port`);
  }

  const args = etcdArgs({ name: 'local', dataDir, clientPort, peerPort, clusterToken: 'git-replication-local' });
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, args, { stdio: ['ignore', fd, fd], env: etcdEnv(), detached: true });
  } finally {
    closeSync(fd);
  }
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ?? String(code)));
    child.once('error', (err) => resolve(err.message));
  });
  let spawnError: Error | null = null;
  child.once('error', (err) => {
    spawnError = err;
  });
  const running = (): boolean => spawnError === null && child.exitCode === null && child.signalCode === null;

  const handle: LocalEtcd = {
    url,
    storeUrl: `etcd://127.0.0.1:${clientPort}`,
    get pid(): number {
      return child.pid ?? -1;
    },
    dataDir,
    logFile,
    exited,
    running,
    async stop(): Promise<void> {
      if (!running()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (running()) child.kill('SIGKILL');
      }, STOP_TIMEOUT_MS);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    killNow(): void {
      if (running()) child.kill('SIGKILL');
    },
  };

  const deadline = Date.now() + (opts.healthTimeoutMs ?? HEALTH_TIMEOUT_MS);
  for (;;) {
    if (!running()) {
      const why = spawnError
        ? `could not start ${binary}: ${(spawnError as Error).message}`
        : `etcd exited with ${child.signalCode ?? child.exitCode}`;
      throw new Error(`${why}; its log (${logFile}) ends with:\n${await logTail(logFile)}`);
    }
    if (await etcdHealthy(url)) return handle;
    if (Date.now() > deadline) {
      await handle.stop();
      throw new Error(
        `etcd at ${url} did not become healthy in ${opts.healthTimeoutMs ?? HEALTH_TIMEOUT_MS} ms; its log (${logFile}) ends with:\n${await logTail(logFile)}`,
      );
    }
    await sleep(100);
  }
}

/** etcdHealthy says whether an etcd answers `GET /health` with a leader. */
export async function etcdHealthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) });
    const body = (await res.json()) as { health?: unknown };
    return res.ok && (body.health === 'true' || body.health === true);
  } catch {
    return false;
  }
}

/**
 * etcdStoreUrl turns `--etcd-url` (`http://host:port[,http://host:port]` or `host:port,...`, an
 * `etcd://` URL passes through) into the nodes' `--store` value.
 */
export function etcdStoreUrl(value: string): string {
  const v = value.trim();
  if (v.startsWith('etcd://')) return v;
  const hosts = v
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean)
    .map((h) => h.replace(/^https?:\/\//, '').replace(/\/+$/, ''));
  if (hosts.length === 0 || hosts.some((h) => !/^[A-Za-z0-9.[\]:-]+:\d+$/.test(h))) {
    throw new Error(`--etcd-url '${value}' must be http://host:port[,http://host:port...]`);
  }
  return `etcd://${hosts.join(',')}`;
}

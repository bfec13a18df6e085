import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdir, readdir, realpath, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { openCursor, PeerVerifier, repairHop, sealCursor, signHop, signRoute, verifyHop, verifyRoute } from './auth/peer-signature.js';
import { AuditLog } from './auth/audit.js';
import { Directory } from './auth/directory.js';
import { WriteRate } from './http/write-rate.js';
import { Authenticator } from './auth/tokens.js';
import { defaultAdvertiseUrl } from './cluster/advertise.js';
import { DataDirLock } from './cluster/data-dir-lock.js';
import { StartupSteps } from './cluster/startup.js';
import { DiskSpace } from './cluster/disk.js';
import { PROTOCOL, type ProtocolRange } from './cluster/protocol.js';
import { LoadSampler } from './cluster/load.js';
import { Membership } from './cluster/membership.js';
import { PeerClient } from './cluster/peer-client.js';
import { loadTls, type TlsFiles } from './cluster/tls.js';
import type { Timing } from './config.js';
import { errorMessage } from './domain/errors.js';
import type { Logger } from './domain/logger.js';
import { HookServer, pickRelay, relayHooksDir } from './git/proc-receive.js';
import { ReplicaStorage } from './git/repo-storage.js';
import { GitRunner } from './git/runner.js';
import { HELPERS, pickHelper, SpawnHelper, type HelperKind } from './git/spawner.js';
import { REF_SESSION_IDLE_MS, REF_SESSIONS_MAX, RefSessions } from './git/update-ref.js';
import type { NodeDeps } from './http/deps.js';
import { buildHttpApp } from './http/server.js';
import { guardConnections, PeerAddresses, resolvePeerAddresses } from './http/connection-guard.js';
import { Metrics } from './metrics.js';
import { RepoActivity } from './replication/activity.js';
import { Coordinator } from './replication/coordinator.js';
import { Failpoints } from './replication/failpoints.js';
import { Participant } from './replication/participant.js';
import { Maintenance } from './replication/maintenance.js';
import { RepairWorker } from './replication/repair.js';
import { ReplicaVerifier } from './replication/verifier.js';
import { Router } from './replication/router.js';
import { Steward } from './replication/steward.js';
import { SshKeys } from './auth/ssh-keys.js';
import { forgetSshEndpoint, SSH_DEFAULTS, startSshServer, type SshLimits } from './ssh/server.js';
import { TxnLog } from './replication/txn-log.js';
import { countStoreCalls } from './store/counted.js';
import { sweepLeftovers } from './git/leftovers.js';
import { DEFAULT_MAX_LFS_OBJECT_BYTES, LfsObjects } from './lfs/objects.js';
import { LfsService } from './lfs/service.js';
import { LfsSync } from './lfs/sync.js';
import { LfsLocks } from './lfs/locks.js';
import { parseRepoId } from './domain/repo-id.js';
import { checkLayout, openStore, type StoreUrl } from './store/open.js';
import type { ClusterStore } from './store/types.js';

/** VERSION is the project's version, reported in /health and the node registration. */
export const VERSION = '0.1.0';

/** NodeConfig is everything `serve` configures. */
export interface NodeConfig {
  readonly nodeId: string;
  readonly host: string;
  readonly port: number;
  /** advertiseUrl is the URL peers and proxies use; default http(s)://<host>:<port>, a wildcard host replaced by the machine's address (defaultAdvertiseUrl). */
  readonly advertiseUrl?: string;
  /** publicUrl is the URL clients reach the cluster at, for the links given to git-lfs (null: each request's own). */
  readonly publicUrl?: string | null;
  readonly dataDir: string;
  readonly store: StoreUrl;
  readonly writeQuorum: number | undefined;
  readonly replicationFactor: number;
  readonly maxGitProcesses: number;
  /** maxGitPerClient caps the git processes one client address holds. */
  readonly maxGitPerClient: number;
  /** gitSlotWaitMs is how long a git request waits in line for a process slot before its 503. */
  readonly gitSlotWaitMs: number;
  /** fsckIgnore: git's fsck message ids let through (git/fsck-policy.ts). */
  readonly fsckIgnore: readonly string[];
  /** minFreeDiskBytes: with less free space under the data dir the node takes no new writes. */
  readonly minFreeDiskBytes: number;
  /** txnRetentionMs: transaction records (store and local log) older than this are pruned. */
  readonly txnRetentionMs: number;
  /** expiredCredentialRetentionMs: tokens and SSH keys expired longer ago than this are deleted. */
  readonly expiredCredentialRetentionMs: number;
  /** maxTokensPerUser: unexpired tokens one user may hold. */
  readonly maxTokensPerUser: number;
  /** maxReposPerOwner: repositories one user or organisation may hold (0: no cap). */
  readonly maxReposPerOwner: number;
  /** maxOrgsPerUser: organisations one user may have created that exist (0: no cap). */
  readonly maxOrgsPerUser: number;
  /** maxApiWritesPerMinute: REST writes one user may make through this node a minute (0: no limit). */
  readonly maxApiWritesPerMinute: number;
  /** maxSshKeysPerUser: unexpired SSH keys one user may hold. */
  readonly maxSshKeysPerUser: number;
  /** shutdownGraceMs is how long SIGTERM waits for requests in flight before killing their git processes. */
  readonly shutdownGraceMs: number;
  /** headersTimeoutMs bounds a request's headers, a connection's first request and a TLS handshake. */
  readonly headersTimeoutMs: number;
  /** maxConnections caps the HTTP connections open at once (connection-guard.ts). */
  readonly maxConnections: number;
  /** maxConnectionsPerAddress caps one client address's share of them (0: no cap). */
  readonly maxConnectionsPerAddress: number;
  /** bodyIdleMs ends a git request whose body is silent this long (408). */
  readonly bodyIdleMs: number;
  /** sendIdleMs ends a git answer whose client's socket has not drained this long (0: never). */
  readonly sendIdleMs: number;
  /** maxPushBytes is the largest pack a push may send (receive.maxInputSize; 413). */
  readonly maxPushBytes: number;
  /** maxLfsObjectBytes is the largest Git LFS object an upload may send (413). */
  readonly maxLfsObjectBytes?: number;
  /** maxUploadRequestBytes is the largest fetch request, decompressed (413). */
  readonly maxUploadRequestBytes: number;
  /** maxInflateRatio bounds how much a gzip request body may inflate (413). */
  readonly maxInflateRatio: number;
  readonly nodeTtlMs: number;
  readonly lockTtlMs: number;
  readonly resolveAfterMs: number;
  /** stageTtlMs is how long a pack staged ahead of its prepare is kept for it. */
  readonly stageTtlMs: number;
  readonly repairIntervalMs: number;
  /** lfsSyncIntervalMs: how often LFS objects a replica lacks are fetched from the others (0: never; absent: 10 min). */
  readonly lfsSyncIntervalMs?: number;
  readonly verifyIntervalMs: number;
  readonly fsckIntervalMs: number;
  /** repackAfterPacks: an in-sync replica with more packs than this is repacked (0: never). */
  readonly repackAfterPacks: number;
  /** replaceAfterMs: a node down this long has its replicas re-created elsewhere. */
  readonly replaceAfterMs: number;
  readonly stewardIntervalMs: number;
  /** timing: the write path's and the workers' time-outs and waits (src/config.ts). */
  readonly timing: Timing;
  /** maxGroupPushes: queued pushes to one repo that join one transaction. */
  readonly maxGroupPushes: number;
  /** maxQueuedPushes: pushes to one repo that may wait on this node. */
  readonly maxQueuedPushes: number;
  /** maxRefsPerPush: refs one push may update. */
  readonly maxRefsPerPush: number;
  /**
   * gitSpawnHelper: start git through the spawn helper (the setting's default is on; absent here:
   * off). true takes the cheapest that runs here (pickHelper: C, Python, Node.js).
   */
  readonly gitSpawnHelper?: boolean | HelperKind;
  /** failpoints: the fault points armed (tests; src/replication/failpoints.ts). */
  readonly failpoints?: string;
  /** protocol: the replication protocol versions this node speaks (default PROTOCOL, this build's). */
  readonly protocol?: ProtocolRange;
  /** auth: `tokens` (writes need a token) or `open` (anyone who can reach the node is admin). */
  readonly auth: 'open' | 'tokens';
  readonly logLevel: string;
  /** tls: with `cert` and `key` the node serves HTTPS; `ca` verifies `https://` peers. Read at start. */
  readonly tls?: TlsFiles;
  /** sshPort: serve Git over SSH on this port (0: any free port); absent: no SSH server. */
  readonly sshPort?: number;
  /** sshLimits bound SSH clients (default SSH_DEFAULTS). */
  readonly sshLimits?: SshLimits;
}

/** DEFAULTS are the node's defaults (src/config.ts, where every setting is described). */
export { DEFAULTS } from './config.js';

/** RunningNode is a started node. */
export interface RunningNode {
  readonly url: string;
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

/**
 * startNode is the composition root: it builds every dependency once, recovers what a previous
 * incarnation left (DESIGN §5 restart rules: reap git processes, resolve the transaction log,
 * remove stale lock files), then serves.
 */
export async function startNode(cfg: NodeConfig): Promise<RunningNode> {
  const logger = pino({ level: cfg.logLevel, base: { node: cfg.nodeId } }) as unknown as Logger & FastifyInstance['log'];
  const tls = await loadTls(cfg.tls ?? {});
  // The data dir holds the store (with the peer secret), the txn log and every replica: this
  // user's alone. The umask covers what the node and its git processes create from now on.
  process.umask(0o077);
  await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
  const dataDir = await realpath(cfg.dataDir);
  // Before anything here touches what a running node uses (its git processes, its spawn socket).
  const dirLock = DataDirLock.take(dataDir);
  try {
    return await startLocked(cfg, logger, tls, dataDir, dirLock);
  } catch (err) {
    dirLock.release();
    throw err;
  }
}

/** startLocked is startNode's rest, once the data directory is this process's (DataDirLock). */
async function startLocked(
  cfg: NodeConfig,
  logger: Logger & FastifyInstance['log'],
  tls: Awaited<ReturnType<typeof loadTls>>,
  dataDir: string,
  dirLock: DataDirLock,
): Promise<RunningNode> {
  await restrictPermissions(dataDir, cfg.store);
  // With GIT_SPAWN_HELPER=on, git is started by a small helper process: forking the node itself costs it more (src/git/spawner.ts);
  // the C helper (posix_spawn) if it was built, else Python (vfork), else the Node.js one (pickHelper).
  // Its socket is this incarnation's: a helper of an earlier one still finishing a request
  // would otherwise connect git's streams to this node, under a child id that is reused here.
  for (const f of await readdir(dataDir)) if (/^spawn(-\d+)?\.sock$/.test(f)) await unlink(join(dataDir, f)).catch(() => undefined);
  const helperKind = cfg.gitSpawnHelper === true ? pickHelper() : cfg.gitSpawnHelper || null;
  const spawnHelper =
    helperKind === null ? null : new SpawnHelper(join(dataDir, `spawn-${process.pid}.sock`), (m) => logger.warn(m), HELPERS[helperKind]);
  // The proc-receive relay receive-pack runs per push: the compiled C one, else Perl, else bash.
  const relay = pickRelay();
  const relayDir = relayHooksDir(relay);
  if (spawnHelper && !(await spawnHelper.start())) logger.warn({ relay }, 'spawn helper not started: the node spawns git itself');
  else logger.info({ helper: spawnHelper?.kind ?? 'none', relay }, 'how git processes are started');
  const git = new GitRunner({
    owner: dataDir,
    instance: randomUUID(),
    maxProcesses: cfg.maxGitProcesses,
    maxPerClient: cfg.maxGitPerClient,
    slotWaitMs: cfg.gitSlotWaitMs,
    ...(spawnHelper ? { helper: spawnHelper } : {}),
  });
  const steps = new StartupSteps(logger);
  const reaped = await steps.run('reap previous git processes', () => git.reapPrevious());
  if (reaped > 0) logger.warn({ reaped }, 'killed git processes left by a previous incarnation');

  const metrics = new Metrics();
  const store: ClusterStore = countStoreCalls(await steps.run('open the store', () => openStore(cfg.store)), metrics.storeOps);
  await steps.run('check the layout', () => checkLayout(store));
  const secret = await steps.run('read the peer secret', () => store.setMetaIfAbsent('peer_secret', randomBytes(32).toString('hex')));
  const directory = new Directory(store, { maxReposPerOwner: cfg.maxReposPerOwner, maxOrgsPerUser: cfg.maxOrgsPerUser });
  const auth = new Authenticator(store, cfg.auth, directory, undefined, cfg.maxTokensPerUser);
  // git-lfs over SSH: git-lfs-authenticate's tickets, signed with the cluster's secret, are good on any node.
  auth.acceptLfsTickets(secret);
  if (cfg.auth === 'tokens') {
    const token = await steps.run('bootstrap the admin', () => auth.bootstrapAdmin());
    if (token) {
      const file = join(dataDir, 'admin-token');
      await writeFile(file, `${token}\n`, { mode: 0o600 });
      logger.warn({ file }, 'first start of the cluster: admin token written (mode 0600); it is not shown again');
    }
  }
  const storage = new ReplicaStorage(dataDir, git);
  await steps.run('prepare the data directory', () => storage.init());
  // A replica's LFS objects go with it: its repository deleted, or its replica dropped or replaced by another incarnation's.
  const lfsObjects = new LfsObjects(dataDir);
  await steps.run('prepare the LFS object directory', () => lfsObjects.init());
  storage.onGone = (incarnation) => lfsObjects.removeIncarnation(incarnation);
  const failpoints = new Failpoints(cfg.failpoints);
  const txnLog = await steps.run('open the transaction log', () => new TxnLog(join(dataDir, 'node.db')));
  if (txnLog.unconverted !== null)
    logger.warn(
      { err: txnLog.unconverted },
      'the transaction log could not be converted to give freed pages back (it is used as it is; tried again at the next start)',
    );
  const activity = new RepoActivity({ nodeId: cfg.nodeId, store, lockTtlMs: cfg.lockTtlMs, uploadWaitMs: cfg.timing.uploadWaitMs, logger });
  const disk = new DiskSpace(dataDir, cfg.minFreeDiskBytes);
  await steps.run('read the free disk space', () => disk.start());
  const replicaVerifier = new ReplicaVerifier({
    nodeId: cfg.nodeId,
    store,
    storage,
    git,
    logger,
    metrics,
    gitTimeoutMs: cfg.timing.gitTimeoutMs,
  });
  // A replica's update-ref process is kept for its next transaction (src/git/update-ref.ts).
  const refSessions = new RefSessions({
    idleMs: REF_SESSION_IDLE_MS,
    max: REF_SESSIONS_MAX,
    onTake: (kept) => metrics.refSessions.inc({ process: kept ? 'kept' : 'new' }),
  });
  const late: { coordinator?: Coordinator; lfs?: LfsService; lfsSync?: LfsSync } = {};
  const participant = new Participant({
    nodeId: cfg.nodeId,
    refSessions,
    store,
    storage,
    git,
    log: txnLog,
    logger,
    failpoints,
    activity,
    diskShortage: () => disk.shortage(),
    fsckIgnore: cfg.fsckIgnore,
    resolveAfterMs: cfg.resolveAfterMs,
    commitWaitMs: cfg.timing.commitWaitMs,
    gitTimeoutMs: cfg.timing.gitTimeoutMs,
    stageTtlMs: cfg.stageTtlMs,
    maxUploadCopies: cfg.maxGitProcesses,
    maxUploadCopyBytes: cfg.maxPushBytes,
    onConnectivity: (at) => metrics.connectivityChecks.inc({ at }),
    onCopyCheck: (by) => metrics.copyChecks.inc({ by }),
    onCreated: (repoId, incarnation) => replicaVerifier.created(repoId, incarnation),
    // The coordinator is made below: a commit of the start-up's recovery (before it) has no refs to carry.
    onPushCommitted: (c) => late.coordinator?.advanceKnownRefs(c),
  });
  await steps.run('resolve in-doubt transactions', () => participant.recover());
  const swept = await steps.run('sweep leftovers', () =>
    sweepLeftovers(
      storage.reposDir,
      storage.tmpDir,
      txnLog.prepared().flatMap((t) => [...(t.payload.keepFiles ?? []), t.payload.stagingPath ?? '']),
    ),
  );
  if (swept > 0) logger.warn({ removed: swept }, 'removed lock and temporary files left by dead git processes');
  const lfsSwept = await steps.run('sweep LFS objects of replicas gone', () => lfsObjects.sweep(lfsKept(cfg.nodeId, store, storage)));
  if (lfsSwept > 0) logger.warn({ incarnations: lfsSwept }, 'removed the LFS objects of replicas no longer on this node');

  const protocol = cfg.protocol ?? PROTOCOL;
  const peers = new PeerClient({
    nodeId: cfg.nodeId,
    secret: () => secret,
    timeoutMs: cfg.timing.peerTimeoutMs,
    protocol,
    ...(tls.ca ? { ca: tls.ca.pem } : {}),
  });
  const url = cfg.advertiseUrl ?? defaultAdvertiseUrl(tls.server ? 'https' : 'http', cfg.host, cfg.port);
  // The epoch names this incarnation: signatures made for an earlier one are refused.
  const epoch = new Date().toISOString();
  // The members' addresses, let past the caps on client connections: resolved from their URLs
  // once this node has joined the membership and every 30 s, and learned from each verified member call.
  const peerAddresses = new PeerAddresses();
  // One lookup at a time, so an older one cannot land after a newer one.
  let naming: Promise<void> = Promise.resolve();
  const namePeers = (urls: readonly string[]): Promise<void> =>
    (naming = naming.then(async () => peerAddresses.name(await resolvePeerAddresses(urls))));
  const membership = new Membership(
    { id: cfg.nodeId, url, version: VERSION, startedAt: epoch, protocol },
    {
      store,
      peers,
      logger,
      ttlMs: cfg.nodeTtlMs,
      onHeartbeat: (s, ok) => metrics.observeHeartbeat(s, ok),
      onPeers: (urls) => void namePeers(urls),
    },
  );
  const hops = {
    sign: (client: string) => signHop(secret, client),
    verify: (header: string | undefined) => verifyHop(secret, header),
    signRoute: (repoId: string, incarnation: string) => signRoute(secret, repoId, incarnation),
    verifyRoute: (header: string | undefined, repoId: string) => verifyRoute(secret, header, repoId),
    sealCursor: (repoId: string) => sealCursor(secret, repoId),
    openCursor: (cursor: string) => openCursor(secret, cursor),
  };
  const audit = new AuditLog(store, logger, cfg.nodeId);
  const coordinator = new Coordinator({
    nodeId: cfg.nodeId,
    store,
    storage,
    participant,
    activity,
    peers,
    membership,
    failpoints,
    logger,
    metrics,
    // The repair worker is made below; a push reaches it only once the node serves.
    catchUp: (repoId) => repair.catchUp(repoId),
    // The router is made below; it read the replica set to route the push.
    replicaSetOf: (repoId) => router.replicaSetOf(repoId),
    behindOf: (repoId) => router.behindOf(repoId),
    audit,
    config: {
      replicationFactor: cfg.replicationFactor,
      writeQuorum: cfg.writeQuorum,
      lockWaitMs: cfg.timing.lockWaitMs,
      prepareTimeoutMs: cfg.timing.prepareTimeoutMs,
      commitTimeoutMs: cfg.timing.commitTimeoutMs,
      commitWaitMs: cfg.timing.commitWaitMs,
      catchUpMs: cfg.timing.catchUpMs,
      settleMs: cfg.timing.settleMs,
      courtesyMs: cfg.timing.courtesyMs,
      maxGroupPushes: cfg.maxGroupPushes,
      maxQueuedPushes: cfg.maxQueuedPushes,
      maxRefsPerPush: cfg.maxRefsPerPush,
      fsckIgnore: cfg.fsckIgnore,
      uploadTimeoutMs: cfg.timing.gitTimeoutMs,
      maxCopyBytes: cfg.maxPushBytes,
    },
  });
  late.coordinator = coordinator;
  const router = new Router({ nodeId: cfg.nodeId, store, storage, membership, logger, commitWaitMs: cfg.timing.commitWaitMs });
  const hooks = new HookServer((err) => logger.error({ err: errorMessage(err) }, 'proc-receive exchange failed'));
  const hookPort = await steps.run('listen for hooks', () => hooks.listen());
  const load = new LoadSampler();
  load.start();
  const maintenance = new Maintenance({
    nodeId: cfg.nodeId,
    store,
    storage,
    git,
    logger,
    metrics,
    activity,
    repackAfterPacks: cfg.repackAfterPacks,
    gitTimeoutMs: cfg.timing.gitTimeoutMs,
    // Made below (it needs the coordinator's write quorum): until then a moved replica is kept.
    handOver: (repo) => late.lfs?.handOver(repo) ?? Promise.resolve(false),
  });
  const repair = new RepairWorker({
    nodeId: cfg.nodeId,
    store,
    storage,
    git,
    membership,
    logger,
    metrics,
    failpoints,
    activity,
    verifier: replicaVerifier,
    maintenance,
    hopToken: (repoId) => hops.sign(repairHop(cfg.nodeId, repoId)),
    fsckIgnore: cfg.fsckIgnore,
    commitWaitMs: cfg.timing.commitWaitMs,
    gitTimeoutMs: cfg.timing.gitTimeoutMs,
    fullPassMs: cfg.timing.fullPassMs,
    swapLockWaitMs: cfg.timing.swapLockWaitMs,
    ...(tls.ca ? { caFile: tls.ca.path } : {}),
    onSeen: (repo, replicas) => router.remember(repo, replicas),
    onListed: (repoIds) => router.forgetAllBut(repoIds),
    // A replica that missed pushes likely missed their LFS objects too: they are fetched at once.
    onRepaired: (repo) => late.lfsSync?.soon(repo.repoId),
  });
  const steward = new Steward({
    nodeId: cfg.nodeId,
    store,
    membership,
    logger,
    activity,
    replicationFactor: cfg.replicationFactor,
    replaceAfterMs: cfg.replaceAfterMs,
    fullPassMs: cfg.timing.fullPassMs,
    lockWaitMs: cfg.timing.swapLockWaitMs,
  });
  const lifecycle = { draining: false };
  metrics.attach({
    dataDir,
    leaseAgeSeconds: () => (membership.leaseAgeMs === null ? null : membership.leaseAgeMs / 1000),
    nodes: () => {
      const ids = membership.knownIds();
      const live = ids.filter((id) => membership.isLive(id)).length;
      return { live, down: ids.length - live };
    },
    gitProcesses: () => git.runningCount,
    gitWaiting: () => git.waitingCount,
    repairing: () => repair.repairingCount,
  });
  const lfs = new LfsService({
    nodeId: cfg.nodeId,
    store,
    storage,
    objects: lfsObjects,
    membership,
    peers,
    logger,
    writeQuorumFor: (n) => coordinator.writeQuorumFor(n),
    activity,
    diskShortage: () => disk.shortage(),
    freeBytes: () => disk.freeBytes,
    minFreeBytes: cfg.minFreeDiskBytes,
    maxObjectBytes: cfg.maxLfsObjectBytes ?? DEFAULT_MAX_LFS_OBJECT_BYTES,
    timeoutMs: cfg.timing.gitTimeoutMs,
  });
  late.lfs = lfs;
  const deps: NodeDeps = {
    nodeId: cfg.nodeId,
    logger,
    store,
    storage,
    git,
    hooks,
    hookPort,
    membership,
    peers,
    activity,
    verifier: new PeerVerifier(() => secret, { nodeId: cfg.nodeId, epoch, isMember: (id) => membership.isMember(id) }),
    participant,
    coordinator,
    router,
    metrics,
    load,
    repair,
    replicaVerifier,
    auth,
    hops,
    peerAddresses,
    directory,
    audit,
    lifecycle,
    disk,
    protocol,
    sshKeys: new SshKeys(store, directory, cfg.maxSshKeysPerUser),
    writeRate: new WriteRate(cfg.maxApiWritesPerMinute),
    ssh: { port: null },
    lfs,
    lfsLocks: new LfsLocks(store),
    config: {
      maxLfsObjectBytes: cfg.maxLfsObjectBytes ?? DEFAULT_MAX_LFS_OBJECT_BYTES,
      publicUrl: cfg.publicUrl ?? null,
      hooksDir: relayDir,
      gitTimeoutMs: cfg.timing.gitTimeoutMs,
      bodyLimit: 1024 * 1024,
      version: VERSION,
      replicationFactor: cfg.replicationFactor,
      fsckIgnore: cfg.fsckIgnore,
      limits: {
        headersTimeoutMs: cfg.headersTimeoutMs,
        bodyIdleMs: cfg.bodyIdleMs,
        sendIdleMs: cfg.sendIdleMs,
        maxPushBytes: cfg.maxPushBytes,
        maxUploadRequestBytes: cfg.maxUploadRequestBytes,
        maxInflateRatio: cfg.maxInflateRatio,
      },
    },
  };
  const app = buildHttpApp(deps, logger, tls.server);
  guardConnections(
    app.server,
    { max: cfg.maxConnections, perAddress: cfg.maxConnectionsPerAddress, firstRequestMs: cfg.headersTimeoutMs },
    peerAddresses,
    tls.server !== null,
    metrics,
    logger,
  );
  await steps.run('listen', () => app.listen({ host: cfg.host, port: cfg.port }));
  const ssh =
    cfg.sshPort === undefined
      ? null
      : await startSshServer({
          ...deps,
          keys: deps.sshKeys,
          secret,
          hooksDir: deps.config.hooksDir,
          maxPushBytes: cfg.maxPushBytes,
          fsckIgnore: cfg.fsckIgnore,
          gitTimeoutMs: deps.config.gitTimeoutMs,
          limits: cfg.sshLimits ?? SSH_DEFAULTS,
          host: cfg.host,
          port: cfg.sshPort,
          advertiseHost: new URL(url).hostname,
          httpUrl: cfg.publicUrl ?? url,
          hostKeyFile: join(dataDir, 'ssh_host_ed25519_key'),
        });
  if (ssh) deps.ssh.port = ssh.port;
  else await forgetSshEndpoint(store, cfg.nodeId);
  await steps.run('register in the membership', () => membership.start());

  // Transaction records are needed only while a participant may still be in doubt: past the
  // retention every node prunes them (idempotent; whichever runs first does the work).
  const pruneTxns = async (): Promise<void> => {
    try {
      const removed = await store.pruneTxns(Date.now() - cfg.txnRetentionMs);
      if (removed > 0) logger.info({ removed, retentionMs: cfg.txnRetentionMs }, 'pruned old transaction records');
      metrics.storeTxnRecords.set(await store.countTxns());
    } catch (err) {
      logger.warn({ err: errorMessage(err) }, 'could not prune transaction records; next try later');
    }
  };
  // Tokens and SSH keys that expired past the retention: every node sweeps them (idempotent).
  const sweepCredentials = async (): Promise<void> => {
    try {
      const before = Date.now() - cfg.expiredCredentialRetentionMs;
      const [tokens, keys] = [await auth.sweepExpired(before), await deps.sshKeys.sweepExpired(before)];
      if (tokens + keys > 0)
        logger.info({ tokens, sshKeys: keys, retentionMs: cfg.expiredCredentialRetentionMs }, 'deleted expired tokens and SSH keys');
    } catch (err) {
      logger.warn({ err: errorMessage(err) }, 'could not delete expired tokens and SSH keys; next try later');
    }
  };
  const timers = [
    setInterval(() => {
      void participant.resolveStuck();
    }, 1_000),
    setInterval(() => {
      void namePeers(membership.peers().map((p) => p.url));
    }, 30_000),
    setInterval(
      () => {
        void sweepCredentials();
      },
      Math.max(1_000, Math.min(600_000, Math.floor(cfg.expiredCredentialRetentionMs / 4))),
    ),
    setInterval(() => {
      txnLog.prune(cfg.txnRetentionMs);
    }, 3_600_000),
    setInterval(
      () => {
        void pruneTxns();
      },
      Math.max(1_000, Math.min(600_000, Math.floor(cfg.txnRetentionMs / 4))),
    ),
  ];
  for (const t of timers) t.unref();
  repair.start(cfg.repairIntervalMs, cfg.verifyIntervalMs, cfg.fsckIntervalMs);
  const lfsSync = new LfsSync({
    nodeId: cfg.nodeId,
    store,
    storage,
    membership,
    peers,
    lfs,
    logger,
    onFetched: () => metrics.lfsSynced.inc(),
    sweep: () => lfsObjects.sweep(lfsKept(cfg.nodeId, store, storage)),
  });
  const lfsSyncMs = cfg.lfsSyncIntervalMs ?? 10 * 60_000;
  // 0: no sync at all, not even after a repair (objects come to a replica only as they are read through it).
  if (lfsSyncMs > 0) {
    lfsSync.start(lfsSyncMs);
    late.lfsSync = lfsSync;
  }
  steward.start(cfg.stewardIntervalMs);
  logger.info({ url, sshPort: ssh?.port ?? null, store: cfg.store.kind, dataDir, hookPort, startupMs: steps.timings }, 'node started');

  let closed = false;
  return {
    url,
    app,
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const t of timers) clearInterval(t);
      repair.stop();
      // A pass under way stops after its object (not waited for: an object may be large).
      void lfsSync.stop();
      disk.stop();
      steward.stop();
      load.stop();
      // SSH sessions drain alongside HTTP requests, for the same grace period.
      const sshClosing = ssh?.server.close(cfg.shutdownGraceMs);
      // Drain: /ready and new requests answer 503 from here on; requests in flight (a push
      // being replicated, a clone) finish, up to shutdownGraceMs. Past that, their git processes
      // are killed: an undecided push is then aborted by its participants, a decided one
      // completed by repair. The node stays registered (and its peers keep routing commits to
      // it) until its own work is done.
      lifecycle.draining = true;
      const closing = app.close();
      const drained = await Promise.race([
        closing.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), cfg.shutdownGraceMs).unref()),
      ]);
      if (!drained) {
        logger.warn(
          { graceMs: cfg.shutdownGraceMs, gitProcesses: git.runningCount },
          'shutdown: requests still running past the grace period; killing their git processes',
        );
        await git.killAll();
        app.server.closeAllConnections();
        await closing;
      }
      try {
        await sshClosing;
        await membership.stop();
        await hooks.close();
        await refSessions.close();
        await git.killAll();
        await spawnHelper?.stop();
        await peers.close();
        txnLog.close();
        await store.close();
      } finally {
        dirLock.release();
      }
    },
  };
}

/**
 * restrictPermissions makes what earlier versions created world-readable private: the data dir
 * 0700, the SQLite files (store and transaction log, with their -wal and -shm) 0600. A local
 * user who could read the store would hold the peer secret, and could act as a cluster member.
 */
async function restrictPermissions(dataDir: string, store: StoreUrl): Promise<void> {
  await chmod(dataDir, 0o700);
  const files = [join(dataDir, 'node.db'), ...(store.kind === 'sqlite' ? [store.path] : [])];
  for (const f of files) {
    for (const suffix of ['', '-wal', '-shm']) await chmod(`${f}${suffix}`, 0o600).catch(() => undefined);
  }
}

/**
 * lfsKept says, at a node's start, whether the LFS objects of an incarnation stay: this node
 * holds a replica of it, or the store still places that incarnation here (its replica may be
 * coming back through repair). Any doubt (a store that cannot be read, a directory naming no
 * repository while a local replica has that incarnation) keeps them.
 */
function lfsKept(
  nodeId: string,
  store: ClusterStore,
  storage: ReplicaStorage,
): (incarnation: string, repoId: string | null) => Promise<boolean> {
  let local: Promise<Set<string>> | null = null;
  const localIncarnations = (): Promise<Set<string>> =>
    (local ??= storage
      .listLocal()
      .then(async (ids) => new Set((await Promise.all(ids.map((id) => storage.incarnationOf(id)))).filter((i) => i !== null))));
  return async (incarnation, named) => {
    let repoId: string | null = null;
    try {
      repoId = named === null ? null : parseRepoId(named);
    } catch {
      repoId = null;
    }
    if (repoId === null) return (await localIncarnations()).has(incarnation);
    if ((await storage.incarnationOf(repoId)) === incarnation) return true;
    try {
      const repo = await store.getRepo(repoId);
      return repo !== null && repo.incarnation === incarnation && repo.replicas.includes(nodeId);
    } catch {
      return true;
    }
  };
}

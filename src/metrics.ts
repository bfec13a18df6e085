import { statfs } from 'node:fs/promises';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * NodeGauges are what the node reads when it is scraped (set once by app.ts with `attach`):
 * values that are cheaper to read on demand than to keep up to date.
 */
export interface NodeGauges {
  /** dataDir is the directory whose file system's free space is reported. */
  readonly dataDir: string;
  /** leaseAgeSeconds: time since the node's registration was last renewed in the store (null: never). */
  leaseAgeSeconds(): number | null;
  /** nodes counts the registered nodes by liveness, as this node sees them (itself included). */
  nodes(): { live: number; down: number };
  /** gitProcesses: git processes serving clients now. */
  gitProcesses(): number;
  /** gitWaiting: git requests waiting in line for a process slot now. */
  gitWaiting(): number;
  /** repairing: local replicas being repaired now. */
  repairing(): number;
}

/** GitBytes counts what one git request received and sent. */
export interface GitBytes {
  in: number;
  out: number;
}

const LATENCY = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Metrics are the node's Prometheus series, on a registry of their own (no global state). Names
 * follow Prometheus conventions: `gitrep_` prefix, base units, `_total` for counters. The
 * dashboard and alert rules in docs/monitoring/ use them; test/integration/monitoring.test.ts
 * checks that every name they use is exported.
 */
export class Metrics {
  readonly registry = new Registry();
  private gauges: NodeGauges | null = null;
  readonly gitRequests = new Counter({
    name: 'gitrep_git_requests_total',
    help: 'smart-HTTP requests by service and outcome',
    labelNames: ['service', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly gitSeconds = new Histogram({
    name: 'gitrep_git_request_seconds',
    help: 'smart-HTTP request duration',
    labelNames: ['service'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly gitOperationSeconds = new Histogram({
    name: 'gitrep_git_operation_seconds',
    help: 'push (receive-pack) and fetch or clone (upload-pack) duration, ref advertisement excluded, by HTTP outcome',
    labelNames: ['operation', 'outcome'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly gitBytes = new Counter({
    name: 'gitrep_git_bytes_total',
    help: 'smart-HTTP bytes git received (request bodies, decompressed) and sent, by service',
    labelNames: ['service', 'direction'] as const,
    registers: [this.registry],
  });
  readonly httpConnections = new Gauge({
    name: 'gitrep_http_connections',
    help: 'open HTTP connections (TCP)',
    registers: [this.registry],
  });
  readonly httpConnectionsRefused = new Counter({
    name: 'gitrep_http_connections_refused_total',
    help: "HTTP connections closed unserved: at the limit (max), over the address's share (per_address), or no request in time (no_request)",
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly sshConnections = new Gauge({
    name: 'gitrep_ssh_connections',
    help: 'open SSH connections past their version exchange (signed in or not yet)',
    registers: [this.registry],
  });
  readonly sshPending = new Gauge({
    name: 'gitrep_ssh_connections_pending',
    help: 'TCP connections to the SSH port not signed in yet (each bounded by the handshake time)',
    registers: [this.registry],
  });
  readonly sshConnectionsRefused = new Counter({
    name: 'gitrep_ssh_connections_refused_total',
    help: "TCP connections to the SSH port closed at once: over the address's share of connections not signed in yet (per_address), or over all addresses' (max)",
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly sshAuthFailures = new Counter({
    name: 'gitrep_ssh_auth_failures_total',
    help: 'SSH sign-in attempts refused (unknown key, bad signature, bad hop token, too many attempts)',
    registers: [this.registry],
  });
  readonly sshCommands = new Counter({
    name: 'gitrep_ssh_commands_total',
    help: 'git commands over SSH by service and outcome (ok, failed: git exited non-zero, refused: nothing ran, proxied, cut: no exit status)',
    labelNames: ['service', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly sshCommandSeconds = new Histogram({
    name: 'gitrep_ssh_command_seconds',
    help: 'git command over SSH duration, from the exec request to its end',
    labelNames: ['service'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly txns = new Counter({
    name: 'gitrep_txns_total',
    help: 'replicated transactions by kind and outcome',
    labelNames: ['kind', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly prepareSeconds = new Histogram({
    name: 'gitrep_prepare_seconds',
    help: 'prepare latency per participant',
    labelNames: ['peer'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
    registers: [this.registry],
  });
  readonly commitSeconds = new Histogram({
    name: 'gitrep_commit_seconds',
    help: 'commit latency per prepared participant, from the decision to its confirmation',
    labelNames: ['peer'] as const,
    buckets: LATENCY,
    registers: [this.registry],
  });
  readonly quorumFailures = new Counter({
    name: 'gitrep_quorum_failures_total',
    help: 'writes refused for lack of a write quorum',
    registers: [this.registry],
  });
  readonly packsShipped = new Counter({
    name: 'gitrep_packs_shipped_total',
    help: 'push packs sent to peer replicas, by how: copied during the upload (teed), staged ahead of the prepare, with the prepare, or again with the prepare after a staged copy was lost',
    labelNames: ['how'] as const,
    registers: [this.registry],
  });
  readonly connectivityChecks = new Counter({
    name: 'gitrep_connectivity_checks_total',
    help: "a peer prepare's connectivity check of a push's new tips, by where it ran: on the copy during the upload (the prepare used its result), or in the prepare",
    labelNames: ['at'] as const,
    registers: [this.registry],
  });
  readonly copyChecks = new Counter({
    name: 'gitrep_copy_checks_total',
    help: "a peer's check of a push's new tips in its copy of the pack, by how: found in the copy's pack on a replica whose objects all had their links checked (links), or walked by git rev-list",
    labelNames: ['by'] as const,
    registers: [this.registry],
  });
  readonly refSessions = new Counter({
    name: 'gitrep_ref_sessions_total',
    help: "a transaction's update-ref, by whether it ran in the process the replica's last transaction kept (kept) or in a new one (new)",
    labelNames: ['process'] as const,
    registers: [this.registry],
  });
  readonly staleMarked = new Counter({
    name: 'gitrep_replicas_marked_stale_total',
    help: 'replicas marked stale after missing a committed write (marks written to the store)',
    registers: [this.registry],
  });
  readonly proxied = new Counter({
    name: 'gitrep_proxied_requests_total',
    help: 'requests proxied to an in-sync peer',
    labelNames: ['service'] as const,
    registers: [this.registry],
  });
  readonly gitProcesses = new Gauge({
    name: 'gitrep_git_processes',
    help: 'git processes serving clients now',
    registers: [this.registry],
    collect: () => this.readGauge((g) => this.gitProcesses.set(g.gitProcesses())),
  });
  readonly gitWaiting = new Gauge({
    name: 'gitrep_git_waiting',
    help: 'git requests waiting in line for a process slot now',
    registers: [this.registry],
    collect: () => this.readGauge((g) => this.gitWaiting.set(g.gitWaiting())),
  });
  readonly staleReplicas = new Gauge({ name: 'gitrep_stale_replicas', help: 'local replicas not in sync', registers: [this.registry] });
  readonly repairingReplicas = new Gauge({
    name: 'gitrep_repairing_replicas',
    help: 'local replicas being repaired now',
    registers: [this.registry],
    collect: () => this.readGauge((g) => this.repairingReplicas.set(g.repairing())),
  });
  readonly replicaLag = new Gauge({
    name: 'gitrep_replica_lag_generations',
    help: 'largest number of generations a local replica is behind its repo (at the last repair pass)',
    registers: [this.registry],
  });
  readonly repairs = new Counter({
    name: 'gitrep_repairs_total',
    help: 'replica repairs by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly repairLockedRounds = new Counter({
    name: 'gitrep_repair_locked_rounds_total',
    help: "repairs whose fetches pushes outran, given one more round under the repo's write lock, by whether it caught up",
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly repacks = new Counter({
    name: 'gitrep_repacks_total',
    help: 'replica pack roll-ups (git repack --geometric=2)',
    registers: [this.registry],
  });
  readonly repairSeconds = new Histogram({
    name: 'gitrep_repair_seconds',
    help: 'replica repair duration',
    buckets: [0.1, 0.5, 1, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly repairQueue = new Gauge({ name: 'gitrep_repair_queue', help: 'local replicas waiting for repair', registers: [this.registry] });
  readonly verifierMismatches = new Counter({
    name: 'gitrep_verifier_mismatches_total',
    help: 'in-sync replicas the verifier found differing from the store (stale: refs; missing: objects or incarnation)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly authSeconds = new Histogram({
    name: 'gitrep_auth_seconds',
    help: "time spent deciding a request's authentication and authorisation",
    labelNames: ['kind'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [this.registry],
  });
  readonly lfsBatches = new Counter({
    name: 'gitrep_lfs_batch_requests_total',
    help: 'Git LFS batch requests answered, by operation (upload, download)',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });
  readonly lfsBytes = new Counter({
    name: 'gitrep_lfs_bytes_total',
    help: 'Git LFS object bytes clients uploaded (in, once W replicas held them) and were sent (out) through this node',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly lfsSynced = new Counter({
    name: 'gitrep_lfs_objects_synced_total',
    help: "Git LFS objects this node's replicas lacked and fetched from another replica (LfsSync)",
    registers: [this.registry],
  });
  readonly storeTxnRecords = new Gauge({
    name: 'gitrep_store_txn_records',
    help: 'transaction records in the coordination store (pruned past the retention)',
    registers: [this.registry],
  });
  readonly storeSeconds = new Histogram({
    name: 'gitrep_store_heartbeat_seconds',
    help: 'coordination store latency: one heartbeat (renew the node lease, read every node)',
    buckets: LATENCY,
    registers: [this.registry],
  });
  readonly storeOps = new Counter({
    name: 'gitrep_store_operations_total',
    help: 'calls this node made to the coordination store, by operation (ClusterStore method)',
    labelNames: ['op'] as const,
    registers: [this.registry],
  });
  readonly storeErrors = new Counter({
    name: 'gitrep_store_errors_total',
    help: 'heartbeats the coordination store failed',
    registers: [this.registry],
  });
  readonly storeUp = new Gauge({
    name: 'gitrep_store_up',
    help: '1 when the last heartbeat reached the coordination store, else 0',
    registers: [this.registry],
  });
  readonly leaseAge = new Gauge({
    name: 'gitrep_node_lease_age_seconds',
    help: 'time since this node last renewed its registration lease in the store',
    registers: [this.registry],
    collect: () => this.readGauge((g) => this.leaseAge.set(g.leaseAgeSeconds() ?? Number.NaN)),
  });
  readonly clusterNodes = new Gauge({
    name: 'gitrep_cluster_nodes',
    help: 'registered nodes by state (live, down) as this node sees them',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () =>
      this.readGauge((g) => {
        const n = g.nodes();
        this.clusterNodes.set({ state: 'live' }, n.live);
        this.clusterNodes.set({ state: 'down' }, n.down);
      }),
  });
  readonly diskFree = new Gauge({
    name: 'gitrep_data_dir_free_bytes',
    help: "bytes available to the node on the data dir's file system",
    registers: [this.registry],
    collect: () => this.readDisk((s) => this.diskFree.set(s.bavail * s.bsize)),
  });
  readonly diskSize = new Gauge({
    name: 'gitrep_data_dir_size_bytes',
    help: "size of the data dir's file system in bytes",
    registers: [this.registry],
    collect: () => this.readDisk((s) => this.diskSize.set(s.blocks * s.bsize)),
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'gitrep_' });
  }

  /** attach gives the scrape-time gauges their sources (once, by the composition root). */
  attach(gauges: NodeGauges): void {
    this.gauges = gauges;
  }

  /**
   * observeGit records one finished smart-HTTP request: its count and duration, its bytes, and,
   * for a push or a fetch (not a ref advertisement), the operation's latency by outcome.
   */
  observeGit(service: string, advertisement: boolean, outcome: string, seconds: number, bytes: GitBytes): void {
    this.gitRequests.inc({ service, outcome });
    this.gitSeconds.observe({ service }, seconds);
    this.gitBytes.inc({ service, direction: 'in' }, bytes.in);
    this.gitBytes.inc({ service, direction: 'out' }, bytes.out);
    if (!advertisement)
      this.gitOperationSeconds.observe({ operation: service === 'git-receive-pack' ? 'push' : 'fetch', outcome }, seconds);
  }

  /** observeHeartbeat records one heartbeat's store latency and whether it failed. */
  observeHeartbeat(seconds: number, ok: boolean): void {
    this.storeSeconds.observe(seconds);
    this.storeUp.set(ok ? 1 : 0);
    if (!ok) this.storeErrors.inc();
  }

  private readGauge(read: (g: NodeGauges) => void): void {
    if (this.gauges) read(this.gauges);
  }

  private async readDisk(read: (s: { bavail: number; blocks: number; bsize: number }) => void): Promise<void> {
    if (!this.gauges) return;
    try {
      read(await statfs(this.gauges.dataDir));
    } catch {
      // The data dir went away (the node is shutting down): leave the last values.
    }
  }
}

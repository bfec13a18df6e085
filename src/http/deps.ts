import type { Logger } from '../domain/logger.js';
import type { DiskSpace } from '../cluster/disk.js';
import type { ProtocolRange } from '../cluster/protocol.js';
import type { LoadSampler } from '../cluster/load.js';
import type { Membership } from '../cluster/membership.js';
import type { PeerClient } from '../cluster/peer-client.js';
import type { PeerVerifier } from '../auth/peer-signature.js';
import type { AuditLog } from '../auth/audit.js';
import type { Directory } from '../auth/directory.js';
import type { SshKeys } from '../auth/ssh-keys.js';
import type { Authenticator } from '../auth/tokens.js';
import type { PeerAddresses } from './connection-guard.js';
import type { WriteRate } from './write-rate.js';
import type { HookServer } from '../git/proc-receive.js';
import type { ReplicaStorage } from '../git/repo-storage.js';
import type { GitRunner } from '../git/runner.js';
import type { LfsLocks } from '../lfs/locks.js';
import type { LfsService } from '../lfs/service.js';
import type { Metrics } from '../metrics.js';
import type { RepoActivity } from '../replication/activity.js';
import type { Coordinator } from '../replication/coordinator.js';
import type { Participant } from '../replication/participant.js';
import type { RepairWorker } from '../replication/repair.js';
import type { Router } from '../replication/router.js';
import type { ReplicaVerifier } from '../replication/verifier.js';
import type { ClusterStore } from '../store/types.js';

/** HttpConfig is what the HTTP layer needs to know of the node's configuration. */
export interface HttpConfig {
  readonly hooksDir: string;
  readonly gitTimeoutMs: number;
  readonly bodyLimit: number;
  readonly version: string;
  readonly limits: GitBodyLimits;
  /** fsckIgnore is the cluster's fsck policy (git/fsck-policy.ts). */
  readonly fsckIgnore: readonly string[];
  /** replicationFactor is R for repos this node creates (for the write-quorum check of /ready). */
  readonly replicationFactor: number;
  /** maxLfsObjectBytes: the largest Git LFS object an upload may send (413 beyond). */
  readonly maxLfsObjectBytes: number;
  /** publicUrl is the URL clients reach the cluster at (`--public-url`), for the links given to git-lfs; null: each request's scheme and Host. */
  readonly publicUrl: string | null;
}

/** GitBodyLimits bound what one git request may send (SECURITY.md). */
export interface GitBodyLimits {
  /** headersTimeoutMs: a request's headers (a connection's first, from its opening) and a TLS handshake must arrive within this. */
  readonly headersTimeoutMs: number;
  /** bodyIdleMs: a request body silent this long (while the node waits for it) ends with 408. */
  readonly bodyIdleMs: number;
  /** sendIdleMs: an answer whose client's socket does not drain this long (its buffers full) is ended, its git process killed; 0: never. */
  readonly sendIdleMs: number;
  /** maxUploadRequestBytes: a fetch's request (wants, haves), decompressed; 413 beyond. */
  readonly maxUploadRequestBytes: number;
  /** maxPushBytes: a push's pack (git's receive.maxInputSize); 413 beyond. */
  readonly maxPushBytes: number;
  /** maxInflateRatio: a gzip body may inflate at most this many times (past its first MiB). */
  readonly maxInflateRatio: number;
}

/** HopTokens sign and check the hop header of proxied requests and repair fetches. */
export interface HopTokens {
  sign(client: string): string;
  /** verify returns the client a valid hop names, or null. */
  verify(header: string | undefined): string | null;
  /** signRoute vouches that a store read found the peer's replica of `incarnation` in sync. */
  signRoute(repoId: string, incarnation: string): string;
  /** verifyRoute returns the incarnation a valid route token vouches for on `repoId`, or null. */
  verifyRoute(header: string | undefined, repoId: string): string | null;
  /** sealCursor hides the repo id a listing stopped at (sealCursor); openCursor reads one back, null if not sealed by the cluster. */
  sealCursor(repoId: string): string;
  openCursor(cursor: string): string | null;
}

/** NodeDeps is the dependencies object app.ts builds once and hands to every route group. */
export interface NodeDeps {
  readonly nodeId: string;
  readonly config: HttpConfig;
  readonly logger: Logger;
  readonly store: ClusterStore;
  readonly storage: ReplicaStorage;
  readonly git: GitRunner;
  readonly hooks: HookServer;
  readonly hookPort: number;
  readonly membership: Membership;
  readonly peers: PeerClient;
  readonly verifier: PeerVerifier;
  readonly participant: Participant;
  readonly coordinator: Coordinator;
  readonly router: Router;
  readonly metrics: Metrics;
  readonly load: LoadSampler;
  readonly repair: RepairWorker;
  /** replicaVerifier checks this node's replicas against the store (checksum, fsck). */
  readonly replicaVerifier: ReplicaVerifier;
  readonly auth: Authenticator;
  readonly directory: Directory;
  readonly audit: AuditLog;
  readonly hops: HopTokens;
  /** peerAddresses are the addresses the members connect from (connection-guard.ts); a verified member call teaches its own. */
  readonly peerAddresses: PeerAddresses;
  readonly activity: RepoActivity;
  /** lifecycle.draining is set when the node begins to shut down (/ready answers 503). */
  readonly lifecycle: { draining: boolean };
  readonly disk: DiskSpace;
  /** protocol is the range of replication protocol versions this node speaks. */
  readonly protocol: ProtocolRange;
  readonly sshKeys: SshKeys;
  /** writeRate bounds each user's REST writes through this node (write-rate.ts). */
  readonly writeRate: WriteRate;
  /** ssh.port is this node's SSH port once its SSH server listens (null: no SSH server). */
  readonly ssh: { port: number | null };
  /** lfs keeps repositories' Git LFS objects on their replicas (lfs/service.ts). */
  readonly lfs: LfsService;
  /** lfsLocks keeps repositories' Git LFS file locks in the store (lfs/locks.ts). */
  readonly lfsLocks: LfsLocks;
}

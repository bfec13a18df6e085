import type { Logger } from '../domain/logger.js';
import type { LoadSampler } from '../cluster/load.js';
import type { Membership } from '../cluster/membership.js';
import type { PeerClient } from '../cluster/peer-client.js';
import type { PeerVerifier } from '../auth/peer-signature.js';
import type { Authenticator } from '../auth/tokens.js';
import type { HookServer } from '../git/proc-receive.js';
import type { ReplicaStorage } from '../git/repo-storage.js';
import type { GitRunner } from '../git/runner.js';
import type { Metrics } from '../metrics.js';
import type { Coordinator } from '../replication/coordinator.js';
import type { Participant } from '../replication/participant.js';
import type { RepairWorker } from '../replication/repair.js';
import type { Router } from '../replication/router.js';
import type { ClusterStore } from '../store/types.js';

/** HttpConfig is what the HTTP layer needs to know of the node's configuration. */
export interface HttpConfig {
  readonly hooksDir: string;
  readonly gitTimeoutMs: number;
  readonly bodyLimit: number;
  readonly version: string;
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
  readonly auth: Authenticator;
}

import { errorMessage } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import type { ClusterStore, NodeInfo } from '../store/types.js';
import type { PeerTarget } from '../auth/peer-signature.js';
import { common, formatRange, PROTOCOL } from './protocol.js';
import type { PeerClient } from './peer-client.js';

/** PeerLoad is a peer's last reported load. */
export interface PeerLoad {
  readonly cpu: number;
  readonly memory: number;
  readonly at: number;
}

/** NodeView is one node as the status page shows it. */
export interface NodeView {
  readonly id: string;
  readonly url: string;
  readonly version: string;
  readonly startedAt: string;
  readonly live: boolean;
  readonly self: boolean;
  readonly load: { cpu: number; memory: number } | null;
  readonly downForMs: number;
}

/**
 * Membership keeps this node registered in the store (a lease renewed every third of its TTL),
 * caches the other nodes' URLs and polls their load for read routing.
 */
export class Membership {
  private nodes = new Map<string, NodeInfo>();
  private live = new Set<string>();
  private readonly loads = new Map<string, PeerLoad>();
  private readonly warned = new Set<string>();
  /** downSince records when this node first saw each other node not live (its own observation). */
  private readonly downSince = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private storeOk = true;
  private lastStoreError: string | null = null;
  private renewedAt: number | null = null;

  constructor(
    private readonly self: NodeInfo,
    private readonly deps: {
      store: ClusterStore;
      peers: PeerClient;
      logger: Logger;
      ttlMs: number;
      /** onHeartbeat hears each heartbeat's store latency and whether it failed (metrics). */
      onHeartbeat?: (seconds: number, ok: boolean) => void;
      /** onPeers hears the other nodes' URLs whenever they change (a node joined, left or moved). */
      onPeers?: (urls: readonly string[]) => void;
    },
  ) {}

  /** start registers the node and begins heartbeats. */
  async start(): Promise<void> {
    await this.heartbeat();
    this.timer = setInterval(
      () => {
        void this.heartbeat();
      },
      Math.max(200, Math.floor(this.deps.ttlMs / 3)),
    );
    this.timer.unref();
  }

  private async heartbeat(): Promise<void> {
    const started = performance.now();
    try {
      await this.deps.store.registerNode(this.self, this.deps.ttlMs);
      this.renewedAt = Date.now();
      this.learn(await this.deps.store.allNodes());
      this.deps.onHeartbeat?.((performance.now() - started) / 1000, true);
      if (!this.storeOk) this.deps.logger.info({}, 'coordination store reachable again');
      this.storeOk = true;
      this.lastStoreError = null;
    } catch (err) {
      if (this.storeOk) this.deps.logger.error({ err: errorMessage(err) }, 'coordination store unreachable: writes fail until it returns');
      this.storeOk = false;
      this.lastStoreError = errorMessage(err);
      this.deps.onHeartbeat?.((performance.now() - started) / 1000, false);
    }
    await Promise.all(
      [...this.live]
        .filter((id) => id !== this.self.id)
        .map(async (id) => {
          const url = this.nodes.get(id)?.url;
          if (!url) return;
          const load = await this.deps.peers.health(url, Math.max(500, this.deps.ttlMs / 3));
          if (load) this.loads.set(id, { ...load, at: Date.now() });
          else this.loads.delete(id);
        }),
    );
  }

  /** learn replaces the cached view of the cluster with a fresh read of the store. */
  learn(all: ReadonlyArray<NodeInfo & { live: boolean }>): void {
    const urls = (m: ReadonlyMap<string, NodeInfo>): string =>
      [...m.values()]
        .filter((n) => n.id !== this.self.id)
        .map((n) => n.url)
        .sort()
        .join(' ');
    const before = urls(this.nodes);
    this.nodes = new Map(all.map((n) => [n.id, n]));
    const after = urls(this.nodes);
    if (after !== before) this.deps.onPeers?.(after === '' ? [] : after.split(' '));
    this.warnIncompatible(all);
    this.live = new Set(all.filter((n) => n.live).map((n) => n.id));
    const now = Date.now();
    for (const n of all) {
      if (n.live) this.downSince.delete(n.id);
      else if (!this.downSince.has(n.id)) this.downSince.set(n.id, now);
    }
  }

  /**
   * warnIncompatible says, once per peer and range, when a live peer speaks no protocol version
   * this node speaks: the two cannot run a transaction together (a rolling upgrade skipped a step).
   */
  private warnIncompatible(all: ReadonlyArray<NodeInfo & { live: boolean }>): void {
    const own = this.self.protocol ?? PROTOCOL;
    for (const n of all) {
      if (n.id === this.self.id || !n.live) continue;
      const key = `${n.id} ${formatRange(n.protocol)}`;
      if (common(own, n.protocol) !== null || this.warned.has(key)) continue;
      this.warned.add(key);
      this.deps.logger.error(
        { peer: n.id, peerProtocol: formatRange(n.protocol), protocol: formatRange(own) },
        `node ${n.id} speaks replication protocol ${formatRange(n.protocol)}, this node ${formatRange(own)}: they cannot replicate with each other; upgrade one side`,
      );
    }
  }

  /**
   * downFor says how long a node has been seen down, as observed by this node (a node already
   * down when this node started counts from this node's first look).
   */
  downFor(nodeId: string): number {
    if (nodeId === this.self.id || this.live.has(nodeId)) return 0;
    const since = this.downSince.get(nodeId);
    return since === undefined ? 0 : Date.now() - since;
  }

  /** knownIds lists every registered node, live or not, self included. */
  knownIds(): string[] {
    return [...new Set([this.self.id, ...this.nodes.keys()])].sort();
  }

  /** stop ends heartbeats and removes the registration. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    try {
      await this.deps.store.unregisterNode(this.self.id);
    } catch {
      // the lease expires by itself
    }
  }

  /** selfId is this node's id. */
  get selfId(): string {
    return this.self.id;
  }

  /** storeReachable says whether the last heartbeat reached the store. */
  get storeReachable(): boolean {
    return this.storeOk;
  }

  /** storeError is the last heartbeat's error, if it failed. */
  get storeError(): string | null {
    return this.lastStoreError;
  }

  /** urlOf returns a node's URL, or undefined for an unknown node. */
  urlOf(nodeId: string): string | undefined {
    return nodeId === this.self.id ? this.self.url : this.nodes.get(nodeId)?.url;
  }

  /** target is what a signed call to a node needs: its URL and the epoch of its current incarnation. */
  target(nodeId: string): PeerTarget | undefined {
    const n = nodeId === this.self.id ? this.self : this.nodes.get(nodeId);
    return n ? { id: n.id, url: n.url, epoch: n.startedAt, ...(n.protocol ? { protocol: n.protocol } : {}) } : undefined;
  }

  /**
   * isMember says whether a node id is registered in the store (live or not), re-reading the
   * store once for an id not seen yet (a node that just joined).
   */
  async isMember(nodeId: string): Promise<boolean> {
    if (nodeId === this.self.id || this.nodes.has(nodeId)) return true;
    await this.refresh();
    return this.nodes.has(nodeId);
  }

  /** isLive says whether a node's registration was live at the last heartbeat. */
  isLive(nodeId: string): boolean {
    return nodeId === this.self.id || this.live.has(nodeId);
  }

  /** liveIds lists the live nodes, self included. */
  liveIds(): string[] {
    return [...new Set([this.self.id, ...this.live])].sort();
  }

  /** peers lists the other known nodes with liveness. */
  peers(): Array<{ id: string; url: string; live: boolean }> {
    return [...this.nodes.values()].filter((n) => n.id !== this.self.id).map((n) => ({ id: n.id, url: n.url, live: this.live.has(n.id) }));
  }

  /** leaseAgeMs is the time since this node last renewed its registration (null: not yet). */
  get leaseAgeMs(): number | null {
    return this.renewedAt === null ? null : Date.now() - this.renewedAt;
  }

  /**
   * view lists every known node, self first, with what the status page shows: liveness, version,
   * start time, and the load it last reported (self: `selfLoad`; a peer not polled yet: null).
   */
  view(selfLoad: { cpu: number; memory: number }): NodeView[] {
    const others = [...this.nodes.values()].filter((n) => n.id !== this.self.id).sort((a, b) => (a.id < b.id ? -1 : 1));
    return [this.self, ...others].map((n) => {
      const self = n.id === this.self.id;
      const load = self ? selfLoad : this.loads.get(n.id);
      const live = self || this.live.has(n.id);
      return {
        id: n.id,
        url: n.url,
        version: n.version,
        startedAt: n.startedAt,
        live,
        self,
        load: live && load ? { cpu: load.cpu, memory: load.memory } : null,
        downForMs: this.downFor(n.id),
      };
    });
  }

  /** loadOf returns a peer's last load (cpu), or Infinity if unknown. */
  loadOf(nodeId: string): number {
    return this.loads.get(nodeId)?.cpu ?? Number.POSITIVE_INFINITY;
  }

  /** refresh forces an immediate heartbeat (used after a membership change). */
  async refresh(): Promise<void> {
    await this.heartbeat();
  }
}

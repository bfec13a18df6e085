import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Metrics are the node's Prometheus series, on a registry of its own (no global state). */
export class Metrics {
  readonly registry = new Registry();
  readonly gitRequests = new Counter({ name: 'gitrep_git_requests_total', help: 'smart-HTTP requests by service and outcome', labelNames: ['service', 'outcome'] as const, registers: [this.registry] });
  readonly gitSeconds = new Histogram({ name: 'gitrep_git_request_seconds', help: 'smart-HTTP request duration', labelNames: ['service'] as const, buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [this.registry] });
  readonly txns = new Counter({ name: 'gitrep_txns_total', help: 'replicated transactions by kind and outcome', labelNames: ['kind', 'outcome'] as const, registers: [this.registry] });
  readonly prepareSeconds = new Histogram({ name: 'gitrep_prepare_seconds', help: 'prepare latency per participant', labelNames: ['peer'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30], registers: [this.registry] });
  readonly quorumFailures = new Counter({ name: 'gitrep_quorum_failures_total', help: 'writes refused for lack of a write quorum', registers: [this.registry] });
  readonly staleMarked = new Counter({ name: 'gitrep_replicas_marked_stale_total', help: 'replicas marked stale after missing a committed write', registers: [this.registry] });
  readonly proxied = new Counter({ name: 'gitrep_proxied_requests_total', help: 'requests proxied to an in-sync peer', labelNames: ['service'] as const, registers: [this.registry] });
  readonly gitProcesses = new Gauge({ name: 'gitrep_git_processes', help: 'git processes serving clients now', registers: [this.registry] });
  readonly staleReplicas = new Gauge({ name: 'gitrep_stale_replicas', help: 'local replicas not in sync', registers: [this.registry] });
  readonly repairs = new Counter({ name: 'gitrep_repairs_total', help: 'replica repairs by outcome', labelNames: ['outcome'] as const, registers: [this.registry] });
  readonly repacks = new Counter({ name: 'gitrep_repacks_total', help: 'replica pack roll-ups (git repack --geometric=2)', registers: [this.registry] });
  readonly repairSeconds = new Histogram({ name: 'gitrep_repair_seconds', help: 'replica repair duration', buckets: [0.1, 0.5, 1, 5, 10, 30, 60, 300], registers: [this.registry] });
  readonly authSeconds = new Histogram({ name: 'gitrep_auth_seconds', help: 'time spent deciding a request\'s authentication and authorisation', labelNames: ['kind'] as const, buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05], registers: [this.registry] });
  readonly storeTxnRecords = new Gauge({ name: 'gitrep_store_txn_records', help: 'transaction records in the coordination store (pruned past the retention)', registers: [this.registry] });
  readonly repairQueue = new Gauge({ name: 'gitrep_repair_queue', help: 'local replicas waiting for repair', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'gitrep_' });
  }
}

import { randomBytes } from 'node:crypto';
import type { Logger } from '../domain/logger.js';
import type { ClusterStore } from '../store/types.js';

/** AuditEvent is one recorded action: who (user, token name) did what to which repository. */
export interface AuditEvent {
  readonly action:
    | 'push'
    | 'repo.create'
    | 'repo.delete'
    | 'repo.visibility'
    | 'repo.default_branch'
    | 'repo.grant'
    | 'token.create'
    | 'token.revoke'
    | 'user.add'
    | 'user.disable'
    | 'user.enable'
    | 'org.create'
    | 'org.member'
    | 'ssh-key.add'
    | 'ssh-key.remove'
    | 'admin.import';
  readonly user: string;
  readonly token: string;
  readonly repo?: string;
  readonly refs?: readonly string[];
  readonly txn?: string;
  readonly detail?: Record<string, unknown>;
}

/** AUDIT_KEEP is how many events the store keeps; older ones are pruned. */
export const AUDIT_KEEP = 1_000;
const PREFIX = 'audit/';

/**
 * AuditLog records actions as structured log lines (`audit: true`) and in the store (keys
 * `audit/<time>-<random>`, so they sort by time), keeping the last AUDIT_KEEP. Recording never
 * fails the action: it runs after the action, and a store error is logged.
 */
export class AuditLog {
  private writes = 0;

  constructor(
    private readonly store: ClusterStore,
    private readonly logger: Logger,
    private readonly nodeId: string,
  ) {}

  /** record logs an event and stores it in the background. */
  record(event: AuditEvent): void {
    const at = new Date().toISOString();
    this.logger.info({ audit: true, ...event, at }, `audit: ${event.action}`);
    const key = `${PREFIX}${at}-${randomBytes(4).toString('hex')}`;
    void this.store
      .setMeta(key, JSON.stringify({ ...event, at, node: this.nodeId }))
      .then(() => (++this.writes % 50 === 0 ? this.prune() : undefined))
      .catch((err: unknown) => this.logger.warn({ err: String(err), action: event.action }, 'audit event not stored'));
  }

  /** recent returns the newest `limit` events, newest first. */
  async recent(limit: number): Promise<Array<AuditEvent & { at: string; node: string }>> {
    const all = await this.store.listMeta(PREFIX);
    return all
      .slice(-limit)
      .reverse()
      .map((m) => JSON.parse(m.value) as AuditEvent & { at: string; node: string });
  }

  private async prune(): Promise<void> {
    const all = await this.store.listMeta(PREFIX);
    for (const m of all.slice(0, Math.max(0, all.length - AUDIT_KEEP))) await this.store.deleteMeta(m.key);
  }
}

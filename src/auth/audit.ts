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
    | 'org.delete'
    | 'org.member'
    | 'ssh-key.add'
    | 'ssh-key.remove'
    | 'admin.import';
  readonly user: string;
  readonly token: string;
  readonly repo?: string;
  readonly refs?: readonly string[];
  /** refsTotal is how many refs the action named, when `refs` holds only the first AUDIT_REFS_KEPT. */
  readonly refsTotal?: number;
  readonly txn?: string;
  readonly detail?: Record<string, unknown>;
}

/** AUDIT_REFS_KEPT is how many of an action's refs its record names (the rest are counted). */
export const AUDIT_REFS_KEPT = 100;

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
    const { key, value } = this.entry(event);
    void this.store
      .setMeta(key, value)
      .then(() => this.stored(1))
      .catch((err: unknown) => this.logger.warn({ err: String(err), action: event.action }, 'audit event not stored'));
  }

  /**
   * entry logs an event and returns its store record without writing it, for a caller that
   * writes it in a store transaction of its own (a push's confirmations); that caller then
   * says `stored`.
   */
  entry(whole: AuditEvent): { key: string; value: string } {
    // A push's record names its first refs and how many there were: one of 100,000 refs made a
    // 22 MB record (and log line), and the log keeps a thousand records.
    const event =
      whole.refs && whole.refs.length > AUDIT_REFS_KEPT
        ? { ...whole, refs: whole.refs.slice(0, AUDIT_REFS_KEPT), refsTotal: whole.refs.length }
        : whole;
    const at = new Date().toISOString();
    this.logger.info({ audit: true, ...event, at }, `audit: ${event.action}`);
    return { key: `${PREFIX}${at}-${randomBytes(4).toString('hex')}`, value: JSON.stringify({ ...event, at, node: this.nodeId }) };
  }

  /** stored counts events written (by record or by a caller of entry); every 50th prunes the oldest. */
  stored(n: number): void {
    const before = this.writes;
    this.writes += n;
    if (Math.floor(before / 50) !== Math.floor(this.writes / 50))
      void this.prune().catch((err: unknown) => this.logger.warn({ err: String(err) }, 'audit log not pruned'));
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
    await this.store.trimMeta(PREFIX, AUDIT_KEEP);
  }
}

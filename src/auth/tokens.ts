import { createHash, randomBytes } from 'node:crypto';
import { forbidden, unauthorized } from '../domain/errors.js';
import type { ClusterStore } from '../store/types.js';

/** Role is what a token may do: read repos, also push, or also administer the cluster. */
export type Role = 'read' | 'write' | 'admin';

/** TokenInfo is what the store keeps of a token (never the token itself). */
export interface TokenInfo {
  readonly name: string;
  readonly role: Role;
  readonly createdAt: string;
}

/** TOKEN_PREFIX keys hashed tokens in the store's settings. */
export const TOKEN_PREFIX = 'tokens/';
const RANK: Record<Role, number> = { read: 0, write: 1, admin: 2 };

/** hashToken is the store key of a token: SHA-256, so a leaked store does not leak tokens. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** newToken makes a random personal access token. */
export function newToken(): string {
  return `grt_${randomBytes(24).toString('base64url')}`;
}

/** tokenFromHeader reads a token from `Authorization: Basic user:token` or `Bearer token`. */
export function tokenFromHeader(header: string | undefined): string | null {
  if (!header) return null;
  const [scheme, value] = header.split(' ', 2);
  if (!value) return null;
  if (scheme?.toLowerCase() === 'bearer') return value.trim();
  if (scheme?.toLowerCase() === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon === -1 ? null : decoded.slice(colon + 1);
  }
  return null;
}

/**
 * Authenticator checks client credentials against hashed tokens in the store (cached briefly).
 * In `open` mode every caller is an admin: for a trusted network or a laptop only.
 */
export class Authenticator {
  private readonly cache = new Map<string, { info: TokenInfo | null; at: number }>();

  constructor(private readonly store: ClusterStore, readonly mode: 'open' | 'tokens') {}

  /** require returns the caller's token info or throws 401 (no or bad token) / 403 (role too low). */
  async require(authorization: string | undefined, role: Role): Promise<TokenInfo> {
    if (this.mode === 'open') return { name: 'anonymous', role: 'admin', createdAt: '' };
    const token = tokenFromHeader(authorization);
    if (!token) throw unauthorized('authentication required: use a token as the password (git) or a Bearer token');
    const info = await this.lookup(hashToken(token));
    if (!info) throw unauthorized('invalid token');
    if (RANK[info.role] < RANK[role]) throw forbidden(`token '${info.name}' has role ${info.role}; ${role} needed`);
    return info;
  }

  private async lookup(hash: string): Promise<TokenInfo | null> {
    const hit = this.cache.get(hash);
    if (hit && Date.now() - hit.at < 5_000) return hit.info;
    const raw = await this.store.getMeta(`${TOKEN_PREFIX}${hash}`);
    const info = raw ? (JSON.parse(raw) as TokenInfo) : null;
    this.cache.set(hash, { info, at: Date.now() });
    return info;
  }

  /** create stores a new token's hash and returns the token, which is shown only this once. */
  async create(name: string, role: Role): Promise<string> {
    const token = newToken();
    await this.store.setMeta(`${TOKEN_PREFIX}${hashToken(token)}`, JSON.stringify({ name, role, createdAt: new Date().toISOString() } satisfies TokenInfo));
    return token;
  }

  /**
   * bootstrapAdmin makes the first admin token if the cluster has none; only the node that wins
   * the compare-and-swap gets the token back (to write it to its data dir), the others get null.
   */
  async bootstrapAdmin(): Promise<string | null> {
    const token = newToken();
    const winner = await this.store.setMetaIfAbsent('admin_token_hash', hashToken(token));
    if (winner !== hashToken(token)) return null;
    await this.store.setMeta(`${TOKEN_PREFIX}${hashToken(token)}`, JSON.stringify({ name: 'admin', role: 'admin', createdAt: new Date().toISOString() } satisfies TokenInfo));
    return token;
  }
}

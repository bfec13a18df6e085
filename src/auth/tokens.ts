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
/** CACHE_ENTRIES bounds the token cache. */
const CACHE_ENTRIES = 4_096;
/** OPEN_CALLER is every caller in `open` mode. */
const OPEN_CALLER: TokenInfo = { name: 'anonymous', role: 'admin', createdAt: '' };

/** hasRole says whether a token's role includes `role`. */
export function hasRole(info: TokenInfo | null, role: Role): boolean {
  return info !== null && RANK[info.role] >= RANK[role];
}

/** hashToken is the store key of a token: SHA-256, so a leaked store does not leak tokens. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** newToken makes a random personal access token. */
export function newToken(): string {
  return `grt_${randomBytes(24).toString('base64url')}`;
}

/** MAX_TOKEN_LENGTH bounds what is hashed and looked up; real tokens are 36 characters. */
const MAX_TOKEN_LENGTH = 256;

/**
 * tokenFromHeader reads a token from `Authorization: Bearer token` or `Basic user:token`. With
 * Basic, a token given as the user name and an empty password (`https://TOKEN@host/…`, as
 * GitHub and GitLab accept) counts too.
 */
export function tokenFromHeader(header: string | undefined): string | null {
  if (!header || header.length > 4 * MAX_TOKEN_LENGTH) return null;
  const space = header.indexOf(' ');
  if (space === -1) return null;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (!value) return null;
  let token: string | null = null;
  if (scheme === 'bearer') token = value;
  else if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon === -1) return null;
    const password = decoded.slice(colon + 1);
    token = password !== '' && password !== 'x-oauth-basic' ? password : decoded.slice(0, colon);
  }
  return token && token.length <= MAX_TOKEN_LENGTH ? token : null;
}

/**
 * Authenticator checks client credentials against hashed tokens in the store (cached briefly).
 * In `open` mode every caller is an admin: for a trusted network or a laptop only.
 */
export class Authenticator {
  /** cache holds recent look-ups, good and bad, bounded (oldest out first): random tokens cannot grow it. */
  private readonly cache = new Map<string, { info: TokenInfo | null; at: number }>();

  constructor(private readonly store: ClusterStore, readonly mode: 'open' | 'tokens') {}

  /** cachedCount is how many look-ups the cache holds (bounded by CACHE_ENTRIES). */
  get cachedCount(): number {
    return this.cache.size;
  }

  /**
   * identify returns the caller's token info when the request carries a valid token, and null
   * when it carries none; a bad token is refused (401), so a typo is not silently anonymous.
   */
  async identify(authorization: string | undefined): Promise<TokenInfo | null> {
    if (this.mode === 'open') return OPEN_CALLER;
    if (!authorization) return null;
    const token = tokenFromHeader(authorization);
    if (!token) throw unauthorized('malformed authorization header: use a token as the password (git) or a Bearer token');
    const info = await this.lookup(hashToken(token));
    if (!info) throw unauthorized('invalid token');
    return info;
  }

  /** require returns the caller's token info or throws 401 (no or bad token) / 403 (role too low). */
  async require(authorization: string | undefined, role: Role): Promise<TokenInfo> {
    if (this.mode === 'open') return OPEN_CALLER;
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
    this.cache.delete(hash);
    this.cache.set(hash, { info, at: Date.now() });
    // A Map iterates in insertion order: the first key is the oldest entry.
    while (this.cache.size > CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
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

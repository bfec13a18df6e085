import { createHash, randomBytes } from 'node:crypto';
import { AppError, appError, badRequest, conflict, forbidden, notFound, StoreUnavailableError, unauthorized } from '../domain/errors.js';
import type { ClusterStore } from '../store/types.js';
import { ADMIN_USER, DIRECTORY_CACHE_MS, type Directory } from './directory.js';
import { LFS_TICKET_PREFIX, verifyLfsTicket } from './lfs-ticket.js';
import { atLeast, maxScope, type Principal, type Role } from './policy.js';

export type { Role } from './policy.js';

/**
 * TokenInfo is what the store keeps of a token (never the token itself). Tokens made before
 * users existed have `role` and no `user`: they are tokens of the built-in admin user with that
 * scope (`readTokenInfo`).
 */
export interface TokenInfo {
  readonly name: string;
  readonly user: string;
  readonly scope: Role;
  readonly createdAt: string;
  /** expiresAt: ISO time after which the token fails; absent: never. */
  readonly expiresAt?: string;
}

/** TokenView is what listing shows of a token: never the token or its full hash. */
export interface TokenView extends TokenInfo {
  readonly id: string;
  readonly lastUsedAt: string | null;
}

/** Caller is an authenticated client: the token, its user, and the user's principal. */
export interface Caller {
  readonly token: TokenInfo & { readonly id: string };
  readonly principal: Principal;
  /**
   * onlyLfs: the credential is an LFS ticket (lfs-ticket.ts), good only for this repository's
   * Git LFS API (access.ts refuses it anywhere else).
   */
  readonly onlyLfs?: string;
}

/** TOKEN_PREFIX keys hashed tokens in the store's settings. */
export const TOKEN_PREFIX = 'tokens/';
const USED_PREFIX = 'token-used/';
/** CACHE_ENTRIES bounds the token cache. */
const CACHE_ENTRIES = 4_096;
/** LAST_USED_EVERY_MS: a token's last-used time is written at most this often. */
const LAST_USED_EVERY_MS = 60_000;
/** FAILURES_ALLOWED failed authentications per client address within FAILURE_WINDOW_MS, then 429. */
const FAILURES_ALLOWED = 20;
const FAILURE_WINDOW_MS = 60_000;
/** DEFAULT_MAX_TOKENS_PER_USER is the unexpired tokens one user may hold (settings: maxTokensPerUser). */
export const DEFAULT_MAX_TOKENS_PER_USER = 1_000;

/** isExpired says whether a credential's expiry (a token's, an SSH key's) has passed. */
export function isExpired(t: { readonly expiresAt?: string }, now = Date.now()): boolean {
  return t.expiresAt !== undefined && Date.parse(t.expiresAt) <= now;
}

/** FAILURES_TRACKED bounds the addresses whose failures are counted (pruneFailures). */
const FAILURES_TRACKED = 10_000;
/** OPEN_CALLER is every caller in `open` mode. */
const OPEN_CALLER: Caller = {
  token: { id: 'open', name: 'anonymous', user: ADMIN_USER, scope: 'admin', createdAt: '' },
  principal: { user: ADMIN_USER, admin: true, orgs: new Map() },
};

/** isAdmin says whether a caller is a cluster admin using an admin-scoped token. */
export function isAdmin(caller: Caller | null): boolean {
  return caller !== null && caller.principal.admin && caller.token.scope === 'admin';
}

/**
 * needAdminScope refuses (403) a token capped below admin for `what`: acts that give or take
 * what acts with the user's full role (SSH keys, an organisation's owners).
 */
export function needAdminScope(c: Caller, what: string): void {
  if (!atLeast(c.token.scope, 'admin'))
    throw forbidden(`token '${c.token.name}' has scope ${c.token.scope}; ${what} needs an admin-scoped token`);
}

/**
 * expiryWithin is the expiry of a credential a caller makes (a token, an SSH key): the one asked
 * for, else the caller's token's own. A token that expires makes nothing that outlives it (403),
 * or a short-lived token would mint a credential that never expires.
 */
export function expiryWithin(c: Caller, asked: string | undefined, what: string): string | undefined {
  const limit = c.token.expiresAt;
  const at = asked ?? limit;
  if (limit !== undefined && at !== undefined && Date.parse(at) > Date.parse(limit))
    throw forbidden(`token '${c.token.name}' expires at ${limit} and may not ${what} that expires later`);
  return at;
}

/** hashToken is the store key of a token: SHA-256, so a leaked store does not leak tokens. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** tokenId is a token's public id: the first 16 hex digits of its hash. */
export function tokenId(hash: string): string {
  return hash.slice(0, 16);
}

/** newToken makes a random personal access token. */
export function newToken(): string {
  return `grt_${randomBytes(24).toString('base64url')}`;
}

/** readTokenInfo reads a stored token, migrating one made before users existed. */
export function readTokenInfo(raw: string): TokenInfo {
  const t = JSON.parse(raw) as Partial<TokenInfo> & { role?: Role };
  return {
    name: t.name ?? 'unnamed',
    user: t.user ?? ADMIN_USER,
    scope: t.scope ?? t.role ?? 'read',
    createdAt: t.createdAt ?? '',
    ...(t.expiresAt ? { expiresAt: t.expiresAt } : {}),
  };
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
 * Authenticator checks client credentials against hashed tokens in the store. Look-ups are
 * cached for at most DIRECTORY_CACHE_MS (a revoked or expired token, or a disabled user, fails on
 * every node within that time), in a bounded cache. Guesses (a malformed header, a token that
 * does not exist) are counted per client address: past FAILURES_ALLOWED in a minute, the address
 * gets 429 for the rest of it.
 * In `open` mode every caller is an admin: for a trusted network or a laptop only.
 */
export class Authenticator {
  private readonly cache = new Map<string, { info: TokenInfo | null; at: number }>();
  private readonly failures = new Map<string, { count: number; since: number }>();
  private readonly usedWritten = new Map<string, number>();

  constructor(
    private readonly store: ClusterStore,
    readonly mode: 'open' | 'tokens',
    private readonly directory: Directory,
    /** failuresTracked bounds the addresses whose failures are counted (default FAILURES_TRACKED). */
    private readonly failuresTracked = FAILURES_TRACKED,
    /** maxPerUser: the unexpired tokens one user may hold (create refuses past it, 409). */
    private readonly maxPerUser = DEFAULT_MAX_TOKENS_PER_USER,
  ) {}

  /** cachedCount is how many look-ups the cache holds (bounded by CACHE_ENTRIES). */
  get cachedCount(): number {
    return this.cache.size;
  }

  /**
   * identify returns the caller when the request carries a valid token, and null when it
   * carries none; a bad token is refused (401), so a typo is not silently anonymous.
   */
  async identify(authorization: string | undefined, client = ''): Promise<Caller | null> {
    if (this.mode === 'open') return OPEN_CALLER;
    if (!authorization) return null;
    this.checkRate(client);
    const token = tokenFromHeader(authorization);
    if (!token) throw this.failed(client, 'malformed authorization header: use a token as the password (git) or a Bearer token');
    if (this.ticketSecret !== null && token.startsWith(LFS_TICKET_PREFIX)) return this.ticket(token, client, this.ticketSecret);
    const hash = hashToken(token);
    const info = await this.lookup(hash);
    if (!info) throw this.failed(client, 'invalid token');
    // A real token that expired, or whose user is disabled, is no guess: not counted as one.
    if (isExpired(info)) throw unauthorized(`token '${info.name}' expired at ${info.expiresAt}`);
    const user = await this.directory.user(info.user);
    if (!user || user.disabled) throw unauthorized(`user ${info.user} is disabled`);
    this.noteUsed(hash);
    return { token: { ...info, id: tokenId(hash) }, principal: await this.directory.principal(user) };
  }

  /** ticketSecret, once set (acceptLfsTickets), lets LFS tickets signed with it in. */
  private ticketSecret: string | null = null;

  /** acceptLfsTickets lets in the LFS tickets `git-lfs-authenticate` gives over SSH, signed with the cluster's secret. */
  acceptLfsTickets(secret: string): void {
    this.ticketSecret = secret;
  }

  /** ticket is identify for an LFS ticket: its user, capped at the access it was given, for its repository's LFS API only. */
  private async ticket(token: string, client: string, secret: string): Promise<Caller> {
    const t = verifyLfsTicket(secret, token);
    if (t === null) throw this.failed(client, 'invalid LFS ticket');
    if (t === 'expired') throw unauthorized('LFS ticket expired: git-lfs asks for a new one over SSH');
    const user = await this.directory.user(t.user);
    if (!user || user.disabled) throw unauthorized(`user ${t.user} is disabled`);
    return {
      token: {
        id: 'lfs-ticket',
        name: `ssh-lfs:${t.keyName}`,
        user: t.user,
        scope: t.need,
        createdAt: '',
        expiresAt: new Date(t.expiresAt).toISOString(),
      },
      principal: await this.directory.principal(user),
      onlyLfs: t.repoId,
    };
  }

  /** require returns the caller or throws 401 (no or bad token) / 403 (scope too low). */
  async require(authorization: string | undefined, scope: Role, client = ''): Promise<Caller> {
    const caller = await this.identify(authorization, client);
    if (!caller) throw unauthorized('authentication required: use a token as the password (git) or a Bearer token');
    if (!atLeast(caller.token.scope, scope))
      throw forbidden(`token '${caller.token.name}' has scope ${caller.token.scope}; ${scope} needed`);
    if (scope === 'admin' && !caller.principal.admin) throw forbidden(`user ${caller.principal.user} is not a cluster admin`);
    return caller;
  }

  private checkRate(client: string): void {
    const f = this.failures.get(client);
    if (!f) return;
    const left = f.since + FAILURE_WINDOW_MS - Date.now();
    if (left <= 0) this.failures.delete(client);
    else if (f.count >= FAILURES_ALLOWED) {
      throw appError('ERR_RATE_LIMITED', [Math.ceil(left / 1000)], { retryAfter: Math.ceil(left / 1000) });
    }
  }

  private failed(client: string, message: string): AppError {
    const now = Date.now();
    const f = this.failures.get(client);
    if (!f || now - f.since > FAILURE_WINDOW_MS) this.failures.set(client, { count: 1, since: now });
    else f.count++;
    if (this.failures.size > this.failuresTracked) this.pruneFailures(now);
    return unauthorized(message);
  }

  /**
   * pruneFailures keeps the failure table bounded without forgiving: the counts past their
   * minute and those below the limit go first, the addresses being throttled stay (the oldest of
   * them go only past half the table). Clearing it all let anyone with 10,000 addresses lift every
   * address's 429.
   */
  private pruneFailures(now: number): void {
    for (const [client, f] of this.failures) {
      if (now - f.since > FAILURE_WINDOW_MS || f.count < FAILURES_ALLOWED) this.failures.delete(client);
    }
    for (const client of this.failures.keys()) {
      if (this.failures.size <= this.failuresTracked / 2) break;
      this.failures.delete(client);
    }
  }

  private noteUsed(hash: string): void {
    const now = Date.now();
    if (now - (this.usedWritten.get(hash) ?? 0) < LAST_USED_EVERY_MS) return;
    this.usedWritten.set(hash, now);
    if (this.usedWritten.size > CACHE_ENTRIES) this.usedWritten.clear();
    void this.store.setMeta(`${USED_PREFIX}${hash}`, new Date(now).toISOString()).catch(() => undefined);
  }

  private async lookup(hash: string): Promise<TokenInfo | null> {
    const hit = this.cache.get(hash);
    if (hit && Date.now() - hit.at < DIRECTORY_CACHE_MS) return hit.info;
    let raw: string | null;
    try {
      raw = await this.store.getMeta(`${TOKEN_PREFIX}${hash}`);
    } catch (err) {
      // Store unreachable: a token this node has seen keeps working for reads (writes fail
      // without the store anyway); one it never saw fails closed.
      if (err instanceof StoreUnavailableError && hit) return hit.info;
      throw err;
    }
    const info = raw ? readTokenInfo(raw) : null;
    this.cache.delete(hash);
    this.cache.set(hash, { info, at: Date.now() });
    // A Map iterates in insertion order: the first key is the oldest entry.
    while (this.cache.size > CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
    return info;
  }

  /**
   * create stores a new token's hash for `user` and returns the token, shown only this once.
   * The scope may not exceed what the user may hold (admin only for cluster admins).
   */
  async create(user: string, name: string, scope: Role, expiresAt?: string): Promise<{ token: string; info: TokenView }> {
    const u = await this.directory.user(user);
    if (!u) throw notFound(`user ${user} not found`);
    if (u.disabled) throw badRequest(`user ${user} is disabled`);
    const p = await this.directory.principal(u);
    if (!atLeast(maxScope(p), scope)) throw forbidden(`user ${user} may hold tokens up to scope ${maxScope(p)}`);
    if (expiresAt !== undefined && !(Date.parse(expiresAt) > Date.now())) throw badRequest('expires_at must be a time in the future');
    const held = (await this.store.listMeta(TOKEN_PREFIX)).filter((m) => {
      const t = readTokenInfo(m.value);
      return t.user === user && !isExpired(t);
    }).length;
    if (held >= this.maxPerUser)
      throw conflict(`user ${user} holds ${held} tokens, the most one user may (MAX_TOKENS_PER_USER): revoke some first`);
    const token = newToken();
    const hash = hashToken(token);
    const info: TokenInfo = {
      name,
      user,
      scope,
      createdAt: new Date().toISOString(),
      ...(expiresAt ? { expiresAt: new Date(expiresAt).toISOString() } : {}),
    };
    await this.store.setMeta(`${TOKEN_PREFIX}${hash}`, JSON.stringify(info));
    return { token, info: { ...info, id: tokenId(hash), lastUsedAt: null } };
  }

  /** list shows a user's tokens (every user's for null). */
  async list(user: string | null): Promise<TokenView[]> {
    const used = new Map((await this.store.listMeta(USED_PREFIX)).map((m) => [m.key.slice(USED_PREFIX.length), m.value]));
    const out: TokenView[] = [];
    for (const m of await this.store.listMeta(TOKEN_PREFIX)) {
      const hash = m.key.slice(TOKEN_PREFIX.length);
      const info = readTokenInfo(m.value);
      if (user === null || info.user === user) out.push({ ...info, id: tokenId(hash), lastUsedAt: used.get(hash) ?? null });
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /**
   * revoke deletes a token by id; `user` limits it to that user's tokens, and `by` (the caller's
   * token) to itself and tokens of its scope or below. Returns the revoked token.
   */
  async revoke(
    id: string,
    user: string | null,
    by?: { readonly id: string; readonly name: string; readonly scope: Role },
  ): Promise<TokenView> {
    for (const m of await this.store.listMeta(TOKEN_PREFIX)) {
      const hash = m.key.slice(TOKEN_PREFIX.length);
      const info = readTokenInfo(m.value);
      if (tokenId(hash) !== id || (user !== null && info.user !== user)) continue;
      if (by && by.id !== id && !atLeast(by.scope, info.scope))
        throw forbidden(`token '${by.name}' has scope ${by.scope} and may not revoke a ${info.scope} token`);
      await this.store.deleteMeta(m.key);
      await this.store.deleteMeta(`${USED_PREFIX}${hash}`);
      this.cache.delete(hash);
      return { ...info, id, lastUsedAt: null };
    }
    throw notFound(`token ${id} not found`);
  }

  /**
   * sweepExpired deletes the tokens that expired before `before`, with their last-use times, and
   * returns how many went. Nothing else removes a token that expired: a CI minting a short-lived
   * token per job filled the store, and every listing and revoke read them all.
   */
  async sweepExpired(before: number): Promise<number> {
    let removed = 0;
    for (const m of await this.store.listMeta(TOKEN_PREFIX)) {
      const info = readTokenInfo(m.value);
      if (!isExpired(info, before)) continue;
      const hash = m.key.slice(TOKEN_PREFIX.length);
      await this.store.deleteMeta(m.key);
      await this.store.deleteMeta(`${USED_PREFIX}${hash}`);
      this.cache.delete(hash);
      removed++;
    }
    return removed;
  }

  /**
   * bootstrapAdmin makes the first admin token if the cluster has none; only the node that wins
   * the compare-and-swap gets the token back (to write it to its data dir), the others get null.
   */
  async bootstrapAdmin(): Promise<string | null> {
    await this.directory.ensureAdminUser();
    const token = newToken();
    const winner = await this.store.setMetaIfAbsent('admin_token_hash', hashToken(token));
    if (winner !== hashToken(token)) return null;
    await this.store.setMeta(
      `${TOKEN_PREFIX}${hashToken(token)}`,
      JSON.stringify({ name: 'admin', user: ADMIN_USER, scope: 'admin', createdAt: new Date().toISOString() } satisfies TokenInfo),
    );
    return token;
  }
}

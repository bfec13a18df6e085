import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** ROUTE_HEADER carries the route token (signRoute) of a proxied git request. */
export const ROUTE_HEADER = 'x-replication-route';
/** PEER_AUTH_HEADER carries a peer request's signature. */
export const PEER_AUTH_HEADER = 'x-replication-auth';

/** HOP_HEADER carries a hop token: a request one node already proxied, never to be proxied again. */
export const HOP_HEADER = 'x-replication-hop';

/** MAX_SKEW_MS bounds how old a signed request may be; nonces are remembered that long. */
const MAX_SKEW_MS = 60_000;

/** NO_BODY is the digest a call without a signed body carries. */
export const NO_BODY = '-';

function mac(secret: string, parts: readonly string[]): string {
  return createHmac('sha256', secret).update(parts.join('\n')).digest('hex');
}

/** bodyDigest is the SHA-256 (hex) a signature binds a request's signed body part to. */
export function bodyDigest(body: Buffer | string): string {
  return createHash('sha256').update(body).digest('hex');
}

/** PeerTarget names the node a call is for: its id and the start time of its current incarnation. */
export interface PeerTarget {
  readonly id: string;
  readonly url: string;
  readonly epoch: string;
  /** protocol is the range of replication protocol versions the node registered (absent: 1). */
  readonly protocol?: { readonly min: number; readonly max: number };
}

/** SignedCall is what a peer signature covers besides the caller, time and nonce. */
export interface SignedCall {
  readonly method: string;
  readonly path: string;
  readonly contentLength: number | null;
  /** digest of the JSON body, or of a prepare's JSON header (the pack is covered by its hash inside it). */
  readonly digest: string;
}

/**
 * signPeerRequest returns the auth header value for an internal call: an HMAC over method, path,
 * content length, the body's (or a prepare's JSON header's) digest, timestamp, nonce, the caller,
 * and the receiver's id and start epoch, so a captured header is good for one call to one
 * incarnation of one node within the skew window. A streamed pack is never hashed here (that
 * would force buffering it): the prepare's JSON header names the pack's own trailer hash, which
 * index-pack checks (SECURITY.md).
 */
export function signPeerRequest(
  secret: string,
  callerId: string,
  target: Pick<PeerTarget, 'id' | 'epoch'>,
  call: SignedCall,
  now = Date.now(),
): string {
  const nonce = randomBytes(12).toString('hex');
  const ts = String(now);
  const len = call.contentLength === null ? '-' : String(call.contentLength);
  const sig = mac(secret, [
    'peer-v2',
    call.method.toUpperCase(),
    call.path,
    ts,
    nonce,
    len,
    call.digest,
    callerId,
    target.id,
    target.epoch,
  ]);
  return `${callerId}:${ts}:${nonce}:${call.digest}:${sig}`;
}

/** Verified is an accepted peer call: who made it and the body digest its signature vouches for. */
export interface Verified {
  readonly ok: true;
  readonly nodeId: string;
  readonly digest: string;
}

/** VerifierIdentity is the receiving node: its id, its epoch, and who counts as a member. */
export interface VerifierIdentity {
  readonly nodeId: string;
  readonly epoch: string;
  /** isMember says whether a node id is registered in the cluster (refreshing the view once if not). */
  readonly isMember: (nodeId: string) => Promise<boolean>;
}

/**
 * PeerVerifier checks signatures of incoming internal calls: right secret, this node and this
 * incarnation as the receiver, a registered member as the caller, within the skew window, and
 * never the same nonce twice.
 */
export class PeerVerifier {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly secret: () => string,
    private readonly self: VerifierIdentity,
  ) {}

  /** verify returns the calling node id and signed digest, or a reason the call is refused. */
  async verify(
    header: string | undefined,
    method: string,
    path: string,
    contentLength: number | null,
    now = Date.now(),
  ): Promise<Verified | { ok: false; reason: string }> {
    if (!header) return { ok: false, reason: 'missing peer signature' };
    // The caller's id is everything before the last four fields (an id may contain ':').
    const parts = header.split(':');
    if (parts.length < 5 || header.length > 1024) return { ok: false, reason: 'malformed peer signature' };
    const [ts, nonce, digest, sig] = parts.slice(-4) as [string, string, string, string];
    const nodeId = parts.slice(0, -4).join(':');
    const t = Number(ts);
    if (!/^\d{1,15}$/.test(ts) || Math.abs(now - t) > MAX_SKEW_MS) return { ok: false, reason: 'peer signature expired' };
    const len = contentLength === null ? '-' : String(contentLength);
    const expected = Buffer.from(
      mac(this.secret(), ['peer-v2', method.toUpperCase(), path, ts, nonce, len, digest, nodeId, this.self.nodeId, this.self.epoch]),
      'hex',
    );
    const given = Buffer.from(sig, 'hex');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'bad peer signature' };
    if (this.seen.has(nonce)) return { ok: false, reason: 'replayed peer request' };
    if (!(await this.self.isMember(nodeId))) return { ok: false, reason: `node ${nodeId} is not a cluster member` };
    this.seen.set(nonce, t);
    if (this.seen.size > 10_000) this.prune(now);
    return { ok: true, nodeId, digest };
  }

  private prune(now: number): void {
    for (const [n, t] of this.seen) if (now - t > MAX_SKEW_MS) this.seen.delete(n);
  }
}

/** repairHop is the hop value of a repair fetch: the one repository it repairs, and the repairing node (`repair:<repo>:<node>`). */
export function repairHop(nodeId: string, repoId: string): string {
  return `repair:${repoId}:${nodeId}`;
}

/** isRepairHopFor says whether a verified hop value is a repair fetch of `repoId` (repo ids hold no `:`). */
export function isRepairHopFor(hop: string | null, repoId: string): boolean {
  return hop !== null && hop.startsWith(`repair:${repoId}:`);
}

/** hopClientName is who a hop value's requests count against: a repair's node (`repair:<node>`, whatever it repairs), else the value. */
export function hopClientName(hop: string): string {
  const m = /^repair:[^:]*:(.*)$/.exec(hop);
  return m ? `repair:${m[1]}` : hop;
}

/**
 * signHop makes the hop token a node puts on a request it proxies (or a repair fetch), naming the
 * client it serves: it lets the receiver answer "not in sync here" instead of proxying again. It
 * is not single-use (git sends one header on several requests), so it grants nothing else but a
 * repair's read of the one repository its value names (repairHop): an unsigned or expired hop
 * header is ignored and the request is routed like any client's.
 */
export function signHop(secret: string, client: string, now = Date.now()): string {
  return sealToken(secret, 'hop-v1', client, [], now);
}

/**
 * sealToken makes a `<value, base64url>.<time>.<HMAC>` token: the HMAC covers `tag`, the `bound`
 * strings (what the token is for, not carried in it), the encoded value and the time.
 */
function sealToken(secret: string, tag: string, value: string, bound: readonly string[], now: number): string {
  const ts = String(now);
  const encoded = Buffer.from(value).toString('base64url');
  return `${encoded}.${ts}.${mac(secret, [tag, ...bound, encoded, ts])}`;
}

/** openToken returns the value a sealToken token carries, or null when it is malformed, longer than `maxLength`, forged or stale. */
function openToken(
  secret: string,
  tag: string,
  token: string | undefined,
  bound: readonly string[],
  maxLength: number,
  now: number,
): string | null {
  if (!token || token.length > maxLength) return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [encoded, ts, sig] = parts as [string, string, string];
  if (!/^\d{1,15}$/.test(ts) || Math.abs(now - Number(ts)) > MAX_SKEW_MS) return null;
  const expected = Buffer.from(mac(secret, [tag, ...bound, encoded, ts]), 'hex');
  const given = Buffer.from(sig, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  return Buffer.from(encoded, 'base64url').toString('utf8');
}

/**
 * verifyHop returns the client a hop header was made for (the address the first node saw, so a
 * per-client limit still applies to proxied requests), or null when the header is absent, not
 * made with the cluster secret, or stale.
 */
export function verifyHop(secret: string, header: string | undefined, now = Date.now()): string | null {
  return openToken(secret, 'hop-v1', header, [], 1024, now);
}

/**
 * signRoute makes the route token a node puts beside the hop header when it proxies a git request
 * to the peer its store read found in sync: the repo and the incarnation that read found there.
 * The peer serves the request from its replica of that incarnation without reading the store
 * again (its own read would find the same, a few milliseconds later).
 */
export function signRoute(secret: string, repoId: string, incarnation: string, now = Date.now()): string {
  return sealToken(secret, 'route-v1', incarnation, [repoId], now);
}

/**
 * verifyRoute returns the incarnation a route token vouches for on `repoId`, or null when the
 * header is absent, made for another repo or without the cluster secret, or stale.
 */
export function verifyRoute(secret: string, header: string | undefined, repoId: string, now = Date.now()): string | null {
  return openToken(secret, 'route-v1', header, [repoId], 1024, now);
}

/** SEALED_CURSOR_PREFIX starts a listing cursor sealed by sealCursor (a repo id never does: ids have no `~`). */
export const SEALED_CURSOR_PREFIX = 'c1~';

/** SEALED_CURSOR_BYTES is the padded length of a sealed cursor's repo id. */
const SEALED_CURSOR_BYTES = 256;

/** cursorKey is the AES-256 key of sealed cursors, derived from the cluster secret (every node opens any node's). */
function cursorKey(secret: string): Buffer {
  return createHmac('sha256', secret).update('listing-cursor-v1').digest();
}

/**
 * sealCursor hides a repo id a listing stopped at from its caller (AES-256-GCM under the cluster
 * secret): a listing that reads past repos its caller may not see resumes there without naming
 * one of them.
 */
export function sealCursor(secret: string, repoId: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', cursorKey(secret), iv);
  // Padded to one length (ids are at most 201 bytes): the cursor's length tells nothing of the id's.
  const plain = Buffer.alloc(SEALED_CURSOR_BYTES);
  plain.write(repoId, 'utf8');
  const sealed = Buffer.concat([cipher.update(plain), cipher.final()]);
  return `${SEALED_CURSOR_PREFIX}${Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64url')}`;
}

/** openCursor returns the repo id a sealCursor cursor carries, or null when it is malformed or not sealed with the cluster secret. */
export function openCursor(secret: string, cursor: string): string | null {
  if (!cursor.startsWith(SEALED_CURSOR_PREFIX) || cursor.length > 1024) return null;
  const raw = Buffer.from(cursor.slice(SEALED_CURSOR_PREFIX.length), 'base64url');
  if (raw.length < 29) return null;
  try {
    const decipher = createDecipheriv('aes-256-gcm', cursorKey(secret), raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    const plain = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]);
    const end = plain.indexOf(0);
    return plain.subarray(0, end === -1 ? plain.length : end).toString('utf8');
  } catch {
    return null;
  }
}

/** SshHop is who an SSH session a node proxies to a peer acts for. */
export interface SshHop {
  /** user is the original user, whose permissions the peer applies. */
  readonly user: string;
  /** key names the SSH key the user signed in with (for the audit log). */
  readonly key: string;
  /** client is the address the first node saw (for the per-client git cap). */
  readonly client: string;
}

/**
 * signSshHop makes the password a node presents (user name `hop`) when it proxies an SSH
 * session to an in-sync peer. It names the original user, key and client address, so the peer
 * applies that user's permissions, not a node's. It travels only inside SSH's encrypted
 * transport to a peer whose host key is the cluster's, and is good for MAX_SKEW_MS.
 */
export function signSshHop(secret: string, hop: SshHop, now = Date.now()): string {
  return sealToken(secret, 'ssh-hop-v1', JSON.stringify({ u: hop.user, k: hop.key, c: hop.client }), [], now);
}

/** verifySshHop returns what an SSH hop token names, or null when it is forged, stale or malformed. */
export function verifySshHop(secret: string, token: string | undefined, now = Date.now()): SshHop | null {
  const body = openToken(secret, 'ssh-hop-v1', token, [], 2048, now);
  if (body === null) return null;
  try {
    const v = JSON.parse(body) as { u?: unknown; k?: unknown; c?: unknown };
    if (typeof v.u !== 'string' || typeof v.k !== 'string' || typeof v.c !== 'string') return null;
    return { user: v.u, key: v.k, client: v.c };
  } catch {
    return null;
  }
}

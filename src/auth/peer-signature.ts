import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** PEER_AUTH_HEADER carries a peer request's signature. */
export const PEER_AUTH_HEADER = 'x-replication-auth';

/** MAX_SKEW_MS bounds how old a signed request may be; nonces are remembered that long. */
const MAX_SKEW_MS = 60_000;

function mac(secret: string, parts: readonly string[]): string {
  return createHmac('sha256', secret).update(parts.join('\n')).digest('hex');
}

/**
 * signPeerRequest returns the auth header value for an internal call: an HMAC over method, path,
 * timestamp, nonce and content length (DESIGN §9) — never over a streamed pack body, which would
 * force buffering it.
 */
export function signPeerRequest(secret: string, nodeId: string, method: string, path: string, contentLength: number | null, now = Date.now()): string {
  const nonce = randomBytes(12).toString('hex');
  const ts = String(now);
  const len = contentLength === null ? '-' : String(contentLength);
  return `${nodeId}:${ts}:${nonce}:${mac(secret, [method.toUpperCase(), path, ts, nonce, len, nodeId])}`;
}

/**
 * PeerVerifier checks signatures of incoming internal calls and refuses replays within the
 * allowed clock skew.
 */
export class PeerVerifier {
  private readonly seen = new Map<string, number>();

  constructor(private readonly secret: () => string) {}

  /** verify returns the calling node id, or a reason the call is refused. */
  verify(header: string | undefined, method: string, path: string, contentLength: number | null, now = Date.now()): { ok: true; nodeId: string } | { ok: false; reason: string } {
    if (!header) return { ok: false, reason: 'missing peer signature' };
    const parts = header.split(':');
    if (parts.length !== 4) return { ok: false, reason: 'malformed peer signature' };
    const [nodeId, ts, nonce, sig] = parts as [string, string, string, string];
    const t = Number(ts);
    if (!Number.isFinite(t) || Math.abs(now - t) > MAX_SKEW_MS) return { ok: false, reason: 'peer signature expired' };
    const len = contentLength === null ? '-' : String(contentLength);
    const expected = Buffer.from(mac(this.secret(), [method.toUpperCase(), path, ts, nonce, len, nodeId]), 'hex');
    const given = Buffer.from(sig, 'hex');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'bad peer signature' };
    if (this.seen.has(nonce)) return { ok: false, reason: 'replayed peer request' };
    this.seen.set(nonce, t);
    if (this.seen.size > 10_000) this.prune(now);
    return { ok: true, nodeId };
  }

  private prune(now: number): void {
    for (const [n, t] of this.seen) if (now - t > MAX_SKEW_MS) this.seen.delete(n);
  }
}

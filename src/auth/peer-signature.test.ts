import { describe, expect, it } from 'vitest';
import { PeerVerifier, signPeerRequest } from './peer-signature.js';

describe('peer signatures', () => {
  const v = new PeerVerifier(() => 'secret');
  it('accepts a fresh signature once and refuses a replay', () => {
    const h = signPeerRequest('secret', 'node-1', 'POST', '/replicate/commit', 42);
    expect(v.verify(h, 'POST', '/replicate/commit', 42)).toEqual({ ok: true, nodeId: 'node-1' });
    expect(v.verify(h, 'POST', '/replicate/commit', 42)).toMatchObject({ ok: false, reason: 'replayed peer request' });
  });
  it.each([
    ['another path', '/replicate/abort', 42, 'secret'],
    ['another length', '/replicate/commit', 43, 'secret'],
    ['another secret', '/replicate/commit', 42, 'nope'],
  ])('refuses %s', (_n, path, len, secret) => {
    const h = signPeerRequest(secret, 'node-1', 'POST', '/replicate/commit', 42);
    expect(v.verify(h, 'POST', path, len).ok).toBe(false);
  });
  it('refuses old, missing and malformed signatures', () => {
    expect(v.verify(signPeerRequest('secret', 'n', 'POST', '/x', null, Date.now() - 120_000), 'POST', '/x', null)).toMatchObject({ reason: 'peer signature expired' });
    expect(v.verify(undefined, 'POST', '/x', null)).toMatchObject({ reason: 'missing peer signature' });
    expect(v.verify('a:b', 'POST', '/x', null)).toMatchObject({ reason: 'malformed peer signature' });
  });
});

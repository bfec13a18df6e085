import { describe, expect, it } from 'vitest';
import {
  bodyDigest,
  NO_BODY,
  openCursor,
  PeerVerifier,
  sealCursor,
  signHop,
  signPeerRequest,
  signRoute,
  signSshHop,
  verifyHop,
  verifyRoute,
  verifySshHop,
  type SignedCall,
} from './peer-signature.js';

const self = { nodeId: 'node-2', epoch: '2026-12-01T00:00:00.000Z', isMember: (id: string) => Promise.resolve(id.startsWith('node-')) };
const call: SignedCall = { method: 'POST', path: '/replicate/commit', contentLength: 42, digest: bodyDigest('{"a":1}') };
const to = { id: 'node-2', epoch: self.epoch };

describe('peer signatures', () => {
  it('accepts a fresh signature once, with its digest, and refuses a replay', async () => {
    const v = new PeerVerifier(() => 'secret', self);
    const h = signPeerRequest('secret', 'node-1', to, call);
    expect(await v.verify(h, 'POST', '/replicate/commit', 42)).toEqual({ ok: true, nodeId: 'node-1', digest: call.digest });
    expect(await v.verify(h, 'POST', '/replicate/commit', 42)).toMatchObject({ ok: false, reason: 'replayed peer request' });
  });

  it.each([
    ['another path', { ...call, path: '/replicate/abort' }, to, 'secret', 'node-1'],
    ['another length', { ...call, contentLength: 43 }, to, 'secret', 'node-1'],
    ['another method', { ...call, method: 'GET' }, to, 'secret', 'node-1'],
    ['another secret', call, to, 'nope', 'node-1'],
    ['another receiver', call, { ...to, id: 'node-3' }, 'secret', 'node-1'],
    ['another incarnation of the receiver', call, { ...to, epoch: '2026-11-30T00:00:00.000Z' }, 'secret', 'node-1'],
    ['a caller that is not a member', call, to, 'secret', 'intruder'],
  ])('refuses %s', async (_n, signed: SignedCall, target, secret, caller) => {
    const v = new PeerVerifier(() => 'secret', self);
    const h = signPeerRequest(secret, caller, target, signed);
    expect((await v.verify(h, call.method, call.path, call.contentLength)).ok).toBe(false);
  });

  it('binds the digest: a header edited to claim another body fails', async () => {
    const v = new PeerVerifier(() => 'secret', self);
    const h = signPeerRequest('secret', 'node-1', to, call);
    const edited = h.replace(call.digest, bodyDigest('{"a":2}'));
    expect(await v.verify(edited, 'POST', '/replicate/commit', 42)).toMatchObject({ ok: false, reason: 'bad peer signature' });
  });

  it('refuses old, missing and malformed signatures', async () => {
    const v = new PeerVerifier(() => 'secret', self);
    const old = signPeerRequest('secret', 'node-1', to, { ...call, digest: NO_BODY }, Date.now() - 120_000);
    expect(await v.verify(old, 'POST', '/replicate/commit', 42)).toMatchObject({ reason: 'peer signature expired' });
    expect(await v.verify(undefined, 'POST', '/x', null)).toMatchObject({ reason: 'missing peer signature' });
    expect(await v.verify('a:b', 'POST', '/x', null)).toMatchObject({ reason: 'malformed peer signature' });
    expect(await v.verify('a:1e3:n:d:s', 'POST', '/x', null)).toMatchObject({ reason: 'peer signature expired' });
  });

  it('accepts ids with colons', async () => {
    const v = new PeerVerifier(() => 'secret', { ...self, isMember: () => Promise.resolve(true) });
    const h = signPeerRequest('secret', 'host:3001', to, call);
    expect(await v.verify(h, 'POST', '/replicate/commit', 42)).toMatchObject({ ok: true, nodeId: 'host:3001' });
  });
});

describe('hop tokens', () => {
  it('verify only with the secret and only while fresh', () => {
    expect(verifyHop('secret', signHop('secret', '::ffff:10.0.0.1'))).toBe('::ffff:10.0.0.1');
    expect(verifyHop('secret', signHop('other', '10.0.0.1'))).toBeNull();
    expect(verifyHop('secret', signHop('secret', '10.0.0.1', Date.now() - 120_000))).toBeNull();
    expect(verifyHop('secret', 'node-1')).toBeNull();
    expect(verifyHop('secret', undefined)).toBeNull();
  });
});

describe('route tokens', () => {
  it('vouch for one repo, only with the secret and only while fresh', () => {
    const token = signRoute('secret', 'acme/app', '2026-12-03T00:00:00.000Z-ab12');
    expect(verifyRoute('secret', token, 'acme/app')).toBe('2026-12-03T00:00:00.000Z-ab12');
    expect(verifyRoute('secret', token, 'acme/other')).toBeNull();
    expect(verifyRoute('other', token, 'acme/app')).toBeNull();
    expect(verifyRoute('secret', signRoute('secret', 'acme/app', 'i', Date.now() - 120_000), 'acme/app')).toBeNull();
    const [, ts, sig] = token.split('.');
    expect(verifyRoute('secret', `${Buffer.from('forged').toString('base64url')}.${ts}.${sig}`, 'acme/app')).toBeNull();
    expect(verifyRoute('secret', signHop('secret', 'acme/app'), 'acme/app')).toBeNull();
    expect(verifyRoute('secret', undefined, 'acme/app')).toBeNull();
  });
});

describe('ssh hop tokens', () => {
  const hop = { user: 'alice', key: 'laptop', client: '10.0.0.7' };
  it('name the original user, key and client, only with the secret and only while fresh', () => {
    expect(verifySshHop('secret', signSshHop('secret', hop))).toEqual(hop);
    expect(verifySshHop('secret', signSshHop('other', hop))).toBeNull();
    expect(verifySshHop('secret', signSshHop('secret', hop, Date.now() - 120_000))).toBeNull();
    expect(verifySshHop('secret', undefined)).toBeNull();
    expect(verifySshHop('secret', 'a.b.c')).toBeNull();
  });

  it('refuses a token edited to name another user, and a plain hop token', () => {
    const [, ts, sig] = signSshHop('secret', hop).split('.');
    const forged = `${Buffer.from(JSON.stringify({ u: 'admin', k: 'laptop', c: '10.0.0.7' })).toString('base64url')}.${ts}.${sig}`;
    expect(verifySshHop('secret', forged)).toBeNull();
    expect(verifySshHop('secret', signHop('secret', 'alice'))).toBeNull();
  });

  it('a sealed listing cursor hides its repo id and opens only with the cluster secret, unaltered', () => {
    const sealed = sealCursor('secret', 'carol/hidden-project-05');
    expect(sealed).toMatch(/^c1~[A-Za-z0-9_-]+$/);
    expect(Buffer.from(sealed.slice(3), 'base64url').toString('latin1')).not.toContain('hidden');
    expect(sealCursor('secret', 'carol/hidden-project-05')).not.toBe(sealed);
    // Every cursor has one length, whatever its id's.
    expect(sealCursor('secret', 'a/b')).toHaveLength(sealed.length);
    expect(sealCursor('secret', `${'o'.repeat(100)}/${'r'.repeat(100)}`)).toHaveLength(sealed.length);
    expect(openCursor('secret', sealCursor('secret', 'a/b'))).toBe('a/b');
    expect(openCursor('secret', sealed)).toBe('carol/hidden-project-05');
    expect(openCursor('other', sealed)).toBeNull();
    const raw = Buffer.from(sealed.slice(3), 'base64url');
    raw.writeUInt8(raw.readUInt8(raw.length - 1) ^ 1, raw.length - 1);
    expect(openCursor('secret', `c1~${raw.toString('base64url')}`)).toBeNull();
    for (const bad of ['c1~', 'c1~AAAA', 'carol/x', `c1~${'A'.repeat(2000)}`]) expect(openCursor('secret', bad)).toBeNull();
  });
});
